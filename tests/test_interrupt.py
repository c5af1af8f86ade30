"""Training that dies (SIGKILL mid-step, mid-checkpoint) or diverges (NaN) loses nothing it had."""

import os
import signal
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from glyffuser.errors import GlyffuserError
from glyffuser.params import with_overrides
from glyffuser.stages.train import run_train
from tests.conftest import REPO, TINY_TRAIN, train_paths


@pytest.fixture(scope="module")
def short_file(params, tmp_path_factory):
    """26 steps of 16 glyphs, a checkpoint every 5 steps, as a params file for the real CLI."""
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(yaml.safe_dump(with_overrides(params, {**TINY_TRAIN, "train.epochs": 1}).model_dump()))
    return path


def train_cli(params_file, paths, rendered, embeddings_path, pause_at=None) -> subprocess.Popen:
    out, _ = rendered
    cmd = [sys.executable, "-m", "glyffuser.cli", "train", "--params", str(params_file), "--no-mlflow",
           "--definitions", str(out.definitions), "--glyphs", str(out.glyphs), "--embeddings", str(embeddings_path),
           "--model", str(paths.model), "--metrics", str(paths.metrics), "--curve", str(paths.curve),
           "--checkpoints", str(paths.checkpoints)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GLYFFUSER_PAUSE_AT": pause_at or ""}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc) -> str:
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    return stdout + stderr


def kill_when_paused(proc, point: str) -> None:
    """Wait until the training says it reached `point`, then SIGKILL it there."""
    for line in proc.stderr:
        if f"paused at {point}" in line:
            break
    else:
        proc.wait()
        pytest.fail(f"training never reached {point} (exit {proc.returncode})")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def uninterrupted(short_file, rendered, embeddings_path, tmp_path_factory):
    paths = train_paths(tmp_path_factory.mktemp("straight"), rendered, embeddings_path)
    finish(train_cli(short_file, paths, rendered, embeddings_path))
    return load_file(paths.model / "unet" / "diffusion_pytorch_model.safetensors")


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


@pytest.mark.parametrize("point, resumed_from, left_behind", [
    ("step:12", 10, ["step-00000005.json", "step-00000005.pt", "step-00000010.json", "step-00000010.pt"]),
    # killed after the weights of step 10 were renamed into place but before their marker: a partial checkpoint
    ("checkpoint:10", 5, ["step-00000005.json", "step-00000005.pt", "step-00000010.pt"]),
])
def test_sigkill_then_rerun_ends_with_the_uninterrupted_weights(point, resumed_from, left_behind, short_file, rendered,
                                                                embeddings_path, uninterrupted, tmp_path):
    paths = train_paths(tmp_path, rendered, embeddings_path)
    kill_when_paused(train_cli(short_file, paths, rendered, embeddings_path, pause_at=point), point)
    assert sorted(p.name for p in paths.checkpoints.iterdir()) == left_behind
    assert not paths.model.exists() and not paths.metrics.exists()

    log = finish(train_cli(short_file, paths, rendered, embeddings_path))
    assert f"resuming from {paths.checkpoints / f'step-{resumed_from:08d}.pt'}" in log
    assert f"(step {resumed_from}/26)" in log
    assert_same_weights(uninterrupted, load_file(paths.model / "unet" / "diffusion_pytorch_model.safetensors"))


class _NanGradient(torch.autograd.Function):
    """Passes the loss through unchanged; its gradient comes back NaN."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


@pytest.mark.parametrize("poison, reported", [
    (lambda loss: loss * float("inf"), "loss inf"),
    (_NanGradient.apply, "gradient norm nan"),
])
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(poison, reported, params, rendered, embeddings_path,
                                                                  tmp_path, monkeypatch):
    import glyffuser.diffusion.training as training

    calls = []
    real = training.diffusion_loss

    def loss_that_breaks_at_step_8(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return poison(loss) if len(calls) == 8 else loss

    monkeypatch.setattr(training, "diffusion_loss", loss_that_breaks_at_step_8)
    paths = train_paths(tmp_path, rendered, embeddings_path)
    short = with_overrides(params, {**TINY_TRAIN, "train.epochs": 1})
    with pytest.raises(GlyffuserError) as err:
        run_train(short, paths, track=False)
    message = str(err.value)
    assert "training stopped at step 8/26" in message and reported in message
    assert "last finite loss 0." in message and "step-00000005.pt is kept" in message and "no model written" in message
    assert "\n" not in message
    assert sorted(p.name for p in paths.checkpoints.iterdir()) == ["step-00000005.json", "step-00000005.pt"]
    assert not paths.model.exists() and not paths.metrics.exists()
    state = torch.load(paths.checkpoints / "step-00000005.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_stray_files_in_the_checkpoints_folder_are_ignored(params, rendered, embeddings_path, tmp_path):
    paths = train_paths(tmp_path, rendered, embeddings_path)
    paths.checkpoints.mkdir()
    for name in ("step-notes.json", "README.txt", "step-00000003.json.tmp", ".DS_Store"):
        (paths.checkpoints / name).write_text("not a checkpoint")
    short = with_overrides(params, {**TINY_TRAIN, "train.epochs": 0.3})
    assert run_train(short, paths, track=False)["resumed_from_step"] == 0
    assert (paths.checkpoints / "README.txt").is_file()
