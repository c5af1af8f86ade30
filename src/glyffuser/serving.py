"""The MLflow pyfunc model of a trained glyffuser: English prompts in, glyphs out (base64 PNG).

MLflow runs this file to load a logged model ("models from code"): `mlflow.pyfunc.load_model(uri)`,
`mlflow models serve -m models:/glyffuser/1 --env-manager local` and `glyffuser sample --model URI`
all end in the same `GlyffuserPipeline` call as `glyffuser sample`, so the same prompt, seed, steps
and guidance give the same pixels. Input: a column `prompt` (one row per prompt). Params (the
signature's defaults are the sample stage's): num_images, steps, guidance, seed, scheduler. Output:
one row per glyph, prompt-major: prompt, seed (image j of a prompt uses seed + j), png (base64).
Bad input (an empty prompt, too many glyphs, a negative guidance) is one MlflowException line,
which the scoring server returns as a 400 with that message and no stack trace.
"""

from __future__ import annotations

import base64
import io

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

PARAMS = ("num_images", "steps", "guidance", "seed", "scheduler")


def png_base64(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


class GlyffuserModel(PythonModel):
    def load_context(self, context):
        from glyffuser.diffusion.pipeline import GlyffuserPipeline

        # the model folder and the encoder logged beside it; bf16 where the hardware has it, as `glyffuser sample`
        self.pipe = GlyffuserPipeline.from_pretrained(context.artifacts["model"])
        self.pipe.info = {**self.pipe.info, "encoder": context.artifacts["encoder"]}
        self.defaults = dict((context.model_config or {}).get("defaults", {}))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from glyffuser.errors import GlyffuserError

        p = {**self.defaults, **{k: v for k, v in (params or {}).items() if v is not None}}
        if "prompt" not in getattr(model_input, "columns", []):
            raise MlflowException("the input needs a column 'prompt' (one English definition per row)",
                                  INVALID_PARAMETER_VALUE)
        prompts = list(model_input["prompt"])
        try:
            n, seed = int(p["num_images"]), int(p["seed"])
            images = self.pipe(prompts, num_images=n, steps=int(p["steps"]), guidance=float(p["guidance"]),
                               scheduler=str(p["scheduler"]), seed=seed)
        except GlyffuserError as err:
            raise MlflowException(str(err), INVALID_PARAMETER_VALUE) from None
        except ValueError as err:  # an unknown scheduler name
            raise MlflowException(str(err).splitlines()[0], INVALID_PARAMETER_VALUE) from None
        return pd.DataFrame({"prompt": [q.strip() for q in prompts for _ in range(n)],
                             "seed": [seed + j for _ in prompts for j in range(n)],
                             "png": [png_base64(im) for im in images]})


mlflow.models.set_model(GlyffuserModel())
