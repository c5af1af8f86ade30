"""The align stage (issue 44) on the tiny model: judge pairs from training definitions, people's answers, Diffusion-DPO
from the trained model, and the stage's refusals."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from glyffuser.artifacts.images import tensor_to_images, to_png
from glyffuser.artifacts.model_folder import WEIGHTS, read_model_info
from glyffuser.diffusion.alignment import human_pairs, judge_pairs
from glyffuser.errors import GlyffuserError
from glyffuser.feedback import Answer, connect, record
from glyffuser.params import with_overrides
from glyffuser.stages.align import AlignPaths, run_align

SMALL_ALIGN = {"align.enabled": True, "align.characters": 24, "align.dev_characters": 12, "align.samples_per_prompt": 3,
               "align.min_margin": 0.0, "align.epochs": 2, "align.eval_every": 1, "align.batch_size": 8,
               "align.lr": 0.0005}


@pytest.fixture(scope="module")
def reward_judge(evaluated, rendered, tmp_path_factory):
    from glyffuser.stages.classifier import run_classifier

    p, paths, _, _ = evaluated
    out, _ = rendered
    folder = tmp_path_factory.mktemp("reward") / "reward_judge"
    run_classifier(p, out.definitions, out.glyphs, folder, p.reward_judge.model_copy(update={"epochs": 3, "width": 8}))
    return folder


def align_paths(evaluated, rendered, reward_judge, root, feedback=None) -> AlignPaths:
    _, paths, _, _ = evaluated
    out, _ = rendered
    return AlignPaths(paths.model, out.definitions, out.glyphs, paths.embeddings, reward_judge, paths.classifier,
                      paths.second_judge, feedback or root / "no-feedback.sqlite", root / "align")


def test_judge_pairs_take_the_best_and_the_worst_draft_of_a_prompt_apart_by_the_margin():
    drafts = torch.arange(2 * 3, dtype=torch.float32).view(2, 3, 1, 1, 1)  # (N=2, K=3, 1, 1, 1): draft i·3+k
    rewards = np.array([[0.2, 0.9, 0.1], [0.5, 0.55, 0.52]])
    pairs, kept = judge_pairs(drafts, rewards, torch.zeros(2, 4, 5), torch.ones(2, 4, dtype=torch.bool), 0.2)
    assert kept.tolist() == [True, False]  # the second prompt's drafts are a near tie
    assert pairs.winner.flatten().tolist() == [1.0] and pairs.loser.flatten().tolist() == [2.0]
    every, kept = judge_pairs(drafts, rewards, torch.zeros(2, 4, 5), torch.ones(2, 4, dtype=torch.bool), 0.2, True)
    assert kept.tolist() == [True, False]  # (0.9 over 0.2 and over 0.1): 0.2 over 0.1 is a near tie
    assert every.winner.flatten().tolist() == [1.0, 1.0] and every.loser.flatten().tolist() == [0.0, 2.0]


def test_human_pairs_follow_the_answer_and_drop_skips():
    left, right = torch.full((3, 1, 4, 4), -1.0), torch.full((3, 1, 4, 4), 1.0)
    pairs = human_pairs(left, right, ["left", "skip", "right"], torch.zeros(3, 2, 5), torch.ones(3, 2, dtype=torch.bool),
                        2.0, 2)
    assert len(pairs) == 2 and pairs.winner.shape == (2, 1, 2, 2)  # area-downsampled to the model's side
    assert pairs.winner[0].mean() == -1 and pairs.winner[1].mean() == 1 and pairs.weight.tolist() == [2.0, 2.0]


def test_align_fine_tunes_the_trained_model_on_training_definitions_and_records_the_curve(evaluated, rendered,
                                                                                         reward_judge, tmp_path):
    p, _, _, _ = evaluated
    paths = align_paths(evaluated, rendered, reward_judge, tmp_path)
    report = run_align(with_overrides(p, SMALL_ALIGN), paths)
    assert report["enabled"] and report["pairs_judge"] > 0 and report["pairs_human"] == 0
    parent, aligned = read_model_info(paths.model), read_model_info(paths.out / "model")
    assert aligned["align"]["parent_weights_sha256"] == parent["weights_sha256"] != aligned["weights_sha256"]
    before, after = load_file(paths.model / WEIGHTS), load_file(paths.out / "model" / WEIGHTS)
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    with (paths.out / "curve.csv").open() as f:
        curve = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in curve] == [0, 1, 2] and curve[0]["loss"] == ""
    assert all(0 <= float(r["dev_judge"]) <= 1 and 0 < float(r["dev_ink_share"]) < 1 for r in curve)
    assert json.loads((paths.out / "report.json").read_text())["dev_judge_after"] == float(curve[-1]["dev_judge"])


def test_alignment_off_passes_the_trained_model_through_unchanged(evaluated, rendered, reward_judge, tmp_path):
    p, _, _, _ = evaluated
    paths = align_paths(evaluated, rendered, reward_judge, tmp_path)
    assert run_align(p, paths) == {"enabled": False}
    for file in paths.model.rglob("*"):
        if file.is_file():
            assert (paths.out / "model" / file.relative_to(paths.model)).read_bytes() == file.read_bytes()


def test_peoples_answers_join_as_pairs_and_a_bad_table_is_refused_in_one_line(evaluated, rendered, reward_judge,
                                                                              tmp_path):
    p, _, _, _ = evaluated
    table = tmp_path / "feedback.sqlite"
    con = connect(table)
    con.close()
    paths = align_paths(evaluated, rendered, reward_judge, tmp_path, table)
    small = with_overrides(p, {**SMALL_ALIGN, "align.epochs": 1})
    with pytest.raises(GlyffuserError, match="holds no answers"):  # a table that is there but empty
        run_align(small, paths)
    assert not (paths.out / "model").exists()  # nothing half-written for a later stage to trust
    ink, paper = (to_png(tensor_to_images(torch.full((1, 1, 32, 32), v))[0]) for v in (-1.0, 1.0))
    con = connect(table)
    for i, choice in enumerate(["left", "right", "skip"]):
        record(con, Answer("a kind of fish", None, choice, i, i + 1, 10, 5.0, "dpmsolver++", "a" * 64, ink, paper))
    con.close()
    assert run_align(small, paths)["pairs_human"] == 2
    table.write_bytes(b"not a database at all" * 100)
    with pytest.raises(GlyffuserError, match="feedback table"):
        run_align(small, paths)


def test_the_curve_reads_back_as_numbers_with_epoch_0s_empty_cells_absent(tmp_path):
    """What the guide and the MLflow log read: the align stage's own curve.csv, through read_align_curve."""
    from glyffuser.reports import read_align_curve
    from glyffuser.stages.align import _write

    curve = [{"epoch": 0, "dev_reward": 0.3, "dev_judge": 0.4}, {"epoch": 2, "loss": 0.46, "dev_reward": 0.33, "dev_judge": 0.42}]
    _write(tmp_path / "report.json", tmp_path / "curve.csv", {"enabled": True}, curve)
    assert read_align_curve(tmp_path / "curve.csv") == [{"epoch": 0.0, "dev_reward": 0.3, "dev_judge": 0.4},
                                                        {"epoch": 2.0, "loss": 0.46, "dev_reward": 0.33, "dev_judge": 0.42}]
    with pytest.raises(GlyffuserError, match="curve.csv is missing"):
        read_align_curve(tmp_path / "none" / "curve.csv")
