"""The cascade's upsampler (issue 32), screened: a regression CNN 64 -> 128 px trained on real glyph pairs with
degradation augmentation (glyffuser.diffusion.upsampler), judged on real glyphs and on a trained model's samples.

    python benchmarks/upsampler.py --runs xeon-default,p4e15          # ~6 min on 2 cores
    python benchmarks/upsampler.py --steps 600 --strength 0 --tag clean  # without the degradation augmentation
    python benchmarks/upsampler.py --design diffusion --minutes 1.6 --runs p4e15-dfm05 --tag diffusion
                                   # the alternative: a small diffusion SR model, same minutes, sampled in a few steps
    python benchmarks/upsampler.py --speed     # the pipeline's cost per glyph: data/model alone vs with data/upsampler
    python benchmarks/upsampler.py --budget    # the upsampler stage's training against the train stage's, back to back

Trains one upsampler on the render tables' train split (64 px box-downsampled inputs, the 128 px renders as
targets), then for each saved run (benchmarks/results/runs/<name>/samples.parquet, the evaluate stage's 64 px
held-out samples) measures at 128 px against the 1,004 real test glyphs at 128 px:
- paper darkness (glyffuser.analysis.paper), stroke fidelity (glyffuser.analysis.fidelity) and sharpness
  (two-tone share), beside the same numbers of the base's 64 px samples at 64 px;
- adherence, paired: the evaluate stage's judge reads the radical of the 128 px output (area-downsampled to its
  64 px) and of the 64 px sample it came from, on the same samples;
- the references: real test glyphs upsampled (the ceiling), real 128 px glyphs with half a 3×3 blur (the stroke
  fidelity bar of issue 32).
Writes benchmarks/results/upsampler[_TAG]-<device>.json and docs/upsampler_cascade.png (base 64 px beside the
cascade's 128 px for the first held-out samples of each run).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, write_result  # noqa: E402
from conditioning import RUNS, _samples  # noqa: E402

from glyffuser.analysis.fidelity import degrade as degrade_real  # noqa: E402
from glyffuser.analysis.fidelity import fidelity, stroke_codes  # noqa: E402
from glyffuser.analysis.judge import load_classifier, predict  # noqa: E402
from glyffuser.analysis.metrics import two_tone_share  # noqa: E402
from glyffuser.analysis.paper import paper_darkness  # noqa: E402
from glyffuser.artifacts.glyph_tables import load_glyph_splits  # noqa: E402
from glyffuser.diffusion.upsampler import Upsampler, degrade, train_upsampler, upsample  # noqa: E402

DATA = ROOT / "data"


class DiffusionSR(torch.nn.Module):
    """The alternative to the regression CNN (SR3 / Imagen's super-resolution models, in small): a UNet denoises the
    128 px glyph conditioned on the bilinear-upsampled 64 px input (concatenated as channels), v-prediction on the
    linear schedule, sampled with DPM-Solver++ in a few steps. Runs on the 2×2 pixel-unshuffled 64×64 grid (as the
    base model's patches), so a step costs about what a 64 px UNet step costs."""

    def __init__(self, channels=(32, 64), seed: int = 0):
        super().__init__()
        from diffusers import DDPMScheduler, UNet2DModel

        torch.manual_seed(seed)
        self.unet = UNet2DModel(sample_size=64, in_channels=8, out_channels=4, block_out_channels=channels,
                                down_block_types=("DownBlock2D",) * len(channels),
                                up_block_types=("UpBlock2D",) * len(channels), layers_per_block=1, norm_num_groups=8)
        self.schedule = DDPMScheduler(num_train_timesteps=1000, prediction_type="v_prediction")

    def denoise(self, noisy: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = torch.cat([F.pixel_unshuffle(noisy, 2), F.pixel_unshuffle(cond, 2)], dim=1)  # (B,8,64,64)
        return F.pixel_shuffle(self.unet(x, t).sample, 2)  # (B,1,128,128)

    def train_for(self, low: torch.Tensor, high: torch.Tensor, minutes: float, batch: int, lr: float, strength: float,
                  seed: int = 0) -> tuple[int, list[float]]:
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.AdamW(self.unet.parameters(), lr=lr, weight_decay=0.0)
        a = self.schedule.alphas_cumprod
        losses, end = [], time.perf_counter() + minutes * 60
        self.unet.train()
        while time.perf_counter() < end:
            idx = torch.randint(0, len(low), (batch,), generator=gen)
            cond = F.interpolate(degrade(low[idx], gen, strength), scale_factor=2, mode="bilinear", align_corners=False)
            x0, noise = high[idx], torch.randn(high[idx].shape, generator=gen)
            t = torch.randint(0, 1000, (batch,), generator=gen)
            s, r = a[t].sqrt().view(-1, 1, 1, 1), (1 - a[t]).sqrt().view(-1, 1, 1, 1)
            loss = F.mse_loss(self.denoise(s * x0 + r * noise, cond, t), s * noise - r * x0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        return len(losses), losses

    @torch.no_grad()
    def forward(self, low: torch.Tensor, steps: int = 4, seed: int = 0, batch: int = 256) -> torch.Tensor:
        from diffusers import DPMSolverMultistepScheduler

        self.unet.eval()
        out = []
        for i in range(0, len(low), batch):
            cond = F.interpolate(low[i:i + batch].float(), scale_factor=2, mode="bilinear", align_corners=False)
            sched = DPMSolverMultistepScheduler.from_config(self.schedule.config)
            sched.set_timesteps(steps)
            x = torch.randn(cond.shape, generator=torch.Generator().manual_seed(seed + i))
            for t in sched.timesteps:
                x = sched.step(self.denoise(x, cond, t.expand(len(x))), t, x).prev_sample
            out.append(x.clamp(-1, 1))
        return torch.cat(out)


def quality(images: torch.Tensor, real: torch.Tensor, real_codes: torch.Tensor) -> dict:
    return {"paper_darkness": round(paper_darkness(images)[0], 3),
            "stroke_fidelity": round(fidelity(real_codes, stroke_codes(images), boot=2)[0], 5),
            "sharpness_ratio": round(two_tone_share(images) / two_tone_share(real), 4)}


def sheet(rows: dict[str, tuple[torch.Tensor, torch.Tensor]], path: Path, n: int = 8) -> None:
    """Per run: n base samples (64 px shown at 128 with nearest) above their 128 px cascade outputs."""
    from PIL import Image, ImageDraw

    from glyffuser.artifacts.images import tensor_to_images

    cell, pad, label = 128, 4, 18
    sheet = Image.new("L", (n * (cell + pad) + pad, len(rows) * (2 * (cell + pad) + label) + pad), 255)
    draw = ImageDraw.Draw(sheet)
    y = pad
    for name, (low, high) in rows.items():
        draw.text((pad, y), f"{name}: 64 px base (top), 128 px cascade (bottom)", fill=0)
        y += label
        for r, imgs in enumerate((tensor_to_images(low[:n]), tensor_to_images(high[:n]))):
            for c, im in enumerate(imgs):
                sheet.paste(im.resize((cell, cell), Image.NEAREST), (pad + c * (cell + pad), y + r * (cell + pad)))
        y += 2 * (cell + pad)
    sheet.save(path)


def speed(rounds: int = 3) -> None:
    """What a user pays per glyph for the cascade: GlyffuserPipeline (data/model + data/upsampler, the sample stage's
    settings) drawing the sample grid (8 prompts × 8 seeds) as 64 px drafts and as 128 px glyphs, interleaved rounds."""
    from glyffuser.diffusion.pipeline import GlyffuserPipeline
    from glyffuser.params import load_params

    s = load_params(ROOT / "params.yaml").sample
    pipe = GlyffuserPipeline.from_pretrained(DATA / "model", bf16=s.autocast(), upsampler=DATA / "upsampler")
    times: dict[str, list[float]] = {"base_64": [], "cascade_128": []}
    pipe(s.prompts[:1], num_images=2, steps=2)  # warm-up: the encoder, the first batch
    for _ in range(rounds):
        for name, base in (("base_64", True), ("cascade_128", False)):
            tick = time.perf_counter()
            pipe(s.prompts, num_images=s.seeds, steps=s.steps, guidance=s.guidance, scheduler=s.scheduler, base=base)
            times[name].append((time.perf_counter() - tick) * 1000 / (len(s.prompts) * s.seeds))
    out = {k: {"ms_per_glyph": round(float(np.median(v)), 2), "rounds": [round(x, 2) for x in v]} for k, v in times.items()}
    out["ratio"] = round(out["cascade_128"]["ms_per_glyph"] / out["base_64"]["ms_per_glyph"], 3)
    out["settings"] = {"steps": s.steps, "guidance": s.guidance, "scheduler": s.scheduler, "glyphs": len(s.prompts) * s.seeds,
                       "bf16": pipe.bf16}
    print(out, flush=True)
    write_result("upsampler_speed", out)


def budget(rounds: int = 2, up_steps: int = 100, train_steps: int = 24) -> None:
    """The upsampler stage's training time as a share of the train stage's, both from their own step code, timed in
    interleaved rounds on this machine: train_upsampler (params `upsampler`, real pairs) and the train stage's TrainStep
    (params `train`, benchmarks/resolution.py's step_speed), each scaled to its stage's full number of steps (median
    upsampler step; mean train step, two warm-up steps left out of both). Neither counts what the stages do besides
    stepping (loading the tables, the train stage's validation, checkpoints and snapshots)."""
    import json

    from resolution import step_speed

    from glyffuser.params import load_params

    params = load_params(ROOT / "params.yaml")
    u = params.upsampler
    paths = DATA / "render" / "definitions.parquet", DATA / "render" / "glyphs.parquet"
    r = params.train.resolution
    low, high = load_glyph_splits(*paths, r)["train"].images, load_glyph_splits(*paths, 2 * r)["train"].images
    train_images = json.loads((DATA / "train" / "metrics.json").read_text())["steps"] * params.train.batch_size
    class Clock:  # train_upsampler's progress hook: the time at the end of every step
        def __init__(self):
            self.times = [time.perf_counter()]

        def update(self, n):
            self.times.append(time.perf_counter())

    up_s, train_s = [], []
    for _ in range(rounds):
        clock = Clock()
        train_upsampler(low, high, Upsampler(u.width, u.depth), up_steps, u.batch_size, u.lr, seed=0,
                        strength=u.degradation, bar=clock, block=u.block, block_p=u.block_jitter)
        step = float(np.median(np.diff(clock.times)[2:]))  # two warm-up steps left out, as step_speed does
        up_s.append(step * u.steps / 60)  # minutes for the stage's steps
        train_s.append(train_images / step_speed(params, train_steps) / 60)
    out = {"upsampler_minutes": [round(x, 2) for x in up_s], "train_minutes": [round(x, 2) for x in train_s],
           "upsampler_steps": u.steps, "train_images": train_images,
           "share": round(float(np.median(up_s) / np.median(train_s)), 3)}
    print(out, flush=True)
    write_result("upsampler_budget", out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="", help="saved runs (benchmarks/results/runs/) whose samples are upsampled")
    parser.add_argument("--steps", type=int, default=600, help="training steps")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0, help="the training's seed (initial weights, batches, degradations)")
    parser.add_argument("--width", type=int, default=48)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--strength", type=float, default=1.0, help="degradation augmentation (0: clean inputs)")
    parser.add_argument("--block-jitter", type=float, default=0.0,
                        help="share of 4×4 tiles moved by a pixel in each input (the base's patch seams)")
    parser.add_argument("--design", choices=["cnn", "diffusion"], default="cnn",
                        help="cnn: the pipeline's regression upsampler; diffusion: a small diffusion SR model")
    parser.add_argument("--minutes", type=float, default=1.6, help="diffusion: training minutes (the CNN's, to compare)")
    parser.add_argument("--sr-steps", type=int, default=4, help="diffusion: DPM-Solver++ steps per glyph")
    parser.add_argument("--tag", default="")
    parser.add_argument("--speed", action="store_true", help="only time the pipeline with and without the upsampler")
    parser.add_argument("--budget", action="store_true", help="only time the upsampler's training against the train stage's")
    args = parser.parse_args()
    if args.speed:
        return speed()
    if args.budget:
        return budget()

    paths = DATA / "render" / "definitions.parquet", DATA / "render" / "glyphs.parquet"
    low, high = load_glyph_splits(*paths, 64), load_glyph_splits(*paths, 128)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    if args.design == "cnn":
        net = Upsampler(args.width, args.depth)
        losses = train_upsampler(low["train"].images, high["train"].images, net, args.steps, args.batch, args.lr,
                                 seed=args.seed, strength=args.strength, block_p=args.block_jitter)
        steps, run = args.steps, lambda x: upsample(net, x)  # noqa: E731
    else:
        net = DiffusionSR()
        steps, losses = net.train_for(low["train"].images, high["train"].images, args.minutes, args.batch, args.lr,
                                      args.strength, seed=args.seed)
        run = lambda x: net(x, args.sr_steps)  # noqa: E731
    minutes = (time.perf_counter() - start) / 60
    print(f"trained {steps} steps in {minutes:.2f} min, last loss {np.mean(losses[-50:]):.4f}", flush=True)

    real = high["test"].images
    real_codes = stroke_codes(real)
    judge, _ = load_classifier(DATA / "classifier")
    tick = time.perf_counter()
    ceiling = run(low["test"].images)
    ms_per_glyph = (time.perf_counter() - tick) * 1000 / len(ceiling)
    config = net.config if args.design == "cnn" else {"design": "diffusion", "sampler_steps": args.sr_steps}
    out = {"upsampler": {**config, "parameters": sum(p.numel() for p in net.parameters()), "steps": steps,
                         "ms_per_glyph": round(ms_per_glyph, 2),
                         "batch": args.batch, "lr": args.lr, "seed": args.seed,
                         "block_jitter": args.block_jitter, "strength": args.strength, "train_minutes": round(minutes, 2),
                         "images_per_s": round(steps * args.batch / (minutes * 60), 1),
                         "final_loss": round(float(np.mean(losses[-50:])), 4)},
           "references_128": {
               "real_test": {"paper_darkness": paper_darkness(real)[0]},
               "real_with_half_blur": quality(degrade_real(real, "blur", torch.Generator().manual_seed(0)), real,
                                              real_codes),
               "real_64_upsampled_bilinear": quality(torch.nn.functional.interpolate(
                   low["test"].images, scale_factor=2, mode="bilinear", align_corners=False), real, real_codes),
               "real_64_upsampled_by_it": {**quality(ceiling, real, real_codes),
                                           "l1": round(float((ceiling - real).abs().mean() / 2), 4)},
           },
           "runs": {}}
    print(out, flush=True)
    shown = {}
    real64, real64_codes = low["test"].images, stroke_codes(low["test"].images)
    for name in [x for x in args.runs.split(",") if x]:
        base = _samples(RUNS / name / "samples.parquet")  # (1004,1,64,64), the held-out samples as saved (8-bit)
        final = run(base)
        base_pred, final_pred = predict(judge, base)[0], predict(judge, final)[0]
        import pandas as pd

        table = pd.read_parquet(RUNS / name / "samples.parquet", columns=["kind", "target_radical"])
        target = table[table.kind == "heldout"].target_radical.to_numpy()
        a, b = (base_pred == target).astype(float), (final_pred == target).astype(float)
        d = b - a
        out["runs"][name] = {"base_64": quality(base, real64, real64_codes), "cascade_128": quality(final, real, real_codes),
                             "adherence_base": round(a.mean(), 4), "adherence_cascade": round(b.mean(), 4),
                             "paired_difference": round(d.mean(), 4),
                             "paired_difference_se": round(d.std(ddof=1) / len(d) ** 0.5, 4)}
        print(name, out["runs"][name], flush=True)
        shown[name] = (base, final)
    if shown:
        image = ROOT / "docs" / f"upsampler_cascade{'_' + args.tag if args.tag else ''}.png"
        sheet(shown, image)
        out["image"] = str(image.relative_to(ROOT))
    write_result("upsampler" + (f"_{args.tag}" if args.tag else ""), out)


if __name__ == "__main__":
    main()
