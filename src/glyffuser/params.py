"""params.yaml as one typed object, validated once.

Every stage calls `load_params()` and reads attributes; nothing else parses params.yaml. A wrong
value fails here with the dotted key in the message, before any work starts.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from glyffuser.errors import GlyffuserError

DEFAULT_PARAMS = Path("params.yaml")


class InvalidSetting(GlyffuserError, ValueError):
    """A bad number; a ValueError too, so params.yaml's validation reports it as one of its own."""


MAX_GUIDANCE = 100.0  # far past any useful scale (the guide sweeps 0..15): every glyph is black there


def check_guidance(value: object, name: str = "guidance") -> float:
    """Classifier-free guidance scale: 0..MAX_GUIDANCE (0 unconditional, 1 conditional, > 1 guided)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= MAX_GUIDANCE:
        raise InvalidSetting(f"{name} must be a number from 0 to {MAX_GUIDANCE:g}, got {value!r}")
    return value


def check_steps(steps: object, timesteps: int, name: str = "steps") -> int:
    """Sampler steps: from 1 to the model's training timesteps."""
    if not 1 <= steps <= timesteps:
        raise InvalidSetting(f"{name} must be between 1 and the model's {timesteps} training timesteps, got {steps}")
    return steps


# A guidance scale wherever one is given (params.yaml, --guidance, the pipeline, the playground): one check
# (it refuses infinities and NaN itself, naming the range).
Guidance = Annotated[float, Field(allow_inf_nan=True), AfterValidator(check_guidance)]

# The cascade's upsampler doubles the diffusion model's side (stages/upsampler.py)
UPSAMPLER_SCALE = 2


class _Group(BaseModel):
    # Unknown keys are typos, not extensions: refuse them. No number is infinite or NaN (`.inf` in YAML):
    # a bound like `epochs > 0` would let them through to fail deep inside a stage.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class BaseParams(_Group):
    # numpy and torch take seeds in [0, 2^32) everywhere we pass one; derived seeds are folded in range
    seed: Annotated[int, Field(ge=0, lt=2**32)]


class SourcesParams(_Group):
    font: str
    font_index: Annotated[int, Field(ge=0)]
    unihan: str


_RANGE = re.compile(r"^U\+([0-9A-Fa-f]{4,6})-U\+([0-9A-Fa-f]{4,6})$")


def parse_range(text: str) -> tuple[int, int]:
    """'U+4E00-U+9FFF' -> (0x4E00, 0x9FFF), both ends included."""
    m = _RANGE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a range like 'U+4E00-U+9FFF'")
    lo, hi = int(m.group(1), 16), int(m.group(2), 16)
    if lo > hi:
        raise ValueError(f"range {text!r} is empty (start after end)")
    if hi > 0x10FFFF:
        raise ValueError(f"range {text!r} goes past U+10FFFF")
    return lo, hi


class SplitParams(_Group):
    validation: Annotated[float, Field(ge=0.0, lt=1.0)]
    test: Annotated[float, Field(ge=0.0, lt=1.0)]

    @model_validator(mode="after")
    def _leaves_training_data(self) -> SplitParams:
        if self.validation + self.test >= 1.0:
            raise ValueError("validation + test must be below 1 so that a train split remains")
        return self


class RenderParams(_Group):
    ranges: list[str]
    image_size: Annotated[int, Field(ge=8, le=1024)]
    margin: Annotated[float, Field(ge=0.0, lt=0.5)]
    split: SplitParams
    preview_count: Annotated[int, Field(ge=1, le=400)]

    @field_validator("ranges")
    @classmethod
    def _valid_ranges(cls, ranges: list[str]) -> list[str]:
        if not ranges:
            raise ValueError("at least one range is needed")
        for r in ranges:
            parse_range(r)
        return ranges

    def codepoint_ranges(self) -> list[tuple[int, int]]:
        return [parse_range(r) for r in self.ranges]


class EmbedParams(_Group):
    encoder: str
    max_length: Annotated[int, Field(ge=2, le=512)]
    batch_size: Annotated[int, Field(ge=1)]
    radical_hint: bool = False  # a diagnostic: each definition is encoded after its radical's meaning
    radical_prior: bool = False  # each definition (and typed prompt) is encoded after the radical a text head guesses
    prior_tau: Annotated[float, Field(ge=0, le=3)] = 0.5  # logit adjustment of that guess towards rare radicals
    prior_folds: Annotated[int, Field(ge=2, le=20)] = 5  # cross-fitting folds over the training definitions
    prior_true_share: Annotated[float, Field(ge=0, le=1)] = 0.0  # training definitions encoded after their true radical


