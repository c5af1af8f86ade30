"""Is the realism measure valid? (glyffuser.analysis.realism, a classifier two-sample test)

    python benchmarks/realism.py                 # ~3 min on 2 cores: 3 seeds on data/ of the last `dvc repro`
    python benchmarks/realism.py --samples benchmarks/results/runs/NAME/samples.parquet   # another run's samples too

Against the real test glyphs at the evaluate stage's output side, per seed (another draw of real train glyphs and
of the degradations, another split of the folds): real train glyphs should score ~50 %; lightly degraded real
glyphs (glyffuser.analysis.fidelity.degrade: a tenth of a pixel of smooth jitter, three specks, half a 3×3 blur)
above them; the held-out samples of data/evaluate/samples.parquet (and of each --samples) above those.
Writes benchmarks/results/realism_validity-<device>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, write_result

from glyffuser.studies import sample_images

DATA = ROOT / "data"


def main() -> None:
    from glyffuser.analysis.fidelity import DEGRADATIONS, degrade
    from glyffuser.analysis.realism import two_sample_accuracy
    from glyffuser.artifacts.glyph_tables import load_glyph_splits

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--samples", action="append", default=[], type=Path)
    args = p.parse_args()
    samples = {"data/evaluate": sample_images(DATA / "evaluate" / "samples.parquet")}
    samples.update({str(s.parent.name): sample_images(s) for s in args.samples})
    side = samples["data/evaluate"].shape[-1]
    splits = load_glyph_splits(DATA / "render" / "definitions.parquet", DATA / "render" / "glyphs.parquet", side)
    test, train = splits["test"].images, splits["train"].images
    rows = []
    for seed in range(args.seeds):
        gen = torch.Generator().manual_seed(seed)
        other = train[torch.randperm(len(train), generator=gen)[:len(test)]]
        row = {"seed": seed, "real": two_sample_accuracy(test, other, seed=seed)[0]}
        for kind in DEGRADATIONS:
            row[kind] = two_sample_accuracy(test, degrade(other, kind, gen), seed=seed)[0]
        for name, x in samples.items():
            row[f"samples: {name}"], row[f"samples: {name} se"] = two_sample_accuracy(test, x, seed=seed)
        row["ranked_as_expected"] = bool(row["real"] < min(row[k] for k in DEGRADATIONS) and all(
            max(row[k] for k in DEGRADATIONS) < row[f"samples: {n}"] for n in samples))
        rows.append(row)
        print(json.dumps(row), flush=True)
    write_result("realism_validity", {"reference": f"{len(test)} real test glyphs at {side} px",
                                      "other_real": f"{len(test)} train glyphs", "degradations": list(DEGRADATIONS),
                                      "rows": rows})


if __name__ == "__main__":
    main()
