"""MLflow tracking in one place: where the store lives, how a run is opened and tagged.

The default store is a SQLite file per user (`~/.local/share/glyffuser/mlflow.db`, with artifacts
beside it), so runs from every checkout and from `dvc exp run --queue`'s temporary copies land in
one place. MLFLOW_TRACKING_URI overrides it.
"""

from __future__ import annotations

import os
import re
import subprocess
from contextlib import contextmanager
from pathlib import Path

EXPERIMENT = "glyffuser"


def store_dir() -> Path:
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "glyffuser"


def tracking_uri() -> str:
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        return uri
    store_dir().mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store_dir() / 'mlflow.db'}"


def _artifact_location(uri: str) -> str | None:
    """Artifacts beside a SQLite store (not in the current directory, which may be a temp copy)."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///")).resolve()  # "sqlite:////abs/path" or "sqlite:///rel/path"
        return (db.parent / "mlartifacts").as_uri()
    return None


def flatten(data: dict, prefix: str = "") -> dict[str, str]:
    """{"a": {"b": 1}} -> {"a.b": "1"}; characters MLflow refuses in names (";" in a prompt) become "_"."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = re.sub(r"[^\w\-. :/]", "_", f"{prefix}{key}")
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)
    return out


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@contextmanager
def mlflow_run(params: dict, run_name: str | None = None):
    """Open a run with flattened params and git/DVC tags; yields the mlflow module."""
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(EXPERIMENT)
    exp_id = exp.experiment_id if exp else mlflow.create_experiment(EXPERIMENT, artifact_location=_artifact_location(uri))
    tags = {"git_commit": _git_commit(), "dvc_experiment": os.environ.get("DVC_EXP_NAME", "")}
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name or os.environ.get("DVC_EXP_NAME") or None, tags=tags):
        mlflow.log_params(flatten(params))
        yield mlflow


def log_to_model_run(model_info: dict, metrics: dict[str, float], files: list[Path], artifact_path: str) -> str:
    """Add metrics and files to the MLflow run that trained the model (its id is in glyffuser.json).

    A model trained elsewhere, or without tracking, gets a new run named after the stage instead.
    Returns the run id used.
    """
    import logging

    import mlflow
    from mlflow.exceptions import MlflowException

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri())
    run_id = model_info.get("mlflow_run_id")
    try:
        found = run_id is not None and mlflow.get_run(run_id) is not None
    except MlflowException:
        found = False
    if found:
        context = mlflow.start_run(run_id=run_id)
    else:
        context = mlflow_run({"model": {k: v for k, v in model_info.items() if k != "mlflow_run_id"}},
                             run_name=f"{artifact_path} (model run not in this store)")
    with context as active:
        run = active if found else mlflow.active_run()
        mlflow.log_metrics({f"{artifact_path}.{k}": float(v) for k, v in metrics.items()})
        for f in files:
            mlflow.log_artifact(str(f), artifact_path=artifact_path)
        return run.info.run_id
