"""One optimizer step of the train stage and what it is built from: the model, optimizer, LR schedule
and EMA (`build_training`), the step itself (`TrainStep`), the validation loss, and the seeded draws
that make a step a pure function of (seed, rank, step). stages/train.py runs the loop around them;
benchmarks/ time `TrainStep` itself.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel

from glyffuser.artifacts.checkpoints import pause_point
from glyffuser.artifacts.embeddings import definitions_digest, load_embeddings
from glyffuser.artifacts.glyph_tables import read_glyph_tables
from glyffuser.artifacts.images import pngs_to_tensor
from glyffuser.diffusion.process import diffusion_loss, sample_timesteps, training_scheduler, with_dropped_prompts
from glyffuser.diffusion.unet import build_unet, denoise
from glyffuser.errors import GlyffuserError

SEED_SPACE = 2**63  # torch generators take seeds below 2^64; derived seeds are folded into this range


@dataclass
class GlyphSet:
    """One split: images (N,1,R,R) in [-1,1], text (N,L,D) fp16 with mask (N,L), and row metadata."""

    images: torch.Tensor
    text: torch.Tensor
    mask: torch.Tensor
    codepoints: np.ndarray
    definitions: list[str]
    radicals: np.ndarray
    sense: torch.Tensor | None = None  # (N,L) int8: each token's ';'-separated sense, -1 special/padding

    def __len__(self) -> int:
        return len(self.codepoints)


@dataclass
class TrainingData:
    train: GlyphSet
    validation: GlyphSet
    empty_text: torch.Tensor  # (L0, D) the empty prompt's tokens, for classifier-free guidance
    embedding_meta: dict


def load_training_data(definitions_path: Path, glyphs_path: Path, embeddings_path: Path, resolution: int) -> TrainingData:
    defs, glyphs = read_glyph_tables(definitions_path, glyphs_path, ("definition", "radical", "split"))
    emb = load_embeddings(embeddings_path)
    codepoints = defs.column("codepoint").to_numpy()
    texts = defs.column("definition").to_pylist()
    if emb.meta.get("definitions_sha256") != definitions_digest(codepoints.tolist(), texts):
        raise GlyffuserError(f"{embeddings_path} was computed from other definitions than {definitions_path}: "
                             "re-run the embed stage (dvc repro embed)")
    if emb.codepoints.tolist() != codepoints.tolist():
        raise GlyffuserError(f"{embeddings_path} and {definitions_path} list different characters: re-run the embed stage")
    splits = np.array(defs.column("split").to_pylist())
    radicals = defs.column("radical").to_numpy()
    pngs = glyphs.column("png").to_pylist()

    def subset(name: str) -> GlyphSet:
        idx = np.nonzero(splits == name)[0]
        images = pngs_to_tensor([pngs[i] for i in idx], resolution, glyphs_path, codepoints[idx].tolist())
        return GlyphSet(images, emb.hidden[idx], emb.mask[idx],
                        codepoints[idx], [texts[i] for i in idx], radicals[idx],
                        None if emb.sense is None else emb.sense[idx])

    train = subset("train")
    if len(train) == 0:
        raise GlyffuserError("the train split is empty: widen render.ranges or lower render.split fractions")
    return TrainingData(train, subset("validation"), emb.empty_hidden, emb.meta)



def step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(((seed * 1_000_003 + rank) * 10_000_019 + step) % SEED_SPACE)


def epoch_permutation(seed: int, epoch: int, n: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """One epoch's order of the n training glyphs: a permutation, or with `weights` (n,) n draws with
    replacement in proportion to them (rebalanced sampling: an epoch still has n images)."""
    g = torch.Generator().manual_seed((seed * 7_919 + epoch) % SEED_SPACE)
    if weights is None:
        return torch.randperm(n, generator=g)
    return torch.multinomial(weights, n, replacement=True, generator=g)


def radical_weights(radicals: np.ndarray, alpha: float) -> torch.Tensor | None:
    """Per-glyph sampling weights count(radical)^-alpha (N,), so that a radical's share of the draws is
    proportional to count^(1-alpha): 0 = as in the data (None: plain permutations), 0.5 = square-root
    inverse frequency, 1 = every radical equally often."""
    if alpha == 0:
        return None
    _, inverse, counts = np.unique(radicals, return_inverse=True, return_counts=True)
    return torch.from_numpy(counts[inverse].astype(np.float64) ** -alpha)


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


def precision(choice: str) -> str:
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
        loss = diffusion_loss(pred, x0, noise, t, self.noise_sched, p.min_snr_gamma, p.loss_weighting,
                              p.contrastive_flow)
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


class TrainBatches:
    """The batches of the train split for one process, on its device: `draw(step)` gives step's
    (x0, noise, t, text, mask), a pure function of (seed, rank, step), so a resumed run draws what an
    unbroken one would have. Text rows dropped for guidance already hold the empty prompt."""

    def __init__(self, data: TrainingData, p, seed: int, rank: int, world: int, steps_per_epoch: int, timesteps: int,
                 speed: Speedups, device: torch.device):
        train = data.train
        self.images, self.texts, self.masks = train.images.to(device), train.text.to(device), train.mask.to(device)
        self.senses, self.empty = train.sense, data.empty_text.to(device)
        self.n, self.p, self.seed, self.rank, self.world = len(train), p, seed, rank, world
        self.steps_per_epoch, self.timesteps, self.speed, self.device = steps_per_epoch, timesteps, speed, device
        self._epoch, self._perm = -1, None
        self.weights = radical_weights(train.radicals, p.radical_balance)

    def draw(self, step: int):
        p, device = self.p, self.device
        epoch, k = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, epoch_permutation(self.seed, epoch, self.n, self.weights).to(device)
        start = (k * self.world + self.rank) * p.batch_size
        idx = self._perm[torch.arange(start, start + p.batch_size, device=device) % self.n]
        g = step_generator(self.seed, self.rank, step)
        noise = torch.randn((p.batch_size, 1, p.resolution, p.resolution), generator=g).to(device)
        t = sample_timesteps(p.batch_size, self.timesteps, p.timestep_sampling, g, p.logit_normal_mean,
                             p.logit_normal_std).to(device)
        drop = (torch.rand(p.batch_size, generator=g) < p.cfg_dropout).to(device)
        x0 = self.images[idx]
        # compiled: fixed shapes (text padded to max_length); eager: trimmed to the batch's longest prompt
        text, mask = (self.texts[idx], self.masks[idx]) if self.speed.compile else batch_text(self.texts[idx], self.masks[idx])
        if p.caption_augmentation > 0:  # after trimming: batch_text expects the mask to be a prefix
            mask = sense_subsets(mask, self.senses[idx.cpu()][:, : mask.shape[1]], p.caption_augmentation, g)
        if self.speed.channels_last:
            x0, noise = x0.contiguous(memory_format=torch.channels_last), noise.contiguous(memory_format=torch.channels_last)
        text, mask = with_dropped_prompts(text, mask, self.empty, drop)
        return x0, noise, t, text, mask


def batch_text(text: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Trim the padded token axis to the longest prompt in the batch: (B,L,D),(B,L) -> (B,l,D),(B,l)."""
    length = max(int(mask.sum(dim=1).max()), 1)
    return text[:, :length], mask[:, :length]


def sense_subsets(mask: torch.Tensor, sense: torch.Tensor, share: float, gen: torch.Generator) -> torch.Tensor:
    """Caption augmentation: for a `share` of the rows whose definition has 2 or more ';'-separated senses,
    keep a random subset of its senses (each with probability 1/2, at least one) by masking out the
    other senses' tokens; special tokens stay. mask, sense: (B,L) -> the new mask (B,L).
    The kept tokens' states were computed with the whole definition in context (the encoder is not
    re-run), so a subset here is close to, not equal to, encoding the shorter definition."""
    b = mask.shape[0]
    s = sense.long().cpu()
    n_senses = s.max(dim=1).values + 1  # (B,) 0 for rows of special tokens only
    keep = torch.rand(b, max(int(n_senses.max()), 1), generator=gen) < 0.5  # (B,S)
    one = (torch.rand(b, generator=gen) * n_senses.clamp(min=1)).long()  # a sense that is always kept
    keep[torch.arange(b), one] = True
    apply = (torch.rand(b, generator=gen) < share) & (n_senses >= 2)  # (B,)
    token_kept = (s < 0) | keep.gather(1, s.clamp(min=0)) | ~apply[:, None]  # (B,L)
    return mask & token_kept.to(mask.device)
