"""What every `glyffuser <command>` shares, apart from the CLI module: parsing, exit codes, signals.

Each command lives in the module that does its work (`glyffuser.stages.train` for `glyffuser train`,
`glyffuser.demo` for `glyffuser demo`, ...) as three names: `add_arguments(parser)`, `command(args)`
and `main(argv)`, and its DVC entry point (stages/train.py) calls that `main` directly. So a DVC stage
depends on its own command's code and this small module, never on `glyffuser/cli.py`, which only
lists the commands and dispatches: editing it, or another command, leaves every stage up to date.

The contract of every command: a failure caused by input prints one line `glyffuser: error: ...`
and exits 1; a bad command line prints one such line and exits 2; Ctrl+C exits 130 and SIGTERM 143,
each after the outputs were put back as they were (see `artifacts/atomic.py`); on success the
command's summary, if any, is printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from glyffuser.errors import GlyffuserError
from glyffuser.params import DEFAULT_PARAMS

# Where each stage's inputs live by default: the paths dvc.yaml wires together.
PIPELINE_FILES = {
    "sources": "data/sources",
    "definitions": "data/render/definitions.parquet",
    "glyphs": "data/render/glyphs.parquet",
    "embeddings": "data/embed/embeddings.parquet",
    "trained": "data/model",  # the train stage's model: the align stage's reference
    "model": "data/align/model",  # the model every later stage and command uses (the trained one when align is off)
    "classifier": "data/classifier",
    "second_judge": "data/second_judge",
    "reward_judge": "data/reward_judge",
    "feedback": "data/feedback/feedback.sqlite",
    "upsampler": "data/upsampler",
}


class Parser(argparse.ArgumentParser):
    """A bad command line is one line too (exit 2, as for every usage error), not argparse's usage block."""

    def error(self, message: str):
        self.exit(2, f"glyffuser: error: {message} (see: {self.prog} --help)\n")


def inputs(p: argparse.ArgumentParser, *names: str) -> None:
    """--NAME options for pipeline inputs, defaulting to where dvc.yaml puts them."""
    for name in names:
        p.add_argument(f"--{name}", type=Path, default=Path(PIPELINE_FILES[name]))


def no_mlflow(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-mlflow", action="store_true", help="do not record the run in MLflow")


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so that every `finally` and rollback runs on the way out."""


def _raise_terminated(signum, frame):
    raise Terminated()


@contextmanager
def terminate_like_interrupt() -> Iterator[None]:
    """Within: SIGTERM unwinds the stack as Ctrl+C does, instead of killing the process where it stands."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_command(name: str, description: str, add_arguments: Callable[[argparse.ArgumentParser], None],
                command: Callable[[argparse.Namespace], dict | None], argv: list[str] | None = None,
                before: Callable[[argparse.Namespace], None] | None = None) -> int:
    """Parse `argv` for `glyffuser NAME`, run the command and turn its failures into the exit codes above.
    `before` runs first inside the same error handling (the CLI resolves MLflow model URIs there)."""
    parser = Parser(prog=f"glyffuser {name}", description=description)
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="parameters file (default: %(default)s)")
    add_arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    with terminate_like_interrupt():
        try:
            if before is not None:
                before(args)
            summary = command(args)
        except GlyffuserError as err:
            print(f"glyffuser: error: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("glyffuser: interrupted", file=sys.stderr)
            return 130
        except Terminated:
            print("glyffuser: terminated", file=sys.stderr)
            return 143
    if summary is not None:
        print(json.dumps(summary, indent=2, default=str))
    return 0
