"""A glyffuser model in MLflow's layout, and MLflow model URIs resolved to it.

The evaluate stage logs each trained model as an MLflow pyfunc model (glyffuser/registry.py); MLflow
lays its files out as

    MLmodel, python_env.yaml, requirements.txt, serving.py    the flavour and the serving code
    code/glyffuser/                                           this package, as it was when logged
    artifacts/<i>/<name>/                                     the model folder (artifacts/model_folder.py) and
                                                              the text encoder the embeddings came from

where the MLmodel file names which folder is which (its pyfunc flavour's `artifacts`: `model`,
`encoder`, and `upsampler` for a cascade). So `models:/glyffuser/3` or `runs:/<run id>/model` is, once
downloaded, a model folder, its encoder and its upsampler.

A model with a fixed identity (`models:/NAME/VERSION`, `runs:/ID/...`) is downloaded once into the user
cache (~/.cache/glyffuser/mlflow-models/, or XDG_CACHE_HOME) and found there the next time; any other
URI (an alias, `latest`) into a temporary folder removed when the process exits. A download that fails
leaves nothing behind. An HTTP store gets 10 s and no retries; the per-user store is never created by
resolving a URI (it is only read).
"""

from __future__ import annotations

import atexit
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

import yaml

from glyffuser.errors import GlyffuserError

URI_SCHEMES = ("models:/", "runs:/")


def is_model_uri(text: str | Path) -> bool:
    return str(text).startswith(URI_SCHEMES)


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "glyffuser" / "mlflow-models"


def _pinned(uri: str) -> bool:
    """A URI whose content never changes: a numbered model version or a run's artifact."""
    return bool(re.match(r"^models:/[^/@]+/\d+/?$", uri)) or uri.startswith("runs:/")


def _model_root(folder: Path) -> Path | None:
    """The folder holding the MLmodel file within a download (MLflow may nest it under the artifact's name)."""
    found = sorted(folder.rglob("MLmodel"), key=lambda p: len(p.parts)) if folder.is_dir() else []
    return found[0].parent if found else None


def _download(uri: str, store: str) -> Path:
    """The model's files in a local folder: from the cache when pinned, else a temporary folder removed at exit."""
    import mlflow

    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # one error line, not a bar and then the line
    final = cache_dir() / hashlib.sha256(f"{store}\n{uri}".encode()).hexdigest()[:24] if _pinned(uri) else None
    if final is not None and (root := _model_root(final)) is not None:
        return root
    partial = None
    if final is not None:
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            partial = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        except OSError:  # a read-only cache: this process's own copy, as for an unpinned URI
            final = None
    if partial is None:
        partial = Path(tempfile.mkdtemp(prefix="glyffuser-model-"))
        atexit.register(shutil.rmtree, partial, ignore_errors=True)
    try:
        mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(partial))
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if final is None:
        return _model_root(partial) or partial
    try:
        os.replace(partial, final)
    except OSError:  # another process cached the same model meanwhile
        shutil.rmtree(partial, ignore_errors=True)
    return _model_root(final) or final


def resolve_model_uri(uri: str) -> tuple[Path, Path | None, Path | None]:
    """Download (or find in the cache) an MLflow model: (its model folder, its bundled encoder or None, its bundled
    upsampler or None)."""
    import mlflow

    from glyffuser.tracking import cap_http_waits, first_line, store_dir, tracking_uri

    store = tracking_uri(create=False)
    if store.startswith("sqlite:///") and "MLFLOW_TRACKING_URI" not in os.environ and not (store_dir() / "mlflow.db").is_file():
        raise GlyffuserError(f"cannot load the MLflow model {uri}: there is no MLflow store at {store_dir() / 'mlflow.db'} "
                             "yet (the evaluate stage registers models there), or set MLFLOW_TRACKING_URI")
    cap_http_waits()
    mlflow.set_tracking_uri(store)
    try:
        local = _download(uri, store)
    except Exception as err:  # MLflow's, SQLAlchemy's or the HTTP client's own error, whatever its type
        raise GlyffuserError(f"cannot load the MLflow model {uri} from {store}: {first_line(err)}") from None
    try:
        flavor = yaml.safe_load((local / "MLmodel").read_text(encoding="utf-8"))["flavors"]["python_function"]
        artifacts = {name: local / entry["path"] for name, entry in flavor["artifacts"].items()}
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        artifacts = {}
    if not (artifacts.get("model") and (artifacts["model"] / "glyffuser.json").is_file()):
        raise GlyffuserError(f"the MLflow model {uri} is not a glyffuser model (its MLmodel names no model folder)")
    if missing := sorted(name for name, folder in artifacts.items() if not folder.is_dir()):
        # a damaged or partly deleted download: drawing without them would not be what was registered
        entry = next((p for p in (local, *local.parents) if p.parent == cache_dir()), local)
        raise GlyffuserError(f"the download of the MLflow model {uri} in {local} lacks its {', '.join(missing)} "
                             f"folder: remove {entry} to download it again")
    return artifacts["model"], artifacts.get("encoder"), artifacts.get("upsampler")
