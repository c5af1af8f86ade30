"""Sampling: GlyffuserPipeline turns English prompts into glyph images with a trained model.

    pipe = GlyffuserPipeline.from_pretrained("data/model")
    images = pipe(["a kind of fish"], num_images=4, steps=20, guidance=5.0, seed=0)  # list of PIL images

Image j of every prompt starts from the noise of seed + j, so the same seed gives the same images
and rows of a grid are comparable column by column. Guidance runs the conditional and the
unconditional (empty prompt) halves in one batched forward.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Literal

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from glyffuser.atomic import atomic_outputs
from glyffuser.diffusion import sampler
from glyffuser.encoders import TextEncoder, fingerprint, quiet_transformers, resolve_encoder
from glyffuser.errors import GlyffuserError
from glyffuser.images import tensor_to_images
from glyffuser.limits import check_request, clean_prompt
from glyffuser.model import denoise, image_size

MODEL_INFO = "glyffuser.json"


def pad_tokens(rows: list[torch.Tensor], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """[(l_i, D)] -> (N, L, D) zero-padded, (N, L) bool mask."""
    length = length or max(r.shape[0] for r in rows)
    text = torch.zeros(len(rows), length, rows[0].shape[1], dtype=rows[0].dtype)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, r in enumerate(rows):
        text[i, : r.shape[0]] = r[:length]
        mask[i, : r.shape[0]] = True
    return text, mask


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast runs on hardware here: CUDA with bf16, or a CPU with AMX / AVX512-BF16.

    Measured on a 2-core AMX CPU: 20-step sampling 9.9 glyphs/s in bf16 against 4.1 in fp32, with the
    same evaluate numbers (README). Without native bf16 a CPU emulates it, slower than fp32.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def guided_batch(text: torch.Tensor, mask: torch.Tensor, empty: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[conditional; unconditional] rows for one classifier-free-guidance forward: (N,L,D),(N,L) -> (2N,L',D),(2N,L')."""
    n = text.shape[0]
    length = max(text.shape[1], empty.shape[0])
    uncond, umask = pad_tokens([empty] * n, length)
    cond, cmask = pad_text(text, mask, length)
    return torch.cat([cond, uncond]), torch.cat([cmask, umask])


def pad_text(text: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, L, D), (N, L) -> (N, length, D), (N, length) with masked-out zero tokens; L > length is left as is."""
    extra = length - text.shape[1]
    if extra <= 0:
        return text, mask
    return (torch.cat([text, text.new_zeros(text.shape[0], extra, text.shape[2])], dim=1),
            torch.cat([mask, mask.new_zeros(mask.shape[0], extra)], dim=1))


def check_sampling(steps: int, guidance: float, scheduler_config: dict) -> None:
    """Refuse settings no sampler can honour, in one sentence, before any work."""
    timesteps = int(scheduler_config.get("num_train_timesteps", 1000))
    if not 1 <= steps <= timesteps:
        raise GlyffuserError(f"steps must be between 1 and the model's {timesteps} training timesteps, got {steps}")
    if not math.isfinite(guidance) or guidance < 0:
        raise GlyffuserError(f"guidance must be a finite number >= 0, got {guidance}")


@torch.inference_mode()
def sample(unet: UNet2DConditionModel, scheduler_config: dict, text: torch.Tensor, mask: torch.Tensor,
           empty: torch.Tensor, seeds: list[int], steps: int, guidance: float, scheduler: str = "dpmsolver++",
           progress=None, callback=None, bf16: bool | None = None,
           text_length: int | None = None) -> torch.Tensor:
    """Denoise one image per row of `text` (N, L, D) from the noise of `seeds`; returns (N, 1, R, R) in [-1, 1].

    `progress`: a progress bar (glyffuser.progress) advanced by one per step.
    `callback(i, t, x)`, if given, sees the noisy batch x_t after each step i (for animations).
    `bf16`: autocast the UNet to bfloat16; None = where the hardware has it (`native_bf16`).
    `text_length`: pad the text to this many (masked-out) tokens, so that a torch.compile'd UNet sees
    the same shape whatever the prompts; the padding changes no output beyond rounding.
    """
    check_sampling(steps, guidance, scheduler_config)
    device = unet.device
    res = image_size(unet)
    sched = sampler(scheduler, scheduler_config)
    sched.set_timesteps(steps, device=device)
    x = torch.cat([torch.randn(1, 1, res, res, generator=torch.Generator().manual_seed(s)) for s in seeds])
    x = (x * sched.init_noise_sigma).to(device)
    n = x.shape[0]
    if guidance == 0:  # unconditional
        text, mask = pad_tokens([empty] * n)
    elif guidance != 1:  # [conditional; unconditional] in one batch
        text, mask = guided_batch(text, mask, empty)
    if text_length is not None:
        text, mask = pad_text(text, mask, text_length)
    text, mask = text.to(device, torch.float32), mask.to(device)
    noise_gen = torch.Generator(device=device).manual_seed(seeds[0] + 1_000_003)  # DDPM's per-step noise
    use_bf16 = native_bf16(device) if bf16 is None else bf16
    for i, t in enumerate(sched.timesteps):
        inp = sched.scale_model_input(x, t)
        both = guidance not in (0, 1)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            out = denoise(unet, torch.cat([inp, inp]) if both else inp, t.expand(2 * n if both else n), text, mask)
        out = out.float()
        if both:
            cond, uncond = out.chunk(2)
            out = uncond + guidance * (cond - uncond)
        x = sched.step(out, t, x, generator=noise_gen).prev_sample if scheduler == "ddpm" else sched.step(out, t, x).prev_sample
        if callback is not None:
            callback(i, t, x.float().cpu())
        if progress is not None:
            progress.update(1)
    return x.clamp(-1, 1).float().cpu()


# What sampling needs from glyffuser.json (the train stage writes more).
MODEL_INFO_KEYS = ("encoder", "encoder_sha256", "max_length", "resolution")


class ModelInfo(BaseModel):
    """The types of glyffuser.json, checked on load (strict: "64" is not a number); other keys pass through."""

    model_config = ConfigDict(extra="allow", strict=True)
    encoder: Annotated[str, Field(min_length=1)]
    encoder_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    max_length: Annotated[int, Field(ge=1, le=4096)]
    resolution: Annotated[int, Field(ge=4, le=4096)]
    patch_size: Annotated[int, Field(ge=1, le=64)] = 1
    dim: Annotated[int, Field(ge=1)] | None = None
    mlflow_run_id: Annotated[str, Field(pattern=r"^[0-9A-Za-z_-]{1,64}$")] | None = None
    schedule: str | None = None
    prediction: str | None = None
    encoder_revision: str | None = None
    model_type: str | None = None


class SchedulerConfig(BaseModel):
    """The scheduler config keys sampling reads, checked on load; diffusers' other keys pass through."""

    model_config = ConfigDict(extra="allow", strict=True)
    num_train_timesteps: Annotated[int, Field(ge=1, le=100_000)] = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = "epsilon"
    trained_betas: list[float] | None = None


