"""Stage `train`: the text-conditioned glyph diffusion model, one loop for CPU, one GPU or several.

Run as `glyffuser train` (one process) or `accelerate launch -m glyffuser.cli train` (DDP). Each
process takes its own slice of a shared per-epoch permutation. All randomness of a step (noise,
timesteps, which prompts are dropped for guidance) is a pure function of (seed, rank, step), so a run
resumed from a checkpoint continues exactly as if it had never stopped.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator

from glyffuser import __version__
from glyffuser.artifacts.atomic import atomic_outputs, check_output, check_outputs
from glyffuser.artifacts.checkpoints import clear_checkpoints, latest_checkpoint, load_checkpoint, save_checkpoint
from glyffuser.artifacts.hashing import sha256_file
from glyffuser.artifacts.images import labelled_grid, tensor_to_images
from glyffuser.artifacts.model_folder import save_model_folder
from glyffuser.command import PIPELINE_FILES, inputs, no_mlflow, run_command
from glyffuser.deps import command_files
from glyffuser.diffusion.prior import write_prior
from glyffuser.diffusion.process import sample
from glyffuser.diffusion.training import (
    SEED_SPACE,
    NonFiniteLoss,
    TrainBatches,
    TrainingData,
    TrainStep,
    batch_text,
    build_training,
    load_training_data,
    precision,
    validation_loss,
)
from glyffuser.diffusion.unet import count_parameters
from glyffuser.errors import GlyffuserError
from glyffuser.params import Params
from glyffuser.progress import progress
from glyffuser.reports import TrainMetrics, make_report, report_json


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


@dataclass
class TrainRun:
    """One run of the train stage in one process: what every part of the loop below reads."""

    params: Params
    paths: TrainPaths
    accelerator: Accelerator
    data: TrainingData
    trainer: TrainStep
    run_id: str  # the resume fingerprint
    seed: int
    total_steps: int
    steps_per_epoch: int
    info: dict  # glyffuser.json of the model folder
    start_step: int = 0
    log_rows: list[dict] = field(default_factory=list)
    mlflow: object = None  # the mlflow module while a run is active on the main process

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def scheduler_config(self) -> dict:
        return dict(self.trainer.noise_sched.config)


@dataclass
class Clock:
    """Training seconds (evaluation excluded, carried across a resume) and the loss of the current log window."""

    train_time: float
    loss: float = 0.0
    steps: int = 0
    start: float = field(default_factory=time.perf_counter)

    def minutes_now(self) -> float:
        return (self.train_time + time.perf_counter() - self.start) / 60


def check_train_outputs(paths: TrainPaths) -> None:
    """Every output writable before any work."""
    check_output(paths.model, folder=True)
    check_outputs(paths.metrics, paths.curve)
    if paths.checkpoints.exists() and not paths.checkpoints.is_dir():
        raise GlyffuserError(f"{paths.checkpoints} is a file; the checkpoints go into a folder there")
    check_output(paths.checkpoints / "snapshots" / "step-00000000", folder=True)


def model_info(params: Params, meta: dict) -> dict:
    """glyffuser.json: the encoder the embeddings came from, and how the model sees pixels and noise."""
    p = params.train
    return {**{k: meta[k] for k in ("encoder", "encoder_sha256", "encoder_revision", "model_type", "dim", "max_length")},
            "resolution": p.resolution, "patch_size": p.patch_size, "schedule": p.schedule,
            "schedule_base_resolution": p.schedule_base_resolution, "prediction": p.prediction,
            "pooled_text": p.pooled_text, "pixels": "x = png / 127.5 - 1 (background +1, ink -1)",
            "glyffuser_version": __version__,
            # embed.radical_prior: the head that guesses a typed prompt's radical is radical_prior.safetensors
            **({"radical_prior": {k: meta["radical_prior"][k] for k in ("tau", "folds", "names")}}
               if "radical_prior" in meta else {})}


def write_prior_file(run: TrainRun):
    """save_model_folder's `write_more` for a model trained on guessed radicals: the guessing head beside the UNet."""
    meta = run.data.embedding_meta.get("radical_prior")
    return None if meta is None else lambda folder: write_prior(meta, folder)


