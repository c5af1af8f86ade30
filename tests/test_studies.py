"""`glyffuser compare` (issue 43): study runs saved without their images and compared paired, as the project decides."""

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from glyffuser.errors import GlyffuserError
from glyffuser.studies import compare, paired, save_run
from tests.conftest import REPO


def test_paired_difference_counts_the_changed_items_and_brackets_the_mean():
    a = np.array([1, 0, 0, 1, 0, 0, 0, 0] * 50)
    b = np.array([1, 1, 0, 0, 1, 0, 0, 0] * 50)  # per block of 8: one lost, two gained
    r = paired(a, b)
    assert (r["only_a"], r["only_b"], r["n"]) == (50, 100, 400)
    assert r["difference"] == 0.125 and r["ci95"][0] < 0.125 < r["ci95"][1]
    assert abs(r["se"] - np.std(b - a, ddof=1) / 20) < 1e-4


@pytest.fixture
def two_runs(evaluated, tiny_model, tmp_path):
    """The tiny evaluated model saved twice, the second with every held-out verdict of its first character flipped."""
    _, paths, _, _ = evaluated
    train_metrics = tmp_path / "train_metrics.json"
    train_metrics.write_text(json.dumps(tiny_model[1]))
    runs = tmp_path / "runs"
    for name in ("base", "other"):
        save_run(name, runs, paths.out, train_metrics, REPO / "params.yaml")
    verdicts = runs / "other" / "verdicts.parquet"
    t = pq.read_table(verdicts).to_pandas()
    first = t[t.kind == "heldout"].target_codepoint.min()
    flip = (t.kind == "heldout") & (t.target_codepoint == first)
    t.loc[flip, "predicted_radical"] = np.where(t.loc[flip, "predicted_radical"] == t.loc[flip, "target_radical"],
                                                0, t.loc[flip, "target_radical"])
    t.to_parquet(verdicts)
    return runs, paths, int(flip.sum()), t


def test_a_saved_run_keeps_its_verdicts_without_images_and_compares_paired_per_third(two_runs, evaluated):
    runs, paths, flipped, table = two_runs
    p, _, _, metrics = evaluated
    assert {"png", "base_png"}.isdisjoint(table.columns) and {"target_radical", "predicted_radical", "seed"} <= set(table.columns)
    assert sorted(f.name for f in (runs / "base").iterdir()) == [
        "evaluate_grid.png", "metrics.json", "params.yaml", "samples.parquet", "train_metrics.json", "verdicts.parquet"]
    assert not list(runs.glob("*.tmp"))
    result = compare(["base", "other"], runs, paths.definitions)
    heldout = metrics["adherence_heldout"]
    row = result["runs"]["other"]["paired_heldout"]
    n = p.evaluate.heldout_characters * p.evaluate.samples_per_character
    assert row["n"] == n and row["a"] == round(heldout, 4) and row["only_a"] + row["only_b"] == flipped
    # the thirds are the evaluate stage's own: the baseline's side of each reproduces its adherence_heldout_<third>
    for third in ("commonest", "middle", "rarest"):
        assert result["runs"]["other"][f"paired_heldout_{third}"]["a"] == round(metrics[f"adherence_heldout_{third}"], 4)
    assert sum(result["runs"]["other"][f"paired_heldout_{t}"]["n"] for t in ("commonest", "middle", "rarest")) == n
    same = compare(["base", "base"], runs, None)["runs"]["base"]
    assert same.get("paired_heldout") is None  # the baseline is not compared with itself


def test_compare_pairs_as_the_second_judge_reads_even_a_run_saved_before_it(two_runs, evaluated):
    """--second-judge: the evaluate stage's own second reading where the run has one; for a run without that column
    (evaluated before the second_judge stage), the judge reads the run's kept images, and agrees with the stage."""
    runs, paths, _, _ = two_runs
    _, _, _, metrics = evaluated
    verdicts = runs / "base" / "verdicts.parquet"
    t = pq.read_table(verdicts).to_pandas()
    pq.write_table(pa.Table.from_pandas(t.drop(columns=["predicted_radical_second_judge"]), preserve_index=False),
                   verdicts)
    (runs / "base" / "samples.parquet").rename(runs / "base" / "kept.parquet")  # no column, and no images: an error
    with pytest.raises(GlyffuserError, match="not here"):
        compare(["base", "other"], runs, paths.definitions, paths.second_judge)
    (runs / "base" / "kept.parquet").rename(runs / "base" / "samples.parquet")
    row = compare(["base", "other"], runs, paths.definitions, paths.second_judge)["runs"]["other"]
    assert row["paired_heldout_second_judge"]["a"] == round(metrics["second_judge_heldout"], 4)
    assert row["paired_heldout_second_judge"]["difference"] == 0  # only the first judge's verdicts were flipped
    assert "paired_heldout_rarest_second_judge" in row


def test_compare_refuses_what_it_cannot_pair(two_runs, tmp_path):
    runs, _, _, _ = two_runs
    with pytest.raises(GlyffuserError, match="no run 'nowhere'"):
        compare(["base", "nowhere"], runs)
    with pytest.raises(GlyffuserError, match="a baseline and at least one"):
        compare(["base"], runs)
    (runs / "empty").mkdir()
    (runs / "empty" / "metrics.json").write_text("{}")
    with pytest.raises(GlyffuserError, match="holds no verdicts.parquet"):
        compare(["base", "empty"], runs)
    cli = [sys.executable, "-m", "glyffuser.cli", "compare", "--runs-dir", str(runs)]
    ok = subprocess.run([*cli, "base", "other", "--out", str(tmp_path / "c.json")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "c.json").read_text())["baseline"] == "base"
    bad = subprocess.run([*cli, "--exp", "x"], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.strip() == "glyffuser: error: --exp names the experiment to save: give --save NAME too"
