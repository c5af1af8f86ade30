"""The real DVC pipeline on the smoke profile (`glyffuser profile smoke`: a `dvc exp run`), in a throwaway git repository."""

import json
import os
import shutil
import subprocess
import sys

import pyarrow.parquet as pq

from tests.conftest import REPO


def run(cmd, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{cwd.parent / 'mlflow.db'}"}
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def stale_stages(repo) -> set[str]:
    """Stages `dvc status` would re-run, changed themselves or downstream of a change."""
    status = json.loads(run(["dvc", "status", "--json"], repo))
    return {name.split(":")[-1] for name in status}


def assert_mlflow_run_holds_what_the_readme_promises(db):
    import mlflow

    # the process's store too: MLflow 3 resolves a run's logged model ("model") through the default store
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("glyffuser")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    (run,) = client.search_runs([exp.experiment_id])
    # the profile ran as the DVC experiment "smoke": the run is named and tagged after it
    assert run.info.run_name == "train · smoke" and run.data.tags["dvc_experiment"] == "smoke"
    assert run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.002" and run.data.params["model.parameters"]
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) >= 3  # per-step metrics
    for key in ("val_loss", "final_train_loss", "evaluate.adherence_grid", "evaluate.kid", "evaluate.novelty",
                "umap.minutes", "figures.minutes", "guide.minutes"):
        assert key in run.data.metrics, key

    def files(path):
        return {a.path for a in client.list_artifacts(run.info.run_id, path)}

    assert any(p.startswith("images/samples+step+") and p.endswith(".png") for p in files("images"))
    assert {"evaluate/grid.png", "evaluate/novelty.png", "evaluate/metrics.json"} <= files("evaluate")
    assert {"umap/umap.html", "umap/umap_layouts.png"} <= files("umap")
    assert {"figures/denoise.gif", "figures/forward.png", "figures/guidance.png"} <= files("figures")
    assert files("guide") == {"guide/index.html"}
    assert "model/glyffuser.json" in files("model")
    # the evaluate stage registered the trained model: one version, tagged, carrying its numbers (issue 22)
    (version,) = client.search_model_versions("name='glyffuser'")
    assert version.run_id == run.info.run_id and version.tags["dvc_experiment"] == "smoke"
    assert "evaluate.adherence_heldout" in version.tags


def throwaway_repo(tmp_path):
    """This checkout's files (less data/) committed in a new git repository: the pipeline runs there from scratch."""
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    repo = tmp_path / "repo"
    for name in tracked:
        outputs = name.startswith("data/") and not name.startswith("data/feedback/")  # the feedback folder is a dep
        if (REPO / name).is_file() and not outputs and not name.startswith("benchmarks/results/"):
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, repo / name)
    run(["git", "init", "-q"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "x", "--allow-empty"], repo)
    return repo


# The GPU profile at a size the CPU runs in minutes: its stages, dependencies and shapes (128 px drafts through a
# 64×64 UNet grid, the 128 -> 256 px upsampler), with tiny widths, few glyphs and a fraction of an epoch.
GPU_AT_TINY_SIZE = {
    "render.ranges": ["U+9B5A-U+9C7F", "U+9CE5-U+9DFF"], "render.preview_count": 8,
    "train.block_channels": [16, 32, 32, 32], "train.layers_per_block": 1, "train.epochs": 0.5,
    "train.batch_size": 16, "train.lr_warmup_steps": 2, "train.log_every": 2, "train.eval_every": 0,
    "train.checkpoint_every": 4, "train.val_images": 16, "train.eval_steps": 2,
    "sample.seeds": 1, "sample.steps": 3, "classifier.epochs": 1, "classifier.width": 8,
    "reward_judge.epochs": 1, "reward_judge.width": 8,
    "upsampler.width": 8, "upsampler.steps": 30,
    "evaluate.heldout_characters": 4, "evaluate.control_characters": 4, "evaluate.copy_calibration": 20, "evaluate.train_characters": 4,
    "evaluate.seed_sweep_seeds": 2, "umap.n_neighbors": 5,
    "figures.forward_timesteps": [0, 500, 999], "figures.signal_levels": [1.0, 0.3], "figures.step_counts": [1, 2],
    "figures.step_samplers": ["ddim"], "figures.trajectory_seeds": 2, "figures.guidance_prompts": ["a kind of fish"],
    "figures.guidance_scales": [0, 5], "figures.animation_prompts": ["a kind of fish"], "figures.animation_steps": 2,
}