def prepare(params: Params, paths: TrainPaths) -> TrainRun:
    """Data, model, optimizer and the run's step counts; resumed from the latest matching checkpoint."""
    p = params.train
    accelerator = Accelerator(mixed_precision=precision(p.mixed_precision), cpu=not torch.cuda.is_available())
    data = load_training_data(paths.definitions, paths.glyphs, paths.embeddings, p.resolution)
    if p.caption_augmentation > 0 and data.train.sense is None:
        raise GlyffuserError(f"train.caption_augmentation needs the token senses in {paths.embeddings}, which "
                             "an older embed stage did not store: re-run it (dvc repro embed)")
    steps_per_epoch = math.ceil(len(data.train) / (p.batch_size * accelerator.num_processes))
    total_steps = max(1, math.ceil(p.epochs * steps_per_epoch))
    # train.seed re-draws the weights' initialisation, batch order and noise only: the judge (classifier stage)
    # and the sample seeds keep base.seed, so two training seeds stay paired in evaluation.
    seed = params.base.seed if p.seed is None else p.seed
    trainer = build_training(p, seed, int(data.embedding_meta["dim"]), accelerator, total_steps)
    run = TrainRun(params, paths, accelerator, data, trainer, fingerprint(params, paths), seed, total_steps,
                   steps_per_epoch, model_info(params, data.embedding_meta))
    resume(run)
    return run


def resume(run: TrainRun) -> None:
    """Load the latest checkpoint of this experiment, or clear another experiment's."""
    ckpt, stale = latest_checkpoint(run.paths.checkpoints, run.run_id)
    t = run.trainer
    if ckpt is not None:
        state = load_checkpoint(ckpt, run.run_id)
        t.raw_unet.load_state_dict(state["model"])
        t.optimizer.load_state_dict(state["optimizer"])
        t.lr_sched.load_state_dict(state["lr_scheduler"])
        t.ema.load_state_dict(state["ema"])
        t.ema.to(run.accelerator.device)
        run.start_step, run.log_rows = state["step"], json.loads(state["log"])
        run.accelerator.print(f"resuming from {ckpt} (step {run.start_step}/{run.total_steps})")
    elif stale and run.main:
        run.accelerator.print(f"{run.paths.checkpoints} holds checkpoints of another experiment (params, data or code "
                              "changed): starting fresh")
        clear_checkpoints(run.paths.checkpoints)
    run.accelerator.wait_for_everyone()


def start_tracking(run: TrainRun):
    """The MLflow run of this training (main process); its id goes into glyffuser.json for later stages."""
    from glyffuser.tracking import mlflow_run

    context = mlflow_run(run.params.model_dump(), stage="train")
    mlflow = context.__enter__()
    t, world = run.trainer, run.accelerator.num_processes
    mlflow.log_params({"model.parameters": count_parameters(t.raw_unet), "train.total_steps": run.total_steps,
                       "train.world_size": world, **{f"speed.{k}": v for k, v in t.speed.__dict__.items()}})
    run.info["mlflow_run_id"] = mlflow.active_run().info.run_id  # the evaluate/umap/figures stages log here
    run.mlflow = mlflow
    return context


def shown_glyphs(run: TrainRun):
    """The 8 held-out characters of the sample grids (their stored embeddings: training never loads the encoder)."""
    val = run.data.validation if len(run.data.validation) else run.data.train
    shown = torch.randperm(len(val), generator=torch.Generator().manual_seed(run.params.base.seed % SEED_SPACE))[:8]
    return val, shown


def evaluate(run: TrainRun, step: int) -> dict:
    """Validation loss (raw weights) and, logged to MLflow, a grid sampled with the EMA weights:
    per row the real held-out glyph, then 4 samples from its definition."""
    p, t = run.params.train, run.trainer
    t.raw_unet.eval()
    out = {"val_loss": validation_loss(t.raw_unet, t.noise_sched, run.data.validation, p.val_images, p.min_snr_gamma,
                                       run.accelerator.device, weighting=p.loss_weighting)}
    if run.mlflow is not None:
        val, shown = shown_glyphs(run)
        seeds = [0, 1, 2, 3]
        rows = shown.repeat_interleave(len(seeds))
        text, mask = batch_text(val.text[rows], val.mask[rows])
        t.ema.store(t.raw_unet.parameters())
        t.ema.copy_to(t.raw_unet.parameters())
        x = sample(t.raw_unet, run.scheduler_config, text, mask, run.data.empty_text, seeds * len(shown), p.eval_steps,
                   p.eval_guidance, "dpmsolver++")
        t.ema.restore(t.raw_unet.parameters())
        real = val.images[shown]
        cells = torch.cat([torch.cat([real[i : i + 1], x[i * len(seeds) : (i + 1) * len(seeds)]]) for i in range(len(shown))])
        # PIL's default font has no Han characters: the real glyph is the first cell of each row anyway.
        labels = [f"U+{val.codepoints[i]:04X} {val.definitions[i]}" for i in shown.tolist()]
        run.mlflow.log_image(labelled_grid(tensor_to_images(cells), len(seeds) + 1, labels, cell=48), key="samples",
                             step=step)
    t.raw_unet.train()
    return out


