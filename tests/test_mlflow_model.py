"""The trained model as an MLflow model: logged with its flavour, registered, loaded and served by MLflow's own
tools, drawing the same pixels as `glyffuser sample` (issue 22)."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import REPO

DEFAULTS = {"num_images": 1, "steps": 10, "guidance": 5.0, "seed": 0, "scheduler": "dpmsolver++"}


def env_for(store: str) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "MLFLOW_TRACKING_URI": store, "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def registered(tiny_model, upsampler, tmp_path_factory):
    """The tiny model and its upsampler (the cascade: 16 px drafts, 32 px glyphs) logged and registered as the evaluate
    stage does it, in a store of its own."""
    import mlflow

    from glyffuser.artifacts.model_folder import read_model_info
    from glyffuser.diffusion.encoders import resolve_encoder
    from glyffuser.registry import register_model
    from glyffuser.tracking import mlflow_run

    model_dir, _ = tiny_model
    root = tmp_path_factory.mktemp("mlflow-model")
    store = f"sqlite:///{root / 'mlflow.db'}"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = store
    os.environ["DVC_EXP_NAME"] = "tiny-exp"
    try:
        with mlflow_run({"train": {"resolution": 16, "epochs": 12}}, stage="train") as m:
            run_id = m.active_run().info.run_id
        info = {**read_model_info(model_dir), "mlflow_run_id": run_id}
        encoder = resolve_encoder(info["encoder"]).path
        version = register_model(model_dir, encoder, info, DEFAULTS, {"adherence_heldout": 0.25, "kid": 0.5}, upsampler)
        again = register_model(model_dir, encoder, info, DEFAULTS, {"adherence_heldout": 0.30, "kid": 0.4}, upsampler)
        client = mlflow.MlflowClient(store)
        yield {"store": store, "version": version, "again": again, "run_id": run_id, "model_dir": model_dir,
               "root": root, "client": client, "upsampler": upsampler}
    finally:
        os.environ.pop("DVC_EXP_NAME", None)
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"))


def test_one_registered_version_per_training_run_tagged_with_its_experiment_and_metrics(registered):
    client = registered["client"]
    assert registered["version"] == "glyffuser/1" and registered["again"] == "glyffuser/1"  # evaluated twice, one version
    version = client.get_model_version("glyffuser", "1")
    assert version.run_id == registered["run_id"]
    assert version.tags["dvc_experiment"] == "tiny-exp" and len(version.tags["git_commit"]) == 40
    assert version.tags["evaluate.adherence_heldout"] == "0.3"  # the latest evaluation's numbers
    from glyffuser.registry import logged_model_id

    model = client.get_logged_model(logged_model_id(version))
    assert {m.key for m in model.metrics} >= {"adherence_heldout", "kid"}
    import mlflow

    info = mlflow.models.get_model_info("models:/glyffuser/1")
    assert [c.name for c in info.signature.inputs] == ["prompt"]
    assert [c.name for c in info.signature.outputs] == ["prompt", "seed", "png"]
    assert {p.name: p.default for p in info.signature.params} == DEFAULTS
    assert info.saved_input_example_info is not None


def test_pyfunc_in_a_fresh_process_draws_what_glyffuser_sample_draws(registered, tmp_path):
    (tmp_path / "prompts.txt").write_text("a kind of fish\na small bird\n")
    cli = [sys.executable, "-m", "glyffuser.cli", "sample", "--params", str(REPO / "params.yaml"), "--model",
           str(registered["model_dir"]), "--upsampler", str(registered["upsampler"]), "--prompts-file", "prompts.txt",
           "-n", "2", "--steps", "6", "--guidance", "3", "--seed", "7", "--out", "cli"]
    r = subprocess.run(cli, cwd=tmp_path, capture_output=True, text=True, env=env_for(registered["store"]))
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "cli" / "manifest.json").read_text())

    code = f"""
import json, mlflow, pandas as pd
model = mlflow.pyfunc.load_model("runs:/{registered['run_id']}/model")
out = model.predict(pd.DataFrame({{"prompt": ["a kind of fish", "a small bird"]}}),
                    params={{"num_images": 2, "steps": 6, "guidance": 3.0, "seed": 7}})
