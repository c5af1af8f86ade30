"""The stage reports that other code reads, one typed model per file (as params.py is for params.yaml).

    data/train/metrics.json      TrainMetrics      written by the train stage
    data/evaluate/metrics.json   EvaluateMetrics   written by the evaluate stage

The stage that writes a report builds its model (`extra="forbid"`: a key the model does not name is an error,
so a renamed key fails in that stage's unit test, not an hour into `dvc repro` in the guide), and every reader
(the guide, docs/results.py, `glyffuser compare`, the playground) reads it back through `read_report`, by
attribute. Each file is written as `json.dumps(model, indent=2)`: the same bytes as before the models existed.
What each number means: docs/evaluation.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from glyffuser.errors import GlyffuserError


class _Report(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainMetrics(_Report):
    train_loss: float  # mean loss of the last logged steps
    val_loss: float | None  # loss on the first train.val_images validation glyphs, fixed noise (None: no validation)
    img_per_s: float  # training images per second over the run
    epochs: float
    steps: int
    wall_time_min: float
    parameters: int  # UNet parameters
    world_size: int  # processes (GPUs) that trained
    ranks_in_sync: bool  # every process ended with the same weights
    resumed_from_step: int  # 0: trained from scratch


class ThirdSummary(_Report):
    definitions: int
    radicals: int
    train_glyphs_min: int
    train_glyphs_max: int


class RadicalAdherence(_Report):
    radical: int  # Kangxi radical number, 1..214
    glyph: str
    train_glyphs: int
    samples: int
    hits: int
    adherence: float


Fraction = float  # 0..1
MaybeFraction = float | None  # null where too few samples give no mean or standard error


class EvaluateMetrics(_Report):
    # prompt adherence: the radical classifier (the judge) reads each sample's radical
    adherence_grid: Fraction
    adherence_grid_se: float
    adherence_heldout: Fraction
    adherence_heldout_se: float
    chance: Fraction  # the most common held-out radical's share
    grid_chance: Fraction
    control_empty_prompt: Fraction
    control_empty_prompt_se: float
    control_shuffled: Fraction
    control_shuffled_se: float
    adherence_heldout_base: Fraction | None = None  # the cascade's drafts, before the upsampler
    adherence_heldout_base_se: float | None = None
    adherence_upsampler_difference: float | None = None
    adherence_upsampler_difference_se: float | None = None
    # the long tail: held-out definitions in thirds by their radical's training glyphs, commonest first
    adherence_heldout_commonest: MaybeFraction = None
    adherence_heldout_commonest_se: float | None = None
    adherence_heldout_middle: MaybeFraction = None
    adherence_heldout_middle_se: float | None = None
    adherence_heldout_rarest: MaybeFraction = None
    adherence_heldout_rarest_se: float | None = None
    heldout_thirds: dict[str, ThirdSummary] | None = None
    adherence_per_radical: list[RadicalAdherence] | None = None
    adherence_train: MaybeFraction = None  # on training definitions: the execution gap without generalisation
    adherence_train_se: float | None = None
    adherence_train_commonest: MaybeFraction = None
    adherence_train_commonest_se: float | None = None
    adherence_train_middle: MaybeFraction = None
    adherence_train_middle_se: float | None = None
    adherence_train_rarest: MaybeFraction = None
    adherence_train_rarest_se: float | None = None
    # the text-only ceiling: a linear probe from the pooled text embedding to the radical
    text_probe_accuracy: Fraction
    text_probe_commonest: MaybeFraction = None
    text_probe_middle: MaybeFraction = None
    text_probe_rarest: MaybeFraction = None
    classifier_test_accuracy: Fraction
    # image quality against the real test glyphs (floors: real train glyphs)
    paper_darkness: float
    paper_darkness_se: float
    paper_darkness_real: float
    paper_pixel_darkness: float
    paper_pixel_darkness_real: float
    kid: float
    kid_std: float
    kid_real_floor: float | None
    kid_real_floor_std: float | None
    stroke_fidelity: float
    stroke_fidelity_se: float
    stroke_fidelity_real_floor: float
    fid: float | None
    fid_real_floor: float | None
    realism_c2st: MaybeFraction = None  # a texture CNN's accuracy telling samples from real glyphs; 0.5: it cannot
    realism_c2st_se: float | None = None
    # the cascade's drafts at their own side, and the final glyphs downsampled to it
    paper_darkness_base: float | None = None
    paper_pixel_darkness_base: float | None = None
    paper_pixel_darkness_real_base: float | None = None
    stroke_fidelity_base: float | None = None
    sharpness_ratio_base: float | None = None
    paper_darkness_final_at_base: float | None = None
    stroke_fidelity_final_at_base: float | None = None
    sharpness_ratio_final_at_base: float | None = None
    # copies of training glyphs
    novelty: Fraction
    copy_threshold: float
    copy_calibration_recall: Fraction
    real_test_below_threshold: Fraction
    # what was drawn
    heldout_characters: int
    samples_per_character: int
    kid_subset_size: int
    seed_sweep_prompt: str
    seed_sweep_hits: int
    seed_sweep_seeds: int
    sharpness: Fraction
    sharpness_real: Fraction
    resolution: int  # side of the judged glyphs (the cascade's output)
    base_resolution: int  # side of the diffusion model's drafts
    sampling_minutes: float
    minutes: float
    sharpness_ratio: float
    adherence_grid_per_prompt: dict[str, Fraction]


R = TypeVar("R", bound=_Report)


def report_json(report: _Report) -> str:
    """The file's text: the fields that were set, in the model's order, indented as the stages always wrote them."""
    return json.dumps(report.model_dump(mode="json", exclude_unset=True), indent=2) + "\n"


def make_report(model: type[R], values: dict, what: str) -> R:
    """`values` as the typed report; a missing, unknown or mistyped key is a GlyffuserError naming it."""
    try:
        return model.model_validate(values)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise GlyffuserError(f"{what}: {where}: {first['msg']}") from None


def read_report(model: type[R], path: Path) -> R:
    """A stage's report as its typed model; a missing or stale file is one line naming the stage to re-run."""
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GlyffuserError(f"{path} is missing: run the stage that writes it first (dvc repro)") from None
    except ValueError as err:
        raise GlyffuserError(f"{path} is not JSON ({err}): re-run the stage that writes it") from None
    if not isinstance(values, dict):
        raise GlyffuserError(f"{path} is not a report (a JSON object): re-run the stage that writes it")
    return make_report(model, values, f"{path} (re-run the stage that writes it)")