def log_window(run: TrainRun, clock: Clock, done: int, grad_norm: float, bar) -> None:
    """One row of the loss curve: the window's mean loss, LR, gradient norm, throughput."""
    p, world = run.params.train, run.accelerator.num_processes
    elapsed = time.perf_counter() - clock.start
    clock.train_time += elapsed
    row = {"step": done, "epoch": round(done / run.steps_per_epoch, 3), "train_loss": clock.loss / clock.steps,
           "lr": run.trainer.lr_sched.get_last_lr()[0], "grad_norm": grad_norm,
           "img_per_s": clock.steps * p.batch_size * world / elapsed, "train_s": round(clock.train_time, 2)}
    clock.loss, clock.steps = 0.0, 0
    bar.set_postfix(loss=f"{row['train_loss']:.4f}", img_s=f"{row['img_per_s']:.1f}", refresh=False)
    if run.mlflow is not None:
        run.mlflow.log_metrics({k: v for k, v in row.items() if k != "step"}, step=done)
    run.log_rows.append(row)
    clock.start = time.perf_counter()


def report_evaluation(run: TrainRun, clock: Clock, done: int, bar) -> None:
    """Evaluate on its own cadence (not only on log steps); its minutes do not count as training time."""
    paused = time.perf_counter()
    result = evaluate(run, done)
    if run.log_rows[-1]["step"] == done:
        run.log_rows[-1].update(result)
    grid = ""
    if run.mlflow is not None:
        run.mlflow.log_metrics({k: v for k, v in result.items() if v is not None}, step=done)
        grid = f"; sample grid: MLflow run {run.info['mlflow_run_id'][:8]}, image 'samples' at step {done}"
    loss_text = "n/a (no validation split)" if result["val_loss"] is None else f"{result['val_loss']:.4f}"
    bar.write(f"train: step {done}/{run.total_steps}: validation loss {loss_text}{grid}", file=bar.fp)
    clock.start += time.perf_counter() - paused


def save_snapshot(run: TrainRun, step: int, train_minutes: float) -> None:
    """EMA weights at this step, in fp16, as a model folder that GlyffuserPipeline loads (for the
    adherence-versus-training-time curve in benchmarks/)."""
    unet = copy.deepcopy(run.trainer.raw_unet)
    run.trainer.ema.copy_to(unet.parameters())
    info = {**run.info, "step": step, "train_minutes": round(train_minutes, 2)}
    save_model_folder(run.paths.checkpoints / "snapshots" / f"step-{step:08d}", unet.half(), run.scheduler_config, info,
                      write_prior_file(run))


def checkpoint(run: TrainRun, done: int) -> None:
    t = run.trainer
    if run.main:
        state = {"step": done, "model": t.raw_unet.state_dict(), "optimizer": t.optimizer.state_dict(),
                 "lr_scheduler": t.lr_sched.state_dict(), "ema": t.ema.state_dict(), "log": json.dumps(run.log_rows)}
        save_checkpoint(run.paths.checkpoints, done, state, run.run_id, run.params.train.keep_checkpoints)
    run.accelerator.wait_for_everyone()


def step_failed(run: TrainRun, step: int, err: NonFiniteLoss, last_finite: float | None) -> GlyffuserError:
    kept = latest_checkpoint(run.paths.checkpoints, run.run_id)[0]
    return GlyffuserError(
        f"training stopped at step {step + 1}/{run.total_steps}: {err}; last finite loss "
        f"{'none' if last_finite is None else f'{last_finite:.4g}'}; "
        f"{f'the last good checkpoint {kept.name} is kept' if kept else 'no checkpoint was written yet'}, "
        f"no model written; try a lower train.lr, train.grad_clip: 1.0, or train.mixed_precision: no")


def finish(run: TrainRun, clock: Clock) -> dict | None:
    """EMA weights into the model folder, the metrics and the loss curve (main process); checks the ranks agree."""
    t, accelerator = run.trainer, run.accelerator
    # Every rank must hold the same weights after DDP; a cheap, order-sensitive checksum tells.
    checksum = torch.stack([q.detach().double().sum() * (i + 1) for i, q in enumerate(t.raw_unet.parameters())]).sum()
    sums = accelerator.gather(checksum.reshape(1).to(accelerator.device))
    in_sync = bool(torch.allclose(sums, sums[0]))
    result = None
    if run.main:
        t.ema.copy_to(t.raw_unet.parameters())
        last = run.log_rows[-1]
        seen = [r for r in run.log_rows if r["step"] > run.start_step]
        result = {
            "train_loss": last["train_loss"], "val_loss": last.get("val_loss"),
            "img_per_s": sum(r["img_per_s"] for r in seen) / max(1, len(seen)),
            "epochs": last["epoch"], "steps": run.total_steps, "wall_time_min": round(clock.train_time / 60, 2),
            "parameters": count_parameters(t.raw_unet), "world_size": accelerator.num_processes, "ranks_in_sync": in_sync,
            "resumed_from_step": run.start_step,
        }
        write_outputs(run, result)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result


