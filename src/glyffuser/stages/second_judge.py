"""Stage `second_judge`: a second radical reader of another architecture and seed (params `second_judge`), trained
like the classifier stage's judge; evaluate reports held-out adherence by both, so a gain one judge alone sees is
visible as such."""

from __future__ import annotations

from pathlib import Path

from glyffuser.command import inputs, run_command
from glyffuser.stages.classifier import run_classifier


# `glyffuser second_judge`; the DVC stage `second_judge` runs it as stages/second_judge.py.
def add_arguments(p) -> None:
    inputs(p, "definitions", "glyphs")
    p.add_argument("--out", type=Path, default=Path("data/second_judge"))


def command(args) -> dict:
    from glyffuser.params import load_params

    params = load_params(args.params)
    return run_classifier(params, args.definitions, args.glyphs, args.out, params.second_judge)


def main(argv: list[str] | None = None) -> int:
    return run_command("second_judge", __doc__.splitlines()[0], add_arguments, command, argv)
