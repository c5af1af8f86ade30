"""Typed stage reports (issue 43): the stage that writes a report and every reader share one model, so a renamed key
fails here and in the writing stage's test, not an hour into `dvc repro`."""

import json

import pytest

from glyffuser.errors import GlyffuserError
from glyffuser.reports import (
    ClassifierReport,
    EvaluateMetrics,
    FiguresReport,
    RenderReport,
    TrainMetrics,
    UmapReport,
    UpsamplerReport,
    make_report,
    read_report,
    report_json,
)


def test_the_evaluate_stage_writes_its_report_through_the_model(evaluated):
    _, paths, _, metrics = evaluated
    text = paths.metrics.read_text()
    report = read_report(EvaluateMetrics, paths.metrics)
    assert report_json(report) == text == json.dumps(metrics, indent=2) + "\n"  # the bytes the stage always wrote
    assert report.adherence_heldout == metrics["adherence_heldout"]
    assert sum(t.definitions for t in report.heldout_thirds.values()) == report.heldout_characters
    assert set(json.loads(text)) <= set(EvaluateMetrics.model_fields)


def test_a_renamed_or_missing_key_is_one_line_naming_it(evaluated, tmp_path):
    _, _, _, metrics = evaluated
    renamed = {("kid_score" if k == "kid" else k): v for k, v in metrics.items()}
    with pytest.raises(GlyffuserError, match="kid"):
        make_report(EvaluateMetrics, renamed, "metrics")
    with pytest.raises(GlyffuserError, match="adherence_grid_per_prompt"):
        make_report(EvaluateMetrics, {**metrics, "adherence_grid_per_prompt": "95 %"}, "metrics")
    stale = tmp_path / "metrics.json"
    stale.write_text(json.dumps({k: v for k, v in metrics.items() if k != "novelty"}))
    with pytest.raises(GlyffuserError, match=r"novelty: Field required") as err:
        read_report(EvaluateMetrics, stale)
    assert "\n" not in str(err.value) and "re-run the stage" in str(err.value)
    with pytest.raises(GlyffuserError, match="is missing"):
        read_report(TrainMetrics, tmp_path / "nowhere.json")


def test_the_train_stage_writes_its_report_through_the_model(tiny_model):
    model, metrics = tiny_model
    path = model.parent / "metrics.json"
    assert report_json(read_report(TrainMetrics, path)) == path.read_text() == json.dumps(metrics, indent=2) + "\n"


def test_every_number_compare_shows_is_a_field_of_the_report():
    from glyffuser.studies import HEADLINE

    assert set(HEADLINE) <= set(EvaluateMetrics.model_fields)


def test_every_stage_report_reads_back_through_its_model_byte_for_byte(rendered, evaluated, upsampler, figures):
    """render, classifier, upsampler, umap and figures write their report.json through the model every reader uses
    (the guide, docs/results.py): read back, it gives the same bytes; a report with a renamed key is refused."""
    out, _ = rendered
    _, paths, _, _ = evaluated
    _, fig_paths, root, _ = figures
    files = {RenderReport: (out.report, {}), ClassifierReport: (paths.classifier / "report.json", {}),
             UpsamplerReport: (upsampler / "report.json", {}), UmapReport: (root / "umap" / "report.json", {}),
             FiguresReport: (fig_paths.out / "report.json", {"indent": 1, "ensure_ascii": False})}
    for model, (path, style) in files.items():
        report = read_report(model, path)
        assert report_json(report, **style) == path.read_text(encoding="utf-8"), model.__name__
        values = json.loads(path.read_text(encoding="utf-8"))
        first = next(iter(values))
        with pytest.raises(GlyffuserError, match=first):
            make_report(model, {f"{first}_renamed" if k == first else k: v for k, v in values.items()}, "report")
    assert read_report(FiguresReport, fig_paths.out / "report.json").trajectory.seeds > 0
