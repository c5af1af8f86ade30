"""Feedback from people (issue 44): the SQLite answers table and the `glyffuser label` page."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from glyffuser.errors import GlyffuserError
from glyffuser.feedback import Answer, connect, export_answers, import_answers, read_answers, record

PNG = bytes.fromhex("89504e470d0a1a0a") + b"x" * 64  # the rows' content is not decoded here


def answer(i: int, **kw) -> Answer:
    return Answer(f"prompt {i}", 0x9B5A + i, "left", i, i + 1, 20, 5.0, "dpmsolver++", "a" * 64, PNG, PNG, **kw)


def test_answers_round_trip_and_tables_from_two_people_merge(tmp_path):
    mine, theirs = tmp_path / "mine.sqlite", tmp_path / "theirs.sqlite"
    con = connect(mine)
    for i in range(3):
        record(con, answer(i, labeller="ana"))
    shared = answer(9, labeller="ana")
    record(con, shared)
    other = connect(theirs)
    record(other, shared)  # the same answer, already merged once
    record(other, answer(5, labeller="bo"))
    export_answers(theirs, tmp_path / "theirs.parquet")
    assert import_answers(mine, tmp_path / "theirs.parquet") == 1
    assert import_answers(mine, tmp_path / "theirs.parquet") == 0  # importing twice adds nothing
    table = read_answers(mine)
    assert len(table) == 5 and sorted(table.labeller.unique()) == ["ana", "bo"]
    assert table.png_left.iloc[0] == PNG and table.codepoint.dtype.kind == "i"


def test_bad_tables_are_one_line_each(tmp_path):
    with pytest.raises(GlyffuserError, match="no feedback table"):
        read_answers(tmp_path / "none.sqlite")
    connect(tmp_path / "empty.sqlite").close()
    with pytest.raises(GlyffuserError, match="holds no answers"):
        read_answers(tmp_path / "empty.sqlite")
    (tmp_path / "text.sqlite").write_text("not a database at all " * 100)
    with pytest.raises(GlyffuserError, match="not a"):
        read_answers(tmp_path / "text.sqlite")
    with sqlite3.connect(tmp_path / "foreign.sqlite") as con:
        con.execute("CREATE TABLE answers (uid TEXT, choice TEXT)")
    with pytest.raises(GlyffuserError, match="no column 'created'"):
        read_answers(tmp_path / "foreign.sqlite")
    with pytest.raises(GlyffuserError, match="not one of"):
        record(connect(tmp_path / "x.sqlite"), answer(0).__class__(**{**answer(0).__dict__, "choice": "both"}))


WRITER = """
import sys
from glyffuser.feedback import Answer, connect, record
con = connect(__import__("pathlib").Path(sys.argv[1]))
big = b"\\x89PNG" + bytes(range(256)) * 2000  # ~0.5 MB per image: each write takes a while
i = 0
while True:
    record(con, Answer(f"p{i}", None, "right", i, i + 1, 20, 5.0, "ddim", "b" * 64, big, big))
    i += 1
    print(i, flush=True)
"""


def test_answers_survive_a_kill_9_mid_write_whole_or_absent(tmp_path):
    path = tmp_path / "feedback.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    acknowledged = 0
    while acknowledged < 8:  # let it acknowledge a few answers, then kill it in the middle of the next ones
        acknowledged = int(proc.stdout.readline())
    time.sleep(0.05)
    proc.kill()
    proc.wait()
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    table = read_answers(path)
    assert len(table) >= acknowledged  # every acknowledged answer is on disk
    assert all(len(p) == len(table.png_left.iloc[0]) for p in [*table.png_left, *table.png_right])  # none half-written


def test_the_label_page_shows_pairs_and_records_each_answer(params, rendered, tiny_model, tmp_path):
    from glyffuser.label import Labeller, serve

    out, _ = rendered
    labeller = Labeller(params, tiny_model[0], out.definitions, tmp_path / "feedback.sqlite", "tester", False, seed=0)
    server = serve(labeller, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        page = urllib.request.urlopen(url + "/").read().decode()
        assert "ArrowLeft" in page and "ArrowRight" in page and "skip" in page
        pairs = [json.loads(urllib.request.urlopen(url + "/pair", timeout=120).read()) for _ in range(3)]
        assert all(p["left"].startswith("data:image/png;base64,") and p["left"] != p["right"] for p in pairs)

        def post(body: dict) -> tuple[int, dict]:
            request = urllib.request.Request(url + "/answer", json.dumps(body).encode(), {"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as err:
                return err.code, json.loads(err.read())

        # two tabs answering at once: both rows land
        results = []
        threads = [threading.Thread(target=lambda p=p, c=c: results.append(post({"id": p["id"], "choice": c})))
                   for p, c in zip(pairs[:2], ("left", "skip"))]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert sorted(code for code, _ in results) == [200, 200]
        assert post({"id": pairs[0]["id"], "choice": "left"})[0] == 400  # answered already
        code, body = post({"id": pairs[2]["id"], "choice": "both"})
        assert code == 400 and "left, right, skip" in body["error"]
        assert post({"id": pairs[2]["id"], "choice": "right"})[0] == 200
    finally:
        server.shutdown()
        server.server_close()
        labeller.close()
    table = read_answers(tmp_path / "feedback.sqlite")
    assert sorted(table.choice) == ["left", "right", "skip"] and set(table.labeller) == {"tester"}
    import base64

    shown = {p["prompt"]: base64.b64decode(p["right"].split(",", 1)[1]) for p in pairs}
    assert all(shown[row.prompt] == row.png_right for row in table.itertuples())  # the images people saw
    from glyffuser.artifacts.tables import read_table

    defs = read_table(out.definitions)[0].to_pandas()
    assert set(table.codepoint) <= set(defs.codepoint[defs.split == "train"])  # never a test-split definition
    assert (table.seed_right == table.seed_left + 1).all() and (table.model_sha256.str.len() == 64).all()
