"""64 px glyphs on 2 cores: approaches compared at equal training minutes, judged the same way.

    python benchmarks/resolution.py                 # 3 variants x 8 training minutes, ~40 min on 2 cores
    python benchmarks/resolution.py --minutes 4 --only patch2-shift,cascade
    python benchmarks/resolution.py --judge DIR     # data/model judged by another classifier (e.g. 32 px)

Variants (all from params.yaml, same UNet widths, data, seed, optimizer; only the design differs):
- patch2-shift:   patchified pixel diffusion (Hoogeboom et al. 2023): 64 px glyphs folded into 2x2
                  patches, the UNet runs at 32x32; the schedule's log-SNR shifted by 2·log(32/64).
- patch2-noshift: the same without the shift (the 32 px schedule as is).
- cascade:        the 32 px model, then a super-resolution CNN 32 -> 64 px trained on real glyph pairs
                  (Ho et al. 2022's cascade, with a regression upsampler instead of a second diffusion
                  model); training minutes are split between the two.
Each trains through the real `glyffuser train` CLI for the same minutes (epochs set from the train
stage's own step speed, timed first) and is judged by the evaluate stage (run_evaluate) with the
64 px classifier of the pipeline (data/classifier, after `dvc repro classifier`): grid and held-out
adherence, the "gold; metal" seed sweep, sharpness (two-tone pixel share) against real glyphs, KID/FID.

Writes benchmarks/results/resolution-cpu<N>.json and docs/resolution_compare.png (each variant's
evaluate grid: the same prompts and seeds).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, write_result  # noqa: E402
from cpu import DATA, _train, run_evaluate_on_data  # noqa: E402

from glyffuser.params import load_params, with_overrides  # noqa: E402

VARIANTS = {
    "patch2-shift": {"train.resolution": 64, "train.patch_size": 2, "train.schedule_base_resolution": 32},
    "patch2-noshift": {"train.resolution": 64, "train.patch_size": 2, "train.schedule_base_resolution": 64},
    "cascade": {"train.resolution": 32, "train.patch_size": 1, "train.schedule_base_resolution": 32},
}
SR_SHARE = 0.2  # share of the cascade's minutes spent on its super-resolution net


def step_speed(params, steps: int = 12) -> float:
    """img/s of the train stage's own step (TrainStep) for these params, on real-sized random batches."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from glyffuser.diffusion.training import build_training

    p = params.train
    AcceleratorState._reset_state(True)
    trainer = build_training(p, 0, 384, Accelerator(cpu=True), total_steps=1000)
    gen = torch.Generator().manual_seed(0)
    shape = (p.batch_size, 1, p.resolution, p.resolution)
    x0, noise = torch.rand(shape, generator=gen) * 2 - 1, torch.randn(shape, generator=gen)
    if trainer.speed.channels_last:
        x0, noise = x0.contiguous(memory_format=torch.channels_last), noise.contiguous(memory_format=torch.channels_last)
    text, mask = torch.randn(p.batch_size, 16, 384), torch.ones(p.batch_size, 16, dtype=torch.bool)
    for i in range(steps + 2):
        if i == 2:  # two warm-up steps
            start = time.perf_counter()
        t = torch.randint(0, 1000, (p.batch_size,), generator=gen)
        trainer(x0, noise, t, text, mask)
    AcceleratorState._reset_state(True)
    return steps * p.batch_size / (time.perf_counter() - start)


class Upsampler(nn.Module):
    """32 -> 64 px: bilinear upsampling plus a learned residual (6 convs at 64 px, 32 channels)."""

    def __init__(self, width: int = 32, depth: int = 6):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, width, 3, padding=1), nn.SiLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.SiLU()]
        layers.append(nn.Conv2d(width, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, low: torch.Tensor) -> torch.Tensor:  # (B,1,32,32) -> (B,1,64,64), both in [-1,1]
        up = F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False)
        return (up + self.net(up)).clamp(-1, 1)


def train_upsampler(minutes: float, seed: int) -> tuple[Upsampler, dict]:
    """L1 regression from real 32 px glyphs to the same glyphs at 64 px (train split), for `minutes`."""
    from glyffuser.artifacts.glyph_tables import load_glyph_splits

    splits = load_glyph_splits(DATA / "render" / "definitions.parquet", DATA / "render" / "glyphs.parquet", 64)
    high = splits["train"].images  # (N,1,64,64)
    low = F.avg_pool2d(high, 2)  # box downsampling, as the 32 px training images are made
    torch.manual_seed(seed)
    net = Upsampler()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < minutes * 60:
        idx = torch.randint(0, len(high), (64,), generator=gen)
        loss = (net(low[idx]) - high[idx]).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
    test = splits["test"].images
    with torch.no_grad():
        test_l1 = float((net.eval()(F.avg_pool2d(test, 2)) - test).abs().mean() / 2)  # on a 0..1 ink scale
        bilinear_l1 = float((F.interpolate(F.avg_pool2d(test, 2), scale_factor=2, mode="bilinear") - test).abs().mean() / 2)
    return net, {"steps": steps, "batch": 64, "minutes": round((time.perf_counter() - start) / 60, 2),
                 "test_l1": round(test_l1, 4), "bilinear_test_l1": round(bilinear_l1, 4)}


