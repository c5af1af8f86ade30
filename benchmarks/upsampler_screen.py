"""Quick screen of the upsampler's training settings (issue 32), on the evaluate stage's own drafts.

    python benchmarks/upsampler_screen.py --lr 0.004 --seed 1
    python benchmarks/upsampler_screen.py --loss l2          # or mix: half L1, half (scaled) L2

Defaults: params.yaml's upsampler group. Trains one upsampler with the stage's code (glyffuser.diffusion.upsampler.train_upsampler; --loss l2/mix hands it
another loss) on the render tables' train split, upsamples the 1,004 held-out drafts
stored in data/evaluate/samples.parquet (base_png) and the real 64 px test glyphs, and prints one JSON line:
the stroke fidelity of each at 128 px against the real 128 px test glyphs, and their share of grey pixels.
About 2-3 min a run on 2 cores. The lines of the 2026-12-06 screen are in
benchmarks/results/upsampler_screen-cpu2.jsonl; benchmarks/upsampler.py measures a chosen setting in full.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from glyffuser.analysis.fidelity import jensen_shannon, stroke_codes
from glyffuser.artifacts.glyph_tables import load_glyph_splits
from glyffuser.artifacts.images import pngs_to_tensor
from glyffuser.diffusion import upsampler as U
from glyffuser.params import load_params

TABLES = Path("data/render/definitions.parquet"), Path("data/render/glyphs.parquet")


def loss_of(kind: str, mix: float):
    """None (the stage's L1), L2 (kind l2), or mix·L1 + (1 − mix)·4·L2 (kind mix), of the error (B,1,2r,2r)."""
    if kind == "l2":
        return lambda d: d.pow(2).mean()
    if kind == "mix":
        return lambda d: mix * d.abs().mean() + (1 - mix) * d.pow(2).mean() * 4
    return None


def main() -> None:
    u = load_params().upsampler  # the stage's settings are the defaults; each option overrides one
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loss", choices=["l1", "l2", "mix"], default="l1")
    ap.add_argument("--mix", type=float, default=0.5, help="--loss mix: the L1 share")
    ap.add_argument("--width", type=int, default=u.width)
    ap.add_argument("--depth", type=int, default=u.depth)
    ap.add_argument("--steps", type=int, default=u.steps)
    ap.add_argument("--block-p", type=float, default=u.block_jitter, help="upsampler.block_jitter")
    ap.add_argument("--lr", type=float, default=u.lr)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=u.batch_size)
    a = ap.parse_args()
    torch.set_num_threads(2)
    lo, hi = load_glyph_splits(*TABLES, 64), load_glyph_splits(*TABLES, 128)
    real, real64 = hi["test"].images, lo["test"].images  # (1004,1,128,128), (1004,1,64,64)
    table = pd.read_parquet("data/evaluate/samples.parquet")
    drafts = pngs_to_tensor(list(table[table.kind == "heldout"].base_png), 64)  # (1004,1,64,64)
    real_codes = stroke_codes(real).sum(0)
    torch.manual_seed(a.seed)  # the initial weights, as the stage seeds them
    net = U.Upsampler(a.width, a.depth)
    t = time.perf_counter()
    losses = U.train_upsampler(lo["train"].images, hi["train"].images, net, a.steps, a.batch, a.lr, seed=a.seed,
                               strength=u.degradation, block=u.block, block_p=a.block_p, loss_of=loss_of(a.loss, a.mix))
    out = {"minutes": round((time.perf_counter() - t) / 60, 2), "loss_end": round(float(np.mean(losses[-50:])), 4)}
    for name, x in (("drafts", drafts), ("real64", real64)):
        y = U.upsample(net, x)
        out[name] = round(jensen_shannon(real_codes, stroke_codes(y).sum(0)), 5)
        out[name + "_grey"] = round(((y > -0.6) & (y < 0.6)).float().mean().item(), 4)
    out["real_grey"] = round(((real > -0.6) & (real < 0.6)).float().mean().item(), 4)
    print(json.dumps({**vars(a), **out}))


if __name__ == "__main__":
    main()
