"""Regenerate the README's images in docs/ from the pipeline's outputs in data/ (run after dvc repro).

    python docs/update_images.py

Every image the README shows comes from data/ through this table, never by hand; the MLflow
screenshots come from docs/mlflow_screenshot.py, the guide's from docs/guide_screenshot.py and the
playground's from docs/demo_screenshot.py.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DOCS, DATA = ROOT / "docs", ROOT / "data"

COPIES = {
    "cpu_grid.png": "sample/grid.png",
    "evaluate_grid.png": "evaluate/grid.png",
    "cascade.png": "evaluate/cascade.png",
    "novelty.png": "evaluate/novelty.png",
    "umap_layouts.png": "umap/umap_layouts.png",
    "umap_samples.png": "umap/umap_samples.png",
    "score.png": "figures/score.png",
    "trajectory_curve.png": "figures/trajectory_curve.png",
    "guidance_curve.png": "figures/guidance_curve.png",
    "umap_prompts.png": "umap/umap_prompts.png",
}
PREVIEW_ROWS_PX = 370  # docs/glyphs.png: the first two rows of the render stage's preview


def main() -> None:
    missing = [src for src in [*COPIES.values(), "render/preview.png"] if not (DATA / src).is_file()]
    if missing:
        sys.exit(f"data/{missing[0]} is missing: run dvc repro first")
    for name, src in COPIES.items():
        shutil.copyfile(DATA / src, DOCS / name)
        print(f"data/{src} -> docs/{name}")
    preview = Image.open(DATA / "render" / "preview.png")
    preview.crop((0, 0, preview.width, PREVIEW_ROWS_PX)).save(DOCS / "glyphs.png", optimize=True)
    print("data/render/preview.png (top rows) -> docs/glyphs.png")


if __name__ == "__main__":
    main()