def test_the_gpu_profile_runs_end_to_end_at_tiny_size(tmp_path):
    """Issue 40: profiles/gpu.yaml kept 128 px renders for a 128 px model, so its experiment failed in the upsampler
    stage after the whole training. Its params run through every stage here, shrunk (GPU_AT_TINY_SIZE)."""
    from dvc.utils.hydra import apply_overrides

    from glyffuser.params import load_params, with_overrides
    from glyffuser.profiles import override_value, with_profile, write_profile_params

    repo = throwaway_repo(tmp_path)
    gpu = with_profile("gpu", REPO / "params.yaml", REPO)
    tiny = with_overrides(gpu, GPU_AT_TINY_SIZE)  # validated, as every stage will
    for key in ("render.image_size", "train.resolution", "train.patch_size", "train.attention_levels", "upsampler.block"):
        group, leaf = key.split(".")
        assert getattr(getattr(tiny, group), leaf) == getattr(getattr(gpu, group), leaf), key  # the GPU profile's own
    params = write_profile_params("gpu", repo / "params.yaml", REPO / "params.yaml", REPO)
    apply_overrides(params, [f"{k}={override_value(v)}" for k, v in GPU_AT_TINY_SIZE.items()])
    assert load_params(params) == tiny
    out = run(["dvc", "repro"], repo)
    assert "Running stage 'guide'" in out
    model = json.loads((repo / "data" / "model" / "glyffuser.json").read_text())
    assert model["resolution"] == 128 and model["patch_size"] == 2
    assert json.loads((repo / "data" / "upsampler" / "config.json").read_text())["input_resolution"] == 128
    evaluation = json.loads((repo / "data" / "evaluate" / "metrics.json").read_text())
    assert (evaluation["base_resolution"], evaluation["resolution"]) == (128, 256)
    assert (repo / "data" / "guide" / "index.html").stat().st_size > 10_000
    assert stale_stages(repo) == set()