print(json.dumps(out.to_dict(orient="records")))
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       env=env_for(registered["store"]))
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(r.stdout.strip().splitlines()[-1])
    assert [(x["prompt"], x["seed"]) for x in rows] == [(m["prompt"], m["seed"]) for m in manifest]
    for row, entry in zip(rows, manifest):
        ours = pixels(base64.b64decode(row["png"]))
        assert ours.shape == (32, 32)  # the served model bundles the upsampler: the cascade's glyphs
        assert np.array_equal(ours, pixels((tmp_path / "cli" / Path(entry["path"]).name).read_bytes()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, body) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        text = err.read()
        try:
            return err.code, json.loads(text)
        except ValueError:  # MLflow's 504 says "Request processing time exceeded limit" as plain text
            return err.code, {"message": text.decode(errors="replace")}


@contextmanager
def served(registered, tmp_path, **env):
    """`mlflow models serve -m models:/glyffuser/1 --env-manager local` on a free loopback port: (port, process)."""
    port = free_port()
    log_path = tmp_path / "serve.log"
    log = log_path.open("w")
    server = subprocess.Popen(["mlflow", "models", "serve", "-m", "models:/glyffuser/1", "--env-manager", "local",
                               "--host", "127.0.0.1", "--port", str(port)], cwd=tmp_path, stdout=log,
                              stderr=subprocess.STDOUT, env={**env_for(registered["store"]), **env})
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None and time.time() < deadline, log_path.read_text()[-3000:]
            time.sleep(1)
        yield port, server
    finally:
        server.kill()
        server.wait(timeout=30)
        log.close()


def test_mlflow_models_serve_answers_with_glyphs_and_refuses_bad_requests_in_one_line(registered, tmp_path):
    with served(registered, tmp_path) as (port, _):
        status, body = post(port, {"dataframe_records": [{"prompt": "a kind of fish"}],
                                   "params": {"num_images": 2, "steps": 4, "seed": 3}})
        assert status == 200, body
        rows = body["predictions"]
        assert [(r["prompt"], r["seed"]) for r in rows] == [("a kind of fish", 3), ("a kind of fish", 4)]
        assert pixels(base64.b64decode(rows[0]["png"])).shape == (32, 32)

        # ours: refused by our predict (its own one line); the others by MLflow's schema check before it
        for bad, says, ours in [
            ({"dataframe_records": [{"prompt": "   "}]}, "empty prompt", True),
            ({"dataframe_records": [{"prompt": "a fish"}], "params": {"num_images": 300}}, "must be 1..256", True),
            ({"dataframe_records": [{"prompt": "a fish"}], "params": {"guidance": -1.0}}, "guidance must be", True),
            ({"dataframe_records": [{"prompt": "a fish"}], "params": {"guidance": 1e308}}, "from 0 to 100", True),
            ({"dataframe_records": [{"prompt": "a fish"}], "params": {"steps": "many"}}, "steps", False),
            ({"dataframe_records": [{"prompt": 5}]}, "prompt", False),
            ({"dataframe_records": [{"text": "a fish"}]}, "prompt", False),
            ({"dataframe_records": [{"prompt": "fish " * 200_000}], "params": {"num_images": 256, "steps": 1}},
             "the prompt has 999,999 characters; keep it to 200", True),  # issue 29: a 269 MB answer before
            (b"not json", "", False),
        ]:
            status, body = post(port, bad)
            assert status == 400, (str(bad)[:80], body)
            assert "stack_trace" not in body and "Traceback" not in body.get("message", ""), body
            assert says in body["message"], (str(bad)[:80], body["message"])
            if ours:  # our line alone, not MLflow's "Failed to predict data '<the whole DataFrame>'" before it
                assert body["message"].count("\n") == 0 and not body["message"].startswith("Failed"), body["message"]

        # issue 40: every field is checked before admission and before any prompt is encoded, so the largest request
        # with one bad field is a 400 at once (steps -1000 lowered the in-flight count; steps 0 was a 504 after 10 s)
        many = [{"prompt": f"a kind of fish {i}"} for i in range(4096)]
        for bad_params, says in [({"steps": -1000}, "steps must be at least 1"), ({"steps": 0}, "steps must be at least 1"),
                                 ({"steps": 2000}, "glyph-steps; one call draws at most"),
                                 ({"guidance": -1.0}, "guidance must be"),
                                 ({"scheduler": "euler"}, "unknown scheduler 'euler'")]:
            start = time.monotonic()
            status, body = post(port, {"dataframe_records": many, "params": {"num_images": 1, **bad_params}})
            assert status == 400 and says in body["message"], (bad_params, status, body)
            assert time.monotonic() - start < 3, (bad_params, time.monotonic() - start)


def test_no_request_lowers_the_work_in_flight_of_others():
    """Issue 40: a request's work is never negative in the admission count, whatever reaches the gate."""
    from glyffuser import serving

    before = serving._in_flight
    with serving._admitted(-10**6):
        assert serving._in_flight == before
        with serving._admitted(serving.LIGHT_GLYPH_STEPS + 1):
            pass
    assert serving._in_flight == before


def test_a_stopped_request_stops_while_its_prompts_are_encoded(tiny_model):
    """Issue 40: 4,096 prompts took 22 s to encode in one pass, past the deadline and past SIGTERM; the encoder now reads
    them in passes of ENCODE_CHUNK with a stop check before each."""
    from glyffuser.diffusion.pipeline import ENCODE_CHUNK, GlyffuserPipeline
    from glyffuser.errors import GlyffuserError

    pipe = GlyffuserPipeline.from_pretrained(tiny_model[0], device="cpu", upsampler=False)
    seen, real = [], pipe.encoder.encode
    pipe.encoder.encode = lambda texts: (seen.append(len(texts)), real(texts))[1]
    checks = []

    def stop():
        checks.append(1)
        if len(checks) == 2:
            raise GlyffuserError("the server is shutting down; the request was stopped")

    with pytest.raises(GlyffuserError, match="shutting down"):
        pipe([f"a kind of fish {i}" for i in range(3 * ENCODE_CHUNK)], steps=2, stop=stop)
    assert seen == [ENCODE_CHUNK]  # one pass, then the stop: not the other 513 texts, nor any sampling step
    seen.clear()
    text, mask, empty = pipe.encode([f"fish {i}" for i in range(ENCODE_CHUNK + 5)])  # chunked, the same as one pass
    assert seen == [ENCODE_CHUNK, 6] and text.shape[0] == ENCODE_CHUNK + 5
    one_pass, _, one_empty = pipe.encode(["fish 0", "fish 1"])
    torch.testing.assert_close(text[:2, : one_pass.shape[1]], one_pass, atol=2e-3, rtol=0)
    torch.testing.assert_close(empty, one_empty, atol=2e-3, rtol=0)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def scoring_process(server) -> int:
    """The uvicorn process `mlflow models serve` runs the model in (bash exec'd into it)."""
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def test_the_served_model_holds_under_load(registered, tmp_path):
    """Issue 29: concurrent requests all succeed, over-limit ones are refused at once, a small request is answered
    while heavy ones run, work whose client has gone stops, and SIGTERM stops the server within seconds."""
    fish = {"dataframe_records": [{"prompt": "a kind of fish"}], "params": {"num_images": 1, "steps": 2}}
    heavy = {"dataframe_records": [{"prompt": p} for p in ["a kind of fish", "a small bird"] * 8],
             "params": {"num_images": 256, "steps": 20}}  # 4,096 glyphs × 20 steps: the most one request may ask
    over = {"dataframe_records": [{"prompt": "a kind of fish"}] * 16, "params": {"num_images": 256, "steps": 200}}
    with served(registered, tmp_path, MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT="5") as (port, server):
        uvicorn = scoring_process(server)
        # 24 valid requests, 12 at a time, with different prompts: all answered
        bodies = [{"dataframe_records": [{"prompt": f"a kind of fish {i}"}, {"prompt": "a small bird"}],
                   "params": {"num_images": 2, "steps": 3, "seed": i}} for i in range(24)]
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda b: post(port, b), bodies))
        assert [status for status, _ in answers] == [200] * 24, [b for s, b in answers if s != 200][:2]

        with ThreadPoolExecutor(3) as pool:
            heavies = [pool.submit(post, port, heavy) for _ in range(3)]
            time.sleep(1.5)
            start = time.monotonic()
            status, body = post(port, over)
            assert status == 400 and "glyph-steps; one call draws at most 81,920" in body["message"], body
            assert time.monotonic() - start < 3
            start = time.monotonic()
            status, body = post(port, fish)
            assert status == 200 and time.monotonic() - start < 4, (status, time.monotonic() - start)
            statuses = sorted(f.result()[0] for f in heavies)
        # the server takes two heavy requests at a time (503 at once for the third); the two run past the 5 s
        # limit, so their clients got a 504 and their work stopped
        assert statuses == [503, 504, 504], statuses
        time.sleep(1.5)
        used = cpu_seconds(uvicorn)
        time.sleep(2)
        assert cpu_seconds(uvicorn) - used < 0.5, "abandoned requests are still computing"

        # SIGTERM (to `mlflow models serve`, which hands it on) while heavy requests run: gone within seconds
        with ThreadPoolExecutor(2) as pool:
            for _ in range(2):
                pool.submit(post, port, heavy)
            time.sleep(1.5)
            server.terminate()
            start = time.monotonic()
            while Path(f"/proc/{uvicorn}").exists() and time.monotonic() - start < 15:
                time.sleep(0.2)
            assert not Path(f"/proc/{uvicorn}").exists() or "zombie" in Path(f"/proc/{uvicorn}/status").read_text(), \
                "the scoring server did not stop within 15 s of SIGTERM"
            assert time.monotonic() - start < 10