class TrainParams(_Group):
    resolution: Annotated[int, Field(ge=8, le=512)]
    patch_size: Annotated[int, Field(ge=1, le=8)]
    schedule_base_resolution: Annotated[int, Field(ge=8, le=512)]
    block_channels: Annotated[list[Annotated[int, Field(ge=8)]], Field(min_length=2)]
    layers_per_block: Annotated[int, Field(ge=1)]
    attention_levels: list[bool]
    attention_head_dim: Annotated[int, Field(ge=1)]
    pooled_text: bool
    film: bool = False
    cross_attention_only: list[bool] | None = None
    schedule: Literal["linear", "cosine"]
    prediction: Literal["epsilon", "v_prediction"]
    zero_terminal_snr: bool
    min_snr_gamma: Annotated[float, Field(ge=0)]
    loss_weighting: Literal["min_snr", "min_snr_plus_one"] = "min_snr"
    timestep_sampling: Literal["uniform", "logit_normal"] = "uniform"
    logit_normal_mean: Annotated[float, Field(ge=-5, le=5)] = 0.0
    logit_normal_std: Annotated[float, Field(gt=0, le=5)] = 1.0
    cfg_dropout: Annotated[float, Field(ge=0, lt=1)]
    caption_augmentation: Annotated[float, Field(ge=0, le=1)] = 0.0
    contrastive_flow: Annotated[float, Field(ge=0, lt=1)] = 0.0
    radical_balance: Annotated[float, Field(ge=0, le=1)] = 0.0
    seed: Annotated[int, Field(ge=0, lt=2**32)] | None = None
    epochs: Annotated[float, Field(gt=0)]
    batch_size: Annotated[int, Field(ge=1)]
    lr: Annotated[float, Field(gt=0, lt=1)]
    lr_warmup_steps: Annotated[int, Field(ge=0)]
    weight_decay: Annotated[float, Field(ge=0)]
    grad_clip: Annotated[float, Field(ge=0)]
    ema_decay: Annotated[float, Field(gt=0, lt=1)]
    mixed_precision: Literal["auto", "no", "bf16", "fp16"]
    log_every: Annotated[int, Field(ge=1)]
    eval_every: Annotated[int, Field(ge=0)]
    checkpoint_every: Annotated[int, Field(ge=1)]
    keep_checkpoints: Annotated[int, Field(ge=1)]
    val_images: Annotated[int, Field(ge=0)]
    eval_steps: Annotated[int, Field(ge=1, le=1000)]
    eval_guidance: Guidance
    snapshot_every: Annotated[int, Field(ge=0)]
    compile: Literal["auto"] | bool
    channels_last: Literal["auto"] | bool
    fused_optimizer: Literal["auto"] | bool

    @model_validator(mode="after")
    def _consistent(self) -> TrainParams:
        if len(self.attention_levels) != len(self.block_channels):
            raise ValueError("attention_levels needs one true/false per entry of block_channels")
        if self.cross_attention_only is not None and len(self.cross_attention_only) != len(self.block_channels):
            raise ValueError("cross_attention_only needs one true/false per entry of block_channels")
        if self.resolution % self.patch_size:
            raise ValueError(f"resolution {self.resolution} must be divisible by patch_size {self.patch_size}")
        if (self.resolution // self.patch_size) % 2 ** (len(self.block_channels) - 1):
            raise ValueError(f"resolution / patch_size must be divisible by 2^{len(self.block_channels) - 1} "
                             "(one halving per level)")
        if any(c % min(32, self.block_channels[0]) for c in self.block_channels):
            raise ValueError("every block_channels entry must be a multiple of the first (GroupNorm groups)")
        if any(c % self.attention_head_dim for c, a in zip(self.block_channels, self.attention_levels) if a) or \
                self.block_channels[-1] % self.attention_head_dim:
            raise ValueError("attention_head_dim must divide the channels of every attention level")
        if self.zero_terminal_snr and self.prediction != "v_prediction":
            raise ValueError("zero_terminal_snr needs prediction: v_prediction (epsilon is undefined at SNR 0)")
        return self

    def snr_scale(self) -> float:
        """The schedule's SNR factor: (schedule_base_resolution / resolution)², 1 when they are equal."""
        return (self.schedule_base_resolution / self.resolution) ** 2


class SampleParams(_Group):
    prompts: Annotated[list[str], Field(min_length=1)]
    seeds: Annotated[int, Field(ge=1, le=64)]
    steps: Annotated[int, Field(ge=1, le=1000)]
    guidance: Guidance
    scheduler: Literal["ddpm", "ddim", "dpmsolver++"]
    bf16: Literal["auto"] | bool
    compile: bool

    def autocast(self) -> bool | None:
        """bf16 autocast for sampling: True/False, or None for the pipeline's default (CUDA only)."""
        return None if self.bf16 == "auto" else self.bf16


class ClassifierParams(_Group):
    epochs: Annotated[int, Field(ge=1)]
    batch_size: Annotated[int, Field(ge=2)]
    lr: Annotated[float, Field(gt=0, lt=1)]
    weight_decay: Annotated[float, Field(ge=0)]
    label_smoothing: Annotated[float, Field(ge=0, lt=1)]
    width: Annotated[int, Field(ge=4)]
    architecture: Literal["plain", "residual"] = "plain"  # RadicalNet, or the second judge's ResidualRadicalNet
    seed: Annotated[int, Field(ge=0, lt=2**32)] | None = None  # null: base.seed


class AlignParams(_Group):
    enabled: bool
    characters: Annotated[int, Field(ge=1)]
    dev_characters: Annotated[int, Field(ge=1)]
    samples_per_prompt: Annotated[int, Field(ge=2, le=16)]
    min_margin: Annotated[float, Field(ge=0, lt=1)]
    all_pairs: bool = False
    beta: Annotated[float, Field(gt=0)]
    lr: Annotated[float, Field(gt=0, lt=1)]
    epochs: Annotated[int, Field(ge=1)]
    batch_size: Annotated[int, Field(ge=1)]
    eval_every: Annotated[int, Field(ge=1)]
    human_weight: Annotated[float, Field(ge=0)]
    seed: Annotated[int, Field(ge=0, lt=2**32)]


class UpsamplerParams(_Group):
    width: Annotated[int, Field(ge=4, le=1024)]
    depth: Annotated[int, Field(ge=2, le=64)]
    steps: Annotated[int, Field(ge=1)]
    batch_size: Annotated[int, Field(ge=1)]
    lr: Annotated[float, Field(gt=0, lt=1)]
    degradation: Annotated[float, Field(ge=0, le=4)]
    block: Annotated[int, Field(ge=1, le=64)]
    block_jitter: Annotated[float, Field(ge=0, le=1)]


class EvaluateParams(_Group):
    heldout_characters: Literal["all"] | Annotated[int, Field(ge=2)]
    samples_per_character: Annotated[int, Field(ge=1)]
    control_characters: Annotated[int, Field(ge=2)] = 300
    train_characters: Annotated[int, Field(ge=0)] = 1000
    prompt_radicals: dict[str, Annotated[int, Field(ge=1, le=214)]]
    copy_calibration: Annotated[int, Field(ge=10)]
    copy_quantile: Annotated[float, Field(gt=0, lt=1)]
    seed_sweep_prompt: str
    seed_sweep_seeds: Annotated[int, Field(ge=1, le=256)]

    @model_validator(mode="after")
    def _sweep_has_radical(self) -> EvaluateParams:
        if self.seed_sweep_prompt not in self.prompt_radicals:
            raise ValueError(f"seed_sweep_prompt {self.seed_sweep_prompt!r} needs its radical in prompt_radicals")
        return self


class UmapParams(_Group):
    resolution: Annotated[int, Field(ge=8, le=128)]
    pca_components: Annotated[int, Field(ge=2)]
    n_neighbors: Annotated[int, Field(ge=2)]
    min_dist: Annotated[float, Field(ge=0)]
    density_bins: Annotated[int, Field(ge=10)]
    density_sigma: Annotated[float, Field(gt=0)]
    top_radicals: Annotated[int, Field(ge=1, le=20)]


class FiguresParams(_Group):
    pixel_glyph: Annotated[str, Field(min_length=1, max_length=1)]
    forward_timesteps: Annotated[list[Annotated[int, Field(ge=0, le=999)]], Field(min_length=1)]
    steps_prompt: str
    step_counts: Annotated[list[Annotated[int, Field(ge=1, le=1000)]], Field(min_length=1)]
    single_step_prompt: str
    guidance_prompts: Annotated[list[str], Field(min_length=1)]
    guidance_scales: Annotated[list[Guidance], Field(min_length=1)]
    animation_prompts: Annotated[list[str], Field(min_length=1)]
    animation_steps: Annotated[int, Field(ge=2, le=1000)]
    step_samplers: Annotated[list[Literal["ddpm", "ddim", "dpmsolver++"]], Field(min_length=1)]
    signal_levels: Annotated[list[Annotated[float, Field(gt=0, le=1)]], Field(min_length=1)]
    trajectory_seeds: Annotated[int, Field(ge=1, le=256)]


class Params(_Group):
    base: BaseParams
    sources: SourcesParams
    render: RenderParams
    embed: EmbedParams
    train: TrainParams
    sample: SampleParams
    classifier: ClassifierParams
    second_judge: ClassifierParams
    reward_judge: ClassifierParams
    align: AlignParams
    upsampler: UpsamplerParams
    evaluate: EvaluateParams
    umap: UmapParams
    figures: FiguresParams

    @model_validator(mode="after")
    def _the_cascade_fits(self) -> Params:
        """The upsampler stage runs after training: what it needs is checked here, before any stage runs."""
        low, high = self.train.resolution, UPSAMPLER_SCALE * self.train.resolution
        if self.render.image_size < high:
            raise ValueError(f"render.image_size is {self.render.image_size}, but the upsampler stage learns {low} -> "
                             f"{high} px from real renders: render at {high} px or more (render.image_size)")
        if low % self.upsampler.block:
            raise ValueError(f"upsampler.block {self.upsampler.block} must divide train.resolution {low} (it jitters "
                             "whole tiles of the drafts: set it to train.patch_size)")
        return self

    @model_validator(mode="after")
    def _every_prompt_has_a_radical(self) -> Params:
        missing = [p for p in self.sample.prompts if p not in self.evaluate.prompt_radicals]
        if missing:
            raise ValueError(f"evaluate.prompt_radicals needs the radical of sample prompt {missing[0]!r}")
        if self.figures.single_step_prompt not in self.evaluate.prompt_radicals:
            raise ValueError(f"evaluate.prompt_radicals needs the radical of figures.single_step_prompt "
                             f"{self.figures.single_step_prompt!r} (the trajectory figure reads it)")
        return self


def _describe(err: ValidationError, path: Path) -> str:
    """The first problem, an unknown key before anything else: a misspelt `train.epoch` also leaves
    `train.epochs` missing, and the typo is what the user has to fix."""
    errors = err.errors()
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        import difflib

        known = [".".join(str(p) for p in e["loc"]) for e in errors if e["type"] == "missing"]
        close = difflib.get_close_matches(key, known, n=1)
        msg = "unknown key" + (f" (did you mean {close[0]}?)" if close else "")
    more = f" (and {err.error_count() - 1} more problem(s))" if err.error_count() > 1 else ""
    return f"{path}: {key}: {msg}{more}"


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (PyYAML keeps the last one silently)."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice in one mapping",
                                                    key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def parse_params(data: object, path: Path = DEFAULT_PARAMS) -> Params:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise GlyffuserError(f"{path}: expected a mapping of parameter groups at the top level")
    try:
        return Params.model_validate(data)
    except ValidationError as err:
        raise GlyffuserError(_describe(err, path)) from None


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise GlyffuserError(f"cannot read parameters file {path}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise GlyffuserError(f"parameters file {path} is not UTF-8 text (byte {err.start}): give a params.yaml") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader that also refuses duplicate keys
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None)
        where = f" (line {err.problem_mark.line + 1})" if getattr(err, "problem_mark", None) and problem else ""
        detail = f"{problem}{where}" if problem else str(err).splitlines()[0]
        raise GlyffuserError(f"{path} is not valid YAML: {detail}") from None
    return parse_params(data, path)


def with_overrides(params: Params, overrides: dict[str, object]) -> Params:
    """Copy of `params` with dotted keys replaced, validated again: {"render.image_size": 32}."""
    data = params.model_dump()
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for i, key in enumerate(parents):
            if not isinstance(node, dict) or key not in node:
                raise GlyffuserError(f"unknown parameter {dotted!r}: no group {'.'.join(parents[:i + 1])!r}")
            node = node[key]
        if not isinstance(node, dict) or leaf not in node:
            raise GlyffuserError(f"unknown parameter {dotted!r}")
        node[leaf] = value
    return parse_params(data, Path("<overrides>"))
