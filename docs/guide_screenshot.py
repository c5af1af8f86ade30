"""Screenshot the visual guide as a person sees it: data/guide/index.html opened from the file system.

    python docs/guide_screenshot.py      # writes docs/guide.png (the top), docs/guide_trajectory.png (section 8) and
                                         # docs/guide_cascade.png (section 11, the cascade to 128 px)

Renders the whole page in headless Chromium (Debian: `apt-get install chromium fonts-noto-cjk`; without a
CJK font the characters in the text show as boxes) and cuts the README's two views out of it at the
section rules.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from mlflow_screenshot import find_chromium, screenshot
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "data" / "guide" / "index.html"
WIDTH, HEIGHT = 1100, 26000  # taller than the page: the screenshot is cut at its end
RULE = (200, 200, 201)  # the #c8c8c9 border above every section heading (a colour used nowhere else)


def section_rules(image: np.ndarray) -> list[int]:
    """Rows where a grey rule spans most of the text column: one per section, in order."""
    is_rule = (np.abs(image[:, :, :3].astype(int) - RULE).sum(axis=2) < 6).mean(axis=1) > 0.75
    rows = np.flatnonzero(is_rule)
    return [int(r) for i, r in enumerate(rows) if i == 0 or r > rows[i - 1] + 1]


def main() -> None:
    chromium = find_chromium()
    if not PAGE.is_file():
        sys.exit(f"{PAGE} is missing: run dvc repro first")
    with tempfile.TemporaryDirectory() as tmp:
        shot = Path(tmp) / "page.png"
        screenshot(chromium, PAGE.as_uri(), shot, f"{WIDTH},{HEIGHT}")
        page = np.asarray(Image.open(shot).convert("RGB"))
    rules = section_rules(page)
    if len(rules) < 11:
        sys.exit(f"found {len(rules)} section rules, expected 11: is {PAGE} the guide?")
    end = int(np.flatnonzero((page[:, :, :3] < 250).any(axis=(1, 2)))[-1]) + 24  # the page's last non-white row
    crops = {"guide.png": (0, min(rules[1], 1500)), "guide_trajectory.png": (rules[7], min(rules[8], rules[7] + 1900)),
             "guide_cascade.png": (rules[10], min(end, rules[10] + 2200))}
    for name, (top, bottom) in crops.items():
        Image.fromarray(page[top:bottom]).save(ROOT / "docs" / name, optimize=True)
        print(f"{PAGE} rows {top}-{bottom} -> docs/{name}")


if __name__ == "__main__":
    main()
