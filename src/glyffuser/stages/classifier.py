"""Stage `classifier`: the radical judge of `evaluate` (analysis/judge.py), trained on the train split at
the training resolution; its test accuracy is the ceiling any generated glyph can be read at."""

from __future__ import annotations

import time
from pathlib import Path

from glyffuser.analysis.judge import REPORT, WEIGHTS, accuracy, majority_share, save_classifier, train_classifier
from glyffuser.artifacts.atomic import check_outputs
from glyffuser.artifacts.glyph_tables import LabelledGlyphs, load_glyph_splits
from glyffuser.command import inputs, run_command
from glyffuser.params import ClassifierParams, Params
from glyffuser.reports import ClassifierReport, make_report


def run_classifier(params: Params, definitions: Path, glyphs: Path, out: Path, c: ClassifierParams | None = None) -> dict:
    """Stage `classifier`: train on the train split at the training resolution; the test split is its ceiling.
    `c`: these params instead of params.classifier (the second_judge stage's)."""
    c = c or params.classifier
    check_outputs(out / WEIGHTS, out / REPORT)
    splits = load_glyph_splits(definitions, glyphs, params.train.resolution)
    start = time.perf_counter()
    net = train_classifier(splits["train"], c.epochs, c.batch_size, c.lr, c.width,
                           params.base.seed if c.seed is None else c.seed, c.weight_decay, c.label_smoothing,
                           show_progress=True, architecture=c.architecture)
    minutes = (time.perf_counter() - start) / 60
    report = {
        "test_accuracy": accuracy(net, splits["test"]),
        "validation_accuracy": accuracy(net, splits["validation"]),
        "train_accuracy": accuracy(net, LabelledGlyphs(splits["train"].images[:4096], splits["train"].radicals[:4096],
                                                       splits["train"].codepoints[:4096], [])),
        "chance": majority_share(splits["train"].radicals, splits["test"].radicals),
        "resolution": params.train.resolution,
        "train_images": len(splits["train"].radicals),
        "train_minutes": round(minutes, 2),
    }
    make_report(ClassifierReport, report, "the classifier stage's report")  # the keys its readers expect
    save_classifier(net, out, report)
    return report


# `glyffuser classifier`; the DVC stage `classifier` runs it as stages/classifier.py.
def add_arguments(p) -> None:
    inputs(p, "definitions", "glyphs")
    p.add_argument("--out", type=Path, default=Path("data/classifier"))


def command(args) -> dict:
    from glyffuser.params import load_params

    return run_classifier(load_params(args.params), args.definitions, args.glyphs, args.out)


def main(argv: list[str] | None = None) -> int:
    return run_command("classifier", __doc__.splitlines()[0], add_arguments, command, argv)
