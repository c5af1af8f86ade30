"""glyffuser: a reproducible text-to-glyph diffusion pipeline."""

import os

__version__ = "0.1.0"

# Nothing leaves the machine, the tools' own reports included: MLflow's telemetry and DVC's analytics are
# off in glyffuser's processes and in the dvc and mlflow commands they start (set them yourself for a
# `mlflow ui` or `mlflow models serve` you start by hand: README).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
