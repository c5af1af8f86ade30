"""The cascade's upsampler (issue 32), screened: a regression CNN 64 -> 128 px trained on real glyph pairs with
degradation augmentation (glyffuser.diffusion.upsampler), judged on real glyphs and on a trained model's samples.

    python benchmarks/upsampler.py --runs xeon-default,p4e15          # ~6 min on 2 cores
    python benchmarks/upsampler.py --steps 600 --strength 0 --tag clean  # without the degradation augmentation

Trains one upsampler on the render tables' train split (64 px box-downsampled inputs, the 128 px renders as
targets), then for each saved run (benchmarks/results/runs/<name>/samples.parquet, the evaluate stage's 64 px
held-out samples) measures at 128 px against the 1,004 real test glyphs at 128 px:
- paper darkness (glyffuser.analysis.paper), stroke fidelity (glyffuser.analysis.fidelity) and sharpness
  (two-tone share), beside the same numbers of the base's 64 px samples at 64 px;
- adherence, paired: the evaluate stage's judge reads the radical of the 128 px output (area-downsampled to its
  64 px) and of the 64 px sample it came from, on the same samples;
- the references: real test glyphs upsampled (the ceiling), real 128 px glyphs with half a 3×3 blur (the stroke
  fidelity bar of issue 32).
Writes benchmarks/results/upsampler[_TAG]-<device>.json and docs/upsampler_cascade.png (base 64 px beside the
cascade's 128 px for the first held-out samples of each run).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, write_result  # noqa: E402
from conditioning import RUNS, _samples  # noqa: E402

from glyffuser.analysis.fidelity import degrade as degrade_real  # noqa: E402
from glyffuser.analysis.fidelity import fidelity, stroke_codes  # noqa: E402
from glyffuser.analysis.judge import load_classifier, predict  # noqa: E402
from glyffuser.analysis.metrics import two_tone_share  # noqa: E402
from glyffuser.analysis.paper import paper_darkness  # noqa: E402
from glyffuser.artifacts.glyph_tables import load_glyph_splits  # noqa: E402
from glyffuser.diffusion.upsampler import Upsampler, train_upsampler, upsample  # noqa: E402

DATA = ROOT / "data"


def quality(images: torch.Tensor, real: torch.Tensor, real_codes: torch.Tensor) -> dict:
    return {"paper_darkness": round(paper_darkness(images)[0], 3),
            "stroke_fidelity": round(fidelity(real_codes, stroke_codes(images), boot=2)[0], 5),
            "sharpness_ratio": round(two_tone_share(images) / two_tone_share(real), 4)}


def sheet(rows: dict[str, tuple[torch.Tensor, torch.Tensor]], path: Path, n: int = 8) -> None:
    """Per run: n base samples (64 px shown at 128 with nearest) above their 128 px cascade outputs."""
    from PIL import Image, ImageDraw

    from glyffuser.artifacts.images import tensor_to_images

    cell, pad, label = 128, 4, 18
    sheet = Image.new("L", (n * (cell + pad) + pad, len(rows) * (2 * (cell + pad) + label) + pad), 255)
    draw = ImageDraw.Draw(sheet)
    y = pad
    for name, (low, high) in rows.items():
        draw.text((pad, y), f"{name}: 64 px base (top), 128 px cascade (bottom)", fill=0)
        y += label
        for r, imgs in enumerate((tensor_to_images(low[:n]), tensor_to_images(high[:n]))):
            for c, im in enumerate(imgs):
                sheet.paste(im.resize((cell, cell), Image.NEAREST), (pad + c * (cell + pad), y + r * (cell + pad)))
        y += 2 * (cell + pad)
    sheet.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="", help="saved runs (benchmarks/results/runs/) whose samples are upsampled")
    parser.add_argument("--steps", type=int, default=600, help="training steps")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--width", type=int, default=48)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--strength", type=float, default=1.0, help="degradation augmentation (0: clean inputs)")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()

    paths = DATA / "render" / "definitions.parquet", DATA / "render" / "glyphs.parquet"
    low, high = load_glyph_splits(*paths, 64), load_glyph_splits(*paths, 128)
    torch.manual_seed(0)
    net = Upsampler(args.width, args.depth)
    start = time.perf_counter()
    losses = train_upsampler(low["train"].images, high["train"].images, net, args.steps, args.batch, args.lr, seed=0,
                             strength=args.strength)
    minutes = (time.perf_counter() - start) / 60
    print(f"trained {args.steps} steps in {minutes:.2f} min, last loss {np.mean(losses[-50:]):.4f}", flush=True)

    real = high["test"].images
    real_codes = stroke_codes(real)
    judge, _ = load_classifier(DATA / "classifier")
    ceiling = upsample(net, low["test"].images)
    out = {"upsampler": {**net.config, "parameters": sum(p.numel() for p in net.parameters()), "steps": args.steps,
                         "batch": args.batch, "lr": args.lr, "strength": args.strength, "train_minutes": round(minutes, 2),
                         "images_per_s": round(args.steps * args.batch / (minutes * 60), 1),
                         "final_loss": round(float(np.mean(losses[-50:])), 4)},
           "references_128": {
               "real_test": {"paper_darkness": paper_darkness(real)[0]},
               "real_with_half_blur": quality(degrade_real(real, "blur", torch.Generator().manual_seed(0)), real,
                                              real_codes),
               "real_64_upsampled_bilinear": quality(torch.nn.functional.interpolate(
                   low["test"].images, scale_factor=2, mode="bilinear", align_corners=False), real, real_codes),
               "real_64_upsampled_by_it": {**quality(ceiling, real, real_codes),
                                           "l1": round(float((ceiling - real).abs().mean() / 2), 4)},
           },
           "runs": {}}
    print(out, flush=True)
    shown = {}
    real64, real64_codes = low["test"].images, stroke_codes(low["test"].images)
    for name in [x for x in args.runs.split(",") if x]:
        base = _samples(RUNS / name / "samples.parquet")  # (1004,1,64,64), the held-out samples as saved (8-bit)
        final = upsample(net, base)
        base_pred, final_pred = predict(judge, base)[0], predict(judge, final)[0]
        import pandas as pd

        table = pd.read_parquet(RUNS / name / "samples.parquet", columns=["kind", "target_radical"])
        target = table[table.kind == "heldout"].target_radical.to_numpy()
        a, b = (base_pred == target).astype(float), (final_pred == target).astype(float)
        d = b - a
        out["runs"][name] = {"base_64": quality(base, real64, real64_codes), "cascade_128": quality(final, real, real_codes),
                             "adherence_base": round(a.mean(), 4), "adherence_cascade": round(b.mean(), 4),
                             "paired_difference": round(d.mean(), 4),
                             "paired_difference_se": round(d.std(ddof=1) / len(d) ** 0.5, 4)}
        print(name, out["runs"][name], flush=True)
        shown[name] = (base, final)
    if shown:
        image = ROOT / "docs" / f"upsampler_cascade{'_' + args.tag if args.tag else ''}.png"
        sheet(shown, image)
        out["image"] = str(image.relative_to(ROOT))
    write_result("upsampler" + (f"_{args.tag}" if args.tag else ""), out)


if __name__ == "__main__":
    main()
