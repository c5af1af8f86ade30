"""Stage `train`: the text-conditioned glyph diffusion model, one loop for CPU, one GPU or several.

Run as `glyffuser train` (one process) or `accelerate launch -m glyffuser.cli train` (DDP). Each
process takes its own slice of a shared per-epoch permutation. All randomness of a step (noise,
timesteps, which prompts are dropped for guidance) is a pure function of (seed, rank, step), so a run
resumed from a checkpoint continues exactly as if it had never stopped.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel

from glyffuser import __version__
from glyffuser.atomic import atomic_outputs, check_output, check_outputs
from glyffuser.checkpoint import clear_checkpoints, latest_checkpoint, load_checkpoint, pause_point, save_checkpoint
from glyffuser.data import GlyphSet, batch_text, load_training_data, sense_subsets
from glyffuser.deps import command_files
from glyffuser.diffusion import diffusion_loss, sample_timesteps, training_scheduler
from glyffuser.errors import GlyffuserError
from glyffuser.images import labelled_grid, tensor_to_images
from glyffuser.model import build_unet, count_parameters, denoise
from glyffuser.params import Params
from glyffuser.pipeline import GlyffuserPipeline, sample
from glyffuser.progress import progress
from glyffuser.sources import sha256_file


@dataclass(frozen=True)
class TrainPaths:
    definitions: Path
    glyphs: Path
    embeddings: Path
    model: Path  # diffusers layout: unet/, scheduler/, glyffuser.json
    metrics: Path  # final numbers for `dvc exp show`
    curve: Path  # loss curve CSV for `dvc plots`
    checkpoints: Path  # persistent across runs; resumed when the fingerprint matches


def fingerprint(params: Params, paths: TrainPaths) -> str:
    """What a checkpoint must share to be resumed: training params, seed, the exact input data, and
    the training code (a changed loop must not continue a run it did not start). The code is every
    module `glyffuser train` runs (`glyffuser.deps`), the same list as the train stage's deps in dvc.yaml."""
    h = hashlib.sha256(json.dumps({"train": params.train.model_dump(), "seed": params.base.seed}, sort_keys=True).encode())
    for f in (paths.definitions, paths.glyphs, paths.embeddings):
        h.update(sha256_file(f).encode())
    for f in command_files("train"):
        h.update(f"{f.name}:{sha256_file(f)}".encode())
    return h.hexdigest()


_SEED_SPACE = 2**63  # torch generators take seeds below 2^64; derived seeds are folded into this range


def _step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(((seed * 1_000_003 + rank) * 10_000_019 + step) % _SEED_SPACE)


def _epoch_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed((seed * 7_919 + epoch) % _SEED_SPACE))


def _with_dropped_prompts(text: torch.Tensor, mask: torch.Tensor, empty: torch.Tensor, drop: torch.Tensor):
    """Replace the rows flagged in `drop` by the empty prompt: the unconditional half of guidance."""
    length = max(text.shape[1], empty.shape[0])
    if length > text.shape[1]:
        text = torch.nn.functional.pad(text, (0, 0, 0, length - text.shape[1]))
        mask = torch.nn.functional.pad(mask, (0, length - mask.shape[1]))
    text, mask = text.clone(), mask.clone()
    text[drop] = 0
    text[drop, : empty.shape[0]] = empty.to(text.dtype)
    mask[drop] = False
    mask[drop, : empty.shape[0]] = True
    return text, mask


