"""The real `dvc repro` on the smoke profile, in a throwaway git repository."""

import json
import os
import shutil
import subprocess

import pyarrow.parquet as pq

from tests.conftest import REPO


def run(cmd, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{cwd.parent / 'mlflow.db'}"}
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def test_smoke_pipeline(tmp_path):
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    repo = tmp_path / "repo"
    for name in tracked:
        if (REPO / name).is_file() and not name.startswith("data/"):
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, repo / name)
    shutil.copy(REPO / "profiles" / "smoke.yaml", repo / "params.yaml")
    run(["git", "init", "-q"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "x", "--allow-empty"], repo)

    run(["dvc", "repro"], repo)
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
    assert (repo / "data" / "umap" / "umap.html").is_file() and (repo / "data" / "figures" / "denoise.gif").is_file()
    shown = run(["dvc", "exp", "show", "--no-pager", "--csv"], repo)
    for column in ("train_loss", "img_per_s", "adherence_grid", "adherence_heldout", "control_shuffled",
                   "control_empty_prompt", "kid", "kid_real_floor", "novelty", "test_accuracy"):
        assert column in shown, column

    assert "Data and pipelines are up to date" in run(["dvc", "repro"], repo)

    params = repo / "params.yaml"
    params.write_text(params.read_text().replace("image_size: 64", "image_size: 48"))
    out = run(["dvc", "repro"], repo)
    assert "Running stage 'render'" in out and "Running stage 'train'" in out and "Running stage 'figures'" in out
    assert "Running stage 'embed'" not in out and "Running stage 'sources'" not in out
