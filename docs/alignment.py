"""docs/alignment.png: what the align stage changed, from two saved study runs of the same trained model.

    python docs/alignment.py                                  # prior-s0 (before) and align-all-lr1e4 (after)
    python docs/alignment.py --before RUN --after RUN --out docs/alignment.png

Above: the evaluate stage's grid prompts at seeds 0-3, the model before alignment over the aligned one, the same
prompts, seeds and sampler (benchmarks/results/runs/<run>/samples.parquet, saved by `glyffuser compare --save`),
each glyph framed by the evaluate judge's verdict (green: the intended radical). samples.parquet is gitignored for
size, so this runs where the two runs were saved (a fresh clone has their metrics, verdicts and grid PNGs).
Below: the align stage's dev curve over the DPO epochs (align_curve.csv of the `after` run): the reward judge's
rate (what DPO was taught to please) beside the two independent judges' and the ink share (the complexity the
glyffuser's author saw fall).
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "results" / "runs"
SEEDS = 4
CELL = 64  # each glyph's side in the figure (the 128 px glyphs, halved)


def grid_rows(run: str) -> dict[tuple[str, int], tuple[bytes, bool]]:
    d = pd.read_parquet(RUNS / run / "samples.parquet",
                        columns=["kind", "prompt", "seed", "png", "target_radical", "predicted_radical"])
    d = d[(d.kind == "grid") & (d.seed < SEEDS)]
    return {(r.prompt, int(r.seed)): (r.png, r.predicted_radical == r.target_radical) for r in d.itertuples()}


def glyph_block(before: dict, after: dict, prompts: list[str], per_line: int = 4) -> Image.Image:
    """Per prompt a block: before (top row) and after (bottom row), seeds side by side; `per_line` blocks a line."""
    pad, label = 12, 22
    block_w, block_h = SEEDS * CELL + pad, label + 2 * CELL + pad
    lines = -(-len(prompts) // per_line)
    image = Image.new("RGB", (per_line * block_w, lines * block_h), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=15)
    for i, prompt in enumerate(prompts):
        x0, y0 = (i % per_line) * block_w, (i // per_line) * block_h
        draw.text((x0 + 2, y0 + 2), f"“{prompt}”", fill="black", font=font)
        for row, samples in enumerate((before, after)):
            for s in range(SEEDS):
                png, hit = samples[(prompt, s)]
                glyph = Image.open(io.BytesIO(png)).convert("RGB").resize((CELL - 4, CELL - 4), Image.Resampling.BOX)
                x, y = x0 + s * CELL, y0 + label + row * CELL
                draw.rectangle([x, y, x + CELL - 1, y + CELL - 1], outline=(40, 160, 80) if hit else (200, 50, 50), width=2)
                image.paste(glyph, (x + 2, y + 2))
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="prior-s0", help="study run of the unaligned model")
    parser.add_argument("--after", default="align-all-lr1e4", help="study run of the same model after the align stage")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "alignment.png")
    args = parser.parse_args()

    before, after = grid_rows(args.before), grid_rows(args.after)
    prompts = list(dict.fromkeys(p for p, _ in before))  # the evaluate stage's grid order
    block = glyph_block(before, after, prompts)
    curve = pd.read_csv(RUNS / args.after / "align_curve.csv")

    fig = plt.figure(figsize=(12, 8), dpi=100)
    top = fig.add_axes([0.01, 0.45, 0.98, 0.5])
    top.imshow(block)
    top.set_axis_off()
    top.set_title(f"grid prompts, seeds 0–{SEEDS - 1}: upper row {args.before} (before), lower row {args.after} "
                  "(after)\nframed green where the evaluate judge reads the intended radical", fontsize=11)
    left = fig.add_axes([0.08, 0.08, 0.36, 0.29])
    for column, name in [("dev_reward_judge", "reward judge (trained on)"), ("dev_judge", "evaluate judge"),
                         ("dev_second_judge", "second judge")]:
        left.plot(curve.epoch, 100 * curve[column], marker="o", label=name)
    left.set_xlabel("DPO epoch")
    left.set_ylabel("dev definitions drawn\nwith their radical (%)")
    left.legend(fontsize=8)
    dev = json.loads((RUNS / args.after / "align_report.json").read_text())["dev_definitions"]
    se = 100 * (0.4 * 0.6 / dev) ** 0.5  # a rate near 40 % read on `dev` drafts
    left.set_title(f"dev curve: {dev} unpaired training definitions, one draft each (± {se:.0f} points)", fontsize=9)
    right = fig.add_axes([0.56, 0.08, 0.36, 0.29])
    right.plot(curve.epoch, curve.reward_margin, marker="o", color="tab:purple", label="reward margin (train pairs)")
    right.set_xlabel("DPO epoch")
    right.set_ylabel("implicit reward margin", color="tab:purple")
    ink = right.twinx()
    ink.plot(curve.epoch, 100 * curve.dev_ink_share, marker="s", color="black", label="ink share (dev)")
    ink.set_ylabel("ink share of the dev drafts (%)")
    right.legend(loc="upper left", fontsize=8)
    ink.legend(loc="lower right", fontsize=8)
    right.set_title("the margin on the train pairs keeps rising; the judges do not follow", fontsize=9)
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
