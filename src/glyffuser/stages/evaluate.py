"""Stage `evaluate`: how good and how prompt-faithful a trained model's glyphs are, scored from the draw stage's samples.

The draw stage (glyffuser/stages/draw.py) saved every sample as the 8-bit glyph a user sees, with its draft; this stage
only reads and scores them, so a changed metric never re-draws. The radical classifier (the judge) reads each glyph at
the training side (a final glyph area-downsampled):
- heldout: adherence on test-split definitions (never trained on), against the radical of the character the definition
  belongs to; also per third of them by how common that radical is in training (commonest, middle, rarest) and per
  radical; the drafts are judged too (does the upsampler keep the radical?);
- train: the same on training definitions: the gap to held-out adherence is the generalisation gap, what training
  definitions miss is the execution gap;
- grid and sweep: the sample stage's prompt grid and one prompt over many seeds, against `evaluate.prompt_radicals`;
- controls: the empty prompt, and the held-out definitions shuffled across characters, both scored against the same
  targets. If either sits far above chance the metric measures something else.
Plus KID/FID on classifier features (with the real-vs-real floor at the same sizes), realism (a classifier two-sample
test: how often a small texture CNN tells held-out samples from real test glyphs; 0.5 = indistinguishable), stroke fidelity
(glyffuser.analysis.fidelity: local stroke texture against the real test glyphs, which KID does not see), paper
darkness (glyffuser.analysis.paper: grey haze and specks far from the strokes; real glyphs 0), novelty
(nearest training glyph against a copy threshold calibrated on real near-copies, on the drafts) and a text-only
ceiling (linear probe from the pooled text embedding to the radical). Paper, stroke fidelity and sharpness are
measured at the output side against the real glyphs rendered at that side, and on the drafts at theirs (`_base`).
What each number means: docs/evaluation.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from glyffuser.analysis.fidelity import fidelity, stroke_codes
from glyffuser.analysis.judge import load_classifier, majority_share, predict
from glyffuser.analysis.metrics import (
    THIRDS,
    adherence,
    by_third,
    clustered_mean,
    copy_threshold,
    fid,
    frequency_thirds,
    kid,
    near_copies,
    nearest,
    paired_difference,
    per_radical,
    probe_predictions,
    thirds_summary,
    two_tone_share,
)
from glyffuser.analysis.paper import paper_darkness, paper_pixel_darkness
from glyffuser.analysis.realism import two_sample_accuracy
from glyffuser.artifacts.atomic import atomic_outputs, check_outputs
from glyffuser.artifacts.embeddings import load_embeddings
from glyffuser.artifacts.glyph_tables import load_glyph_splits
from glyffuser.artifacts.images import from_png, labelled_grid, pngs_to_tensor
from glyffuser.artifacts.tables import read_table, write_table
from glyffuser.command import inputs, no_mlflow, run_command
from glyffuser.diffusion.unet import pool_text
from glyffuser.errors import GlyffuserError
from glyffuser.params import Params
from glyffuser.reports import EvaluateMetrics, make_report, report_json
from glyffuser.tracking import log_to_model_run, require_store

OUTPUTS = ("samples.parquet", "novelty.png", "grid.png", "cascade.png", "metrics.json")
DRAW_COLUMNS = ("kind", "prompt", "target_codepoint", "prompt_codepoint", "seed", "target_radical", "png", "base_png")


@dataclass(frozen=True)
class ScorePaths:
    draws: Path  # the draw stage's samples table
    classifier: Path
    definitions: Path
    glyphs: Path
    embeddings: Path  # for the text-only ceiling
    out: Path  # folder: metrics.json, samples.parquet (the draws with their verdicts), novelty.png, grid.png, cascade.png
    second_judge: Path | None = None  # the second_judge stage's folder: held-out adherence read by it too

    @property
    def metrics(self) -> Path:
        return self.out / "metrics.json"


@dataclass
class Draws:
    """The draw stage's table, its images decoded: row i of every array is sample i."""

    kind: np.ndarray  # (N,) str
    prompt: list[str]
    target_codepoint: np.ndarray  # (N,) -1: none (grid, sweep)
    target_radical: np.ndarray  # (N,)
    final: torch.Tensor  # (N,1,S,S) in [-1,1]: the glyphs at the output side, as saved (8-bit)
    base: torch.Tensor  # (N,1,R,R): their drafts
    table: pa.Table  # the table as read (the samples table adds the verdicts to it)
    meta: dict  # model, upsampler, model_info, resolution, base_resolution, sampler, minutes

    def rows(self, kind: str) -> np.ndarray:
        return np.flatnonzero(self.kind == kind)


