"""The train stage's own step, timed: shared by the benchmarks that measure it (gpu.py, cpu.py, conditioning.py).

`train_ours` builds the step exactly as the train stage does (glyffuser.diffusion.training.build_training) and
times it on random images with stored-embedding-shaped text, or with the real stored embeddings
(`real_text_batches`)."""

from __future__ import annotations

import time

import torch
from common import ROOT

from glyffuser.diffusion.training import build_training
from glyffuser.diffusion.unet import denoise

TEXT_DIM = 384  # MiniLM's hidden size: the stored embeddings' width
DATA = ROOT / "data"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def text_batch(batch: int, gen: torch.Generator, device: torch.device, length: int | None = None):
    """Stored-embedding stand-in: (B, L, 384) and mask; `length` fixes L (what the compiled loop feeds)."""
    lengths = torch.randint(4, 21, (batch,), generator=gen)
    length = length or int(lengths.max())
    text = torch.randn(batch, length, TEXT_DIM, generator=gen).half()
    mask = torch.arange(length)[None] < lengths[:, None]
    return text.to(device), mask.to(device)


def time_steps(step, warmup: int, steps: int, device: torch.device) -> tuple[float, float]:
    """(seconds of the first warm-up step, e.g. compile; seconds per timed step)."""
    sync(device)
    t0 = time.perf_counter()
    step()
    sync(device)
    first = time.perf_counter() - t0
    for _ in range(warmup - 1):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return first, (time.perf_counter() - t0) / steps


def train_ours(p, device, batch, warmup, steps, compile_mode: str | None, channels_last: bool = True,
               fused: bool | None = None, bf16: bool = True, count_flops: bool = False, texts=None) -> dict:
    """The train stage's own step (glyffuser.diffusion.training.TrainStep from build_training, as run_train builds it)
    on random images, with the speed options given.

    `texts(gen) -> (text, mask)` supplies text batches (e.g. real stored embeddings); default: random
    embeddings of 4..20 tokens. `compile_mode`: None (eager) or a torch.compile backend.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # each variant picks its own precision
    accelerator = Accelerator(mixed_precision="bf16" if bf16 else "no", cpu=device.type == "cpu")
    options = {"batch_size": batch, "compile": compile_mode is not None, "channels_last": channels_last,
               "fused_optimizer": device.type == "cuda" if fused is None else fused}
    q = p.model_copy(update=options)
    trainer = build_training(q, 0, TEXT_DIM, accelerator, warmup + steps + 1, compile_backend=compile_mode or "inductor")
    speed = trainer.speed
    gen = torch.Generator().manual_seed(0)
    x0 = (torch.rand(batch, 1, p.resolution, p.resolution, generator=gen) * 2 - 1).to(device)
    if channels_last:
        x0 = x0.contiguous(memory_format=torch.channels_last)
    length = 64 if compile_mode else None  # the train loop pads to max_length when compiling

    def step():
        text, mask = texts(gen) if texts else text_batch(batch, gen, device, length)
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (batch,), device=device)
        trainer(x0, noise, t, text.to(device), mask.to(device))

    first, per_step = time_steps(step, warmup, steps, device)
    out = {"recipe": f"{'bf16 autocast' if bf16 else 'fp32'}, {'channels_last' if channels_last else 'NCHW'}, "
                     f"{'fused ' if speed.fused_optimizer else ''}AdamW, stored embeddings, min-SNR loss, grad clip, "
                     f"EMA, {'torch.compile (' + compile_mode + ')' if compile_mode else 'eager'}",
           "batch": batch, "img_per_s": round(batch / per_step, 1), "first_step_s": round(first, 2)}
    if count_flops:
        from torch.utils.flop_counter import FlopCounterMode

        unet = trainer.raw_unet
        text, mask = text_batch(batch, gen, device)
        counter = FlopCounterMode(display=False)
        with counter:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                pred = denoise(unet, x0, torch.randint(0, 1000, (batch,), device=device), text.float(), mask)
            pred.float().square().mean().backward()
        trainer.optimizer.zero_grad(set_to_none=True)
        out["flop_per_image"] = counter.get_total_flops() / batch
    AcceleratorState._reset_state(reset_partial_state=True)  # leave the process as we found it
    return out


def real_text_batches(batch: int, trim: bool):
    """Batches of the stored definition embeddings, trimmed to the longest prompt as the train loop does
    (`trim`), or padded to the longest stored one, as it does when compiling (fixed shapes)."""
    from glyffuser.artifacts.embeddings import load_embeddings
    from glyffuser.diffusion.training import batch_text

    emb = load_embeddings(DATA / "embed" / "embeddings.parquet")

    def draw(gen: torch.Generator):
        idx = torch.randint(0, len(emb.codepoints), (batch,), generator=gen)
        return batch_text(emb.hidden[idx], emb.mask[idx]) if trim else (emb.hidden[idx], emb.mask[idx])

    return draw
