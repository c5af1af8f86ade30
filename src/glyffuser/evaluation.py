"""The draw and evaluate stages in one call, for tests and benchmarks that judge a model (or a pipeline variant) end to
end. The pipeline runs them as two DVC stages, so a changed metric re-scores without re-drawing; neither stage imports
this module."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from glyffuser.params import Params
from glyffuser.stages.draw import DrawPaths, run_draw
from glyffuser.stages.evaluate import ScorePaths, run_score


@dataclass(frozen=True)
class EvaluatePaths:
    """Both stages at once (tests, benchmarks): draw from `model` into `draws`, then score into `out`."""

    model: Path
    classifier: Path
    definitions: Path
    glyphs: Path
    embeddings: Path
    out: Path  # folder: the evaluate stage's outputs
    upsampler: Path | None = None  # the cascade's upsampler folder; None: judge the model's own drafts
    draws: Path | None = None  # the draw stage's table; None: out/draws.parquet
    second_judge: Path | None = None  # the second_judge stage's folder; None: held-out adherence by the judge alone

    @property
    def metrics(self) -> Path:
        return self.out / "metrics.json"

    @property
    def drawn(self) -> Path:
        return self.draws or self.out / "draws.parquet"


def run_evaluate(params: Params, paths: EvaluatePaths, track: bool = True, pipe=None) -> dict:
    """The draw stage, then the evaluate stage. `pipe`: draw from this pipeline instead of the model in paths.model."""
    run_draw(params, DrawPaths(paths.model, paths.definitions, paths.glyphs, paths.embeddings, paths.drawn,
                               paths.upsampler), pipe=pipe)
    return run_score(params, ScorePaths(paths.drawn, paths.classifier, paths.definitions, paths.glyphs,
                                        paths.embeddings, paths.out, paths.second_judge), track=track)