def read_draws(path: Path) -> Draws:
    table, meta = read_table(path, required=DRAW_COLUMNS)
    if missing := [k for k in ("resolution", "base_resolution", "model_info", "minutes") if k not in meta]:
        raise GlyffuserError(f"{path} lacks {missing[0]!r} in its metadata: re-run the draw stage (dvc repro draw)")
    col = {name: table.column(name).to_numpy(zero_copy_only=False) for name in ("target_codepoint", "target_radical")}
    return Draws(np.array(table.column("kind").to_pylist()), table.column("prompt").to_pylist(),
                 col["target_codepoint"].astype(np.int64), col["target_radical"].astype(np.int64),
                 pngs_to_tensor(table.column("png").to_pylist(), meta["resolution"], path),
                 pngs_to_tensor(table.column("base_png").to_pylist(), meta["base_resolution"], path), table, meta)


def check_draws(d: Draws, path: Path, train, test) -> None:
    """Held-out samples target test-split characters, training samples training ones, and there are some of each."""
    for kind, split, name in (("heldout", test, "test"), ("train", train, "train")):
        cps = d.target_codepoint[d.rows(kind)]
        if kind == "heldout" and len(np.unique(cps)) < 2:
            raise GlyffuserError(f"{path} holds fewer than 2 held-out characters: re-run the draw stage (dvc repro draw)")
        if stray := sorted(set(cps.tolist()) - set(split.codepoints.tolist())):
            raise GlyffuserError(f"{path}: its {kind} samples target U+{stray[0]:04X}, not in the {name} split of the "
                                 "definitions: it was drawn from other tables; re-run the draw stage (dvc repro draw)")


def framed_grid(images: list[Image.Image], columns: int, labels: list[str], hits: list[bool]) -> Image.Image:
    """The prompt grid with a green frame where the classifier found the intended radical, red where not."""
    cell, pad, lw = max(64, images[0].width), 2, 150
    grid = labelled_grid(images, columns, labels, cell=cell, label_width=lw).convert("RGB")
    draw = ImageDraw.Draw(grid)
    for i, hit in enumerate(hits):
        r, c = divmod(i, columns)
        x, y = lw + pad + c * (cell + pad), pad + r * (cell + pad)
        draw.rectangle([x, y, x + cell - 1, y + cell - 1], outline=(0, 160, 0) if hit else (210, 0, 0), width=2)
    return grid


def novelty_plot(copies: np.ndarray, real: np.ndarray, generated: np.ndarray, threshold: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=120)
    bins = np.linspace(0, max(copies.max(), real.max(), generated.max()) * 1.05, 60)
    ax.hist(copies, bins, alpha=0.55, density=True, label="near-copies of training glyphs (shift, blur, tone)")
    ax.hist(real, bins, alpha=0.55, density=True, label="real test glyphs (distinct characters)")
    ax.hist(generated, bins, alpha=0.55, density=True, label="generated samples")
    ax.axvline(threshold, color="k", ls="--", lw=1, label=f"copy threshold {threshold:.3f}")
    ax.set_xlabel("distance to the nearest training glyph (RMS, 0..1 ink scale, ±1 px shift allowed)")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)



