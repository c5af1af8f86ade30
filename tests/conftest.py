"""Shared fixtures: real Unihan data and the real Noto font on a few hundred characters."""

from __future__ import annotations

from pathlib import Path

import pytest

from glyffuser.params import Params, load_params, with_overrides
from glyffuser.stages.render import RenderOutputs, run_render
from glyffuser.stages.sources import collect_sources

REPO = Path(__file__).resolve().parents[1]
# Fish (魚) and bird (鳥) radicals, plus water (氵) characters: ~460 glyphs with definitions.
SMALL_RANGES = ["U+9B5A-U+9C7F", "U+9CE5-U+9DFF", "U+6C34-U+6CFF"]


@pytest.fixture(scope="session")
def params() -> Params:
    # 32 px renders: models of at most 16 px (the cascade's upsampler learns twice the side from them). The shared
    # fixtures use the plain embedding; the text→radical prior (the default's embed.radical_prior) has its own tests
    # (test_prior.py) and runs in the whole-pipeline tests (test_dvc_pipeline.py), which read params.yaml as it is.
    return with_overrides(load_params(REPO / "params.yaml"), {"render.ranges": SMALL_RANGES, "render.image_size": 32,
                                                            "render.preview_count": 8, "train.resolution": 16,
                                                            "embed.radical_prior": False})


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
    from glyffuser.stages.embed import run_embed

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
    from glyffuser.stages.train import TrainPaths

    out, _ = rendered
    return TrainPaths(out.definitions, out.glyphs, embeddings_path, root / "model", root / "metrics.json",
                      root / "loss.csv", root / "checkpoints")


@pytest.fixture(scope="session")
def tiny_model(params, rendered, embeddings_path, tmp_path_factory) -> tuple[Path, dict]:
    """A model trained for about a minute on ~410 glyphs: enough to draw glyph-like images."""
    from glyffuser.stages.train import run_train

    p = with_overrides(params, {**TINY_TRAIN, "train.epochs": 12, "train.lr": 0.003})
    paths = train_paths(tmp_path_factory.mktemp("tiny-model"), rendered, embeddings_path)
    metrics = run_train(p, paths, track=False)
    return paths.model, metrics


# The evaluate-side stages on the tiny model: a small classifier, a short evaluation, then umap and figures.
SMALL_EVAL = {
    **TINY_TRAIN, "classifier.epochs": 3, "classifier.width": 8, "second_judge.epochs": 3, "second_judge.width": 8, "evaluate.heldout_characters": 6,
    "evaluate.samples_per_character": 2, "evaluate.copy_calibration": 40, "evaluate.train_characters": 5, "umap.n_neighbors": 8,
    "figures.step_counts": [1, 3], "figures.guidance_prompts": ["a kind of fish"], "figures.guidance_scales": [0, 3],
    "figures.animation_prompts": ["a kind of fish", "a small bird"], "figures.animation_steps": 4,
    "figures.forward_timesteps": [0, 500, 999], "figures.signal_levels": [1.0, 0.5, 0.05], "figures.trajectory_seeds": 4,
    "figures.step_samplers": ["ddim", "dpmsolver++"],
    "upsampler.width": 8, "upsampler.depth": 3, "upsampler.steps": 60,
}


@pytest.fixture(scope="session")
def evaluated(params, rendered, embeddings_path, tiny_model, upsampler, tmp_path_factory):
    from glyffuser.evaluation import EvaluatePaths, run_evaluate
    from glyffuser.stages.classifier import run_classifier

    out, _ = rendered
    p = with_overrides(params, SMALL_EVAL)
    root = tmp_path_factory.mktemp("evaluate")
    report = run_classifier(p, out.definitions, out.glyphs, root / "classifier")
    run_classifier(p, out.definitions, out.glyphs, root / "second_judge", p.second_judge)
    paths = EvaluatePaths(tiny_model[0], root / "classifier", out.definitions, out.glyphs, embeddings_path, root / "eval",
                          upsampler, second_judge=root / "second_judge")
    return p, paths, report, run_evaluate(p, paths, track=False)


@pytest.fixture(scope="session")
def upsampler(params, rendered, tmp_path_factory) -> Path:
    """The cascade's upsampler for the tiny model: 16 -> 32 px (the renders' side), trained for seconds."""
    from glyffuser.stages.upsampler import run_upsampler

    out, _ = rendered
    folder = tmp_path_factory.mktemp("upsampler") / "upsampler"
    run_upsampler(with_overrides(params, SMALL_EVAL), out.definitions, out.glyphs, folder)
    return folder


@pytest.fixture(scope="session")
def figures(evaluated, rendered, tiny_model, sources_dir, tmp_path_factory):
    """umap (with the evaluate samples) and figures of the tiny model, as the pipeline runs them."""
    from glyffuser.artifacts.source_manifest import SourceManifest
    from glyffuser.stages.figures import FigurePaths, run_figures
    from glyffuser.stages.umap import run_umap

    p, paths, _, _ = evaluated
    out, _ = rendered
    root = tmp_path_factory.mktemp("figures")
    run_umap(p, out.definitions, out.glyphs, sources_dir, paths.out / "samples.parquet", root / "umap", track=False)
    fig_paths = FigurePaths(tiny_model[0], out.definitions, out.glyphs, root / "umap" / "points.parquet",
                            root / "figures", paths.classifier, paths.embeddings, paths.out / "samples.parquet",
                            sources_dir / SourceManifest.read(sources_dir).font_file)
    return p, fig_paths, root, run_figures(p, fig_paths, track=False)
