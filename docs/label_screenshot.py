"""Screenshot the labelling page (`glyffuser label`) as a person sees it, on the pipeline's model.

    python docs/label_screenshot.py      # writes docs/label.png; answers nothing (a throwaway feedback table)

Starts the page's server in this process on a free port of 127.0.0.1, waits until the first pair is drawn, and
opens the page in headless Chromium (Debian: `apt-get install chromium fonts-noto-cjk`).
"""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path

from mlflow_screenshot import find_chromium, screenshot

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from glyffuser.diffusion.pipeline import choose_upsampler
    from glyffuser.label import Labeller, serve
    from glyffuser.params import load_params

    chromium = find_chromium()
    model = ROOT / "data" / "model"
    if not model.is_dir():
        sys.exit(f"{model} is missing: run dvc repro first")
    with tempfile.TemporaryDirectory() as tmp:
        labeller = Labeller(load_params(ROOT / "params.yaml"), model, ROOT / "data/render/definitions.parquet",
                            Path(tmp) / "feedback.sqlite", "screenshot", choose_upsampler(model, None, False), seed=3)
        while labeller.ready.qsize() < 2:  # the page's first pair is ready before it is opened
            threading.Event().wait(0.2)
        server = serve(labeller, 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            screenshot(chromium, f"http://127.0.0.1:{server.server_address[1]}/", ROOT / "docs" / "label.png", "820,560")
        finally:
            server.shutdown()
            labeller.close()


if __name__ == "__main__":
    main()
