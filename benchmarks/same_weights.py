"""Does a code change leave training's weights alone? Train a few steps on the real data (data/render,
data/embed) with an older commit's code and with this checkout's, and compare the weights byte for byte.

    python benchmarks/same_weights.py --old HEAD~1                     # the default params.yaml, 24 steps
    python benchmarks/same_weights.py --old 229e760 -S train.film=true -S train.min_snr_gamma=0

This is the evidence behind `dvc commit train` for a change that cannot alter the train stage's outputs
(DEVELOPERS.md): same md5 before and after, or a retrain. The model is the params' own UNet shrunk to a
tiny width (the code paths stay those of the params: weighting, FiLM, caption augmentation, ...), so a
run takes well under a minute per side on 2 cores. Both sides read this checkout's params.yaml; a key the older
code does not know is dropped on its side (safe for the proof: if the key's value changes what the new code trains,
the two md5s differ).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run inside one side's checkout (its src/ first on sys.path): a short training, prints the weights' md5.
TRAIN_SNIPPET = r"""
import hashlib, json, sys, tempfile
from pathlib import Path
sys.path.insert(0, sys.argv[1] + "/src")
import yaml
from glyffuser.params import Params, parse_params, with_overrides
try:
    from glyffuser.stages.train import TrainPaths, run_train
except ImportError:  # before the stages/ package (issue 21)
    from glyffuser.train import TrainPaths, run_train
data, overrides = Path(sys.argv[2]), json.loads(sys.argv[3])
raw = yaml.safe_load(Path(sys.argv[4]).read_text())
for group in [g for g in raw if g not in Params.model_fields]:  # a group the older code does not know yet
    del raw[group]
for group, values in raw.items():  # a key the older code does not know yet: drop it (if its value changes what
    known = Params.model_fields[group].annotation.model_fields  # the new code trains, the two md5s differ)
    raw[group] = {k: v for k, v in values.items() if k in known}
params = with_overrides(parse_params(raw, Path(sys.argv[4])), overrides)
out = Path(tempfile.mkdtemp())
paths = TrainPaths(data / "render/definitions.parquet", data / "render/glyphs.parquet", data / "embed/embeddings.parquet",
                   out / "model", out / "metrics.json", out / "loss.csv", out / "checkpoints")
steps = run_train(params, paths, track=False)["steps"]
md5 = hashlib.md5((out / "model/unet/diffusion_pytorch_model.safetensors").read_bytes()).hexdigest()
print(json.dumps({"steps": steps, "md5": md5, "code": __import__("glyffuser").__file__}))
"""

# A tiny UNet and a few steps of 16 images; everything else comes from params.yaml and -S.
TINY = {"train.resolution": 16, "train.patch_size": 1, "train.schedule_base_resolution": 16,
        "train.block_channels": [16, 32], "train.layers_per_block": 1, "train.attention_levels": [False, True],
        "train.attention_head_dim": 8, "train.batch_size": 16, "train.lr_warmup_steps": 2, "train.log_every": 5,
        "train.eval_every": 0, "train.checkpoint_every": 1000, "train.val_images": 32}


def parse_set(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key] = yaml.safe_load(value)
    return out


def train_with(checkout: Path, overrides: dict) -> dict:
    cmd = [sys.executable, "-c", TRAIN_SNIPPET, str(checkout), str(ROOT / "data"), json.dumps(overrides),
           str(ROOT / "params.yaml")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"training with {checkout} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="the git commit whose code trains the 'before' side")
    parser.add_argument("--steps", type=int, default=24, help="optimizer steps of 16 images (default 24)")
    parser.add_argument("-S", dest="sets", action="append", default=[], help="train.key=value on both sides")
    args = parser.parse_args()
    if not (ROOT / "data/embed/embeddings.parquet").is_file():
        sys.exit("data/embed/embeddings.parquet is missing: run dvc repro embed first")
    rows = json.loads((ROOT / "data/render/report.json").read_text())["splits"]["train"]
    overrides = {**TINY, "train.epochs": (args.steps - 0.5) / -(-rows // 16), **parse_set(args.sets)}  # run_train takes epochs
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(old), args.old], check=True)
        try:
            before = train_with(old, overrides)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=True)
    after = train_with(ROOT, overrides)
    same = before["md5"] == after["md5"]
    print(json.dumps({"old": args.old, "overrides": parse_set(args.sets), "before": before, "after": after,
                      "bit_identical": same}, indent=1))
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
