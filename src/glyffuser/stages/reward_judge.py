"""Stage `reward_judge`: the align stage's reward model, a third radical reader (params `reward_judge`) trained like
the classifier stage's judge; neither judge that evaluate reports ever sees it, so they can tell a real gain from
one that only pleases the reward."""

from __future__ import annotations

from pathlib import Path

from glyffuser.command import inputs, run_command
from glyffuser.stages.classifier import run_classifier


# `glyffuser reward_judge`; the DVC stage `reward_judge` runs it as stages/reward_judge.py.
def add_arguments(p) -> None:
    inputs(p, "definitions", "glyphs")
    p.add_argument("--out", type=Path, default=Path("data/reward_judge"))


def command(args) -> dict:
    from glyffuser.params import load_params

    params = load_params(args.params)
    return run_classifier(params, args.definitions, args.glyphs, args.out, params.reward_judge)


def main(argv: list[str] | None = None) -> int:
    return run_command("reward_judge", __doc__.splitlines()[0], add_arguments, command, argv)