def _validated(model: type[BaseModel], data: object, file: Path) -> None:
    """One line naming the file and the first bad key."""
    try:
        model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(k) for k in first["loc"]) or "the top level"
        raise GlyffuserError(f"{file}: {key}: {first['msg']} (got {first.get('input')!r:.60}): it was not written "
                             "by the train stage, or was edited; retrain or restore it") from None


def read_model_info(path: Path) -> dict:
    """glyffuser.json of a model folder: encoder, resolution, schedule, MLflow run."""
    file = Path(path) / MODEL_INFO
    try:
        info = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GlyffuserError(f"{path} is not a glyffuser model folder (no {MODEL_INFO}); train one with dvc repro train") from None
    except (ValueError, OSError) as err:
        raise GlyffuserError(f"{file} is not readable JSON ({str(err).splitlines()[0]}): retrain, or restore the file") from None
    missing = [k for k in MODEL_INFO_KEYS if k not in info] if isinstance(info, dict) else ["an object"]
    if missing:
        raise GlyffuserError(f"{file} lacks {missing[0]!r}: it was not written by the train stage")
    _validated(ModelInfo, info, file)
    return info


class GlyffuserPipeline:
    """A trained UNet, its noise schedule, and the text encoder its embeddings came from."""

    def __init__(self, unet: UNet2DConditionModel, scheduler_config: dict, info: dict, bf16: bool | None = None,
                 compile: bool = False):
        self.unet, self.scheduler_config, self.info = unet.eval(), dict(scheduler_config), info
        self.bf16 = native_bf16(unet.device) if bf16 is None else bf16  # autocast while sampling
        # torch.compile the UNet for bulk sampling: it pays once the glyphs outnumber the compile's cost
        # (2-core CPU: a 40 s compile, then +44 % glyphs/s in bf16; about 1,100 glyphs to break even).
        self.compile = compile
        self._compiled: torch.nn.Module | None = None
        self._encoder: TextEncoder | None = None

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | None = None, bf16: bool | None = None,
                        compile: bool = False) -> GlyffuserPipeline:
        path = Path(path)
        info = read_model_info(path)
        try:
            # float32 weights (snapshots are stored in fp16); sampling autocasts where it pays off
            unet = UNet2DConditionModel.from_pretrained(path / "unet", use_safetensors=True).float()
            config = DDPMScheduler.load_config(path / "scheduler")
        except (OSError, ValueError, TypeError) as err:
            raise GlyffuserError(f"cannot load the model in {path}: {str(err).splitlines()[0]}") from None
        _validated(SchedulerConfig, config, path / "scheduler" / "scheduler_config.json")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        pipe = cls(unet.to(device), config, info, bf16, compile)
        if not pipe.bf16 and pipe.unet.device.type == "cpu":
            # fp32 on a CPU: NHWC convolutions gave +21 % glyphs/s (with bf16 they were 19 % slower)
            pipe.unet = pipe.unet.to(memory_format=torch.channels_last)
        return pipe

    @property
    def resolution(self) -> int:
        """Side in pixels of the glyphs this pipeline draws."""
        return image_size(self.unet)

    @property
    def denoiser(self) -> torch.nn.Module:
        """What sampling calls: the UNet, or (compile) its torch.compile'd wrapper, made on first use."""
        if not self.compile:
            return self.unet
        if self._compiled is None or self._compiled._orig_mod is not self.unet:
            self._compiled = torch.compile(self.unet)
        return self._compiled

    def sample(self, text: torch.Tensor, mask: torch.Tensor, empty: torch.Tensor, seeds: list[int], steps: int,
               guidance: float, scheduler: str = "dpmsolver++", progress=None, callback=None) -> torch.Tensor:
        """`sample` with this pipeline's UNet, schedule and settings: (N, L, D) text -> (N, 1, R, R) in [-1, 1]."""
        return sample(self.denoiser, self.scheduler_config, text, mask, empty, seeds, steps, guidance, scheduler,
                      progress, callback, self.bf16, self.info["max_length"] if self.compile else None)

    def save_pretrained(self, path: Path) -> None:
        """Write the model folder whole or not at all (it replaces only a model folder glyffuser wrote)."""
        with atomic_outputs(path, dirs=True) as (tmp,):
            self.unet.save_pretrained(tmp / "unet", safe_serialization=True)
            DDPMScheduler.from_config(self.scheduler_config).save_pretrained(tmp / "scheduler")
            (tmp / MODEL_INFO).write_text(json.dumps(self.info, indent=2) + "\n")

    @property
    def encoder(self) -> TextEncoder:
        if self._encoder is None:
            quiet_transformers()
            resolved = resolve_encoder(self.info["encoder"])
            if (found := fingerprint(resolved.path)) != self.info["encoder_sha256"]:
                raise GlyffuserError(
                    f"the model was trained on embeddings of encoder {self.info['encoder']!r} with content hash "
                    f"{self.info['encoder_sha256'][:12]}…, but {resolved.path} hashes to {found[:12]}…: "
                    "use the same encoder files, or retrain")
            self._encoder = TextEncoder(resolved, self.info["max_length"])
        return self._encoder

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, L, D) token states, (N, L) mask, (L0, D) empty prompt — rounded to fp16 as stored for training."""
        states, lengths = self.encoder.encode(list(prompts) + [""])
        for prompt, n in zip(prompts, lengths):
            if n > self.info["max_length"]:  # as in training, where the embed stage counted them
                print(f"glyffuser: warning: prompt {prompt[:40]!r}{'…' * (len(prompt) > 40)} has {n} tokens; the encoder "
                      f"keeps the first {self.info['max_length']} (embed.max_length), the rest is ignored",
                      file=sys.stderr)
        rows = [torch.from_numpy(s).half() for s in states]
        text, mask = pad_tokens(rows[:-1])
        return text, mask, rows[-1]

    def __call__(self, prompts: list[str] | str, num_images: int = 1, steps: int = 20, guidance: float = 5.0,
                 scheduler: str = "dpmsolver++", seed: int = 0, progress: bool = False,
                 batch_size: int = 64) -> list[Image.Image]:
        """num_images per prompt, prompt-major: [p0 s0, p0 s1, ..., p1 s0, ...]. `progress`: show a bar."""
        from glyffuser.progress import progress as progress_bar

        prompts = [clean_prompt(p) for p in ([prompts] if isinstance(prompts, str) else list(prompts))]
        check_request(len(prompts), num_images, seed)
        text, mask, empty = self.encode(prompts)
        rows = torch.repeat_interleave(torch.arange(len(prompts)), num_images)
        seeds = [seed + j for _ in prompts for j in range(num_images)]
        out = []
        batches = range(0, len(seeds), batch_size)
        with progress_bar(len(batches) * steps, desc="sample", unit="step", disable=not progress) as bar:
            for start in batches:
                sl = slice(start, start + batch_size)
                out.append(self.sample(text[rows[sl]], mask[rows[sl]], empty, seeds[sl], steps, guidance, scheduler,
                                       bar))
        return tensor_to_images(torch.cat(out))
