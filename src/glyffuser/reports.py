"""The stage reports that other code reads, one typed model per file (as params.py is for params.yaml).

    data/train/metrics.json      TrainMetrics      written by the train stage
    data/evaluate/metrics.json   EvaluateMetrics   written by the evaluate stage
    data/render/report.json      RenderReport      written by the render stage
    data/classifier/report.json  ClassifierReport  written by the classifier stage
    data/upsampler/report.json   UpsamplerReport   written by the upsampler stage
    data/umap/report.json        UmapReport        written by the umap stage
    data/figures/report.json     FiguresReport     written by the figures stage
    data/align/report.json       AlignReport       written by the align stage (its curve.csv: read_align_curve)

The stage that writes a report builds its model (`extra="forbid"`: a key the model does not name is an error,
so a renamed key fails in that stage's unit test, not an hour into `dvc repro` in the guide), and every reader
(the guide, docs/results.py, `glyffuser compare`, the playground) reads it back through `read_report`, by
attribute. Each file is written as `json.dumps(model, indent=2)`: the same bytes as before the models existed.
What each number means: docs/evaluation.md.
"""

from __future__ import annotations

import csv
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
    # embed.radical_prior: how often the radical guessed from the text (and written before it) is right
    prior_heldout: MaybeFraction = None
    prior_heldout_commonest: MaybeFraction = None
    prior_heldout_middle: MaybeFraction = None
    prior_heldout_rarest: MaybeFraction = None
    classifier_test_accuracy: Fraction
    # the judge's ceiling: its accuracy on the real glyphs of the held-out characters, overall and per third
    judge_real_accuracy: Fraction | None = None
    judge_real_commonest: MaybeFraction = None
    judge_real_middle: MaybeFraction = None
    judge_real_rarest: MaybeFraction = None
    # the second judge (second_judge stage: another architecture and seed): held-out adherence as it reads the same
    # glyphs, and its own ceiling on the real glyphs of those characters
    second_judge_heldout: MaybeFraction = None
    second_judge_heldout_se: float | None = None
    second_judge_heldout_commonest: MaybeFraction = None
    second_judge_heldout_commonest_se: float | None = None
    second_judge_heldout_middle: MaybeFraction = None
    second_judge_heldout_middle_se: float | None = None
    second_judge_heldout_rarest: MaybeFraction = None
    second_judge_heldout_rarest_se: float | None = None
    second_judge_test_accuracy: MaybeFraction = None
    second_judge_real_accuracy: MaybeFraction = None
    second_judge_real_commonest: MaybeFraction = None
    second_judge_real_middle: MaybeFraction = None
    second_judge_real_rarest: MaybeFraction = None
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


class RenderReport(_Report):
    in_range: int  # codepoints in render.ranges
    without_definition: int  # of them without an English definition in Unihan
    cleaned: int  # definitions changed by cleaning (cross-references, pronunciations removed)
    empty_after_cleaning: int  # definitions cleaning left empty: dropped
    undrawable: int  # characters the font does not draw: dropped
    glyphs: int  # rendered: the dataset
    splits: dict[str, int]  # train, validation, test
    unicode_version: str
    font: str
    font_sha256: str


class ClassifierReport(_Report):
    test_accuracy: Fraction  # the judge on real test glyphs: the ceiling of every adherence number
    validation_accuracy: Fraction
    train_accuracy: Fraction  # on the first 4,096 training glyphs
    chance: Fraction  # always answering the commonest training radical
    resolution: int  # the side it reads (a larger glyph is area-downsampled)
    train_images: int
    train_minutes: float


class UpsamplerScores(_Report):
    stroke_fidelity: float  # bits against the real glyphs at the output side; 0 = real
    paper_darkness: float  # of 255, far from every stroke
    sharpness_ratio: float  # two-tone pixel share against the real glyphs'
    l1: float  # mean absolute error against the real renders, 0..1


class UpsamplerChecks(_Report):
    upsampler: UpsamplerScores  # the network on real test drafts
    bilinear: UpsamplerScores  # plain bilinear upsampling of the same drafts
    real_with_half_blur: UpsamplerScores  # real glyphs with half a 3×3 blur: the stroke-fidelity bar


class UpsamplerReport(_Report):
    input_resolution: int
    output_resolution: int
    parameters: int
    train_minutes: float
    images_per_s: float
    final_loss: float  # mean of the last 50 steps
    test_glyphs: int
    test: UpsamplerChecks


