"""Sampling: GlyffuserPipeline turns English prompts into glyph images with a trained model.

    pipe = GlyffuserPipeline.from_pretrained("data/model")
    images = pipe(["a kind of fish"], num_images=4, steps=20, guidance=5.0, seed=0)  # list of PIL images

Image j of every prompt starts from the noise of seed + j, so the same seed gives the same images
and rows of a grid are comparable column by column. Guidance runs the conditional and the
unconditional (empty prompt) halves in one batched forward.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from PIL import Image

from glyffuser.artifacts.images import tensor_to_images
from glyffuser.artifacts.model_folder import load_model_folder, save_model_folder
from glyffuser.diffusion.encoders import TextEncoder, fingerprint, quiet_transformers, resolve_encoder
from glyffuser.diffusion.process import native_bf16, pad_tokens, sample
from glyffuser.diffusion.unet import image_size
from glyffuser.errors import GlyffuserError
from glyffuser.limits import check_request, clean_prompt


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
        self._encoder_lock = threading.Lock()  # concurrent requests (a served model) load it once

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | None = None, bf16: bool | None = None,
                        compile: bool = False, encoder: str | Path | None = None) -> GlyffuserPipeline:
        """A model folder (artifacts/model_folder.py). `encoder`: a folder holding the text encoder to use
        instead of the one glyffuser.json names (an MLflow model bundles its own); its files must hash the same."""
        unet, config, info = load_model_folder(path)
        if encoder is not None:
            info = {**info, "encoder": str(encoder)}
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
        """Write the model folder (artifacts/model_folder.py) whole or not at all."""
        save_model_folder(path, self.unet, self.scheduler_config, self.info)

    @property
    def encoder(self) -> TextEncoder:
        with self._encoder_lock:
            return self._encoder or self._load_encoder()

    def _load_encoder(self) -> TextEncoder:
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
                 batch_size: int = 64, stop: Callable[[], None] | None = None) -> list[Image.Image]:
        """num_images per prompt, prompt-major: [p0 s0, p0 s1, ..., p1 s0, ...]. `progress`: show a bar.
        `stop()` is called after every step and may raise to abandon the work (a served request's deadline)."""
        from glyffuser.progress import progress as progress_bar

        prompts = [clean_prompt(p) for p in ([prompts] if isinstance(prompts, str) else list(prompts))]
        check_request(len(prompts), num_images, seed, steps)
        callback = None if stop is None else (lambda i, t, x: stop())
        text, mask, empty = self.encode(prompts)
        rows = torch.repeat_interleave(torch.arange(len(prompts)), num_images)
        seeds = [seed + j for _ in prompts for j in range(num_images)]
        out = []
        batches = range(0, len(seeds), batch_size)
        with progress_bar(len(batches) * steps, desc="sample", unit="step", disable=not progress) as bar:
            for start in batches:
                sl = slice(start, start + batch_size)
                out.append(self.sample(text[rows[sl]], mask[rows[sl]], empty, seeds[sl], steps, guidance, scheduler,
                                       bar, callback))
        return tensor_to_images(torch.cat(out))
