"""Sampling: GlyffuserPipeline turns English prompts into glyph images with a trained model.

    pipe = GlyffuserPipeline.from_pretrained("data/align/model", upsampler="data/upsampler")
    images = pipe(["a kind of fish"], num_images=4, steps=20, guidance=5.0, seed=0)  # list of 128 px PIL images
    drafts = pipe(["a kind of fish"], num_images=4, base=True)                       # the 64 px diffusion drafts

With an upsampler (the upsampler stage's folder, or a model folder's own `upsampler/`) it is a cascade: the
diffusion model draws at its training side, the upsampler CNN doubles it (glyffuser/diffusion/upsampler.py).

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
from safetensors.torch import save_file

from glyffuser.artifacts.images import tensor_to_images
from glyffuser.artifacts.model_folder import load_model_folder, read_model_info, save_model_folder
from glyffuser.artifacts.upsampler_folder import load_upsampler_folder, read_upsampler_config, write_upsampler_files
from glyffuser.diffusion.encoders import TextEncoder, fingerprint, quiet_transformers, resolve_encoder
from glyffuser.diffusion.prior import PRIOR_FILE, RadicalPrior, hint, pooled_rows, read_prior
from glyffuser.diffusion.process import check_sampling, native_bf16, pad_tokens, sample, sample_progressive
from glyffuser.diffusion.unet import image_size
from glyffuser.diffusion.upsampler import Upsampler, upsample
from glyffuser.errors import GlyffuserError
from glyffuser.limits import check_request, clean_prompt

ENCODE_CHUNK = 256  # prompts per text-encoder pass (about a second on 2 cores): a request can stop between passes
UPSAMPLER_DIR = "upsampler"  # a model folder's own upsampler (save_pretrained, the registered MLflow model)
PIPELINE_UPSAMPLER = Path("data/upsampler")  # where the upsampler stage writes it


def choose_upsampler(model: str | Path, upsampler: Path | None, base: bool) -> Path | bool:
    """The command line's choice (sample, evaluate, demo): --base: none; --upsampler PATH: that one; neither: the model
    folder's own, else the pipeline's data/upsampler when the upsampler stage has run for this model's side, else none.
    Returns what GlyffuserPipeline.from_pretrained takes as `upsampler`: a folder, or False for none. A damaged
    data/upsampler is an error, never a silent fall back to the drafts' side."""
    if base and upsampler is not None:
        raise GlyffuserError("--base means the drafts, without an upsampler: give --base or --upsampler, not both")
    if base:
        return False
    if upsampler is not None:
        return upsampler
    if (Path(model) / UPSAMPLER_DIR).is_dir():
        return Path(model) / UPSAMPLER_DIR
    if not PIPELINE_UPSAMPLER.exists():
        return False  # no upsampler stage output here: the model's own side
    takes = read_upsampler_config(PIPELINE_UPSAMPLER)["input_resolution"]
    return PIPELINE_UPSAMPLER if takes == read_model_info(Path(model))["resolution"] else False


