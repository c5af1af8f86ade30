"""MLflow tracking in one place: where the store lives, how a run is opened and tagged.

The default store is a SQLite file per user (`~/.local/share/glyffuser/mlflow.db`, with artifacts
beside it), so runs from every checkout and from `dvc exp run --queue`'s temporary copies land in
one place. MLFLOW_TRACKING_URI overrides it.
"""

from __future__ import annotations

import os
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
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
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
