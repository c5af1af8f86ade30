import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from glyffuser.artifacts.checkpoints import load_checkpoint
from glyffuser.artifacts.images import from_png
from glyffuser.artifacts.tables import read_table
from glyffuser.diffusion.pipeline import GlyffuserPipeline
from glyffuser.errors import GlyffuserError
from glyffuser.params import with_overrides
from glyffuser.stages.render import RenderOutputs, run_render
from glyffuser.stages.train import run_train
from tests.conftest import REPO, TINY_TRAIN, train_paths


def weights(model_dir):
    return load_file(model_dir / "unet" / "diffusion_pytorch_model.safetensors")


@pytest.fixture
def short(params):
    return with_overrides(params, {**TINY_TRAIN, "train.epochs": 1})  # 26 steps of 16 on ~410 glyphs


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(short, rendered, embeddings_path, tmp_path):
    straight = train_paths(tmp_path / "a", rendered, embeddings_path)
    full = run_train(short, straight, track=False)
    assert full["steps"] > 15 and full["resumed_from_step"] == 0

    interrupted = train_paths(tmp_path / "b", rendered, embeddings_path)
    assert run_train(short, interrupted, stop_after=12, track=False) is None  # "killed" after step 12
    assert not interrupted.model.exists()
    assert sorted(p.name for p in interrupted.checkpoints.iterdir()) == [
        "step-00000005.json", "step-00000005.pt", "step-00000010.json", "step-00000010.pt"]
    resumed = run_train(short, interrupted, track=False)
    assert resumed["resumed_from_step"] == 10

    a, b = weights(straight.model), weights(interrupted.model)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    # the loss curve carries on where it stopped
    steps = [row.split(",")[0] for row in interrupted.curve.read_text().splitlines()[1:]]
    assert steps == [row.split(",")[0] for row in straight.curve.read_text().splitlines()[1:]]


def test_changed_params_start_fresh(short, rendered, embeddings_path, tmp_path, capsys):
    paths = train_paths(tmp_path, rendered, embeddings_path)
    run_train(short, paths, stop_after=10, track=False)
    changed = with_overrides(short, {"train.lr": 0.0005})
    result = run_train(changed, paths, track=False)
    assert result["resumed_from_step"] == 0
    assert "another experiment" in capsys.readouterr().out


def test_corrupt_checkpoint_is_one_clear_error(short, rendered, embeddings_path, tmp_path):
    paths = train_paths(tmp_path, rendered, embeddings_path)
    run_train(short, paths, stop_after=10, track=False)
    ckpt = paths.checkpoints / "step-00000010.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(GlyffuserError, match="step-00000010.pt is corrupt"):
        run_train(short, paths, track=False)
    marker = json.loads(ckpt.with_suffix(".json").read_text())
    with pytest.raises(GlyffuserError, match="made with other params or data"):
        load_checkpoint(paths.checkpoints / "step-00000005.pt", "0" * 64)
    assert marker["step"] == 10


