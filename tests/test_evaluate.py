"""The classifier, evaluate, umap and figures stages end to end on the tiny model (real glyphs)."""

import json

import pyarrow.parquet as pq
import pytest
from PIL import Image

from glyffuser.atlas import read_layouts, run_umap
from glyffuser.classifier import run_classifier
from glyffuser.cli import main
from glyffuser.errors import GlyffuserError
from glyffuser.evaluate import EvaluatePaths, run_evaluate
from glyffuser.figures import FigurePaths, run_figures
from glyffuser.params import with_overrides
from tests.conftest import TINY_TRAIN

SMALL_EVAL = {
    **TINY_TRAIN, "classifier.epochs": 3, "classifier.width": 8, "evaluate.heldout_characters": 6,
    "evaluate.samples_per_character": 2, "evaluate.copy_calibration": 40, "umap.n_neighbors": 8,
    "figures.step_counts": [1, 3], "figures.guidance_prompts": ["a kind of fish"], "figures.guidance_scales": [0, 3],
    "figures.animation_prompts": ["a kind of fish", "a small bird"], "figures.animation_steps": 4,
    "figures.forward_timesteps": [0, 500, 999],
}


@pytest.fixture(scope="module")
def evaluated(params, rendered, embeddings_path, tiny_model, tmp_path_factory):
    out, _ = rendered
    p = with_overrides(params, SMALL_EVAL)
    root = tmp_path_factory.mktemp("evaluate")
    report = run_classifier(p, out.definitions, out.glyphs, root / "classifier")
    paths = EvaluatePaths(tiny_model[0], root / "classifier", out.definitions, out.glyphs, embeddings_path, root / "eval")
    return p, paths, report, run_evaluate(p, paths, track=False)


def test_classifier_stage_reports_its_ceiling(evaluated):
    _, paths, report, _ = evaluated
    assert (paths.classifier / "classifier.pt").is_file()
    assert 0 <= report["chance"] < report["test_accuracy"] <= 1  # the three radicals of the small set are learnable
    assert json.loads((paths.classifier / "report.json").read_text()) == report


def test_evaluate_writes_every_number_and_every_sample(evaluated):
    p, paths, _, metrics = evaluated
    for key in ("adherence_grid", "adherence_heldout", "adherence_heldout_se", "chance", "control_empty_prompt",
                "control_shuffled", "text_probe_accuracy", "kid", "kid_real_floor", "fid", "fid_real_floor",
                "novelty", "copy_threshold"):
        assert key in metrics, key
    for key in ("adherence_grid", "adherence_heldout", "control_empty_prompt", "control_shuffled", "novelty"):
        assert 0 <= metrics[key] <= 1
    assert set(metrics["adherence_grid_per_prompt"]) == set(p.sample.prompts)
    assert metrics["seed_sweep_prompt"] == "gold; metal" and metrics["seed_sweep_seeds"] == 16
    assert 0 <= metrics["seed_sweep_hits"] <= 16
    # rendered glyphs are nearly two-tone; the tiny model's samples at 16 px are judged at 16 px
    assert metrics["resolution"] == 16 and metrics["sharpness_real"] > 0.5
    assert metrics["sharpness_ratio"] == pytest.approx(metrics["sharpness"] / metrics["sharpness_real"])
    assert metrics["copy_calibration_recall"] > 0.9  # near-copies find their own original
    assert json.loads(paths.metrics.read_text()) == metrics
    samples = pq.read_table(paths.out / "samples.parquet").to_pandas()
    n = p.evaluate.heldout_characters
    assert samples["kind"].value_counts().to_dict() == {
        "heldout": 2 * n, "empty": n, "shuffled": n, "grid": len(p.sample.prompts) * p.sample.seeds}
    shuffled = samples[samples.kind == "shuffled"]
    heldout = samples[samples.kind == "heldout"]
    assert (heldout.prompt_codepoint == heldout.target_codepoint).all()
    # Every shuffled sample got another held-out character's definition, each definition used once.
    assert (shuffled.prompt_codepoint != shuffled.target_codepoint).all()
    assert sorted(shuffled.prompt_codepoint) == sorted(shuffled.target_codepoint)
    assert Image.open(paths.out / "grid.png").size[0] > 150 + 64 * p.sample.seeds and (paths.out / "novelty.png").is_file()