def judge(d: Draws, pred: np.ndarray, pred_base: np.ndarray, train) -> dict:
    """Adherence of every kind of sample, from the judge's readings `pred` (final glyphs) and `pred_base` (drafts)."""
    hits = pred == d.target_radical
    held, grid, sweep = d.rows("heldout"), d.rows("grid"), d.rows("sweep")
    empty, shuffled, trained = d.rows("empty"), d.rows("shuffled"), d.rows("train")
    char = d.target_codepoint[held]  # held-out samples of one character are one cluster
    grid_prompts = list(dict.fromkeys(d.prompt[i] for i in grid))
    grid_prompt = np.array([grid_prompts.index(d.prompt[i]) for i in grid])
    train_share = np.bincount(train.radicals, minlength=215) / len(train.radicals)
    chars, first = np.unique(char, return_index=True)
    out = {}
    out["adherence_grid"], out["adherence_grid_se"] = adherence(pred[grid], d.target_radical[grid], cluster=grid_prompt)
    out["adherence_heldout"], out["adherence_heldout_se"] = adherence(pred[held], d.target_radical[held], cluster=char)
    out["chance"] = majority_share(train.radicals, d.target_radical[held][first])
    out["grid_chance"] = float(train_share[d.target_radical[grid]].mean())
    out["control_empty_prompt"], out["control_empty_prompt_se"] = adherence(pred[empty], d.target_radical[empty])
    out["control_shuffled"], out["control_shuffled_se"] = adherence(pred[shuffled], d.target_radical[shuffled])
    # The cascade's drafts, judged too: does the upsampler keep the radical? (paired: the same samples)
    base_hits = pred_base == d.target_radical
    out["adherence_heldout_base"], out["adherence_heldout_base_se"] = adherence(pred_base[held], d.target_radical[held],
                                                                                cluster=char)
    out["adherence_upsampler_difference"], out["adherence_upsampler_difference_se"] = paired_difference(
        hits[held], base_hits[held], cluster=char)
    out.update(long_tail(hits[held], char, d.target_radical[held], pred[held], hits[trained],
                         d.target_radical[trained], train))
    out["seed_sweep_hits"] = int(hits[sweep].sum())
    out["per_prompt"] = {p: float(hits[grid][grid_prompt == i].mean()) for i, p in enumerate(grid_prompts)}
    return out


def long_tail(hits: np.ndarray, char: np.ndarray, targets: np.ndarray, predicted: np.ndarray, train_hits: np.ndarray,
              train_targets: np.ndarray, train) -> dict:
    """Held-out adherence per third of the definitions by how common their radical is in training and per radical;
    the same thirds on training definitions (the execution gap without the generalisation gap). `hits`, `char`,
    `targets`, `predicted`: (n·k,) per held-out sample; `train_*`: (m,) per training-definition sample."""
    chars, first, rep = np.unique(char, return_index=True, return_inverse=True)  # characters in codepoint order
    char_targets = targets[first]
    third = frequency_thirds(char_targets, train.radicals)  # (n,) per held-out character
    out = {f"adherence_heldout_{k}": v for k, v in by_third(hits, third[rep], rep).items()}
    out["heldout_thirds"] = thirds_summary(char_targets, third, train.radicals)
    out["adherence_per_radical"] = per_radical(targets, predicted, train.radicals)
    if len(train_hits):
        out["adherence_train"], out["adherence_train_se"] = clustered_mean(train_hits)
        # the held-out thirds' boundaries (the fewest training glyphs of a radical in the commonest and in the middle
        # third; the first two thirds are never empty) sort the training definitions; a boundary radical goes up
        count = np.bincount(train.radicals, minlength=215)
        edges = [count[char_targets[third == i]].min() for i in range(2)]
        train_third = np.where(count[train_targets] >= edges[0], 0, np.where(count[train_targets] >= edges[1], 1, 2))
        out.update({f"adherence_train_{k}": v for k, v in by_third(train_hits, train_third).items()})
    # a third with no sample or a single one has no mean or standard error: null, so metrics.json stays valid JSON
    return {k: None if isinstance(v, float) and np.isnan(v) else v for k, v in out.items()}


def judge_ceiling(net, heldout_codepoints: np.ndarray, train, test) -> dict:
    """The judge's own ceiling: how often it reads the radical of the real glyphs of the held-out characters, overall
    and per third (the same thirds as the samples'). A third the judge misreads on real glyphs caps what any model
    can score there."""
    index = {int(cp): i for i, cp in enumerate(test.codepoints)}
    rows = np.array([index[int(cp)] for cp in np.unique(heldout_codepoints)])
    hits = predict(net, test.images[rows])[0] == test.radicals[rows]
    thirds = by_third(hits, frequency_thirds(test.radicals[rows], train.radicals))
    out = {"judge_real_accuracy": float(hits.mean()), **{f"judge_real_{k}": v for k, v in thirds.items() if k in THIRDS}}
    return {k: None if np.isnan(v) else v for k, v in out.items()}  # an empty third (2 characters): null, valid JSON


