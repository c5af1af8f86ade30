"""Stage `upsampler`: the cascade's second network (glyffuser/diffusion/upsampler.py), train.resolution -> twice
that side, trained on real glyph pairs from the render tables with degraded inputs. It reads no diffusion model,
so it trains once per dataset; the report checks it on the real test glyphs at the output side."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from glyffuser.analysis.fidelity import degrade as degrade_real
from glyffuser.analysis.fidelity import fidelity, stroke_codes
from glyffuser.analysis.metrics import two_tone_share
from glyffuser.analysis.paper import paper_darkness
from glyffuser.artifacts.atomic import check_outputs
from glyffuser.artifacts.glyph_tables import load_glyph_splits
from glyffuser.artifacts.upsampler_folder import save_upsampler_folder
from glyffuser.command import inputs, run_command
from glyffuser.diffusion.upsampler import Upsampler, train_upsampler, upsample
from glyffuser.errors import GlyffuserError
from glyffuser.params import UPSAMPLER_SCALE as SCALE
from glyffuser.params import Params
from glyffuser.progress import progress
from glyffuser.reports import UpsamplerReport, make_report


def real_checks(net: Upsampler, low: torch.Tensor, high: torch.Tensor) -> dict:
    """The upsampler on real test glyphs, at the output side against the real renders: what it adds to a perfect draft,
    beside bilinear upsampling and the stroke-fidelity bar (real glyphs with half a 3×3 blur)."""
    codes = stroke_codes(high)
    sharp_real = two_tone_share(high)

    def scores(images: torch.Tensor) -> dict:
        return {"stroke_fidelity": round(fidelity(codes, stroke_codes(images), boot=2)[0], 5),
                "paper_darkness": round(paper_darkness(images)[0], 3),
                "sharpness_ratio": round(two_tone_share(images) / sharp_real, 4),
                "l1": round(float((images - high).abs().mean() / 2), 4)}

    return {"upsampler": scores(upsample(net, low)),
            "bilinear": scores(F.interpolate(low, scale_factor=SCALE, mode="bilinear", align_corners=False)),
            "real_with_half_blur": scores(degrade_real(high, "blur", torch.Generator().manual_seed(0)))}


def run_upsampler(params: Params, definitions: Path, glyphs: Path, out: Path) -> dict:
    """Train on the train split (inputs at train.resolution, targets at twice that), check on the test split, write
    out/ (the upsampler folder, glyffuser/artifacts/upsampler_folder.py, with report.json)."""
    u, low_side = params.upsampler, params.train.resolution
    high_side = SCALE * low_side  # render.image_size holds it: Params checks that before any stage runs
    check_outputs(out, folders=True)
    low, high = load_glyph_splits(definitions, glyphs, low_side), load_glyph_splits(definitions, glyphs, high_side)
    torch.manual_seed(params.base.seed)  # the initial weights
    net = Upsampler(u.width, u.depth, SCALE)
    start = time.perf_counter()
    with progress(u.steps, desc="upsampler", unit="step") as bar:
        losses = train_upsampler(low["train"].images, high["train"].images, net, u.steps, u.batch_size, u.lr,
                                 seed=params.base.seed, strength=u.degradation, bar=bar, block=u.block,
                                 block_p=u.block_jitter)
    minutes = (time.perf_counter() - start) / 60
    report = {
        "input_resolution": low_side, "output_resolution": high_side,
        "parameters": sum(p.numel() for p in net.parameters()),
        "train_minutes": round(minutes, 2), "images_per_s": round(u.steps * u.batch_size / (minutes * 60), 1),
        "final_loss": round(float(np.mean(losses[-50:])), 4),
        "test_glyphs": len(low["test"].radicals),
        "test": real_checks(net, low["test"].images, high["test"].images),
    }
    learned, plain = report["test"]["upsampler"]["l1"], report["test"]["bilinear"]["l1"]
    if not learned < plain:  # a diverged net (NaN, or a blank page) must not reach sample/evaluate
        raise GlyffuserError(f"the upsampler did not learn: its L1 error on the real test glyphs is {learned} against "
                             f"{plain} for plain bilinear upsampling (last loss {report['final_loss']}); lower "
                             f"upsampler.lr (now {u.lr}) or raise upsampler.steps")
    make_report(UpsamplerReport, report, "the upsampler stage's report")  # the keys its readers expect
    save_upsampler_folder(out, net, low_side, report)
    return report


# `glyffuser upsampler`; the DVC stage `upsampler` runs it as stages/upsampler.py.
def add_arguments(p) -> None:
    inputs(p, "definitions", "glyphs")
    p.add_argument("--out", type=Path, default=Path("data/upsampler"))


def command(args) -> dict:
    from glyffuser.params import load_params

    return run_upsampler(load_params(args.params), args.definitions, args.glyphs, args.out)


def main(argv: list[str] | None = None) -> int:
    return run_command("upsampler", __doc__.splitlines()[0], add_arguments, command, argv)