def test_evaluate_without_a_classifier_fails_in_one_line(params, tiny_model, rendered, embeddings_path, tmp_path, capsys):
    out, _ = rendered
    code = main(["evaluate", "--model", str(tiny_model[0]), "--classifier", str(tmp_path / "none"),
                 "--definitions", str(out.definitions), "--glyphs", str(out.glyphs), "--embeddings",
                 str(embeddings_path), "--out", str(tmp_path / "eval"), "--no-mlflow"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0 and "dvc repro classifier" in err
    assert not (tmp_path / "eval").exists()


def test_layouts_from_the_decomposition_table(tmp_path, sources_dir):
    table = tmp_path / "decomposition.csv"
    table.write_text('# comment\n"鯉","⿰魚里",0,0,G\n"花","⿱艹化",0,0,G\n"国","⿴囗玉",0,0,G\n'
                     '"鯉","⿱xx",1,0,G\n"一","一",0,0,G\n', encoding="utf-8")
    assert read_layouts(table) == {"鯉": "left-right", "花": "top-bottom", "国": "enclosure", "一": "single"}
    table.write_text('"鯉"\n', encoding="utf-8")
    with pytest.raises(GlyffuserError, match="malformed"):
        read_layouts(table)
    real = read_layouts(sources_dir / "characterdecomposition.csv")
    assert real["鯉"] == "left-right" and real["鯊"] == "top-bottom" and len(real) > 20_000


def test_umap_maps_every_glyph_and_projects_the_samples(evaluated, rendered, sources_dir, tmp_path):
    p, paths, _, _ = evaluated
    out, report = rendered
    result = run_umap(p, out.definitions, out.glyphs, sources_dir, paths.out / "samples.parquet", tmp_path / "umap",
                      track=False)
    points = pq.read_table(tmp_path / "umap" / "points.parquet").to_pandas()
    assert len(points) == report["glyphs"] == result["glyphs"] == sum(result["layout_counts"].values())
    assert points[["x", "y"]].notna().all().all()
    assert result["samples_projected"] == 2 * p.evaluate.heldout_characters + p.evaluate.heldout_characters + 16
    html = (tmp_path / "umap" / "umap.html").read_text(encoding="utf-8")
    assert "鯉" in html and "data:image/png;base64," in html
    for name in ("umap_density.png", "umap_radicals.png", "umap_layouts.png", "umap_samples.png"):
        assert Image.open(tmp_path / "umap" / name).size[0] > 300


def test_figures_from_the_tiny_model(evaluated, rendered, tiny_model, sources_dir, tmp_path):
    p, paths, _, _ = evaluated
    out, _ = rendered
    run_umap(p, out.definitions, out.glyphs, sources_dir, None, tmp_path / "umap", track=False)
    report = run_figures(p, FigurePaths(tiny_model[0], out.definitions, out.glyphs, tmp_path / "umap" / "points.parquet",
                                        tmp_path / "figures"), track=False)
    assert report["figures"] == ["denoise.gif", "forward.png", "forward_2d.png", "guidance.png", "pixels.png",
                                 "single_step.png", "steps.png"]
    gif = Image.open(tmp_path / "figures" / "denoise.gif")
    assert gif.n_frames == p.figures.animation_steps + 1  # pure noise, then one frame per step
    bad = with_overrides(p, {"figures.pixel_glyph": "好"})  # not in the small ranges
    with pytest.raises(GlyffuserError, match="pixel_glyph"):
        run_figures(bad, FigurePaths(tiny_model[0], out.definitions, out.glyphs, tmp_path / "umap" / "points.parquet",
                                     tmp_path / "figures2"), track=False)


def test_evaluate_refuses_embeddings_of_other_characters(evaluated, tmp_path):
    import pyarrow.compute as pc

    p, paths, _, _ = evaluated
    table = pq.read_table(paths.embeddings)
    fewer = table.filter(pc.less(table["codepoint"], 0x9C00))  # the water and low fish codepoints only
    pq.write_table(fewer, tmp_path / "embeddings.parquet")
    other = EvaluatePaths(paths.model, paths.classifier, paths.definitions, paths.glyphs, tmp_path / "embeddings.parquet",
                          tmp_path / "eval")
    with pytest.raises(GlyffuserError, match=r"embeddings.parquet has no embedding of U\+9C.*re-run the embed stage"):
        run_evaluate(p, other, track=False)
    assert not (tmp_path / "eval").exists()


def test_incompatible_classifier_is_one_clear_error(evaluated, tmp_path):
    import shutil

    import torch

    from glyffuser.classifier import RadicalNet, load_classifier

    _, paths, _, _ = evaluated
    folder = tmp_path / "classifier"
    shutil.copytree(paths.classifier, folder)
    other = RadicalNet(16, width=4)  # another resolution and width than its header says
    torch.save({"state_dict": other.state_dict(), "resolution": 16, "width": 8}, folder / "classifier.pt")
    with pytest.raises(GlyffuserError, match="is not a radical classifier this version can load .RuntimeError"):
        load_classifier(folder)
    torch.save({"weights": {}}, folder / "classifier.pt")
    with pytest.raises(GlyffuserError, match="is not a radical classifier this version can load .KeyError"):
        load_classifier(folder)
    (folder / "classifier.pt").write_bytes(b"not a torch file")
    with pytest.raises(GlyffuserError, match="cannot read the radical classifier"):
        load_classifier(folder)