class AlignReport(_Report):
    enabled: bool  # false: data/align/model is the trained model unchanged, and no other key is written
    pairs_judge: int | None = None  # winner/loser pairs the reward judge ranked
    prompts_paired: int | None = None  # training definitions that gave at least one pair
    pairs_human: int | None = None  # pairs from people's answers (glyffuser label), skips dropped
    definitions: int | None = None  # training definitions drafted for judge pairs
    samples_per_prompt: int | None = None
    dev_definitions: int | None = None  # other training definitions of the curve, one draft each
    reward_mean_drafts: float | None = None  # the reward judge's mean p(target radical) over the drafts
    # the dev curve's first (before any DPO step) and last points: p(target) by the reward judge, then the share of
    # dev drafts drawn with their radical by the reward judge, the evaluate judge and the second judge, and ink share
    dev_reward_before: float | None = None
    dev_reward_judge_before: float | None = None
    dev_judge_before: float | None = None
    dev_second_judge_before: float | None = None
    dev_ink_share_before: float | None = None
    dev_reward_after: float | None = None
    dev_reward_judge_after: float | None = None
    dev_judge_after: float | None = None
    dev_second_judge_after: float | None = None
    dev_ink_share_after: float | None = None
    draft_minutes: float | None = None
    dpo_minutes: float | None = None
    dev_curve_minutes: float | None = None
    minutes: float | None = None


def read_align_curve(path: Path) -> list[dict[str, float]]:
    """data/align/curve.csv (the align stage's dev curve, one row per evaluated epoch) as numbers; a cell left empty
    (epoch 0 has no DPO loss yet) is absent from its row."""
    try:
        with path.open(newline="") as f:
            return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
    except FileNotFoundError:
        raise GlyffuserError(f"{path} is missing: re-run the align stage (dvc repro)") from None


class UmapReport(_Report):
    glyphs: int
    samples_projected: int  # evaluate samples placed on the map (held-out, grid, empty prompt)
    layout_counts: dict[str, int]  # glyphs per layout (left-right, top-bottom, enclosure, overlaid, single)
    pca_explained_variance: Fraction  # of the pixels, by the PCA components UMAP starts from
    kmeans2_clusters: list[dict[str, int | float]]  # two k-means clusters: glyphs and share_<layout> each
    minutes: float


class DataPair(_Report):
    codepoint: int
    definition: str


class Pixel(_Report):
    row: int
    col: int
    ink_share: Fraction  # glyphs in which this pixel is ink


class GaussianFit(_Report):
    t: int
    alpha_bar: float
    mean: float
    std: float


class DensityMap(_Report):
    timesteps: list[int]  # one panel per signal level
    alpha_bars: list[float]
    arrow_scale: float  # the score arrows' common scale
    mean_step_length: list[float]  # mean arrow length per panel, map units


class PredictionError(_Report):
    t: int
    mse: float
    target_variance: float


class Neighbour(_Report):
    codepoint: int
    character: str
    definition: str
    cosine: float
    png: str  # a 48 px thumbnail, base64 PNG


class PromptNeighbours(_Report):
    prompt: str
    tokens: list[str]
    neighbours: list[Neighbour]


class Trajectory(_Report):
    prompt: str
    radical: int
    seeds: int
    steps: int
    timesteps: list[int]
    read_guess: list[Fraction]  # seeds whose x̂₀ the judge reads as the radical, before each step and at the end
    read_noisy: list[Fraction]  # the same for x_t


class GuidancePoint(_Report):
    guidance: float
    adherence: Fraction
    adherence_se: float
    sharpness: Fraction
    diversity: float  # mean distance between seeds of one prompt


class FiguresReport(_Report):
    resolution: int
    pixel_glyph: str
    prediction: str  # the model's prediction type: epsilon or v_prediction
    sampler: str
    steps: int
    guidance: float
    data_pairs: list[DataPair] | None = None  # None: no evaluate samples given
    pixel: Pixel
    gaussian_1d: list[GaussianFit]
    map: DensityMap
    prediction_errors: list[PredictionError]
    gif_frames: int
    neighbours: list[PromptNeighbours] | None = None  # None: no embeddings given
    trajectory: Trajectory | None = None  # None: no classifier given
    guidance_curve: list[GuidancePoint] | None = None  # None: no classifier given
    figures: list[str]
    minutes: float


R = TypeVar("R", bound=_Report)


def report_json(report: _Report, indent: int = 2, ensure_ascii: bool = True) -> str:
    """The file's text: the fields that were set, in the model's order, indented as the stages always wrote them."""
    return json.dumps(report.model_dump(mode="json", exclude_unset=True), indent=indent, ensure_ascii=ensure_ascii) + "\n"


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
