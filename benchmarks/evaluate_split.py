"""Issue 43's split of evaluate into draw + evaluate: are the samples the same, and what does judging the saved 8-bit
glyphs (instead of the float tensors the old one-stage evaluate judged) change?

    # the old one-stage evaluate, from a worktree of the commit before the split, on this checkout's data/:
    git worktree add /tmp/oldtree 4a1e0c2^   # or any commit before the split
    python -c "import sys; sys.path.insert(0, '/tmp/oldtree/src'); from glyffuser.stages.evaluate import main; \
        sys.exit(main(['--no-mlflow', '--params', '/tmp/oldtree/params.yaml', '--out', '/tmp/old_eval']))"
    dvc repro evaluate                       # the new draw and evaluate stages
    python benchmarks/evaluate_split.py --old /tmp/old_eval     # writes benchmarks/results/evaluate_split-cpu2.json

Compares, per kind of sample, the PNG bytes of the final glyphs and drafts (same model, sampler and seeds: they
should be identical), the judge's verdicts (a flip is a sample whose radical the judge reads differently from the
8-bit glyph than from the float tensor) and every number of metrics.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from common import write_result

ROOT = Path(__file__).resolve().parents[1]
KEY = ["kind", "target_codepoint", "seed", "prompt"]


def compare(old: Path, draws: Path, evaluate: Path) -> dict:
    a = pd.read_parquet(old / "samples.parquet")
    b = pd.read_parquet(evaluate / "samples.parquet")
    drawn = pd.read_parquet(draws, columns=[*KEY, "png", "base_png"])
    merged = a.merge(b, on=KEY, suffixes=("_old", "_new"))
    kinds = {}
    for kind, rows in merged.groupby("kind"):
        flips = rows.predicted_radical_old != rows.predicted_radical_new
        hit_old = rows.predicted_radical_old == rows.target_radical_old
        hit_new = rows.predicted_radical_new == rows.target_radical_new
        kinds[kind] = {"samples": len(rows), "png_identical": int((rows.png_old == rows.png_new).sum()),
                       "draft_png_identical": int((rows.base_png_old == rows.base_png_new).sum()),
                       "verdict_flips": int(flips.sum()), "hits_old": int(hit_old.sum()), "hits_new": int(hit_new.sum())}
    m_old = json.loads((old / "metrics.json").read_text())
    m_new = json.loads((evaluate / "metrics.json").read_text())
    numbers = {k: {"old": m_old[k], "new": m_new[k], "difference": m_new[k] - m_old[k]}
               for k in m_old if isinstance(m_old[k], (int, float)) and isinstance(m_new.get(k), (int, float))
               and m_old[k] != m_new[k]}
    return {"kinds": kinds, "rows_old": len(a), "rows_new": len(b), "rows_drawn": len(drawn),
            "new_kinds": sorted(set(b.kind) - set(a.kind)), "metrics_that_differ": numbers,
            "metrics_identical": sum(1 for k in m_old if m_new.get(k) == m_old[k])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", type=Path, required=True, help="the old one-stage evaluate's output folder")
    p.add_argument("--draws", type=Path, default=ROOT / "data/draw/samples.parquet")
    p.add_argument("--evaluate", type=Path, default=ROOT / "data/evaluate")
    args = p.parse_args()
    result = compare(args.old, args.draws, args.evaluate)
    print(json.dumps(result, indent=2))
    write_result("evaluate_split", result)


if __name__ == "__main__":
    main()