@torch.no_grad()
def validation_loss(unet, noise_sched, val: GlyphSet, n: int, min_snr_gamma: float, device, batch: int = 128,
                    weighting: str = "min_snr") -> float | None:
    """Loss on the first n validation glyphs with fixed noise and timesteps: comparable across steps and runs."""
    n = min(n, len(val))
    if n == 0:
        return None
    g = torch.Generator().manual_seed(12345)
    total = 0.0
    for s in range(0, n, batch):
        x0 = val.images[s : s + batch].to(device)
        text, mask = batch_text(val.text[s : s + batch], val.mask[s : s + batch])
        noise = torch.randn(x0.shape, generator=g).to(device)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (x0.shape[0],), generator=g).to(device)
        pred = denoise(unet, noise_sched.add_noise(x0, noise, t), t, text.to(device, torch.float32), mask.to(device))
        total += diffusion_loss(pred, x0, noise, t, noise_sched, min_snr_gamma, weighting).item() * x0.shape[0]
    return total / n


def _precision(choice: str) -> str:
    if choice == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return choice


def _enabled(choice: str | bool, device: torch.device) -> bool:
    """auto = on for CUDA only; true/false force it (measurements: README, benchmarks/)."""
    return device.type == "cuda" if choice == "auto" else bool(choice)


@dataclass(frozen=True)
class Speedups:
    """Throughput options that do not change the maths (beyond floating-point rounding)."""

    compile: bool
    channels_last: bool
    fused_optimizer: bool

    @staticmethod
    def of(p, device: torch.device) -> Speedups:
        return Speedups(_enabled(p.compile, device), _enabled(p.channels_last, device),
                        _enabled(p.fused_optimizer, device))


