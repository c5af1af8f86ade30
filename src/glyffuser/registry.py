"""Each trained model as an MLflow model, registered: one version of `glyffuser` per training run.

The evaluate stage calls `register_model` once it has judged the model: it logs the pyfunc model
(glyffuser/serving.py, with the model folder, the encoder, the cascade's upsampler and this package's code) under the training's
MLflow run, registers it, tags the version with the run's DVC experiment and git commit, and attaches
the evaluate stage's headline numbers, so the registry page compares versions. A later evaluation of
the same training (new sample params) updates those numbers on the same version; one with another upsampler
(its weights' sha256 is a version tag) logs a new version, so a version always serves what was judged.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path

from glyffuser.errors import GlyffuserError

REGISTERED_MODEL = "glyffuser"
SERVING_CODE = Path(__file__).resolve().parent / "serving.py"  # passed by path: stages never import it
PACKAGE_DIR = Path(__file__).resolve().parent
HEADLINE = ("adherence_heldout", "adherence_heldout_rarest", "adherence_train", "adherence_grid", "seed_sweep_hits", "kid", "stroke_fidelity", "sharpness", "novelty")
# What the model needs to run where it is served; exact versions of this environment (constraints.txt).
REQUIREMENTS = ("torch", "diffusers", "transformers", "accelerate", "safetensors", "pillow", "pandas", "pydantic",
                "pyyaml", "mlflow")


def signature(defaults: dict):
    """prompt in; (prompt, seed, png as base64) out; the sampling options as params with the sample stage's defaults."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    params = ParamSchema([ParamSpec("num_images", "long", defaults["num_images"]),
                          ParamSpec("steps", "long", defaults["steps"]),
                          ParamSpec("guidance", "double", defaults["guidance"]),
                          ParamSpec("seed", "long", defaults["seed"]),
                          ParamSpec("scheduler", "string", defaults["scheduler"])])
    return ModelSignature(inputs=Schema([ColSpec("string", "prompt")]),
                          outputs=Schema([ColSpec("string", "prompt"), ColSpec("long", "seed"), ColSpec("string", "png")]),
                          params=params)


def requirements() -> list[str]:
    out = []
    for name in REQUIREMENTS:
        try:
            out.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(name)
    return out


def log_model(model_dir: Path, encoder_dir: Path, defaults: dict, registered_name: str | None = REGISTERED_MODEL,
              upsampler_dir: Path | None = None):
    """Log (and register) the pyfunc model under the active MLflow run; returns MLflow's ModelInfo."""
    import pandas as pd
    from mlflow import pyfunc

    artifacts = {"model": str(model_dir), "encoder": str(encoder_dir)}
    if upsampler_dir is not None:
        artifacts["upsampler"] = str(upsampler_dir)
    return pyfunc.log_model(
        name="model", python_model=str(SERVING_CODE), code_paths=[str(PACKAGE_DIR)],
        artifacts=artifacts,
        model_config={"defaults": defaults}, signature=signature(defaults),
        input_example=(pd.DataFrame({"prompt": ["a kind of fish"]}), {"num_images": 1}),
        pip_requirements=requirements(), registered_model_name=registered_name)


def logged_model_id(version) -> str | None:
    """The logged model behind a registered version ("models:/m-..." is its source in MLflow 3)."""
    if getattr(version, "model_id", None):
        return version.model_id
    source = str(version.source or "")
    return source.removeprefix("models:/") if source.startswith("models:/m-") else None


def upsampler_tag(upsampler_dir: Path | None) -> str:
    """What a version's `upsampler` tag says: the weights' sha256 (first 16 hex digits), or "none"."""
    if upsampler_dir is None:
        return "none"
    return str(json.loads((Path(upsampler_dir) / "config.json").read_text())["weights_sha256"])[:16]


def register_model(model_dir: Path, encoder_dir: Path, info: dict, defaults: dict, metrics: dict,
                   upsampler_dir: Path | None = None) -> str | None:
    """The registered version of this training run and upsampler (logged on first call), with `metrics` attached.
    Returns "glyffuser/VERSION", or None with one warning line when there is no run or the store fails."""
    try:
        return _register(model_dir, encoder_dir, info, defaults, metrics, upsampler_dir)
    except GlyffuserError:
        raise
    except Exception as err:  # the store broke after require_store passed: the outputs stand, the record is lost
        print(f"glyffuser: warning: model not registered in MLflow ({str(err).splitlines()[0]})", file=sys.stderr)
        return None


def _register(model_dir: Path, encoder_dir: Path, info: dict, defaults: dict, metrics: dict,
              upsampler_dir: Path | None) -> str | None:
    import mlflow
    from mlflow.exceptions import MlflowException

    from glyffuser.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    client = mlflow.MlflowClient()
    run_id = info.get("mlflow_run_id")
    try:
        run = client.get_run(run_id) if run_id else None
    except MlflowException:
        run = None
    if run is None:  # trained without tracking, or in another store: nothing to attach the model to
        return None
    upsampler = upsampler_tag(upsampler_dir)
    weights = str(info.get("weights_sha256", ""))[:16]  # the align stage's model shares its parent's run
    versions = [v for v in client.search_model_versions(f"name='{REGISTERED_MODEL}' and run_id='{run_id}'")
                if v.tags.get("upsampler", "none") == upsampler and v.tags.get("weights", weights) == weights]
    if versions:
        version = max(versions, key=lambda v: int(v.version))
    else:
        with mlflow.start_run(run_id=run_id):
            logged = log_model(model_dir, encoder_dir, defaults, upsampler_dir=upsampler_dir)
        version = client.get_model_version(REGISTERED_MODEL, str(logged.registered_model_version))
    model_id = logged_model_id(version)
    headline = {k: float(metrics[k]) for k in HEADLINE if isinstance(metrics.get(k), (int, float))}
    if model_id:
        mlflow.log_metrics(headline, model_id=model_id, run_id=run_id)
    tags = {"git_commit": run.data.tags.get("git_commit", ""), "dvc_experiment": run.data.tags.get("dvc_experiment", ""),
            "resolution": str(info.get("resolution")), "encoder": str(info.get("encoder")), "upsampler": upsampler,
            "weights": weights, "aligned_from": str(info.get("align", {}).get("parent_weights_sha256") or "none")[:16]}
    tags.update({f"evaluate.{k}": f"{v:.4g}" for k, v in headline.items()})
    for key, value in tags.items():
        client.set_model_version_tag(REGISTERED_MODEL, version.version, key, value)
    return f"{REGISTERED_MODEL}/{version.version}"
