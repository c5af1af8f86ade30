"""Shared fixtures: real Unihan data and the real Noto font on a few hundred characters."""

from __future__ import annotations

from pathlib import Path

import pytest

from glyffuser.params import Params, load_params, with_overrides
from glyffuser.render import RenderOutputs, run_render
from glyffuser.sources import collect_sources

REPO = Path(__file__).resolve().parents[1]
# Fish (魚) and bird (鳥) radicals, plus water (氵) characters: ~460 glyphs with definitions.
SMALL_RANGES = ["U+9B5A-U+9C7F", "U+9CE5-U+9DFF", "U+6C34-U+6CFF"]


@pytest.fixture(scope="session")
def params() -> Params:
    return with_overrides(load_params(REPO / "params.yaml"),
                          {"render.ranges": SMALL_RANGES, "render.image_size": 32, "render.preview_count": 8})


@pytest.fixture(scope="session")
def sources_dir(params, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "sources"
    collect_sources(params.sources, out)
    return out


@pytest.fixture(scope="session")
def rendered(params, sources_dir, tmp_path_factory) -> tuple[RenderOutputs, dict]:
    out = RenderOutputs.under(tmp_path_factory.mktemp("render"))
    report = run_render(params, sources_dir, out)
    return out, report


@pytest.fixture(scope="session")
def embeddings_path(params, rendered, tmp_path_factory) -> Path:
    from glyffuser.embed import run_embed

    out, _ = rendered
    path = tmp_path_factory.mktemp("embed") / "embeddings.parquet"
    run_embed(params.embed, out.definitions, path)
    return path


# A UNet small enough to train in seconds on 2 CPU cores, at 16×16 pixels (unpatchified, unshifted schedule).
TINY_TRAIN = {
    "train.resolution": 16, "train.patch_size": 1, "train.schedule_base_resolution": 16, "train.block_channels": [16, 32], "train.layers_per_block": 1,
    "train.attention_levels": [False, True], "train.attention_head_dim": 8, "train.batch_size": 16,
    "train.lr_warmup_steps": 2, "train.log_every": 5, "train.eval_every": 0, "train.checkpoint_every": 5,
    "train.val_images": 32, "sample.seeds": 2, "sample.steps": 10,
}


def train_paths(root: Path, rendered, embeddings_path):
    from glyffuser.train import TrainPaths

    out, _ = rendered
    return TrainPaths(out.definitions, out.glyphs, embeddings_path, root / "model", root / "metrics.json",
                      root / "loss.csv", root / "checkpoints")


@pytest.fixture(scope="session")
def tiny_model(params, rendered, embeddings_path, tmp_path_factory) -> tuple[Path, dict]:
    """A model trained for about a minute on ~410 glyphs: enough to draw glyph-like images."""
    from glyffuser.train import run_train

    p = with_overrides(params, {**TINY_TRAIN, "train.epochs": 12, "train.lr": 0.003})
    paths = train_paths(tmp_path_factory.mktemp("tiny-model"), rendered, embeddings_path)
    metrics = run_train(p, paths, track=False)
    return paths.model, metrics