def test_smoke_pipeline(tmp_path):
    repo = throwaway_repo(tmp_path)

    # the profile as DVC applies any variant: dvc exp run -n smoke -S ..., on top of the committed default
    out = run([sys.executable, "-m", "glyffuser.cli", "profile", "smoke"], repo)
    assert "dvc exp run -n smoke -S" in out and "Running stage 'train'" in out
    assert json.loads(run(["dvc", "params", "diff", "--json"], repo))["params.yaml"]["render.preview_count"]["new"] == 16
    report = json.loads((repo / "data" / "render" / "report.json").read_text())
    assert 250 < report["glyphs"] < 400
    emb = pq.read_table(repo / "data" / "embed" / "embeddings.parquet", columns=["codepoint"])
    defs = pq.read_table(repo / "data" / "render" / "definitions.parquet", columns=["codepoint"])
    assert emb.num_rows == defs.num_rows + 1  # + the empty prompt
    metrics = json.loads((repo / "data" / "train" / "metrics.json").read_text())
    assert metrics["steps"] > 0 and metrics["img_per_s"] > 0
    assert (repo / "data" / "model" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (repo / "data" / "sample" / "grid.png").stat().st_size > 1000
    evaluation = json.loads((repo / "data" / "evaluate" / "metrics.json").read_text())
    assert 0 <= evaluation["adherence_grid"] <= 1 and evaluation["kid_real_floor"] is not None
    # the smoke model draws 64 px drafts, the upsampler stage's CNN makes them 128 px glyphs
    assert evaluation["resolution"] == 128 and evaluation["base_resolution"] == 64
    assert 0 <= evaluation["sharpness"] <= 1 and evaluation["seed_sweep_seeds"] == 16
    assert json.loads((repo / "data" / "upsampler" / "config.json").read_text())["input_resolution"] == 64
    assert (repo / "data" / "umap" / "umap.html").is_file() and (repo / "data" / "figures" / "denoise.gif").is_file()
    guide = (repo / "data" / "guide" / "index.html").read_text(encoding="utf-8")
    assert guide.count("<section id=") == 12 and guide.count('<img src="data:image/') >= 20
    shown = run(["dvc", "exp", "show", "--no-pager", "--csv"], repo)
    for column in ("train_loss", "img_per_s", "adherence_grid", "adherence_heldout", "control_shuffled",
                   "control_empty_prompt", "kid", "kid_real_floor", "novelty", "test_accuracy"):
        assert column in shown, column

    assert "Data and pipelines are up to date" in run(["dvc", "repro"], repo)
    assert_mlflow_run_holds_what_the_readme_promises(tmp_path / "mlflow.db")

    # A sampling param re-runs sampling and what reads it, never training.
    params = repo / "params.yaml"
    original = params.read_text()
    assert "\n  guidance: 7.5 " in original  # the default's, which the smoke profile does not change
    params.write_text(original.replace("\n  guidance: 7.5 ", "\n  guidance: 3.0 "))
    assert stale_stages(repo) == {"sample", "draw", "evaluate", "figures", "align"}
    # A metric's param re-scores the drawn samples without re-drawing them (issue 43).
    assert "\n  copy_quantile: 0.99 " in original
    params.write_text(original.replace("\n  copy_quantile: 0.99 ", "\n  copy_quantile: 0.95 "))
    assert stale_stages(repo) == {"evaluate"}
    params.write_text(original)
    # A code change re-runs exactly the stages whose command imports the module (later ones only if
    # their inputs then change). Readers live apart from writers, so the sampling pipeline, the text encoder
    # and glyph rendering never make the 25-minute train stage stale, nor the umap stage.
    for module, stages in [("analysis/judge.py", {"classifier", "second_judge", "reward_judge", "align", "evaluate", "figures"}),  # figures reads with it
                           ("diffusion/encoders.py", {"embed", "sample", "draw", "evaluate", "figures", "align"}),
                           ("diffusion/pipeline.py", {"sample", "draw", "figures", "align"}),
                           # the upsampler trains once per dataset: training the diffusion model never reads it
                           ("diffusion/upsampler.py", {"upsampler", "sample", "draw", "figures", "align"}),
                           ("artifacts/fonts.py", {"render"}),
                           ("diffusion/process.py", {"train", "sample", "draw", "figures", "align"}),
                           # issue 30: the CLI, and code that only records, are in no stage's deps; a command's own
                           # options live in its stage module, so the sample command's never touch training
                           ("cli.py", set()), ("tracking.py", set()), ("registry.py", set()),
                           ("stages/sample.py", {"sample"})]:
        path = repo / "src" / "glyffuser" / module
        code = path.read_text()
        path.write_text(code + "\n# touched\n")
        assert stale_stages(repo) == stages, module
        path.write_text(code)
    assert stale_stages(repo) == set()

    # Re-rendered glyphs with the same definitions: the text encoder's stage is skipped (its input's md5 is unchanged),
    # while every stage that reads the glyphs is stale (the rest of the pipeline is not re-run: 2 minutes of CI)
    params.write_text(params.read_text().replace("image_size: 128 ", "image_size: 144 "))
    out = run(["dvc", "repro", "embed"], repo)
    assert "Running stage 'render'" in out and "Stage 'embed' didn't change" in out
    assert "Running stage 'embed'" not in out and "Running stage 'sources'" not in out
    stale = stale_stages(repo)
    assert {"train", "upsampler", "classifier"} <= stale and not stale & {"sources", "render", "embed"}, stale
