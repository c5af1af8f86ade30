"""MLflow tracking in one place: where the store lives, how a run is opened and tagged.

The default store is a SQLite file per user (`~/.local/share/glyffuser/mlflow.db`, with artifacts
beside it), so runs from every checkout and from `dvc exp run --queue`'s temporary copies land in
one place. MLFLOW_TRACKING_URI overrides it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from glyffuser.errors import GlyffuserError

EXPERIMENT = "glyffuser"
# MLflow 3's UI opens an experiment on its GenAI (traces) view unless told this one trains models.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def store_dir() -> Path:
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "glyffuser"


def tracking_uri(create: bool = True) -> str:
    """MLFLOW_TRACKING_URI, or the per-user SQLite store (its folder made only when `create`: a command that
    only reads, such as `sample --model models:/...`, creates nothing)."""
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        return uri
    if create:
        store_dir().mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store_dir() / 'mlflow.db'}"


def cap_http_waits(timeout: float = 10.0) -> None:
    """An HTTP store answers within `timeout` seconds or fails: no retries (MLflow's own back-off waited ~4 min
    for a server that was not there)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(timeout)))


def require_store(timeout: float = 10.0) -> str:
    """Check, before a stage's work, that the MLflow store can be written; returns its URI.

    The decision: an unusable store stops the stage here, in one line and before any work (fix the store,
    point MLFLOW_TRACKING_URI elsewhere, or pass --no-mlflow), so that outputs and exit status never
    disagree. A store that fails later, after this check, costs only the record: one warning line, and
    the stage keeps its outputs and exits 0 (see `log_to_model_run`). No check waits longer than
    `timeout` seconds (MLflow itself retried a read-only SQLite store for ~108 s)."""
    from glyffuser.artifacts.atomic import check_place

    hint = "set MLFLOW_TRACKING_URI to a writable store, or pass --no-mlflow"
    try:
        uri = tracking_uri()
    except OSError as err:
        raise GlyffuserError(f"cannot create the MLflow store folder {store_dir()}: "
                             f"{(err.strerror or str(err)).lower()}; {hint}") from None
    try:
        if uri.startswith("sqlite:///"):
            db = Path(uri.removeprefix("sqlite:///"))
            check_place(db.parent / "mlartifacts" / "probe")  # the artifacts beside the database
            if db.exists():
                _check_sqlite(db, timeout)
            else:
                check_place(db)
        elif uri.startswith(("http://", "https://")):
            cap_http_waits(timeout)
            from mlflow import MlflowClient

            MlflowClient(uri).search_experiments(max_results=1)
        elif uri.startswith("file:") or "://" not in uri:
            check_place(Path(uri.removeprefix("file://").removeprefix("file:")) / "probe")
    except GlyffuserError as err:
        raise GlyffuserError(f"the MLflow store {uri} is not usable ({err}); {hint}") from None
    except Exception as err:  # the server's or the client's own error, whatever its type
        raise GlyffuserError(f"the MLflow store {uri} is not usable ({first_line(err)}); {hint}") from None
    return uri


def first_line(err: Exception) -> str:
    """An MLflow, SQLAlchemy or HTTP error in at most 200 characters of one line (its type if it says nothing)."""
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def _check_sqlite(db: Path, timeout: float) -> None:
    """Open the database for writing and take its write lock once (then roll back): what MLflow will need."""
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{db.resolve()}?mode=rw", uri=True, timeout=timeout)
        try:
            con.execute("BEGIN IMMEDIATE")
            con.rollback()
        finally:
            con.close()
    except sqlite3.Error as err:
        raise GlyffuserError(f"{db}: {err}") from None


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


def _experiment_id(mlflow) -> str:
    """The glyffuser experiment, created on first use and marked as model training (not GenAI)."""
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return mlflow.create_experiment(EXPERIMENT, artifact_location=_artifact_location(uri), tags=EXPERIMENT_KIND)
    for key, value in EXPERIMENT_KIND.items():
        if exp.tags.get(key) != value:  # a store made before this tag existed
            mlflow.MlflowClient().set_experiment_tag(exp.experiment_id, key, value)
    return exp.experiment_id


def run_name(stage: str, params: dict, commit: str) -> str:
    """'train · lr-1e-3-2ep' for a DVC experiment, else what was trained:
    'train · 64 px in 2×2 patches, UNet 32-64-128, 6 ep · 93d06c0' ('64 px' alone without patches)."""
    if exp := os.environ.get("DVC_EXP_NAME"):
        return f"{stage} · {exp}"
    t = params.get("train", {})
    if not t:
        return f"{stage} · {commit[:7]}"
    channels = "-".join(str(c) for c in t.get("block_channels", []))
    patch = t.get("patch_size", 1)
    size = f"{t.get('resolution')} px" + (f" in {patch}×{patch} patches" if patch > 1 else "")
    return f"{stage} · {size}, UNet {channels}, {t.get('epochs'):g} ep · {commit[:7]}"


@contextmanager
def mlflow_run(params: dict, stage: str = "train", name: str | None = None):
    """Open a run with flattened params, a readable name and git/DVC tags; yields the mlflow module."""
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    exp_id = _experiment_id(mlflow)
    commit = _git_commit()
    tags = {"git_commit": commit, "dvc_experiment": os.environ.get("DVC_EXP_NAME", ""), "stage": stage}
    with mlflow.start_run(experiment_id=exp_id, run_name=name or run_name(stage, params, commit), tags=tags):
        mlflow.log_params(flatten(params))
        yield mlflow


def log_to_model_run(model_info: dict, metrics: dict[str, float], files: list[Path], artifact_path: str,
                     series: list[dict] | None = None) -> str | None:
    """Add metrics and files to the MLflow run that trained the model (its id is in glyffuser.json); `series`: rows
    of numbers, each logged at the step its "epoch" says (a curve, such as the align stage's).

    A model trained elsewhere, or without tracking, gets a new run named after the stage instead.
    Returns the run id used, or None (one warning line) when the store fails.
    """
    try:
        return _log_to_model_run(model_info, metrics, files, artifact_path, series or [])
    except Exception as err:  # the store broke after require_store passed: the outputs stand, the record is lost
        print(f"glyffuser: warning: not recorded in MLflow ({first_line(err)}); the outputs are written", file=sys.stderr)
        return None


def _log_to_model_run(model_info: dict, metrics: dict[str, float], files: list[Path], artifact_path: str,
                      series: list[dict]) -> str:
    import logging

    import mlflow
    from mlflow.exceptions import MlflowException

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    _experiment_id(mlflow)
    run_id = model_info.get("mlflow_run_id")
    try:
        found = run_id is not None and mlflow.get_run(run_id) is not None
    except MlflowException:
        found = False
    if found:
        context = mlflow.start_run(run_id=run_id)
    else:
        context = mlflow_run({"model": {k: v for k, v in model_info.items() if k != "mlflow_run_id"}}, stage=artifact_path,
                             name=f"{artifact_path} (model run not in this store)")
    with context as active:
        run = active if found else mlflow.active_run()
        mlflow.log_metrics({f"{artifact_path}.{k}": float(v) for k, v in metrics.items()})
        for row in series:
            mlflow.log_metrics({f"{artifact_path}.{k}": float(v) for k, v in row.items()
                                if k != "epoch" and isinstance(v, (int, float))}, step=int(row["epoch"]))
        for f in files:
            mlflow.log_artifact(str(f), artifact_path=artifact_path)
        return run.info.run_id