def second_reading(folder: Path | None, d: Draws, held: np.ndarray, train, test) -> tuple[np.ndarray | None, dict]:
    """The second judge's reading of every final glyph, and held-out adherence by it (overall, per third) beside its
    own ceiling on the real glyphs of the same characters; nothing without a second judge."""
    if folder is None:
        return None, {}
    net, report = load_classifier(folder)
    pred = predict(net, d.final)[0]  # (N,)
    char, targets = d.target_codepoint[held], d.target_radical[held]
    hits = pred[held] == targets
    _, first, rep = np.unique(char, return_index=True, return_inverse=True)  # the thirds as long_tail cuts them
    third = frequency_thirds(targets[first], train.radicals)
    out = {}
    out["second_judge_heldout"], out["second_judge_heldout_se"] = adherence(pred[held], targets, cluster=char)
    out.update({f"second_judge_heldout_{k}": v for k, v in by_third(hits, third[rep], rep).items()})
    out["second_judge_test_accuracy"] = report["test_accuracy"]
    out.update({k.replace("judge_real", "second_judge_real"): v
                for k, v in judge_ceiling(net, char, train, test).items()})
    return pred, {k: None if isinstance(v, float) and np.isnan(v) else v for k, v in out.items()}


def prior_reading(embeddings: Path, d: Draws, held: np.ndarray, train) -> dict:
    """embed.radical_prior: how often the guess the held-out definitions were encoded after is their radical, overall
    and per third (the part of the tail the UNet is told); nothing for embeddings made without the prior."""
    import pyarrow.parquet as pq

    if "guessed_radical" not in pq.read_schema(embeddings).names:
        return {}
    table, _ = read_table(embeddings, columns=["codepoint", "guessed_radical"])
    guessed = dict(zip(table.column("codepoint").to_pylist(), table.column("guessed_radical").to_pylist()))
    char, first = np.unique(d.target_codepoint[held], return_index=True)  # one verdict per held-out character
    targets = d.target_radical[held][first]
    hits = np.array([guessed[int(c)] for c in char]) == targets
    thirds = by_third(hits, frequency_thirds(targets, train.radicals))
    return {"prior_heldout": float(hits.mean()), **{f"prior_heldout_{k}": thirds[k] for k in THIRDS}}


def text_ceiling(emb, row_of: dict[int, int], train, test, seed: int) -> dict:
    """Text-only ceiling: a linear probe from the pooled text embedding to the radical, on every test definition and
    per third of them (the held-out thirds: is the tail's radical in the text at all?)."""
    train_rows = np.array([row_of[int(cp)] for cp in train.codepoints])
    test_rows = np.array([row_of[int(cp)] for cp in test.codepoints])
    pooled = pool_text(emb.hidden.float(), emb.mask)
    guess = probe_predictions(pooled[train_rows], train.radicals, pooled[test_rows], classes=215, seed=seed)
    hits = guess == test.radicals
    thirds = by_third(hits, frequency_thirds(test.radicals, train.radicals))
    return {"text_probe_accuracy": float(hits.mean()),
            **{f"text_probe_{k}": v for k, v in thirds.items() if k in THIRDS}}


