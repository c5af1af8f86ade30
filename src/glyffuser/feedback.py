"""Feedback from people (issue 44): which of two glyphs drawn for one prompt is the better one.

One row per answer in a SQLite table (data/feedback/feedback.sqlite by default), written in its own transaction the
moment the answer is given: SQLite's journal makes a row all there or not there after a crash, a Ctrl+C or a kill -9,
and its locking serialises two browser tabs (or two people) writing at once. A row holds everything needed to learn
from it later without the page: the prompt, both seeds, the sampler settings, the weights that drew both glyphs
(sha256) and both images as PNG. Rows carry a random uid, so tables from several people merge without duplicates:

    glyffuser feedback export answers.parquet          # this table as Parquet (images included)
    glyffuser feedback import theirs.parquet           # merge another table in (rows already here are skipped)
    glyffuser feedback summary                         # how many answers, per choice and per model
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from glyffuser.command import run_command
from glyffuser.errors import GlyffuserError

FEEDBACK = Path("data/feedback/feedback.sqlite")
CHOICES = ("left", "right", "skip")
SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    uid TEXT PRIMARY KEY,           -- random: tables from several people merge without clashes
    created TEXT NOT NULL,          -- UTC time of the answer, ISO 8601
    labeller TEXT NOT NULL,         -- who answered (--labeller; default: the user name)
    prompt TEXT NOT NULL,
    codepoint INTEGER,              -- the training definition's character, when the prompt is one
    choice TEXT NOT NULL CHECK (choice IN ('left', 'right', 'skip')),
    seed_left INTEGER NOT NULL,
    seed_right INTEGER NOT NULL,
    steps INTEGER NOT NULL,
    guidance REAL NOT NULL,
    scheduler TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,     -- the UNet weights that drew both glyphs
    png_left BLOB NOT NULL,
    png_right BLOB NOT NULL
)"""
COLUMNS = ("uid", "created", "labeller", "prompt", "codepoint", "choice", "seed_left", "seed_right", "steps",
           "guidance", "scheduler", "model_sha256", "png_left", "png_right")


@dataclass(frozen=True)
class Answer:
    prompt: str
    codepoint: int | None
    choice: str
    seed_left: int
    seed_right: int
    steps: int
    guidance: float
    scheduler: str
    model_sha256: str
    png_left: bytes
    png_right: bytes
    labeller: str = "anonymous"
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))


def connect(path: Path) -> sqlite3.Connection:
    """The feedback table, created if absent. WAL: readers never block the writer; a 30 s busy timeout lets two
    writers (two tabs) take turns instead of failing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # autocommit (each INSERT is its own transaction); one connection may serve a server's request threads,
        # which take turns on it (label.py holds a lock)
        con = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")  # an answer acknowledged to the page is on disk
        con.execute(SCHEMA)
    except sqlite3.DatabaseError as err:
        raise GlyffuserError(f"{path} is not a feedback table ({err}): move it away, or name another --feedback") from None
    return con


def record(con: sqlite3.Connection, answer: Answer) -> None:
    """Append one answer in one transaction: the row is whole on disk when this returns, or absent."""
    if answer.choice not in CHOICES:
        raise GlyffuserError(f"choice {answer.choice!r} is not one of {', '.join(CHOICES)}")
    row = asdict(answer)
    con.execute(f"INSERT INTO answers ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                [row[c] for c in COLUMNS])


def read_answers(path: Path, require: bool = True):
    """Every answer as a DataFrame (one row per answer, COLUMNS). A missing, foreign, malformed or (with `require`)
    empty table is one error line."""
    import pandas as pd

    if not path.is_file():
        raise GlyffuserError(f"no feedback table at {path}: label some pairs first (glyffuser label)")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as con:
            names = [r[1] for r in con.execute("PRAGMA table_info(answers)")]
            if missing := [c for c in COLUMNS if c not in names]:
                raise GlyffuserError(f"{path} is not a glyffuser feedback table (no column {missing[0]!r})")
            table = pd.read_sql_query(f"SELECT {', '.join(COLUMNS)} FROM answers ORDER BY created, uid", con)
    except sqlite3.DatabaseError as err:
        raise GlyffuserError(f"{path} is not a readable feedback table ({err})") from None
    if require and table.empty:
        raise GlyffuserError(f"{path} holds no answers: label some pairs first (glyffuser label)")
    bad = ~table.choice.isin(CHOICES) | table.png_left.isna() | table.png_right.isna() | table.prompt.isna()
    if bad.any():
        raise GlyffuserError(f"{path}: answer {table.uid[bad].iloc[0]!r} is malformed (choice, prompt or an image "
                             "missing): fix or delete that row")
    return table


def export_answers(path: Path, out: Path) -> int:
    """The table as Parquet, written whole or not at all; returns the rows written."""
    from glyffuser.artifacts.atomic import atomic_outputs

    table = read_answers(path)
    with atomic_outputs(out) as (tmp,):
        table.to_parquet(tmp, index=False)
    return len(table)


def import_answers(path: Path, source: Path) -> int:
    """Merge an exported table into this one in one transaction; rows whose uid is here already are skipped.
    Returns how many were added."""
    import pandas as pd

    try:
        incoming = pd.read_parquet(source)
    except Exception as err:  # pyarrow's many kinds for a missing, foreign or damaged file
        raise GlyffuserError(f"cannot read {source} as exported feedback ({type(err).__name__})") from None
    if missing := [c for c in COLUMNS if c not in incoming.columns]:
        raise GlyffuserError(f"{source} is not exported feedback (no column {missing[0]!r})")
    if (~incoming.choice.isin(CHOICES)).any():
        raise GlyffuserError(f"{source}: a choice is not one of {', '.join(CHOICES)}; nothing imported")
    con = connect(path)
    try:
        before = con.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        con.execute("BEGIN IMMEDIATE")
        con.executemany(f"INSERT OR IGNORE INTO answers ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                        [[None if pd.isna(v) else (int(v) if c == "codepoint" else v) for c, v in zip(COLUMNS, row)]
                         for row in incoming[list(COLUMNS)].itertuples(index=False)])
        con.execute("COMMIT")
        return con.execute("SELECT COUNT(*) FROM answers").fetchone()[0] - before
    finally:
        con.close()


def summary(path: Path) -> dict:
    table = read_answers(path, require=False)
    return {"answers": len(table), "choices": {c: int((table.choice == c).sum()) for c in CHOICES},
            "labellers": sorted(table.labeller.unique().tolist()),
            "models": {m[:16]: int(n) for m, n in table.model_sha256.value_counts().items()}}


# `glyffuser feedback`
def add_arguments(p) -> None:
    p.add_argument("action", choices=("export", "import", "summary"))
    p.add_argument("file", nargs="?", type=Path, help="export: the Parquet file to write; import: the one to merge")
    p.add_argument("--feedback", type=Path, default=FEEDBACK, help="the feedback table (default: %(default)s)")


def command(args) -> dict:
    if args.action == "summary":
        return summary(args.feedback)
    if args.file is None:
        raise GlyffuserError(f"feedback {args.action} needs a Parquet file to {'write' if args.action == 'export' else 'read'}")
    if args.action == "export":
        return {"exported": export_answers(args.feedback, args.file), "to": str(args.file)}
    return {"imported": import_answers(args.feedback, args.file), "into": str(args.feedback)}


def main(argv: list[str] | None = None) -> int:
    return run_command("feedback", "export, import or summarise the feedback table", add_arguments, command, argv)
