"""The upsampler folder the upsampler stage writes (data/upsampler) and a cascade pipeline reads:

    config.json               width, depth, scale, input_resolution, the weights' sha256
    upsampler.safetensors     the CNN's weights
    report.json               (optional) how it was trained and how it does on real test glyphs

A model folder may hold one as its `upsampler/` subfolder (what `GlyffuserPipeline.save_pretrained` and the
registered MLflow model write): then it draws at the upsampler's side by itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from glyffuser.artifacts.atomic import atomic_outputs
from glyffuser.artifacts.hashing import sha256_file
from glyffuser.diffusion.upsampler import Upsampler
from glyffuser.errors import GlyffuserError

CONFIG, WEIGHTS, REPORT = "config.json", "upsampler.safetensors", "report.json"


class UpsamplerConfig(BaseModel):
    """config.json's types, checked before a network is built from it (strict: "64" is not a number)."""

    model_config = ConfigDict(extra="allow", strict=True)
    width: Annotated[int, Field(ge=1, le=1024)]
    depth: Annotated[int, Field(ge=2, le=64)]
    scale: Annotated[int, Field(ge=2, le=8)]
    input_resolution: Annotated[int, Field(ge=4, le=4096)]
    weights_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


def write_upsampler_files(folder: Path, net: Upsampler, input_resolution: int, report: dict | None = None) -> None:
    """The folder's files, written into `folder` as they are (save_upsampler_folder makes that atomic)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, folder / WEIGHTS)
    config = {**net.config, "input_resolution": input_resolution, "weights_sha256": sha256_file(folder / WEIGHTS)}
    (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    if report is not None:
        (folder / REPORT).write_text(json.dumps(report, indent=2) + "\n")


def save_upsampler_folder(path: Path, net: Upsampler, input_resolution: int, report: dict | None = None) -> None:
    """Write the folder whole or not at all."""
    with atomic_outputs(path, dirs=True) as (tmp,):
        write_upsampler_files(tmp, net, input_resolution, report)


def read_upsampler_config(path: Path) -> dict:
    """An upsampler folder's config.json, checked (UpsamplerConfig); one error line otherwise."""
    path = Path(path)
    try:
        config = json.loads((path / CONFIG).read_text(encoding="utf-8"))
        UpsamplerConfig.model_validate(config)
    except FileNotFoundError:
        raise GlyffuserError(f"{path} is not an upsampler folder (no {CONFIG}): run the upsampler stage "
                             "(dvc repro upsampler)") from None
    except (ValueError, OSError) as err:  # JSON, pydantic (a ValueError) and read errors
        first = err.errors()[0] if isinstance(err, ValidationError) else None
        why = f"{'.'.join(map(str, first['loc']))}: {first['msg']}" if first else str(err).splitlines()[0]
        raise GlyffuserError(f"{path / CONFIG} is not an upsampler config ({why}): re-run the upsampler stage") from None
    return config


def load_upsampler_folder(path: Path) -> tuple[Upsampler, dict]:
    """(the network in eval mode, its config), each checked; one error line otherwise."""
    from safetensors.torch import load_file

    path = Path(path)
    config = read_upsampler_config(path)
    weights = path / WEIGHTS
    if not weights.is_file() or sha256_file(weights) != config["weights_sha256"]:
        raise GlyffuserError(f"{weights} is missing or does not match the sha256 in {path / CONFIG}: the weights were "
                             "damaged or edited; re-run the upsampler stage, or restore the folder")
    net = Upsampler(config["width"], config["depth"], config["scale"])
    try:
        net.load_state_dict(load_file(weights))
    except Exception as err:  # safetensors' and torch's own errors, whatever their type
        # torch's state-dict error is a header line ("Error(s) in loading state_dict for Upsampler:") over the detail
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
        detail = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines[0]
        raise GlyffuserError(f"cannot load the upsampler in {path} (width {config['width']}, depth {config['depth']} in "
                             f"{CONFIG}): {detail[:200]}") from None
    return net.eval().to(memory_format=torch.channels_last), config  # NHWC, as it trained (diffusion/upsampler.py)
