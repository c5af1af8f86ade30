"""docs/tail_prompts.png: the long tail by eye. Prompts whose radical is rare in training, drawn by one or more models
with the same seeds, each glyph framed by the judge's verdict (green: the intended radical, red: not).

    python docs/tail_prompts.py                                   # data/model (+ data/upsampler), after dvc repro
    python docs/tail_prompts.py --models data/model,OTHER_MODEL   # side by side: one block of rows per model

Seeds 0..7 per prompt, the sample stage's steps, guidance and scheduler (params.yaml), the classifier stage's judge.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# prompt -> the Kangxi radical it should draw (number, the radical as an ideograph): four rare in training (the tail),
# two common ones for comparison
PROMPTS = {"a kind of rat": (208, "鼠"), "teeth": (211, "齒"), "a ghost": (194, "鬼"), "a drum": (207, "鼓"),
           "a kind of fish": (195, "魚"), "gold; metal": (167, "金")}
SEEDS = 8


def main() -> None:
    from glyffuser.analysis.judge import load_classifier, predict
    from glyffuser.artifacts.images import tensor_to_images
    from glyffuser.diffusion.pipeline import GlyffuserPipeline, choose_upsampler
    from glyffuser.params import load_params
    from glyffuser.stages.evaluate import framed_grid

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="data/model", help="comma-separated model folders")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "tail_prompts.png")
    args = p.parse_args()
    s = load_params(ROOT / "params.yaml").sample
    net, _ = load_classifier(ROOT / "data" / "classifier")
    images, labels, hits = [], [], []
    for model in args.models.split(","):
        pipe = GlyffuserPipeline.from_pretrained(model, bf16=s.autocast(),
                                                 upsampler=choose_upsampler(Path(model), None, False) or False)
        for prompt, (radical, _glyph) in PROMPTS.items():
            glyphs = pipe([prompt], num_images=SEEDS, steps=s.steps, guidance=s.guidance, scheduler=s.scheduler)
            x = torch.stack([torch.from_numpy(np.asarray(g, dtype=np.float32) / 127.5 - 1)[None] for g in glyphs])
            verdict = predict(net, x)[0] == radical
            images += tensor_to_images(x)
            hits += list(verdict)
            labels.append(f"{prompt} (radical {radical}): {verdict.sum()}/{SEEDS}"
                          + (f" [{Path(model).name}]" if "," in args.models else ""))
    framed_grid(images, SEEDS, labels, hits).save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
