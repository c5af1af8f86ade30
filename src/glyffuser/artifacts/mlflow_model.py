"""A glyffuser model in MLflow's layout, and MLflow model URIs resolved to it.

The evaluate stage logs each trained model as an MLflow pyfunc model (glyffuser/registry.py); MLflow
lays its files out as

    MLmodel, python_env.yaml, requirements.txt, serving.py    the flavour and the serving code
    code/glyffuser/                                           this package, as it was when logged
    artifacts/<i>/<name>/                                     the model folder (artifacts/model_folder.py) and
                                                              the text encoder the embeddings came from

where the MLmodel file names which folder is which (its pyfunc flavour's `artifacts`: `model`,
`encoder`). So `models:/glyffuser/3` or `runs:/<run id>/model` is, once downloaded, a model folder
and its encoder.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from glyffuser.errors import GlyffuserError

URI_SCHEMES = ("models:/", "runs:/")


def is_model_uri(text: str | Path) -> bool:
    return str(text).startswith(URI_SCHEMES)


def resolve_model_uri(uri: str) -> tuple[Path, Path | None]:
    """Download (or find in the local store) an MLflow model: (its model folder, its bundled encoder or None)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from glyffuser.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=str(uri)))
    except (MlflowException, OSError) as err:
        first = str(getattr(err, "message", err)).splitlines()[0]
        raise GlyffuserError(f"cannot load the MLflow model {uri} from {tracking_uri()}: {first}") from None
    try:
        flavor = yaml.safe_load((local / "MLmodel").read_text(encoding="utf-8"))["flavors"]["python_function"]
        artifacts = {name: local / entry["path"] for name, entry in flavor["artifacts"].items()}
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        artifacts = {}
    if not (artifacts.get("model") and (artifacts["model"] / "glyffuser.json").is_file()):
        raise GlyffuserError(f"the MLflow model {uri} is not a glyffuser model (its MLmodel names no model folder)")
    encoder = artifacts.get("encoder")
    return artifacts["model"], encoder if encoder is not None and encoder.is_dir() else None