class GlyffuserPipeline:
    """A trained UNet, its noise schedule, the text encoder its embeddings came from, and optionally an upsampler."""

    def __init__(self, unet: UNet2DConditionModel, scheduler_config: dict, info: dict, bf16: bool | None = None,
                 compile: bool = False, upsampler: Upsampler | None = None, prior: RadicalPrior | None = None):
        self.unet, self.scheduler_config, self.info = unet.eval(), dict(scheduler_config), info
        self.upsampler = upsampler
        self.prior = prior  # a model trained on guessed radicals (embed.radical_prior) guesses a prompt's the same way
        if "radical_prior" in info and prior is None:
            raise GlyffuserError("this model was trained with each text after its guessed radical (embed.radical_prior): "
                                 f"it needs the guessing head, {PRIOR_FILE} of its model folder")
        self.bf16 = native_bf16(unet.device) if bf16 is None else bf16  # autocast while sampling
        # torch.compile the UNet for bulk sampling: it pays once the glyphs outnumber the compile's cost
        # (2-core CPU: a 40 s compile, then +44 % glyphs/s in bf16; about 1,100 glyphs to break even).
        self.compile = compile
        self._compiled: torch.nn.Module | None = None
        self._encoder: TextEncoder | None = None
        self._encoder_lock = threading.Lock()  # concurrent requests (a served model) load it once

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | None = None, bf16: bool | None = None,
                        compile: bool = False, encoder: str | Path | None = None,
                        upsampler: str | Path | bool | None = None) -> GlyffuserPipeline:
        """A model folder (artifacts/model_folder.py). `encoder`: a folder holding the text encoder to use
        instead of the one glyffuser.json names (an MLflow model bundles its own); its files must hash the same.
        `upsampler`: an upsampler folder (the upsampler stage's); None: the model folder's own `upsampler/` if it has
        one; True: the model folder's own, which must be there; False: none (the pipeline draws at the diffusion
        model's side)."""
        unet, config, info = load_model_folder(path)
        if encoder is not None:
            info = {**info, "encoder": str(encoder)}
        own = Path(path) / UPSAMPLER_DIR
        if upsampler is True and not own.is_dir():
            raise GlyffuserError(f"the model folder {path} has no {UPSAMPLER_DIR}/ of its own (upsampler=True asks for "
                                 "it): give the upsampler stage's folder, or None for the drafts")
        if upsampler is True or upsampler is None and own.is_dir():
            upsampler = own
        net, net_config = load_upsampler_folder(Path(upsampler)) if upsampler not in (None, False) else (None, None)
        if net_config and net_config["input_resolution"] != image_size(unet):
            raise GlyffuserError(f"the upsampler in {upsampler} takes {net_config['input_resolution']} px glyphs, but the "
                                 f"model in {path} draws {image_size(unet)} px: re-run the upsampler stage")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        prior = read_prior(Path(path)) if "radical_prior" in info else None
        pipe = cls(unet.to(device), config, info, bf16, compile, net.to(device) if net else None, prior)
        if not pipe.bf16 and pipe.unet.device.type == "cpu":
            # fp32 on a CPU: NHWC convolutions gave +21 % glyphs/s (with bf16 they were 19 % slower)
            pipe.unet = pipe.unet.to(memory_format=torch.channels_last)
        return pipe

    @property
    def resolution(self) -> int:
        """Side in pixels of the glyphs the diffusion model draws (the cascade's base)."""
        return image_size(self.unet)

    @property
    def output_resolution(self) -> int:
        """Side in pixels of the glyphs this pipeline returns: the upsampler's output side, or the base's."""
        return self.resolution * (self.upsampler.scale if self.upsampler is not None else 1)

    def upscale(self, images: torch.Tensor) -> torch.Tensor:
        """The cascade's second step: (N,1,R,R) base glyphs -> (N,1,2R,2R), both in [-1,1]; unchanged without one."""
        if self.upsampler is None:
            return images
        return upsample(self.upsampler, images.to(next(self.upsampler.parameters()).device)).cpu()

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

    def sample_progressive(self, text: torch.Tensor, mask: torch.Tensor, empty: torch.Tensor, seeds: list[int],
                           steps: int, guidance: float, scheduler: str = "dpmsolver++"):
        """`sample_progressive` with this pipeline's UNet and settings: yields each `Step` (t, x_t, x̂₀) as it is made."""
        return sample_progressive(self.denoiser, self.scheduler_config, text, mask, empty, seeds, steps, guidance,
                                  scheduler, self.bf16, self.info["max_length"] if self.compile else None)

    def save_pretrained(self, path: Path) -> None:
        """Write the model folder (artifacts/model_folder.py) whole or not at all, the upsampler inside it."""
        def more(folder: Path) -> None:
            if self.upsampler is not None:
                write_upsampler_files(folder / UPSAMPLER_DIR, self.upsampler, self.resolution)
            if self.prior is not None:
                save_file(self.prior.tensors(), folder / PRIOR_FILE)

        save_model_folder(path, self.unet, self.scheduler_config, self.info, more)

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

    def guess_hints(self, prompts: list[str], stop: Callable[[], None] | None = None) -> list[str]:
        """Per prompt, what a model trained with embed.radical_prior reads before it ("radical fish: "), guessed from
        the plain prompt's fp16 token states as the embed stage guessed the held-out definitions'; "" without one."""
        if self.prior is None:
            return [""] * len(prompts)
        states, _ = self._encode_texts(prompts, stop)
        names = self.info["radical_prior"]["names"]
        return [hint(names[int(r)]) for r in self.prior.predict(pooled_rows(states))]

    def _encode_texts(self, texts: list[str], stop: Callable[[], None] | None) -> tuple[list, list[int]]:
        states, lengths = [], []
        for start in range(0, len(texts), ENCODE_CHUNK):
            if stop is not None:
                stop()
            chunk_states, chunk_lengths = self.encoder.encode(texts[start:start + ENCODE_CHUNK])
            states += chunk_states
            lengths += chunk_lengths
        return states, lengths

    def encode(self, prompts: list[str], stop: Callable[[], None] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, L, D) token states, (N, L) mask, (L0, D) empty prompt — rounded to fp16 as stored for training.
        ENCODE_CHUNK texts per encoder pass, `stop()` before each (it may raise to abandon the work). A model trained
        with embed.radical_prior reads each prompt after its guessed radical, the empty prompt as it is."""
        hints = self.guess_hints(list(prompts), stop)
        states, lengths = self._encode_texts([h + p for h, p in zip(hints, prompts)] + [""], stop)
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
                 batch_size: int = 64, stop: Callable[[], None] | None = None, base: bool = False) -> list[Image.Image]:
        """num_images per prompt, prompt-major: [p0 s0, p0 s1, ..., p1 s0, ...]. `progress`: show a bar.
        `stop()` is called after every step and may raise to abandon the work (a served request's deadline).
        `base`: the diffusion model's drafts, not upsampled."""
        from glyffuser.progress import progress as progress_bar

        prompts = [clean_prompt(p) for p in ([prompts] if isinstance(prompts, str) else list(prompts))]
        check_request(len(prompts), num_images, seed, steps)
        check_sampling(steps, guidance, self.scheduler_config, scheduler)  # before the prompts are encoded
        callback = None if stop is None else (lambda i, t, x: stop())
        text, mask, empty = self.encode(prompts, stop)
        rows = torch.repeat_interleave(torch.arange(len(prompts)), num_images)
        seeds = [seed + j for _ in prompts for j in range(num_images)]
        out = []
        batches = range(0, len(seeds), batch_size)
        with progress_bar(len(batches) * steps, desc="sample", unit="step", disable=not progress) as bar:
            for start in batches:
                sl = slice(start, start + batch_size)
                drafts = self.sample(text[rows[sl]], mask[rows[sl]], empty, seeds[sl], steps, guidance, scheduler,
                                     bar, callback)
                out.append(drafts if base else self.upscale(drafts))
        return tensor_to_images(torch.cat(out))