def build_optimizer(unet: torch.nn.Module, p, speed: Speedups) -> torch.optim.AdamW:
    """AdamW with weight decay on the conv, linear and attention matrices only: biases and norm scales
    are not shrunk towards 0 (as in nanoGPT and the diffusers training examples)."""
    params = [q for q in unet.parameters() if q.requires_grad]
    groups = [{"params": [q for q in params if q.ndim >= 2], "weight_decay": p.weight_decay},
              {"params": [q for q in params if q.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=p.lr, fused=True if speed.fused_optimizer else None)


class NonFiniteLoss(GlyffuserError):
    """The loss or the gradient norm stopped being a finite number."""


class TrainStep:
    """One optimizer step of the train stage, on a batch already drawn: what the loop runs and what
    benchmarks/ time. Returns (loss, gradient norm) as floats, and raises NonFiniteLoss before the
    optimizer touches the weights when either is NaN or infinite."""

    def __init__(self, unet, raw_unet, optimizer, lr_sched, ema: EMAModel, noise_sched, p, accelerator: Accelerator,
                 speed: Speedups):
        self.unet, self.raw_unet, self.optimizer, self.lr_sched, self.ema = unet, raw_unet, optimizer, lr_sched, ema
        self.noise_sched, self.p, self.accelerator, self.speed = noise_sched, p, accelerator, speed
        # fp16 with a gradient scaler overflows on purpose now and then (the scaler skips that step).
        self.check_grads = accelerator.mixed_precision != "fp16"
        pause = os.environ.get("GLYFFUSER_PAUSE_AT", "")
        self._pause_step = int(pause.split(":")[1]) if pause.startswith("step:") else None

    def __call__(self, x0, noise, t, text, mask, step: int = -1) -> tuple[float, float]:
        # x0, noise: (B,1,R,R); t: (B,); text: (B,L,D) with empty-prompt rows already swapped in; mask: (B,L)
        p = self.p
        with self.accelerator.autocast():
            pred = denoise(self.unet, self.noise_sched.add_noise(x0, noise, t), t, text.float(), mask)
        loss = diffusion_loss(pred, x0, noise, t, self.noise_sched, p.min_snr_gamma, p.loss_weighting)
        self.accelerator.backward(loss)
        params = self.unet.parameters()
        if p.grad_clip > 0:
            gn = self.accelerator.clip_grad_norm_(params, p.grad_clip)
        else:
            gn = torch.nn.utils.get_total_norm([q.grad for q in params if q.grad is not None])
        if step == self._pause_step:
            pause_point(f"step:{step}")  # for the SIGKILL test: weights and optimizer half-way through a step
        loss_value, grad_norm = torch.stack([loss.detach().float(), gn.detach().float().to(loss.device)]).tolist()
        if not math.isfinite(loss_value) or (self.check_grads and not math.isfinite(grad_norm)):
            raise NonFiniteLoss(f"loss {loss_value}, gradient norm {grad_norm}")
        self.optimizer.step()
        self.lr_sched.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.step(self.raw_unet.parameters())
        return loss_value, grad_norm


def build_training(p, seed: int, text_dim: int, accelerator: Accelerator, total_steps: int,
                   compile_backend: str = "inductor") -> TrainStep:
    """The UNet, optimizer, LR schedule and EMA of the train stage, prepared for `accelerator`.
    (`compile_backend` lets benchmarks/gpu.py --smoke check the compiled path without inductor's wait.)"""
    torch.manual_seed(seed)
    unet = build_unet(p.resolution, text_dim, p.block_channels, p.layers_per_block, p.attention_levels,
                      p.attention_head_dim, p.pooled_text, p.patch_size, film=p.film,
                      cross_attention_only=p.cross_attention_only)
    noise_sched = training_scheduler(p.schedule, p.prediction, p.zero_terminal_snr, snr_scale=p.snr_scale())
    speed = Speedups.of(p, accelerator.device)
    if speed.channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(unet, p, speed)
    lr_sched = get_cosine_schedule_with_warmup(optimizer, min(p.lr_warmup_steps, total_steps // 2), total_steps)
    ema = EMAModel(unet.parameters(), decay=p.ema_decay, use_ema_warmup=True, inv_gamma=1.0, power=2 / 3)
    unet, optimizer = accelerator.prepare(unet, optimizer)
    raw_unet = accelerator.unwrap_model(unet)
    if speed.compile:
        # Fixed shapes (full batch, text padded to max_length) so the graph compiles once.
        unet = torch.compile(unet, backend=compile_backend)
    ema.to(accelerator.device)
    return TrainStep(unet, raw_unet, optimizer, lr_sched, ema, noise_sched, p, accelerator, speed)


def save_snapshot(folder: Path, pipe: GlyffuserPipeline, ema: EMAModel, step: int, train_minutes: float) -> None:
    """EMA weights at this step, in fp16, as a model folder that GlyffuserPipeline loads (for the
    adherence-versus-training-time curve in benchmarks/)."""
    import copy

    unet = copy.deepcopy(pipe.unet)
    ema.copy_to(unet.parameters())
    snapshot = GlyffuserPipeline(unet.half(), pipe.scheduler_config, {**pipe.info, "step": step,
                                                                      "train_minutes": round(train_minutes, 2)})
    snapshot.save_pretrained(folder / f"step-{step:08d}")


def run_train(params: Params, paths: TrainPaths, stop_after: int | None = None, track: bool = True) -> dict | None:
    """Train, checkpoint, resume; write the model and metrics. `stop_after` ends the run early like an
    interruption (for tests): the checkpoints stay, no final outputs are written, None is returned."""
    p = params.train
    check_output(paths.model, folder=True)
    check_outputs(paths.metrics, paths.curve)
    if paths.checkpoints.exists() and not paths.checkpoints.is_dir():
        raise GlyffuserError(f"{paths.checkpoints} is a file; the checkpoints go into a folder there")
    check_output(paths.checkpoints / "snapshots" / "step-00000000", folder=True)  # writable, before any work
    if track:
        from glyffuser.tracking import require_store

        require_store()
    accelerator = Accelerator(mixed_precision=_precision(p.mixed_precision), cpu=not torch.cuda.is_available())
    rank, world, device, main = accelerator.process_index, accelerator.num_processes, accelerator.device, accelerator.is_main_process
    data = load_training_data(paths.definitions, paths.glyphs, paths.embeddings, p.resolution)
    train, meta = data.train, data.embedding_meta
    run_id = fingerprint(params, paths)
    steps_per_epoch = math.ceil(len(train) / (p.batch_size * world))
    total_steps = max(1, math.ceil(p.epochs * steps_per_epoch))
    # train.seed re-draws the weights' initialisation, batch order and noise only: the judge (classifier stage)
    # and the sample seeds keep base.seed, so two training seeds stay paired in evaluation.
    seed = params.base.seed if p.seed is None else p.seed
    trainer = build_training(p, seed, int(meta["dim"]), accelerator, total_steps)
    raw_unet, ema, noise_sched, speed = trainer.raw_unet, trainer.ema, trainer.noise_sched, trainer.speed

    start_step, log_rows = 0, []
    ckpt, stale = latest_checkpoint(paths.checkpoints, run_id)
    if ckpt is not None:
        state = load_checkpoint(ckpt, run_id)
        raw_unet.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.lr_sched.load_state_dict(state["lr_scheduler"])
        ema.load_state_dict(state["ema"])
        ema.to(device)
        start_step, log_rows = state["step"], json.loads(state["log"])
        accelerator.print(f"resuming from {ckpt} (step {start_step}/{total_steps})")
    elif stale and main:
        accelerator.print(f"{paths.checkpoints} holds checkpoints of another experiment (params, data or code changed): "
                          "starting fresh")
        clear_checkpoints(paths.checkpoints)
    accelerator.wait_for_everyone()

    images, texts, masks = train.images.to(device), train.text.to(device), train.mask.to(device)
    senses = train.sense
    if p.caption_augmentation > 0 and senses is None:
        raise GlyffuserError(f"train.caption_augmentation needs the token senses in {paths.embeddings}, which "
                             "an older embed stage did not store: re-run it (dvc repro embed)")
    empty = data.empty_text.to(device)
    info = {**{k: meta[k] for k in ("encoder", "encoder_sha256", "encoder_revision", "model_type", "dim", "max_length")},
            "resolution": p.resolution, "patch_size": p.patch_size, "schedule": p.schedule,
            "schedule_base_resolution": p.schedule_base_resolution, "prediction": p.prediction,
            "pooled_text": p.pooled_text, "pixels": "x = png / 127.5 - 1 (background +1, ink -1)",
            "glyffuser_version": __version__}
    pipe = GlyffuserPipeline(raw_unet, dict(noise_sched.config), info)
    run = None
    if main and track:
        from glyffuser.tracking import mlflow_run

        run = mlflow_run(params.model_dump(), stage="train")
        mlflow = run.__enter__()
        mlflow.log_params({"model.parameters": count_parameters(raw_unet), "train.total_steps": total_steps,
                           "train.world_size": world, **{f"speed.{k}": v for k, v in speed.__dict__.items()}})
        info["mlflow_run_id"] = mlflow.active_run().info.run_id  # the evaluate/umap/figures stages log here

    # Held-out characters for the sample grids: their stored embeddings, so training never needs the encoder.
    val = data.validation if len(data.validation) else train
    shown = torch.randperm(len(val), generator=torch.Generator().manual_seed(params.base.seed % _SEED_SPACE))[:8]

    def evaluate(step: int) -> dict:
        """Validation loss (raw weights) and, logged to MLflow, a grid sampled with the EMA weights:
        per row the real held-out glyph, then 4 samples from its definition."""
        raw_unet.eval()
        out = {"val_loss": validation_loss(raw_unet, noise_sched, data.validation, p.val_images, p.min_snr_gamma, device,
                                                 weighting=p.loss_weighting)}
        if run is not None:
            seeds = [0, 1, 2, 3]
            rows = shown.repeat_interleave(len(seeds))
            text, mask = batch_text(val.text[rows], val.mask[rows])
            ema.store(raw_unet.parameters())
            ema.copy_to(raw_unet.parameters())
            x = sample(raw_unet, pipe.scheduler_config, text, mask, data.empty_text, seeds * len(shown), p.eval_steps,
                       p.eval_guidance, "dpmsolver++")
            ema.restore(raw_unet.parameters())
            real = val.images[shown]
            cells = torch.cat([torch.cat([real[i : i + 1], x[i * len(seeds) : (i + 1) * len(seeds)]]) for i in range(len(shown))])
            # PIL's default font has no Han characters: the real glyph is the first cell of each row anyway.
            labels = [f"U+{val.codepoints[i]:04X} {val.definitions[i]}" for i in shown.tolist()]
            mlflow.log_image(labelled_grid(tensor_to_images(cells), len(seeds) + 1, labels, cell=48), key="samples", step=step)
        raw_unet.train()
        return out

    def _loop(bar) -> dict | None:
        trainer.unet.train()
        # Training seconds so far (evaluation excluded), carried across a resume in the log rows.
        train_time = log_rows[-1].get("train_s", 0.0) if log_rows else 0.0
        window_loss, window_steps, window_start = 0.0, 0, time.perf_counter()
        last_finite = log_rows[-1]["train_loss"] if log_rows else None
        perm_epoch, perm = -1, None
        for step in range(start_step, total_steps):
            epoch, k = divmod(step, steps_per_epoch)
            if epoch != perm_epoch:
                perm_epoch, perm = epoch, _epoch_permutation(seed, epoch, len(train)).to(device)
            start = (k * world + rank) * p.batch_size
            idx = perm[torch.arange(start, start + p.batch_size, device=device) % len(train)]
            g = _step_generator(seed, rank, step)
            noise = torch.randn((p.batch_size, 1, p.resolution, p.resolution), generator=g).to(device)
            t = sample_timesteps(p.batch_size, noise_sched.config.num_train_timesteps, p.timestep_sampling, g,
                                 p.logit_normal_mean, p.logit_normal_std).to(device)
            drop = (torch.rand(p.batch_size, generator=g) < p.cfg_dropout).to(device)

            x0 = images[idx]
            text, mask = (texts[idx], masks[idx]) if speed.compile else batch_text(texts[idx], masks[idx])
            if p.caption_augmentation > 0:  # after trimming: batch_text expects the mask to be a prefix
                mask = sense_subsets(mask, senses[idx.cpu()][:, : mask.shape[1]], p.caption_augmentation, g)
            if speed.channels_last:
                x0, noise = x0.contiguous(memory_format=torch.channels_last), noise.contiguous(memory_format=torch.channels_last)
            text, mask = _with_dropped_prompts(text, mask, empty, drop)
            try:
                loss, gn = trainer(x0, noise, t, text, mask, step)
            except NonFiniteLoss as err:
                kept = latest_checkpoint(paths.checkpoints, run_id)[0]
                raise GlyffuserError(
                    f"training stopped at step {step + 1}/{total_steps}: {err}; last finite loss "
                    f"{'none' if last_finite is None else f'{last_finite:.4g}'}; "
                    f"{f'the last good checkpoint {kept.name} is kept' if kept else 'no checkpoint was written yet'}, "
                    f"no model written; try a lower train.lr, train.grad_clip: 1.0, or train.mixed_precision: no") from None
            last_finite = loss
            window_loss += loss
            window_steps += 1
            done = step + 1
            bar.update(1)
            if done % p.log_every == 0 or done == total_steps:
                elapsed = time.perf_counter() - window_start
                train_time += elapsed
                row = {"step": done, "epoch": round(done / steps_per_epoch, 3), "train_loss": window_loss / window_steps,
                       "lr": trainer.lr_sched.get_last_lr()[0], "grad_norm": gn,
                       "img_per_s": window_steps * p.batch_size * world / elapsed, "train_s": round(train_time, 2)}
                window_loss, window_steps = 0.0, 0
                bar.set_postfix(loss=f"{row['train_loss']:.4f}", img_s=f"{row['img_per_s']:.1f}", refresh=False)
                if run is not None:
                    mlflow.log_metrics({k: v for k, v in row.items() if k != "step"}, step=done)
                log_rows.append(row)
                window_start = time.perf_counter()
            if main and (p.eval_every and done % p.eval_every == 0 or done == total_steps):
                # its own cadence, not only on log steps; its minutes do not count as training time
                paused = time.perf_counter()
                result = evaluate(done)
                if log_rows[-1]["step"] == done:
                    log_rows[-1].update(result)
                if run is not None:
                    mlflow.log_metrics({k: v for k, v in result.items() if v is not None}, step=done)
                grid = f"; sample grid: MLflow run {info['mlflow_run_id'][:8]}, image 'samples' at step {done}" \
                    if run is not None else ""
                loss_text = "n/a (no validation split)" if result["val_loss"] is None else f"{result['val_loss']:.4f}"
                bar.write(f"train: step {done}/{total_steps}: validation loss {loss_text}{grid}", file=bar.fp)
                window_start += time.perf_counter() - paused
            if main and p.snapshot_every and done % p.snapshot_every == 0 and done < total_steps:
                save_snapshot(paths.checkpoints / "snapshots", pipe, ema,  done,
                              (train_time + time.perf_counter() - window_start) / 60)
            if done % p.checkpoint_every == 0 and done < total_steps:
                if main:
                    state = {"step": done, "model": raw_unet.state_dict(), "optimizer": trainer.optimizer.state_dict(),
                             "lr_scheduler": trainer.lr_sched.state_dict(), "ema": ema.state_dict(), "log": json.dumps(log_rows)}
                    save_checkpoint(paths.checkpoints, done, state, run_id, p.keep_checkpoints)
                accelerator.wait_for_everyone()
            if stop_after is not None and done >= stop_after:
                return None

        # Every rank must hold the same weights after DDP; a cheap, order-sensitive checksum tells.
        checksum = torch.stack([q.detach().double().sum() * (i + 1) for i, q in enumerate(raw_unet.parameters())]).sum()
        sums = accelerator.gather(checksum.reshape(1).to(device))
        in_sync = bool(torch.allclose(sums, sums[0]))

        result = None
        if main:
            ema.copy_to(raw_unet.parameters())
            last = log_rows[-1]
            seen = [r for r in log_rows if r["step"] > start_step]
            result = {
                "train_loss": last["train_loss"], "val_loss": last.get("val_loss"),
                "img_per_s": sum(r["img_per_s"] for r in seen) / max(1, len(seen)),
                "epochs": last["epoch"], "steps": total_steps, "wall_time_min": round(train_time / 60, 2),
                "parameters": count_parameters(raw_unet), "world_size": world, "ranks_in_sync": in_sync,
                "resumed_from_step": start_step,
            }
            pipe.save_pretrained(paths.model)
            with atomic_outputs(paths.metrics, paths.curve) as (metrics_tmp, curve_tmp):
                metrics_tmp.write_text(json.dumps(result, indent=2) + "\n")
                with curve_tmp.open("w", newline="") as f:
                    fields = ["step", "epoch", "train_loss", "val_loss", "lr", "grad_norm", "img_per_s"]
                    writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
                    writer.writeheader()
                    writer.writerows(log_rows)
            if run is not None:
                mlflow.log_metrics({f"final_{k}": float(v) for k, v in result.items() if isinstance(v, (int, float)) and v is not None})
                mlflow.log_artifacts(str(paths.model), artifact_path="model")
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return result

    try:
        with progress(total_steps, desc="train", unit="step", initial=start_step, disable=not main) as bar:
            return _loop(bar)
    except BaseException:
        if run is not None:
            run.__exit__(*sys.exc_info())  # marks the MLflow run FAILED
            run = None
        raise
    finally:
        if run is not None:
            run.__exit__(None, None, None)