def cascade_pipeline(model: Path, upsampler: Upsampler):
    """The 32 px pipeline with the upsampler applied to every sample: what run_evaluate judges."""
    from glyffuser.diffusion.pipeline import GlyffuserPipeline

    class Cascade(GlyffuserPipeline):
        @property
        def resolution(self) -> int:
            return 64

        def sample(self, *args, **kwargs) -> torch.Tensor:
            low = super().sample(*args, **kwargs)
            with torch.no_grad():
                return upsampler(low)

    base = GlyffuserPipeline.from_pretrained(model, device="cpu")
    return Cascade(base.unet, base.scheduler_config, base.info, base.bf16)


def evaluate(params, model: Path, out: Path, pipe=None, classifier: Path = DATA / "classifier") -> dict:
    m = run_evaluate_on_data(params, out, model, classifier, pipe)
    keep = ("adherence_grid", "adherence_grid_se", "adherence_heldout", "adherence_heldout_se", "control_empty_prompt",
            "control_shuffled", "chance", "seed_sweep_hits", "seed_sweep_seeds", "sharpness", "sharpness_real",
            "sharpness_ratio", "kid", "kid_real_floor", "fid", "fid_real_floor", "novelty", "sampling_minutes")
    return {k: round(m[k], 4) if isinstance(m[k], float) else m[k] for k in keep}


def side_by_side(grids: dict[str, Path], path: Path) -> None:
    from PIL import Image, ImageDraw

    images = {name: Image.open(p).convert("RGB") for name, p in grids.items()}
    w = max(im.width for im in images.values())
    h = max(im.height for im in images.values())
    sheet = Image.new("RGB", (w * len(images), h + 24), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (name, im) in enumerate(images.items()):
        sheet.paste(im, (k * w, 24))
        draw.text((k * w + 8, 6), name, fill="black")
    sheet.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=8.0, help="training minutes per variant")
    parser.add_argument("--only", default=",".join(VARIANTS), help="comma-separated variants")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--heldout", type=int, default=100, help="held-out characters per evaluation (2 samples each)")
    parser.add_argument("--judge", type=Path, help="only evaluate data/model with the classifier in this folder "
                        "(e.g. a 32 px one from the DVC cache: the 64 px model judged as the 32 px default was)")
    args = parser.parse_args()
    if args.judge:
        params = load_params(args.params)
        report = json.loads((args.judge / "report.json").read_text())
        with tempfile.TemporaryDirectory() as tmp:
            row = evaluate(params, DATA / "model", Path(tmp), classifier=args.judge)
        write_result(f"resolution_judge{report['resolution']}", {"model": "data/model", "judge": str(args.judge),
                                                               "judge_resolution": report["resolution"],
                                                               "guidance": params.sample.guidance, **row})
        return
    base = with_overrides(load_params(args.params), {"train.snapshot_every": 0, "train.eval_every": 0,
                                                     "evaluate.heldout_characters": args.heldout})
    n_train = json.loads((DATA / "render" / "report.json").read_text())["splits"]["train"]
    runs, grids = {}, {}
    out_dir = Path(tempfile.mkdtemp(prefix="resolution-"))
    for name in args.only.split(","):
        params = with_overrides(base, VARIANTS[name])
        train_minutes = args.minutes * (1 - SR_SHARE if name == "cascade" else 1)
        speed = step_speed(params)
        epochs = round(train_minutes * 60 * speed / n_train, 3)
        params = with_overrides(params, {"train.epochs": epochs})
        print(f"{name}: step {speed:.1f} img/s -> {epochs} epochs for {train_minutes:.1f} min", flush=True)
        folder = out_dir / name
        folder.mkdir()
        trained = _train(params, folder)
        row = {"overrides": VARIANTS[name], "epochs": epochs, "step_img_per_s": round(speed, 1),
               "train_minutes": trained["wall_time_min"], "val_loss": trained["val_loss"]}
        pipe = None
        if name == "cascade":
            upsampler, sr = train_upsampler(args.minutes * SR_SHARE, params.base.seed)
            row["upsampler"] = sr
            row["train_minutes"] = round(row["train_minutes"] + sr["minutes"], 2)
            pipe = cascade_pipeline(folder / "model", upsampler)
        row.update(evaluate(params, folder / "model", folder / "evaluate", pipe))
        runs[name] = row
        grids[f"{name}: {row['train_minutes']:.1f} training min, KID {row['kid']:.3f}, "
              f"sharpness {row['sharpness_ratio']:.0%} of real"] = folder / "evaluate" / "grid.png"
        print(name, row, flush=True)
    image = ROOT / "docs" / "resolution_compare.png"
    side_by_side(grids, image)
    write_result("resolution", {"minutes_per_variant": args.minutes, "heldout_characters": args.heldout,
                                "judge": "data/classifier (the pipeline's 64 px radical classifier)",
                                "image": str(image.relative_to(ROOT)), "runs": runs})


if __name__ == "__main__":
    main()
