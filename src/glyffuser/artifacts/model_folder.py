"""The model folder the train stage writes and every later stage reads (diffusers layout):

    unet/            UNet2DConditionModel weights (safetensors) and config
    scheduler/       the training noise schedule (DDPMScheduler config)
    glyffuser.json   encoder, its content hash, resolution, schedule, MLflow run id, the weights' sha256

Reading the info needs no model code (the umap stage only reads it); loading builds the UNet from its
config, so no glyffuser model code is needed either.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from diffusers import DDPMScheduler, UNet2DConditionModel
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from glyffuser.artifacts.atomic import atomic_outputs
from glyffuser.artifacts.hashing import sha256_file
from glyffuser.errors import GlyffuserError

MODEL_INFO = "glyffuser.json"
WEIGHTS = Path("unet") / "diffusion_pytorch_model.safetensors"

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
    # sha256 of unet/diffusion_pytorch_model.safetensors: a damaged or edited weights file is refused on load
    # (folders written before the hash was recorded load unchecked)
    weights_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None


class SchedulerConfig(BaseModel):
    """The scheduler config keys sampling reads, checked on load; diffusers' other keys pass through."""

    model_config = ConfigDict(extra="allow", strict=True)
    num_train_timesteps: Annotated[int, Field(ge=1, le=100_000)] = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2", "laplace", "sigmoid"] = "linear"
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = "epsilon"
    trained_betas: list[float] | None = None


class UNetConfig(BaseModel):
    """The UNet config keys that size the model and its samples, checked before anything is built from them."""

    model_config = ConfigDict(extra="allow", strict=True)
    sample_size: Annotated[int, Field(ge=1, le=4096)]
    in_channels: Annotated[int, Field(ge=1, le=64)] = 4
    out_channels: Annotated[int, Field(ge=1, le=64)] = 4
    block_out_channels: list[Annotated[int, Field(ge=1, le=65536)]] | None = None
    cross_attention_dim: Annotated[int, Field(ge=1, le=65536)] | None = None


def _read_json(file: Path) -> object:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GlyffuserError(f"{file} is missing: not a complete model folder; retrain, or restore it") from None
    except (ValueError, OSError) as err:
        raise GlyffuserError(f"{file} is not readable JSON ({str(err).splitlines()[0]}): retrain, or restore it") from None


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
    if not isinstance(info, dict):
        raise GlyffuserError(f"{file} holds {type(info).__name__} {str(info)[:40]}, not a JSON object: it was not "
                             "written by the train stage")
    if missing := [k for k in MODEL_INFO_KEYS if k not in info]:
        raise GlyffuserError(f"{file} lacks {missing[0]!r}: it was not written by the train stage")
    _validated(ModelInfo, info, file)
    return info


def load_model_folder(path: Path) -> tuple[UNet2DConditionModel, dict, dict]:
    """(UNet in float32, scheduler config, info) of a model folder, each checked; one error line otherwise."""
    path = Path(path)
    info = read_model_info(path)
    if info.get("weights_sha256") and (path / WEIGHTS).is_file() and sha256_file(path / WEIGHTS) != info["weights_sha256"]:
        raise GlyffuserError(f"{path / WEIGHTS} does not match the sha256 recorded in {path / MODEL_INFO}: the weights "
                             "were damaged or edited; retrain, or restore the model folder")
    # The configs are checked before diffusers builds anything from them (a sample_size of 1e9, an unknown
    # beta schedule: tracebacks deep inside diffusers, or a huge allocation).
    _validated(UNetConfig, _read_json(path / "unet" / "config.json"), path / "unet" / "config.json")
    scheduler_file = path / "scheduler" / "scheduler_config.json"
    _validated(SchedulerConfig, _read_json(scheduler_file), scheduler_file)
    try:
        # float32 weights (snapshots are stored in fp16); sampling autocasts where it pays off
        unet = UNet2DConditionModel.from_pretrained(path / "unet", use_safetensors=True).float()
        config = DDPMScheduler.load_config(path / "scheduler")
    except Exception as err:  # diffusers' and safetensors' own errors, whatever their type
        raise GlyffuserError(f"cannot load the model in {path}: {str(err).strip().splitlines()[0][:200]}") from None
    return unet, config, info


def save_model_folder(path: Path, unet: UNet2DConditionModel, scheduler_config: dict, info: dict,
                      write_more: Callable[[Path], None] | None = None) -> None:
    """Write the model folder whole or not at all (it replaces only a model folder glyffuser wrote).
    `write_more(folder)` adds files to it before it appears (a cascade's upsampler/)."""
    with atomic_outputs(path, dirs=True) as (tmp,):
        unet.save_pretrained(tmp / "unet", safe_serialization=True)
        DDPMScheduler.from_config(scheduler_config).save_pretrained(tmp / "scheduler")
        info = {**info, "weights_sha256": sha256_file(tmp / WEIGHTS)}
        (tmp / MODEL_INFO).write_text(json.dumps(info, indent=2) + "\n")
        if write_more is not None:
            write_more(tmp)