def write_outputs(run: TrainRun, result: dict) -> None:
    paths = run.paths
    report = make_report(TrainMetrics, result, "the train stage's metrics")  # before anything is written
    save_model_folder(paths.model, run.trainer.raw_unet, run.scheduler_config, run.info, write_prior_file(run))
    with atomic_outputs(paths.metrics, paths.curve) as (metrics_tmp, curve_tmp):
        metrics_tmp.write_text(report_json(report))
        with curve_tmp.open("w", newline="") as f:
            fields = ["step", "epoch", "train_loss", "val_loss", "lr", "grad_norm", "img_per_s"]
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(run.log_rows)
    if run.mlflow is not None:
        run.mlflow.log_metrics({f"final_{k}": float(v) for k, v in result.items()
                                if isinstance(v, (int, float)) and v is not None})
        run.mlflow.log_artifacts(str(paths.model), artifact_path="model")


def train_loop(run: TrainRun, bar, stop_after: int | None) -> dict | None:
    """The steps from run.start_step: train, log, evaluate, snapshot, checkpoint, then the outputs."""
    p, t = run.params.train, run.trainer
    batches = TrainBatches(run.data, p, run.seed, run.accelerator.process_index, run.accelerator.num_processes,
                           run.steps_per_epoch, t.noise_sched.config.num_train_timesteps, t.speed, run.accelerator.device)
    t.unet.train()
    clock = Clock(run.log_rows[-1].get("train_s", 0.0) if run.log_rows else 0.0)
    last_finite = run.log_rows[-1]["train_loss"] if run.log_rows else None
    for step in range(run.start_step, run.total_steps):
        try:
            loss, grad_norm = t(*batches.draw(step), step)
        except NonFiniteLoss as err:
            raise step_failed(run, step, err, last_finite) from None
        last_finite = loss
        clock.loss, clock.steps = clock.loss + loss, clock.steps + 1
        done = step + 1
        bar.update(1)
        if done % p.log_every == 0 or done == run.total_steps:
            log_window(run, clock, done, grad_norm, bar)
        if run.main and (p.eval_every and done % p.eval_every == 0 or done == run.total_steps):
            report_evaluation(run, clock, done, bar)
        if run.main and p.snapshot_every and done % p.snapshot_every == 0 and done < run.total_steps:
            save_snapshot(run, done, clock.minutes_now())
        if done % p.checkpoint_every == 0 and done < run.total_steps:
            checkpoint(run, done)
        if stop_after is not None and done >= stop_after:
            return None
    return finish(run, clock)


def run_train(params: Params, paths: TrainPaths, stop_after: int | None = None, track: bool = True) -> dict | None:
    """Train, checkpoint, resume; write the model and metrics. `stop_after` ends the run early like an
    interruption (for tests): the checkpoints stay, no final outputs are written, None is returned."""
    check_train_outputs(paths)
    if track:
        from glyffuser.tracking import require_store

        require_store()
    run = prepare(params, paths)
    tracking = start_tracking(run) if run.main and track else None
    try:
        with progress(run.total_steps, desc="train", unit="step", initial=run.start_step, disable=not run.main) as bar:
            return train_loop(run, bar, stop_after)
    except BaseException:
        if tracking is not None:
            tracking.__exit__(*sys.exc_info())  # marks the MLflow run FAILED
            tracking = None
        raise
    finally:
        if tracking is not None:
            tracking.__exit__(None, None, None)


# `glyffuser train`; the DVC stage `train` runs it as stages/train.py.
def add_arguments(p) -> None:
    inputs(p, "definitions", "glyphs", "embeddings")
    p.add_argument("--model", type=Path, default=Path(PIPELINE_FILES["trained"]), help="where the model folder goes")
    p.add_argument("--metrics", type=Path, default=Path("data/train/metrics.json"))
    p.add_argument("--curve", type=Path, default=Path("data/train/loss.csv"))
    p.add_argument("--checkpoints", type=Path, default=Path("data/train/checkpoints"))
    no_mlflow(p)


def command(args) -> dict | None:
    from glyffuser.params import load_params

    paths = TrainPaths(args.definitions, args.glyphs, args.embeddings, args.model, args.metrics, args.curve,
                       args.checkpoints)
    return run_train(load_params(args.params), paths, track=not args.no_mlflow)


def main(argv: list[str] | None = None) -> int:
    return run_command("train", __doc__.splitlines()[0], add_arguments, command, argv)