def test_overfits_a_handful_of_glyphs(params, sources_dir, tmp_path):
    """Eight water-radical characters, all in train: the loss falls and samples redraw them."""
    p = with_overrides(params, {**TINY_TRAIN, "render.ranges": ["U+6C34-U+6C3D"], "render.split.validation": 0.0,
                                "render.split.test": 0.0, "train.epochs": 300, "train.batch_size": 8,
                                "train.lr": 0.003, "train.cfg_dropout": 0.0, "train.log_every": 25})
    rendered = RenderOutputs.under(tmp_path / "render")
    report = run_render(p, sources_dir, rendered)
    from glyffuser.stages.embed import run_embed

    run_embed(p.embed, rendered.definitions, tmp_path / "emb.parquet")
    paths = train_paths(tmp_path, (rendered, report), tmp_path / "emb.parquet")
    result = run_train(p, paths, track=False)
    assert result["val_loss"] is None  # no validation split here
    # plain v-loss, the default since issue 20: 0.039 measured (it weights the noisiest steps fully, where even a
    # memorised glyph leaves an error); the min-SNR-weighted loss of before ended below 0.03
    assert result["train_loss"] < 0.06, result

    defs, _ = read_table(rendered.definitions)
    glyphs, _ = read_table(rendered.glyphs)
    real = np.stack([np.asarray(from_png(png).resize((16, 16))) for png in glyphs.column("png").to_pylist()]) / 255.0
    pipe = GlyffuserPipeline.from_pretrained(paths.model, device="cpu")
    texts = defs.column("definition").to_pylist()
    samples = pipe(texts, num_images=4, steps=25, guidance=1.0, scheduler="ddim")
    hits = 0
    for k, img in enumerate(samples):
        dist = ((real - np.asarray(img) / 255.0) ** 2).mean(axis=(1, 2))
        hits += int(dist.argmin() == k // 4 and dist[k // 4] < 0.02)
    # A sample that is not its own glyph almost never lands within 0.02 of it; the model redraws
    # 13-14 of 32 (measured with and without channels_last, whose rounding changes the trajectory).
    assert hits >= 10, f"only {hits}/{len(samples)} samples redraw their own glyph"


def test_two_process_ddp_stays_in_sync(short, rendered, embeddings_path, tmp_path):
    paths = train_paths(tmp_path, rendered, embeddings_path)
    params_file = tmp_path / "params.yaml"
    import yaml

    params_file.write_text(yaml.safe_dump(with_overrides(short, {"train.epochs": 2}).model_dump()))
    out, _ = rendered
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "glyffuser.cli", "train", "--params", str(params_file), "--no-mlflow",
           "--definitions", str(out.definitions), "--glyphs", str(out.glyphs), "--embeddings", str(embeddings_path),
           "--model", str(paths.model), "--metrics", str(paths.metrics), "--curve", str(paths.curve),
           "--checkpoints", str(paths.checkpoints)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(paths.metrics.read_text())
    assert metrics["world_size"] == 2 and metrics["ranks_in_sync"] is True
    # each step consumes 2 × 16 images, so an epoch takes half the steps of a single process
    n_train = rendered[1]["splits"]["train"]
    assert metrics["steps"] == 2 * math.ceil(n_train / 32)


def test_mlflow_records_the_run(short, rendered, embeddings_path, tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("DVC_EXP_NAME", "test-exp")
    # eval_every 7 is no multiple of log_every 5: validation still runs on its own cadence
    p = with_overrides(short, {"train.eval_every": 7})
    paths = train_paths(tmp_path / "run", rendered, embeddings_path)
    run_train(p, paths, track=True)
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("glyffuser")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on runs, not GenAI traces
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "train · test-exp" and run.data.tags["stage"] == "train"
    assert run.data.params["train.lr"] == str(p.train.lr)
    assert run.data.tags["dvc_experiment"] == "test-exp" and run.data.tags["git_commit"]
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) >= 4
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [7, 14, 21, 26]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/unet", "model/scheduler", "model/glyffuser.json"} <= artifacts
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    for step in (7, 14, 21, 26):  # one validation sample grid per evaluation, named with its step
        assert any(name.startswith(f"images/samples+step+{step}+") and name.endswith(".png") for name in images), step
    assert (tmp_path / "mlartifacts").is_dir()  # artifacts beside the store, not in the cwd
    # The model names its run, so the evaluate/umap/figures stages can log into it.
    info = json.loads((paths.model / "glyffuser.json").read_text())
    assert info["mlflow_run_id"] == run.info.run_id
    from glyffuser.tracking import log_to_model_run

    assert log_to_model_run(info, {"x": 1.0}, [paths.metrics], "evaluate") == run.info.run_id
    assert client.get_metric_history(run.info.run_id, "evaluate.x")[0].value == 1.0


def test_snapshots_are_kept_and_cleared_with_the_experiment(short, rendered, embeddings_path, tmp_path, capsys):
    paths = train_paths(tmp_path, rendered, embeddings_path)
    p = with_overrides(short, {"train.snapshot_every": 10})
    result = run_train(p, paths, track=False)
    snapshots = sorted((paths.checkpoints / "snapshots").iterdir())
    assert [s.name for s in snapshots] == ["step-00000010", "step-00000020"]
    infos = [json.loads((s / "glyffuser.json").read_text()) for s in snapshots]
    assert [i["step"] for i in infos] == [10, 20]
    assert 0 < infos[0]["train_minutes"] < infos[1]["train_minutes"] <= result["wall_time_min"] + 0.01
    pipe = GlyffuserPipeline.from_pretrained(snapshots[1], device="cpu")
    assert pipe.unet.dtype == torch.float32  # stored in fp16, loaded for sampling in fp32
    run_train(with_overrides(p, {"train.lr": 0.0005}), paths, stop_after=5, track=False)
    assert "params, data or code changed" in capsys.readouterr().out
    assert not (paths.checkpoints / "snapshots").exists()


def test_speed_options_change_rounding_only(short, rendered, embeddings_path, tmp_path):
    base = run_train(short, train_paths(tmp_path / "a", rendered, embeddings_path), track=False)
    fast_paths = train_paths(tmp_path / "b", rendered, embeddings_path)
    fast = run_train(with_overrides(short, {"train.channels_last": False, "train.fused_optimizer": False}), fast_paths,
                     track=False)
    assert fast["train_loss"] == pytest.approx(base["train_loss"], rel=0.05)
    a, b = weights(tmp_path / "a" / "model"), weights(fast_paths.model)
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-2, worst


def test_compiled_training_runs_the_same_loop(short, rendered, embeddings_path, tmp_path):
    """train.compile (the GPU default) on CPU: fixed shapes, the model unwrapped for sampling and saving."""
    p = with_overrides(short, {"train.compile": True, "train.epochs": 0.25})
    result = run_train(p, train_paths(tmp_path, rendered, embeddings_path), track=False)
    assert result["steps"] >= 5 and math.isfinite(result["train_loss"])
    pipe = GlyffuserPipeline.from_pretrained(tmp_path / "model", device="cpu")
    assert len(pipe(["a kind of fish"], num_images=1, steps=2)) == 1


def test_train_seed_redraws_the_training_alone(short, rendered, embeddings_path, tmp_path):
    """train.seed: null trains exactly what base.seed trained; another value gives other weights (the run-to-run
    spread), while base.seed, which the judge and the sample seeds use, stays put."""
    same_seed = with_overrides(short, {"train.epochs": 0.3, "train.seed": short.base.seed})
    runs = {name: train_paths(tmp_path / name, rendered, embeddings_path) for name in ("null", "same", "other")}
    run_train(with_overrides(short, {"train.epochs": 0.3}), runs["null"], track=False)
    run_train(same_seed, runs["same"], track=False)
    run_train(with_overrides(same_seed, {"train.seed": short.base.seed + 1}), runs["other"], track=False)
    a, b, c = (weights(runs[n].model) for n in ("null", "same", "other"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
