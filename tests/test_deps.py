"""dvc.yaml lists exactly the code each stage runs, and the resume fingerprint hashes the same files."""

import ast

import pytest
import yaml

from glyffuser.deps import RECORD_ONLY, command_files, command_modules
from tests.conftest import REPO

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def stage_command(entry) -> str:
    """The stage a stages/*.py entry point runs: `from glyffuser.stages.train import main` -> "train".
    It imports that module's main and no other glyffuser module (the CLI above all)."""
    imported = [n for n in ast.walk(ast.parse(entry.read_text())) if isinstance(n, (ast.Import, ast.ImportFrom))]
    ours = [n for n in imported if isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "glyffuser"]
    assert len(ours) == 1 and [a.name for a in ours[0].names] == ["main"], f"{entry}: imports {ours}"
    assert ours[0].module.startswith("glyffuser.stages."), f"{entry} runs {ours[0].module}, not a stage module"
    return ours[0].module.removeprefix("glyffuser.stages.")


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_dvc_yaml_lists_exactly_the_modules_the_stage_runs(stage):
    entry = STAGES[stage]["cmd"].split()[-1]
    deps = STAGES[stage]["deps"]
    assert entry in deps, f"{stage}: its entry point {entry} is not a dep"
    assert stage_command(REPO / entry) == stage
    expected = {str(f.relative_to(REPO)) for f in command_files(stage)}
    listed = {d for d in deps if d.startswith("src/")}
    assert not expected - listed, f"dvc.yaml stage {stage} misses code it runs: {sorted(expected - listed)}"
    assert not listed - expected, f"dvc.yaml stage {stage} lists code it never runs: {sorted(listed - expected)}"


def test_closure_follows_imports_inside_functions_and_not_other_commands():
    train = command_modules("train")
    # the embeddings reader (via diffusion/training.py) was the dep dvc.yaml once missed
    assert {"glyffuser.artifacts.embeddings", "glyffuser.diffusion.training", "glyffuser.command", "glyffuser"} <= train
    assert "glyffuser.analysis.judge" in command_modules("evaluate")  # imported by evaluate.py
    assert "glyffuser.diffusion.unet" in command_modules("sample")  # denoise, via pipeline.py
    # the CLI module holds every command, but a stage runs only its own
    assert not {"glyffuser.stages.train", "glyffuser.stages.evaluate", "glyffuser.stages.umap"} & command_modules("sample")
    assert command_modules("sources") == {"glyffuser", "glyffuser.command", "glyffuser.params", "glyffuser.errors",
                                          "glyffuser.stages", "glyffuser.stages.sources", "glyffuser.artifacts",
                                          "glyffuser.artifacts.atomic", "glyffuser.artifacts.hashing",
                                          "glyffuser.artifacts.source_manifest"}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_no_stage_depends_on_the_cli_or_on_code_that_only_records(stage):
    """An edit to the CLI (a new command, a help string) or to how a run is logged re-runs no stage (issue 30)."""
    closure = command_modules(stage)
    assert "glyffuser.cli" not in closure
    assert not RECORD_ONLY & closure
    assert not {"glyffuser.demo", "glyffuser.profiles", "glyffuser.serving"} & closure


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
    fake = tmp_path / "command.py"
    fake.write_text("x = 1\n")
    monkeypatch.setattr(train, "command_files", lambda command: [fake])
    before = train.fingerprint(params, paths)
    fake.write_text("x = 2\n")
    assert train.fingerprint(params, paths) != before


# --- code that only records is not a dep, because it never writes an output (issue 30) ---------------------

_WATCH = {"on": False, "under": None, "files": set(), "writes": []}


def _record_only_writes(event, args):
    """Audit hook: a write, rename or removal under the watched folder made while a record-only module is on the stack."""
    if not _WATCH["on"] or event not in ("open", "os.rename", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree",
                                         "shutil.copyfile", "os.truncate"):
        return
    import os
    import sys

    if event == "open":
        path, mode, flags = args
        if not (isinstance(path, (str, bytes, os.PathLike)) and (
                (mode and any(c in str(mode) for c in "wax+")) or (flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))):
            return
        paths = [path]
    else:
        paths = [a for a in args[:2] if isinstance(a, (str, os.PathLike))]
    under = [p for p in paths if str(os.fsdecode(p)).startswith(_WATCH["under"])]
    if not under:
        return
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename in _WATCH["files"]:
            _WATCH["writes"].append((event, str(under[0]), frame.f_code.co_filename))
            return
        frame = frame.f_back


def test_record_only_modules_never_write_a_dvc_output(evaluated, rendered, embeddings_path, tmp_path, monkeypatch):
    """tracking.py and registry.py are in no stage's deps (deps.RECORD_ONLY): the train and evaluate stages run
    here with MLflow on (logging, the model registered) under an audit hook that records every write, rename or
    removal under their outputs made while code of those modules is on the stack. There must be none."""
    import sys

    import glyffuser.registry
    import glyffuser.tracking
    from glyffuser.evaluation import EvaluatePaths, run_evaluate
    from glyffuser.params import with_overrides
    from glyffuser.stages.train import run_train
    from tests.conftest import train_paths

    assert {m.__name__ for m in (glyffuser.tracking, glyffuser.registry)} == set(RECORD_ONLY)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    p, eval_paths, _, _ = evaluated
    outputs = tmp_path / "outputs"
    paths = train_paths(outputs, rendered, embeddings_path)
    _WATCH.update(under=str(outputs), files={glyffuser.tracking.__file__, glyffuser.registry.__file__}, writes=[])
    sys.addaudithook(_record_only_writes)  # for good: it does nothing while _WATCH["on"] is False
    _WATCH["on"] = True
    try:
        run_train(with_overrides(p, {"train.epochs": 1}), paths, track=True)
        run_evaluate(p, EvaluatePaths(paths.model, eval_paths.classifier, eval_paths.definitions, eval_paths.glyphs,
                                      eval_paths.embeddings, outputs / "evaluate"), track=True)
    finally:
        _WATCH["on"] = False
    assert (outputs / "evaluate" / "metrics.json").is_file() and (paths.model / "glyffuser.json").is_file()
    assert _WATCH["writes"] == []
