"""Screenshot the MLflow UI as a person sees it: the glyffuser experiment's runs, data/model's training run, and
its registered model (the versions of `glyffuser`, and this run's version with its signature and metrics).

    python docs/mlflow_screenshot.py                 # docs/mlflow_runs.png, mlflow_run.png, mlflow_registry.png,
                                                     # mlflow_model_version.png
    python docs/mlflow_screenshot.py --store sqlite:///path/mlflow.db --out /tmp/shots

Starts `mlflow ui` on a free port of 127.0.0.1 with the store the pipeline logs to (glyffuser.tracking),
opens the pages in headless Chromium (Debian: `apt-get install chromium`) and stops the server.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from glyffuser.tracking import EXPERIMENT, tracking_uri

DOCS = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"nothing answered at {url} within {seconds:.0f} s")


def find_chromium() -> str:
    """Debian's headless-capable Chromium, or exit with the command that installs it."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("no chromium on PATH: apt-get install chromium fonts-noto-cjk")
    return chromium


def screenshot(chromium: str, url: str, out: Path, size: str) -> None:
    with tempfile.TemporaryDirectory() as profile:  # a fresh profile: no first-run state, no crash dialogs
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={profile}", f"--window-size={size}", "--virtual-time-budget=60000",
                        "--run-all-compositor-stages-before-draw",
                        f"--screenshot={out}", url], check=True, capture_output=True, timeout=120)
    print(f"{url} -> {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None, help="MLflow tracking URI (default: the pipeline's store)")
    parser.add_argument("--out", type=Path, default=DOCS)
    args = parser.parse_args()
    chromium = find_chromium()
    import mlflow

    store = args.store or tracking_uri()
    client = mlflow.MlflowClient(store)
    exp = client.get_experiment_by_name(EXPERIMENT)
    # The run that trained data/model (the evaluate, umap and figures stages log into it too), else the newest.
    info = DOCS.parent / "data" / "model" / "glyffuser.json"
    run_id = json.loads(info.read_text()).get("mlflow_run_id") if info.is_file() else None
    runs = client.search_runs([exp.experiment_id], "tags.stage = 'train'", order_by=["start_time DESC"],
                              max_results=1) if exp else []
    if run_id and exp:
        runs = [client.get_run(run_id)]
    if not runs:
        sys.exit(f"no training run in {store}: run dvc repro first")
    run = runs[0]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(base + "/health")
        args.out.mkdir(parents=True, exist_ok=True)
        # workflowType: the UI's own switch between its GenAI and model-training navigation (a fresh
        # browser starts on GenAI; the experiment's kind tag already opens the runs page)
        ml = "workflowType=machine_learning"
        screenshot(chromium, f"{base}/#/experiments/{exp.experiment_id}/runs?{ml}", args.out / "mlflow_runs.png",
                   "1700,600")
        page = f"{base}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}"
        screenshot(chromium, f"{page}?{ml}", args.out / "mlflow_run.png", "1700,1500")
        # The registry (the evaluate stage registers each judged training as a version of `glyffuser`)
        versions = client.search_model_versions(f"name='glyffuser' and run_id='{run.info.run_id}'")
        if versions:
            screenshot(chromium, f"{base}/#/models/glyffuser?{ml}", args.out / "mlflow_registry.png", "1700,700")
            screenshot(chromium, f"{base}/#/models/glyffuser/versions/{versions[0].version}?{ml}",
                       args.out / "mlflow_model_version.png", "1700,1300")
        else:
            print(f"run {run.info.run_id} has no registered version: run the evaluate stage with tracking first")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
