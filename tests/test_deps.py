"""dvc.yaml lists exactly the code each stage runs, and the resume fingerprint hashes the same files."""

import ast

import pytest
import yaml

from glyffuser.deps import command_files, command_modules
from tests.conftest import REPO

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def stage_command(entry) -> str:
    """The glyffuser command a stages/*.py entry point runs: main(["train", ...]) -> "train"."""
    for node in ast.walk(ast.parse(entry.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "main" and node.args:
            first = node.args[0].elts[0]
            return first.value
    raise AssertionError(f"{entry} calls no glyffuser.cli main([...])")


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_dvc_yaml_lists_exactly_the_modules_the_stage_runs(stage):
    entry = STAGES[stage]["cmd"].split()[-1]
    deps = STAGES[stage]["deps"]
    assert entry in deps, f"{stage}: its entry point {entry} is not a dep"
    expected = {str(f.relative_to(REPO)) for f in command_files(stage_command(REPO / entry))}
    listed = {d for d in deps if d.startswith("src/")}
    assert not expected - listed, f"dvc.yaml stage {stage} misses code it runs: {sorted(expected - listed)}"
    assert not listed - expected, f"dvc.yaml stage {stage} lists code it never runs: {sorted(listed - expected)}"


def test_closure_follows_imports_inside_functions_and_not_other_commands():
    train = command_modules("train")
    # the embeddings reader (via diffusion/training.py) was the dep dvc.yaml once missed
    assert {"glyffuser.artifacts.embeddings", "glyffuser.diffusion.training", "glyffuser.tracking", "glyffuser.cli",
            "glyffuser"} <= train
    assert "glyffuser.analysis.judge" in command_modules("evaluate")  # imported by evaluate.py
    assert "glyffuser.diffusion.unet" in command_modules("sample")  # denoise, via pipeline.py
    # the CLI module holds every command, but a stage runs only its own
    assert not {"glyffuser.stages.train", "glyffuser.stages.evaluate", "glyffuser.stages.umap"} & command_modules("sample")
    assert command_modules("sources") == {"glyffuser", "glyffuser.cli", "glyffuser.params", "glyffuser.errors",
                                          "glyffuser.stages", "glyffuser.stages.sources", "glyffuser.artifacts",
                                          "glyffuser.artifacts.atomic", "glyffuser.artifacts.hashing",
                                          "glyffuser.artifacts.source_manifest"}


def test_readers_apart_from_writers_keep_stages_off_code_that_cannot_change_their_outputs():
    """Training reads the embeddings and writes the model folder; it never encodes a prompt, renders a
    glyph, copies sources or samples through the pipeline object. The umap stage only reads the model
    folder's info: no model or diffusion code."""
    train = command_modules("train")
    assert not {"glyffuser.diffusion.pipeline", "glyffuser.diffusion.encoders", "glyffuser.artifacts.fonts",
                "glyffuser.stages.sources", "glyffuser.stages.embed", "glyffuser.limits"} & train
    assert "glyffuser.artifacts.model_folder" in train
    umap = command_modules("umap")
    assert not {m for m in umap if m.startswith("glyffuser.diffusion")}
    assert "glyffuser.artifacts.model_folder" in umap
    # the judge's stage reads glyphs only, not the embeddings
    assert "glyffuser.artifacts.embeddings" not in command_modules("classifier")


def test_resume_fingerprint_hashes_the_train_closure(params, rendered, embeddings_path, tmp_path, monkeypatch):
    import glyffuser.stages.train as train
    from tests.conftest import train_paths

    paths = train_paths(tmp_path, rendered, embeddings_path)
    hashed = []
    real = train.sha256_file
    monkeypatch.setattr(train, "sha256_file", lambda f: hashed.append(f) or real(f))
    train.fingerprint(params, paths)
    assert set(hashed[3:]) == set(command_files("train"))  # after the three input tables

    # an edit to any module of the closure invalidates the checkpoints
    fake = tmp_path / "cli.py"
    fake.write_text("x = 1\n")
    monkeypatch.setattr(train, "command_files", lambda command: [fake])
    before = train.fingerprint(params, paths)
    fake.write_text("x = 2\n")
    assert train.fingerprint(params, paths) != before
