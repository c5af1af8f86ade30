"""What alignment costs besides adherence (issue 44): complexity and variety, paired, from study runs' kept samples.

    python benchmarks/alignment.py prior-s0 align-b2000 align-all-lr1e4 --out benchmarks/results/alignment-cpu2.json

The first run is the baseline (the unaligned default). For each later run, on the very samples the evaluate stage
judged (benchmarks/results/runs/NAME/samples.parquet, same prompts and seeds in every run):
- complexity: the ink share of each held-out glyph at 128 px (the glyffuser author's over-optimised glyphs lost
  strokes, so ink), paired per (character, seed): mean, paired difference ± standard error, and the ratio;
- variety between seeds: for each grid prompt (8 seeds) and the seed-sweep prompt (16 seeds), the mean RMS distance
  between two of its seeds' glyphs (0..1 ink scale), and the ratio of the means over prompts;
- the align stage's own report and curve, when the run's folder holds them (align_report.json, align_curve.csv: copied
  from the experiment by `--from-exp`).
Adherence, KID/FID, realism and novelty are `glyffuser compare`'s (same runs).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
from itertools import combinations
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

RUNS = Path("benchmarks/results/runs")


def ink(png: bytes) -> np.ndarray:
    """A glyph as ink in 0..1 (1 = black)."""
    return 1.0 - np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32) / 255.0


def samples(run: str) -> dict[str, list]:
    path = RUNS / run / "samples.parquet"
    if not path.is_file():
        raise SystemExit(f"alignment: {path} is missing (study runs keep their samples locally): save the run again")
    return pq.read_table(path, columns=["kind", "prompt", "target_codepoint", "seed", "png"]).to_pydict()


def ink_shares(t: dict) -> dict[tuple, float]:
    return {(cp, s): float((ink(png) > 0.5).mean()) for k, cp, s, png in
            zip(t["kind"], t["target_codepoint"], t["seed"], t["png"]) if k == "heldout"}


def variety(t: dict) -> dict[str, float]:
    """Per grid/sweep prompt: the mean RMS distance between two of its seeds' glyphs."""
    by_prompt: dict[str, list[np.ndarray]] = {}
    for k, prompt, png in zip(t["kind"], t["prompt"], t["png"]):
        if k in ("grid", "sweep"):
            by_prompt.setdefault(f"{k}: {prompt}", []).append(ink(png))
    return {p: float(np.mean([np.sqrt(((a - b) ** 2).mean()) for a, b in combinations(g, 2)]))
            for p, g in by_prompt.items()}


def from_exp(run: str, exp: str) -> None:
    """Copy the align stage's report and curve out of the `dvc exp run` named `exp` into the study run's folder."""
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], capture_output=True, text=True,
                          check=True).stdout.split()
    ref = next((r for r in refs if r.rsplit("/", 1)[-1] == exp), None)
    if ref is None:
        raise SystemExit(f"alignment: no experiment named {exp!r} (dvc exp list)")
    for src, dst in (("data/align/report.json", "align_report.json"), ("data/align/curve.csv", "align_curve.csv")):
        text = subprocess.run(["git", "show", f"{ref}:{src}"], capture_output=True, text=True, check=True).stdout
        (RUNS / run / dst).write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="study run names; the first is the baseline")
    ap.add_argument("--from-exp", action="store_true", help="first copy each later run's align report and curve from "
                                                            "the dvc experiment of the same name")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    base = samples(args.runs[0])
    base_ink, base_var = ink_shares(base), variety(base)
    result = {"baseline": args.runs[0], "runs": {}}
    for run in args.runs[1:]:
        if args.from_exp:
            from_exp(run, run)
        t = samples(run)
        shares, var = ink_shares(t), variety(t)
        keys = sorted(set(base_ink) & set(shares))
        d = np.array([shares[k] - base_ink[k] for k in keys])
        a, b = np.mean([base_ink[k] for k in keys]), np.mean([shares[k] for k in keys])
        row = {"ink_share": {"n": len(keys), "a": round(float(a), 4), "b": round(float(b), 4),
                             "difference": round(float(d.mean()), 4), "se": round(float(d.std(ddof=1) / np.sqrt(len(d))), 4),
                             "ratio": round(float(b / a), 4)},
               "variety": {"a": round(float(np.mean(list(base_var.values()))), 4),
                           "b": round(float(np.mean([var[p] for p in base_var])), 4),
                           "ratio": round(float(np.mean([var[p] for p in base_var]) / np.mean(list(base_var.values()))), 4),
                           "per_prompt_ratio": {p: round(var[p] / base_var[p], 3) for p in base_var}}}
        folder = RUNS / run
        if (folder / "align_report.json").is_file():
            row["align_report"] = json.loads((folder / "align_report.json").read_text())
            with (folder / "align_curve.csv").open() as f:
                row["align_curve"] = list(csv.DictReader(f))
        result["runs"][run] = row
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
