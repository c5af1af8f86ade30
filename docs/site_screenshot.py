"""Look at the docs site as a person does: build it (MkDocs, strict) and screenshot every page in headless Chromium.

    python docs/site_screenshot.py                 # writes site-shots/<page>.png, one per page of mkdocs.yml's nav
    python docs/site_screenshot.py --out DIR --height 2400

The pages are opened from the file system (file://), as built; Chromium and a CJK font come from Debian
(`apt-get install chromium fonts-noto-cjk`). The screenshots are for looking at, not for the repository.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from mlflow_screenshot import find_chromium, screenshot

ROOT = Path(__file__).resolve().parents[1]


def pages() -> list[str]:
    """The nav's Markdown files, in order (mkdocs.yml: a list of {title: file})."""
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    return [next(iter(entry.values())) for entry in nav]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "site-shots")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1800, help="pixels of each page shown from its top")
    args = parser.parse_args()
    chromium = find_chromium()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as site:
        built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", site],
                               cwd=ROOT, capture_output=True, text=True)
        if built.returncode:
            sys.exit(f"mkdocs build --strict failed:\n{built.stderr}")
        for page in pages():
            name = Path(page).stem
            html = Path(site) / ("index.html" if name == "index" else f"{name}/index.html")
            screenshot(chromium, html.as_uri(), args.out / f"{name}.png", f"{args.width},{args.height}")


if __name__ == "__main__":
    main()
