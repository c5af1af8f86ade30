"""The MLflow pyfunc model of a trained glyffuser: English prompts in, glyphs out (base64 PNG).

MLflow runs this file to load a logged model ("models from code"): `mlflow.pyfunc.load_model(uri)`,
`mlflow models serve -m models:/glyffuser/1 --env-manager local` and `glyffuser sample --model URI`
all end in the same `GlyffuserPipeline` call as `glyffuser sample`, so the same prompt, seed, steps
and guidance give the same pixels. Input: a column `prompt` (one row per prompt). Params (the
signature's defaults are the sample stage's): num_images, steps, guidance, seed, scheduler. Output:
one row per glyph, prompt-major: prompt, seed (image j of a prompt uses seed + j), png (base64).
Bad input (an empty prompt, too many glyphs, a negative guidance) is one MlflowException line,
which the scoring server returns as a 400 with that message and no stack trace.

Under `mlflow models serve` a request holds the machine for a bounded time:
- its work is capped before it starts (glyffuser/limits.py: at most 4,096 glyphs and 81,920 glyphs ×
  steps; prompts of at most 200 characters, so the echoed prompts stay small): a 400 at once;
- the server takes at most BUSY_GLYPH_STEPS of work at a time: a heavy request beyond that is a 503
  at once (try again later), while a light one (at most LIGHT_GLYPH_STEPS, the sample grid's size) is
  always taken, so small requests are answered while heavy ones run;
- work still running when the server's own timeout has passed (MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT,
  60 s by default, when its client already got a 504) stops at its next step;
- SIGTERM stops the work in flight too, so that the server's graceful shutdown ends within seconds
  instead of waiting for abandoned requests.
"""

from __future__ import annotations

import base64
import io
import os
import signal
import threading
import time
from contextlib import contextmanager

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE
from mlflow.pyfunc import PythonModel

from glyffuser.limits import MAX_GLYPH_STEPS

PARAMS = ("num_images", "steps", "guidance", "seed", "scheduler")
# Set by `mlflow models serve` for the scoring server's process (mlflow.pyfunc.scoring_server._SERVER_MODEL_PATH)
_SERVING = "__pyfunc_model_path__"
_STOPPING = threading.Event()  # SIGTERM reached the scoring server: abandon the work in flight
BUSY_GLYPH_STEPS = 2 * MAX_GLYPH_STEPS  # work in flight at once, all requests together
LIGHT_GLYPH_STEPS = MAX_GLYPH_STEPS // 64  # 1,280 (64 glyphs × 20 steps, the sample grid): always taken
_in_flight = 0
_in_flight_lock = threading.Lock()


class RequestRefused(MlflowException):
    """A 400 whose body is our one line: the scoring server prefixes an MlflowException's message with the
    whole input ("Failed to predict data '<DataFrame>' ..."), so this one keeps the message it was made with."""

    def __init__(self, message: str, error_code=INVALID_PARAMETER_VALUE):
        super().__init__(message, error_code)

    @property
    def message(self) -> str:
        return self._message

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_message"):
            self._message = value


def _stop_work_on_sigterm() -> None:
    """Chain onto the scoring server's SIGTERM handler (uvicorn's graceful shutdown, which waits for requests
    in flight): the work in flight stops at its next step. Only in the server process's main thread."""
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum, frame):
        _STOPPING.set()
        if callable(previous):
            previous(signum, frame)
        else:  # the default action: end the process
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, handler)


@contextmanager
def _admitted(work: int):
    """Count a request's glyph-steps as in flight while it runs; refuse a heavy one the server has no room for."""
    global _in_flight
    work = max(0, work)  # check_request refuses steps < 1; no request may ever lower the count of others
    with _in_flight_lock:
        if work > LIGHT_GLYPH_STEPS and _in_flight + work > BUSY_GLYPH_STEPS:
            raise RequestRefused(f"the server is busy ({_in_flight:,} glyph-steps in flight, at most "
                                 f"{BUSY_GLYPH_STEPS:,}); try again later, or ask for at most {LIGHT_GLYPH_STEPS:,}",
                                 TEMPORARILY_UNAVAILABLE)
        _in_flight += work
    try:
        yield
    finally:
        with _in_flight_lock:
            _in_flight -= work


def _deadline() -> float | None:
    """When a served request's work stops: the scoring server's own timeout, after which its client got a 504."""
    if _SERVING not in os.environ:
        return None
    return time.monotonic() + float(os.environ.get("MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT") or 60)


def _stop_check(deadline: float | None):
    from glyffuser.errors import GlyffuserError

    def stop() -> None:
        if _STOPPING.is_set():
            raise GlyffuserError("the server is shutting down; the request was stopped")
        if deadline is not None and time.monotonic() > deadline:
            raise GlyffuserError("the request ran past the server's time limit (MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT) "
                                 "and was stopped: ask for fewer glyphs or steps")

    return stop


def png_base64(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


class GlyffuserModel(PythonModel):
    def load_context(self, context):
        from glyffuser.diffusion.pipeline import GlyffuserPipeline

        # the model folder, the encoder and the cascade's upsampler logged beside it; bf16 where the hardware has it,
        # as `glyffuser sample`
        self.pipe = GlyffuserPipeline.from_pretrained(context.artifacts["model"],
                                                      upsampler=context.artifacts.get("upsampler") or False)
        self.pipe.info = {**self.pipe.info, "encoder": context.artifacts["encoder"]}
        self.pipe.encoder  # noqa: B018 - loaded (and its hash checked) now, not by the first requests at once
        self.defaults = dict((context.model_config or {}).get("defaults", {}))
        if _SERVING in os.environ:
            _stop_work_on_sigterm()

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from glyffuser.diffusion.process import check_sampling
        from glyffuser.errors import GlyffuserError
        from glyffuser.limits import check_request, clean_prompt

        p = {**self.defaults, **{k: v for k, v in (params or {}).items() if v is not None}}
        if "prompt" not in getattr(model_input, "columns", []):
            raise RequestRefused("the input needs a column 'prompt' (one English definition per row)")
        try:
            # every field is checked before the request is admitted or any prompt encoded: a 400 at once
            n, seed, steps, guidance, scheduler = (int(p["num_images"]), int(p["seed"]), int(p["steps"]),
                                                   float(p["guidance"]), str(p["scheduler"]))
            check_request(len(model_input), n, seed, steps)
            check_sampling(steps, guidance, self.pipe.scheduler_config, scheduler)
            prompts = [clean_prompt(q) for q in model_input["prompt"]]
            with _admitted(len(prompts) * n * steps):
                images = self.pipe(prompts, num_images=n, steps=steps, guidance=guidance, scheduler=scheduler,
                                   seed=seed, stop=_stop_check(_deadline()))
        except GlyffuserError as err:
            raise RequestRefused(str(err)) from None
        except ValueError as err:  # a number that is not one
            raise RequestRefused(str(err).splitlines()[0]) from None
        return pd.DataFrame({"prompt": [q for q in prompts for _ in range(n)],
                             "seed": [seed + j for _ in prompts for j in range(n)],
                             "png": [png_base64(im) for im in images]})


mlflow.models.set_model(GlyffuserModel())