def quality(net, heldout: torch.Tensor, feat_heldout: torch.Tensor, train, test, seed: int,
            rng: np.random.Generator) -> dict:
    """Sample quality on classifier features (KID, FID) and stroke texture; the floors compare real train glyphs
    with the same real test glyphs. `train`, `test`: the real glyphs at the side of `heldout`."""
    _, feat_test = predict(net, test.images)
    real_pick = rng.choice(len(train.radicals), min(len(heldout), len(train.radicals)), replace=False)
    _, feat_real = predict(net, train.images[real_pick])
    subset = max(2, min(len(heldout), len(test.radicals)) // 2)
    kid_gen, kid_gen_std = kid(feat_heldout, feat_test, subset, seed=seed)
    kid_real, kid_real_std = kid(feat_real, feat_test, subset, seed=seed)
    # Stroke texture (wobble, specks, soft edges) against the real test glyphs; floor: real train glyphs.
    test_codes = stroke_codes(test.images)
    fid_stroke, fid_stroke_se = fidelity(test_codes, stroke_codes(heldout), seed=seed)
    fid_stroke_real, _ = fidelity(test_codes, stroke_codes(train.images[real_pick]), boot=2, seed=seed)
    # The paper far from the strokes (glyffuser.analysis.paper): 0 on real glyphs, grey haze and specks above it.
    paper, paper_se = paper_darkness(heldout)
    # Can a small texture CNN tell the samples from the real test glyphs? (glyffuser.analysis.realism; 0.5: no)
    # Two folds need 4 glyphs a side: an evaluation of 2 or 3 held-out samples reports null.
    enough = min(len(heldout), len(test.images)) >= 4
    realism, realism_se = two_sample_accuracy(test.images, heldout, seed=seed) if enough else (None, None)
    return {"paper_darkness": paper, "paper_darkness_se": paper_se,
            "paper_darkness_real": paper_darkness(test.images)[0],
            # issue 32's plainer measure: every pixel lighter than mid-grey, stroke rims included (real > 0)
            "paper_pixel_darkness": paper_pixel_darkness(heldout),
            "paper_pixel_darkness_real": paper_pixel_darkness(test.images),
            "kid": kid_gen, "kid_std": kid_gen_std, "kid_real_floor": kid_real, "kid_real_floor_std": kid_real_std,
            "stroke_fidelity": fid_stroke, "stroke_fidelity_se": fid_stroke_se,
            "stroke_fidelity_real_floor": fid_stroke_real,
            "fid": fid(feat_heldout, feat_test), "fid_real_floor": fid(feat_real, feat_test), "kid_subset_size": subset,
            "realism_c2st": realism, "realism_c2st_se": realism_se}


def draft_quality(base: torch.Tensor, final: torch.Tensor, test) -> dict:
    """The cascade's drafts at their own side against the real test glyphs at that side (`_base`: what the upsampler
    fixed), and the final glyphs area-downsampled to that side (`_final_at_base`: comparable with a model without one)."""
    codes, sharp = stroke_codes(test.images), two_tone_share(test.images)
    small = F.interpolate(final.float(), size=base.shape[-1], mode="area")
    return {"paper_darkness_base": paper_darkness(base)[0], "paper_pixel_darkness_base": paper_pixel_darkness(base),
            "paper_pixel_darkness_real_base": paper_pixel_darkness(test.images),
            "stroke_fidelity_base": fidelity(codes, stroke_codes(base), boot=2)[0],
            "sharpness_ratio_base": two_tone_share(base) / sharp,
            "paper_darkness_final_at_base": paper_darkness(small)[0],
            "stroke_fidelity_final_at_base": fidelity(codes, stroke_codes(small), boot=2)[0],
            "sharpness_ratio_final_at_base": two_tone_share(small) / sharp}


def cascade_sheet(base: list[Image.Image], final: list[Image.Image], columns: int, labels: list[str]) -> Image.Image:
    """One row per prompt: its first `columns` drafts (the base's side, enlarged without smoothing), then the final
    glyphs the upsampler drew from them."""
    side = final[0].width
    images, names = [], []
    for r, label in enumerate(labels):
        images += [im.resize((side, side), Image.NEAREST) for im in base[r * columns:(r + 1) * columns]]
        images += final[r * columns:(r + 1) * columns]
        names.append(f"{label} ({base[0].width} px drafts, then {side} px)")
    return labelled_grid(images, 2 * columns, names, cell=side)


def novelty(e, conditional: torch.Tensor, train, test, seed: int, rng: np.random.Generator) -> tuple[dict, dict]:
    """Distance of each conditional sample to its nearest training glyph, against a copy threshold set by
    near-copies of real training glyphs: (metrics, the distances for the plot and the table)."""
    gen = torch.Generator().manual_seed(seed)
    probe_idx = torch.from_numpy(rng.choice(len(train.radicals), min(e.copy_calibration, len(train.radicals)),
                                            replace=False))
    copy_d, copy_i = nearest(near_copies(train.images[probe_idx], gen), train.images)
    real_d, _ = nearest(test.images, train.images)
    gen_d, gen_i = nearest(conditional, train.images)
    threshold = copy_threshold(copy_d, e.copy_quantile)
    metrics = {"novelty": float((gen_d > threshold).mean()), "copy_threshold": threshold,
               "copy_calibration_recall": float((copy_i == probe_idx.numpy()).mean()),
               "real_test_below_threshold": float((real_d <= threshold).mean())}
    return metrics, {"copy": copy_d, "real": real_d, "generated": gen_d, "nearest": gen_i, "threshold": threshold}



def samples_table(d: Draws, pred: np.ndarray, pred_base: np.ndarray, cond: np.ndarray, dist: dict, train,
                  pred_second: np.ndarray | None = None) -> pa.Table:
    """The draws with their verdicts: what the judge read in each glyph and its draft, and for the conditional drafts
    (held-out and grid, rows `cond`) the nearest training glyph (the umap stage projects them; glyffuser compare pairs
    them)."""
    nearest_d, nearest_cp = np.full(len(pred), np.nan), np.full(len(pred), -1)
    nearest_d[cond], nearest_cp[cond] = dist["generated"], train.codepoints[dist["nearest"]]
    at = d.table.column_names.index("target_radical") + 1
    verdicts = {"predicted_radical": pa.array(pred, pa.int16()), "predicted_base_radical": pa.array(pred_base, pa.int16()),
                "nearest_distance": pa.array(nearest_d), "nearest_codepoint": pa.array(nearest_cp, pa.int32())}
    if pred_second is not None:  # the second judge's reading of each final glyph
        verdicts["predicted_radical_second_judge"] = pa.array(pred_second, pa.int16())
    table = d.table
    for i, (name, column) in enumerate(verdicts.items()):
        table = table.add_column(at + i, name, column)
    return table


def run_score(params: Params, paths: ScorePaths, track: bool = True) -> dict:
    e, seed = params.evaluate, params.base.seed
    check_outputs(*(paths.out / n for n in OUTPUTS))
    if track:
        require_store()
    start = time.perf_counter()
    d = read_draws(paths.draws)
    net, classifier_report = load_classifier(paths.classifier)
    splits = load_glyph_splits(paths.definitions, paths.glyphs, d.meta["base_resolution"])
    train, test = splits["train"], splits["test"]
    check_draws(d, paths.draws, train, test)
    # the real glyphs at the output side, for paper, strokes and sharpness of the final glyphs
    final_splits = (splits if d.meta["resolution"] == d.meta["base_resolution"]
                    else load_glyph_splits(paths.definitions, paths.glyphs, d.meta["resolution"]))
    emb = load_embeddings(paths.embeddings)
    row_of = {int(cp): i for i, cp in enumerate(emb.codepoints)}
    if missing := [int(cp) for cp in np.concatenate([train.codepoints, test.codepoints]) if int(cp) not in row_of]:
        raise GlyffuserError(f"{paths.embeddings} has no embedding of U+{missing[0]:04X}: it was made from other "
                             f"definitions than {paths.definitions}; re-run the embed stage (dvc repro embed)")
    rng = np.random.default_rng(seed)

    pred, features = predict(net, d.final)  # (N,), (N,256)
    pred_base = predict(net, d.base)[0]
    adherences = judge(d, pred, pred_base, train)
    per_prompt = adherences.pop("per_prompt")
    held, grid = d.rows("heldout"), d.rows("grid")
    probe = text_ceiling(emb, row_of, train, test, seed)
    ceiling = judge_ceiling(net, d.target_codepoint[held], train, test)
    pred_second, second = second_reading(paths.second_judge, d, held, train, test)
    prior = prior_reading(paths.embeddings, d, held, train)
    scores = quality(net, d.final[held], features[held], final_splits["train"], final_splits["test"], seed, rng)
    drafts = draft_quality(d.base[held], d.final[held], test)
    # copies are a matter of structure: the drafts against the training glyphs at the model's side
    cond = np.concatenate([held, grid])
    copies, dist = novelty(e, d.base[cond], train, test, seed, rng)
    sweep = d.rows("sweep")
    metrics = {
        **{k: v for k, v in adherences.items() if k != "seed_sweep_hits"},
        **probe,
        **prior,
        "classifier_test_accuracy": classifier_report["test_accuracy"],
        **ceiling,
        **second,
        **{k: v for k, v in scores.items() if k != "kid_subset_size"},
        **drafts,
        **copies,
        "heldout_characters": len(np.unique(d.target_codepoint[held])),
        "samples_per_character": len(held) // len(np.unique(d.target_codepoint[held])),
        "kid_subset_size": scores["kid_subset_size"],
        "seed_sweep_prompt": d.prompt[sweep[0]] if len(sweep) else e.seed_sweep_prompt,
        "seed_sweep_hits": adherences["seed_sweep_hits"], "seed_sweep_seeds": len(sweep),
        # two-tone pixel share at the output side: held-out samples vs the real test glyphs
        "sharpness": two_tone_share(d.final[held]), "sharpness_real": two_tone_share(final_splits["test"].images),
        "resolution": d.meta["resolution"], "base_resolution": d.meta["base_resolution"],
        "sampling_minutes": d.meta["minutes"],  # the draw stage's
        "minutes": round(d.meta["minutes"] + (time.perf_counter() - start) / 60, 2),  # drawing and scoring
    }
    metrics["sharpness_ratio"] = metrics["sharpness"] / metrics["sharpness_real"]
    metrics["adherence_grid_per_prompt"] = per_prompt

    report = make_report(EvaluateMetrics, metrics, "the evaluate stage's metrics")  # before anything is written
    table = samples_table(d, pred, pred_base, cond, dist, train, pred_second)
    per_row = len(grid) // max(1, len(per_prompt))  # seeds per grid prompt
    grid_images = [from_png(png) for png in d.table.column("png").take(grid).to_pylist()]
    with atomic_outputs(*(paths.out / n for n in OUTPUTS)) as (samples_tmp, novelty_tmp, grid_tmp, cascade_tmp,
                                                               metrics_tmp):
        write_table(table, samples_tmp, {"draws": str(paths.draws), "model": d.meta["model"],
                                         "resolution": d.meta["resolution"], "base_resolution": d.meta["base_resolution"]})
        novelty_plot(dist["copy"], dist["real"], dist["generated"], dist["threshold"], novelty_tmp)
        labels = [f"{p} (radical {e.prompt_radicals.get(p, '?')}): {per_prompt[p]:.0%}" for p in per_prompt]
        framed_grid(grid_images, per_row, labels, list(pred[grid] == d.target_radical[grid])).save(grid_tmp)
        columns = min(4, per_row)
        firsts = np.concatenate([np.arange(columns) + i * per_row for i in range(len(per_prompt))])
        base_images = [from_png(png) for png in d.table.column("base_png").take(grid[firsts]).to_pylist()]
        cascade_sheet(base_images, [grid_images[i] for i in firsts], columns, list(per_prompt)).save(cascade_tmp)
        metrics_tmp.write_text(report_json(report))
    if track:
        log_to_model_run(d.meta["model_info"], {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                         [paths.out / "metrics.json", paths.out / "novelty.png", paths.out / "grid.png",
                          paths.out / "cascade.png"], "evaluate")
        if d.meta.get("model"):  # drawn from a model folder, not from a pipeline a benchmark handed in
            register(params, d.meta, metrics)
    return metrics


def register(params: Params, meta: dict, metrics: dict) -> None:
    """The judged model as a registered MLflow model (glyffuser/registry.py), with these metrics."""
    from glyffuser.diffusion.encoders import resolve_encoder
    from glyffuser.registry import register_model

    s, info = params.sample, meta["model_info"]
    defaults = {"num_images": 1, "steps": s.steps, "guidance": s.guidance, "seed": 0, "scheduler": s.scheduler}
    version = register_model(Path(meta["model"]), resolve_encoder(info["encoder"]).path, info, defaults, metrics,
                             Path(meta["upsampler"]) if meta.get("upsampler") else None)
    if version:
        print(f"evaluate: the model is registered in MLflow as models:/{version}", flush=True)


# `glyffuser evaluate`; the DVC stage `evaluate` runs it as stages/evaluate.py.
def add_arguments(p) -> None:
    p.add_argument("--draws", type=Path, default=Path("data/draw/samples.parquet"),
                   help="the draw stage's samples (glyffuser draw)")
    inputs(p, "classifier", "second_judge", "definitions", "glyphs", "embeddings")
    p.add_argument("--out", type=Path, default=Path("data/evaluate"))
    no_mlflow(p)


def command(args) -> dict:
    from glyffuser.params import load_params

    paths = ScorePaths(args.draws, args.classifier, args.definitions, args.glyphs, args.embeddings, args.out,
                       args.second_judge)
    return run_score(load_params(args.params), paths, track=not args.no_mlflow)


def main(argv: list[str] | None = None) -> int:
    return run_command("evaluate", __doc__.splitlines()[0], add_arguments, command, argv)