def test_sample_takes_a_models_or_runs_uri(registered, tmp_path):
    """`glyffuser sample --model` (and `glyffuser demo --model`, through the same from_pretrained)."""
    env = env_for(registered["store"])
    base = [sys.executable, "-m", "glyffuser.cli", "sample", "a kind of fish", "-n", "1", "--steps", "3",
            "--params", str(REPO / "params.yaml")]
    for uri in ("models:/glyffuser/1", f"runs:/{registered['run_id']}/model"):
        r = subprocess.run([*base, "--model", uri, "--out", "fish.png"], cwd=tmp_path, capture_output=True, text=True,
                           env=env)
        assert r.returncode == 0, r.stderr[-2000:]
        assert (tmp_path / "fish.png").stat().st_size > 100
    # the registered model's own upsampler comes with it: 32 px glyphs, or the 16 px drafts with --base
    (tmp_path / "p.txt").write_text("a kind of fish\n")
    files = [sys.executable, "-m", "glyffuser.cli", "sample", "--prompts-file", "p.txt", "--steps", "3", "--params",
             str(REPO / "params.yaml"), "--model", "models:/glyffuser/1"]
    for extra, side in (([], 32), (["--base"], 16)):
        r = subprocess.run([*files, *extra, "--out", f"out{side}"], cwd=tmp_path, capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr[-2000:]
        assert pixels((tmp_path / f"out{side}" / "000-seed0.png").read_bytes()).shape == (side, side)
    r = subprocess.run([*base, "--model", "models:/glyffuser/99", "--out", "x.png"], cwd=tmp_path,
                       capture_output=True, text=True, env=env)
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0, r.stderr
    assert r.stderr.startswith("glyffuser: error: cannot load the MLflow model models:/glyffuser/99")


def test_a_model_uri_draws_what_was_registered_whatever_the_current_folder_holds(registered, tmp_path):
    """Issue 40: a version registered without an upsampler drew 32 px with ./data/upsampler under `glyffuser sample`
    but 16 px under `mlflow models serve`; a cached download that lost its upsampler/ fell back the same way."""
    import hashlib
    import shutil

    from glyffuser.artifacts.model_folder import read_model_info
    from glyffuser.diffusion.encoders import resolve_encoder
    from glyffuser.registry import register_model

    info = {**read_model_info(registered["model_dir"]), "mlflow_run_id": registered["run_id"]}
    drafts_only = register_model(registered["model_dir"], resolve_encoder(info["encoder"]).path, info, DEFAULTS,
                                 {"kid": 0.5}, None)
    assert drafts_only not in (None, registered["version"])
    shutil.copytree(registered["upsampler"], tmp_path / "data" / "upsampler")  # the pipeline's, for this model's side
    env = {**env_for(registered["store"]), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    (tmp_path / "p.txt").write_text("a kind of fish\n")
    cmd = [sys.executable, "-m", "glyffuser.cli", "sample", "--prompts-file", "p.txt", "--steps", "2", "--params",
           str(REPO / "params.yaml")]
    for uri, side in ((f"models:/{drafts_only}", 16), ("models:/glyffuser/1", 32)):
        r = subprocess.run([*cmd, "--model", uri, "--out", f"out{side}"], cwd=tmp_path, capture_output=True, text=True,
                           env=env)
        assert r.returncode == 0, r.stderr[-2000:]
        assert pixels((tmp_path / f"out{side}" / "000-seed0.png").read_bytes()).shape == (side, side), uri
    entry = tmp_path / "cache" / "glyffuser" / "mlflow-models" / \
        hashlib.sha256(f"{registered['store']}\nmodels:/glyffuser/1".encode()).hexdigest()[:24]
    (weights,) = entry.rglob("upsampler.safetensors")
    shutil.rmtree(weights.parent)
    r = subprocess.run([*cmd, "--model", "models:/glyffuser/1", "--out", "damaged"], cwd=tmp_path, capture_output=True,
                       text=True, env=env)
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0, r.stderr
    assert f"lacks its upsampler folder: remove {entry} to download it again" in r.stderr
    assert not (tmp_path / "damaged").exists()


def test_model_uris_are_downloaded_once_and_leave_no_temporary_copies(registered, tmp_path):
    """Issue 29: each `sample --model runs:/...` left a model copy in the system temp folder, a failed URI an
    empty folder; now a pinned URI is downloaded once into the user cache and nothing is left in temp."""
    temp, cache = tmp_path / "tmp", tmp_path / "cache"
    temp.mkdir()
    env = {**env_for(registered["store"]), "TMPDIR": str(temp), "XDG_CACHE_HOME": str(cache)}
    base = [sys.executable, "-m", "glyffuser", "sample", "a kind of fish", "-n", "1", "--steps", "2",
            "--params", str(REPO / "params.yaml"), "--out", "fish.png"]
    for _ in range(2):
        r = subprocess.run([*base, "--model", f"runs:/{registered['run_id']}/model"], cwd=tmp_path,
                           capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr[-2000:]
    assert len(list((cache / "glyffuser" / "mlflow-models").iterdir())) == 1
    r = subprocess.run([*base, "--model", "runs:/0123456789abcdef0123456789abcdef/model"], cwd=tmp_path,
                       capture_output=True, text=True, env=env)
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0, r.stderr  # no download bar before the line
    assert list(temp.iterdir()) == [] and len(list((cache / "glyffuser" / "mlflow-models").iterdir())) == 1


def test_an_unreachable_store_is_one_line_within_seconds(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    start = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "glyffuser", "sample", "fish", "--model", "models:/glyffuser/1",
                        "--out", "x.png"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "cannot load the MLflow model models:/glyffuser/1 from http://127.0.0.1:9" in r.stderr
    assert time.monotonic() - start < 30  # 247 s of retries before


def test_reading_a_model_uri_creates_no_store(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o555)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "XDG_DATA_HOME", "XDG_CACHE_HOME")}
    r = subprocess.run([sys.executable, "-m", "glyffuser", "sample", "fish", "--model", "models:/glyffuser/1",
                        "--out", "x.png"], cwd=tmp_path, capture_output=True, text=True,
                       env={**env, "HOME": str(home), "HF_HUB_OFFLINE": "1"}, timeout=120)
    home.chmod(0o755)
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "there is no MLflow store at" in r.stderr
    assert list(home.iterdir()) == []
