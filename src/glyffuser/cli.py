"""`glyffuser <command>`: one command line for people; it only lists the commands and dispatches.

Each command lives in the module that does its work, with its own options (`add_arguments`), its
body (`command`) and `main`; the DVC stages call those `main`s directly (stages/*.py), so no stage
depends on this file and editing it never makes a stage stale. Failures caused by input print one
line `glyffuser: error: ...` and exit 1; a bad command line prints one such line and exits 2
(`glyffuser/command.py`).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from glyffuser.command import Parser

# name: (the module that owns the command, one line for `glyffuser --help`), in pipeline order
COMMANDS = {
    "sources": ("glyffuser.stages.sources", "copy the font and Unihan files into the repository"),
    "render": ("glyffuser.stages.render", "render glyphs and build the definitions and glyphs tables"),
    "embed": ("glyffuser.stages.embed", "encode every definition with the text encoder into Parquet"),
    "train": ("glyffuser.stages.train", "train the diffusion model (resumes from a matching checkpoint)"),
    "sample": ("glyffuser.stages.sample", "generate glyphs from English prompts with a trained model"),
    "classifier": ("glyffuser.stages.classifier", "train the radical classifier that judges generated glyphs"),
    "second_judge": ("glyffuser.stages.second_judge", "train the second radical judge (another architecture and seed) "
                                                      "that checks the first"),
    "reward_judge": ("glyffuser.stages.reward_judge", "train the align stage's reward model (a third radical reader "
                                                      "neither evaluate judge sees)"),
    "align": ("glyffuser.stages.align", "fine-tune the trained model on preferences (Diffusion-DPO on judge pairs and "
                                        "people's answers)"),
    "upsampler": ("glyffuser.stages.upsampler", "train the cascade's upsampler (train.resolution -> twice that side) "
                                                "on real glyph pairs"),
    "draw": ("glyffuser.stages.draw", "draw every sample the evaluate stage judges (held-out, controls, grid, training "
                                      "definitions)"),
    "evaluate": ("glyffuser.stages.evaluate", "score the drawn samples: prompt adherence, controls, KID/FID, novelty"),
    "umap": ("glyffuser.stages.umap", "UMAP map of the glyph dataset with density, radicals, layouts and samples"),
    "figures": ("glyffuser.stages.figures", "the visual guide's figures from the trained model"),
    "guide": ("glyffuser.stages.guide", "the visual guide: one HTML page from this run's figures and numbers"),
    "demo": ("glyffuser.demo", "a local web playground on the trained model (Gradio, on 127.0.0.1)"),
    "label": ("glyffuser.label", "a keyboard-driven page on 127.0.0.1: which of two glyphs for one definition is better "
                                 "(answers go to the feedback table)"),
    "feedback": ("glyffuser.feedback", "export, import (merge) or summarise the feedback table"),
    "profile": ("glyffuser.profiles", "run a profile (profiles/NAME.yaml: the keys that differ from params.yaml) "
                                      "as a DVC experiment: dvc exp run -n NAME -S key=value ..."),
    "compare": ("glyffuser.studies", "study runs: save an evaluated run; compare runs paired on the same held-out "
                                     "definitions and seeds (overall and per radical-frequency third)"),
}


def build_parser() -> argparse.ArgumentParser:
    """`glyffuser --help`: the commands and what each does (each command parses its own options)."""
    parser = Parser(prog="glyffuser", description="Invent Chinese glyphs from English definitions: the pipeline's "
                    "stages and the tools around them. `glyffuser COMMAND --help` shows a command's options.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help) in COMMANDS.items():
        sub.add_parser(name, help=help, add_help=False)
    return parser


def resolve_model_uri(args: argparse.Namespace) -> None:
    """`--model models:/NAME/VERSION` or `runs:/RUN_ID/model` (sample, demo): the MLflow model's folder, encoder and
    upsampler (unless --upsampler names another). A URI means what was registered: a version without an upsampler
    draws its drafts, as `mlflow models serve` of it does, never with ./data/upsampler. Resolved here, before the
    command, so a DVC stage (always a model folder) never runs the MLflow code."""
    from glyffuser.artifacts.mlflow_model import is_model_uri, resolve_model_uri

    if is_model_uri(args.model):
        args.model, args.encoder, upsampler = resolve_model_uri(str(args.model))
        if args.upsampler is None and not args.base:
            args.upsampler = upsampler
            args.base = upsampler is None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        build_parser().parse_args(argv)  # --help, or one line naming the unknown command; exits
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[name][0])
    if name in ("sample", "demo"):
        return module.main(rest, before=resolve_model_uri)
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
