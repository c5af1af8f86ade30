"""Stage `evaluate`: how good and how prompt-faithful a trained model's glyphs are.

Samples are drawn with the sample stage's sampler settings, taken through the cascade's upsampler when there is one
(the final glyphs, at twice the model's side; the 64 px drafts are kept and judged too, paired with the final ones), and
judged by the radical classifier (which reads a glyph at the training side: a final glyph area-downsampled):
- heldout: K samples from each of N test-split definitions (never trained on), scored against the
  radical of the character the definition belongs to; also per third of them by how common that radical is in
  training (commonest, middle, rarest) and per radical;
- train: one sample from each of `evaluate.train_characters` training definitions, scored the same way: the gap to
  held-out adherence is the generalisation gap, what training definitions miss is the execution gap;
- grid: the sample stage's prompt grid, scored against `evaluate.prompt_radicals`;
- controls: the empty prompt, and the held-out definitions shuffled across characters, both scored
  against the same targets. If either sits far above chance the metric measures something else.
Plus KID/FID on classifier features (with the real-vs-real floor at the same sizes), realism (a classifier two-sample
test: how often a small texture CNN tells held-out samples from real test glyphs; 0.5 = indistinguishable), stroke fidelity
(glyffuser.analysis.fidelity: local stroke texture against the real test glyphs, which KID does not see), paper
darkness (glyffuser.analysis.paper: grey haze and specks far from the strokes; real glyphs 0), novelty
(nearest training glyph against a copy threshold calibrated on real near-copies, on the drafts) and a text-only
ceiling (linear probe from the pooled text embedding to the radical). Paper, stroke fidelity and sharpness are
measured at the output side against the real glyphs rendered at that side, and on the drafts at theirs (`_base`).
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
from glyffuser.artifacts.images import labelled_grid, tensor_to_images, to_png
from glyffuser.artifacts.tables import write_table
from glyffuser.command import inputs, no_mlflow, run_command
from glyffuser.diffusion.pipeline import GlyffuserPipeline
from glyffuser.diffusion.unet import pool_text
from glyffuser.errors import GlyffuserError
from glyffuser.params import Params
from glyffuser.progress import progress
from glyffuser.reports import EvaluateMetrics, make_report, report_json
from glyffuser.tracking import log_to_model_run, require_store

OUTPUTS = ("samples.parquet", "novelty.png", "grid.png", "cascade.png", "metrics.json")


@dataclass(frozen=True)
class EvaluatePaths:
    model: Path
    classifier: Path
    definitions: Path
    glyphs: Path
    embeddings: Path
    out: Path  # folder: metrics.json, samples.parquet, novelty.png, grid.png, cascade.png
    upsampler: Path | None = None  # the cascade's upsampler folder; None: judge the model's own drafts

    @property
    def metrics(self) -> Path:
        return self.out / "metrics.json"


BATCH = 64  # glyphs per sampler batch


def _draw(pipe: GlyffuserPipeline, text: torch.Tensor, mask: torch.Tensor, empty: torch.Tensor, seeds: list[int],
          params: Params, bar, guidance: float | None = None) -> torch.Tensor:
    s = params.sample
    g = s.guidance if guidance is None else guidance
    out = [pipe.sample(text[i:i + BATCH], mask[i:i + BATCH], empty, seeds[i:i + BATCH], s.steps, g, s.scheduler, bar)
           for i in range(0, len(seeds), BATCH)]
    return torch.cat(out)  # (N,1,R,R) in [-1,1]


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


@dataclass
class Plan:
    """What is drawn: n held-out test characters (rows `pick` of the test split) × k seeds, and c of them as controls."""

    n: int
    k: int
    pick: np.ndarray  # (n,) indices into the test split
    rows: np.ndarray  # (n,) their rows in the embeddings table
    targets: np.ndarray  # (n,) their radicals
    rep: np.ndarray  # (n·k,) character of each held-out sample
    ctrl: np.ndarray  # (c,) characters of the controls
    shuffle: np.ndarray  # (c,) whose definition each shuffled control is drawn from
    train_pick: np.ndarray  # (m,) indices into the train split: training definitions drawn once each
    train_rows: np.ndarray  # (m,) their rows in the embeddings table


def check_inputs(paths: EvaluatePaths, pipe: GlyffuserPipeline, emb, train, test) -> dict[int, int]:
    """The embeddings match the model's encoder and hold every train and test character; codepoint -> row."""
    if emb.meta.get("encoder_sha256", pipe.info["encoder_sha256"]) != pipe.info["encoder_sha256"]:
        raise GlyffuserError(f"{paths.embeddings} comes from another text encoder than the model in {paths.model}")
    row_of = {int(cp): i for i, cp in enumerate(emb.codepoints)}
    if missing := [int(cp) for cp in np.concatenate([train.codepoints, test.codepoints]) if int(cp) not in row_of]:
        raise GlyffuserError(f"{paths.embeddings} has no embedding of U+{missing[0]:04X} ({len(missing)} characters "
                             f"missing): it was made from other definitions than {paths.definitions}; re-run the embed "
                             "stage (dvc repro embed)")
    return row_of


def plan(e, test, train, row_of: dict[int, int], rng: np.random.Generator, seed: int) -> Plan:
    """Held-out definitions: N test characters (all by default), K samples each, seeds 0..N·K-1 in codepoint
    order, so two models' samples pair up by (character, seed). The controls use C of the same characters. M training
    characters (their own generator: the other draws stay as they were without them), seeds 30,000 + i."""
    n = len(test.radicals) if e.heldout_characters == "all" else min(e.heldout_characters, len(test.radicals))
    if n < 2:
        raise GlyffuserError("the test split has fewer than 2 characters: widen render.ranges or raise render.split.test")
    pick = np.arange(n) if n == len(test.radicals) else np.sort(rng.choice(len(test.radicals), n, replace=False))
    rows = np.array([row_of[int(cp)] for cp in test.codepoints[pick]])
    c = min(e.control_characters, n)
    ctrl = np.sort(rng.choice(n, c, replace=False))
    order = rng.permutation(c)  # a random cycle: every control character gets another one's definition
    shuffle = np.empty(c, dtype=np.int64)
    shuffle[order] = ctrl[np.roll(order, -1)]
    k = e.samples_per_character
    m = min(e.train_characters, len(train.radicals))
    train_pick = np.sort(np.random.default_rng([seed, 1]).choice(len(train.radicals), m, replace=False))
    train_rows = np.array([row_of[int(cp)] for cp in train.codepoints[train_pick]], dtype=np.int64)
    return Plan(n, k, pick, rows, test.radicals[pick], np.repeat(np.arange(n), k), ctrl, shuffle, train_pick, train_rows)


def draw_all(pipe: GlyffuserPipeline, params: Params, emb, pl: Plan) -> dict[str, torch.Tensor]:
    """Every sample the stage judges: held-out, the two controls, the prompt grid (as saved, 8-bit), the seed sweep."""
    e, s = params.evaluate, params.sample
    text, mask, c, m = emb.hidden[pl.rows], emb.mask[pl.rows], len(pl.ctrl), len(pl.train_rows)
    n_grid = len(s.prompts) * s.seeds
    print(f"evaluate: {pl.n * pl.k} held-out samples, {c} empty-prompt, {c} shuffled, {n_grid} grid, {m} training "
          "definitions", flush=True)
    batches = sum(-(-size // BATCH) for size in (pl.n * pl.k, c, c, n_grid, e.seed_sweep_seeds, m))
    out = {}
    with progress(batches * s.steps, desc="evaluate: sampling", unit="step") as bar:
        out["heldout"] = _draw(pipe, text[pl.rep], mask[pl.rep], emb.empty_hidden, list(range(pl.n * pl.k)), params, bar)
        out["empty"] = _draw(pipe, text[pl.ctrl], mask[pl.ctrl], emb.empty_hidden, list(range(10_000, 10_000 + c)),
                             params, bar, guidance=0.0)
        out["shuffled"] = _draw(pipe, text[pl.shuffle], mask[pl.shuffle], emb.empty_hidden,
                                list(range(20_000, 20_000 + c)), params, bar)
        grid_text, grid_mask, grid_empty = pipe.encode(s.prompts)
        grid_rows = np.repeat(np.arange(len(s.prompts)), s.seeds)
        grid = _draw(pipe, grid_text[grid_rows], grid_mask[grid_rows], grid_empty, list(range(s.seeds)) * len(s.prompts),
                     params, bar)
        # One prompt over many seeds: how reliably it draws its radical ("gold; metal": 金 in 16 of 16?).
        sweep_text, sweep_mask, _ = pipe.encode([e.seed_sweep_prompt])
        ones = np.zeros(e.seed_sweep_seeds, dtype=np.int64)
        out["sweep"] = _draw(pipe, sweep_text[ones], sweep_mask[ones], grid_empty, list(range(e.seed_sweep_seeds)),
                             params, bar)
        # training definitions, once each: the execution gap (last, so the draws above stay as they were)
        out["train"] = (_draw(pipe, emb.hidden[pl.train_rows], emb.mask[pl.train_rows], emb.empty_hidden,
                              list(range(30_000, 30_000 + m)), params, bar) if m else out["sweep"][:0])
    # the cascade's second step (the drafts are kept: adherence and quality are also measured on them, paired)
    side = pipe.output_resolution
    for kind in ("heldout", "empty", "shuffled", "sweep", "train"):
        final = pipe.upscale(out[kind]) if len(out[kind]) else out[kind].new_zeros(0, 1, side, side)
        out[kind + "_base"], out[kind] = out[kind], final
    out["grid_base"], grid = grid, pipe.upscale(grid)
    # judged as saved: 8-bit, like the sample stage's grid
    out["grid_images"] = tensor_to_images(grid)
    out["grid"] = torch.stack([torch.from_numpy(np.asarray(im, dtype=np.float32) / 127.5 - 1)[None]
                               for im in out["grid_images"]])
    return out


def judge(net, params: Params, x: dict, pl: Plan, train) -> tuple[dict, dict]:
    """The classifier's reading of every sample: (adherence metrics, predicted radicals per kind)."""
    e, s = params.evaluate, params.sample
    pred = {kind: predict(net, x[kind])[0] for kind in ("empty", "shuffled", "grid")}
    pred["heldout"], pred["heldout_features"] = predict(net, x["heldout"])
    grid_targets = np.repeat([e.prompt_radicals[p] for p in s.prompts], s.seeds)
    held, held_se = adherence(pred["heldout"], pl.targets[pl.rep], cluster=pl.rep)
    grid_adh, grid_se = adherence(pred["grid"], grid_targets, cluster=np.repeat(np.arange(len(s.prompts)), s.seeds))
    empty_adh, empty_se = adherence(pred["empty"], pl.targets[pl.ctrl])
    shuf_adh, shuf_se = adherence(pred["shuffled"], pl.targets[pl.ctrl])
    train_share = np.bincount(train.radicals, minlength=215) / len(train.radicals)
    metrics = {
        "adherence_grid": grid_adh, "adherence_grid_se": grid_se,
        "adherence_heldout": held, "adherence_heldout_se": held_se,
        "chance": majority_share(train.radicals, pl.targets),
        "grid_chance": float(train_share[grid_targets].mean()),
        "control_empty_prompt": empty_adh, "control_empty_prompt_se": empty_se,
        "control_shuffled": shuf_adh, "control_shuffled_se": shuf_se,
        "seed_sweep_hits": int((predict(net, x["sweep"])[0] == e.prompt_radicals[e.seed_sweep_prompt]).sum()),
    }
    metrics["per_prompt"] = {p: float((pred["grid"][i * s.seeds:(i + 1) * s.seeds] == e.prompt_radicals[p]).mean())
                             for i, p in enumerate(s.prompts)}
    # The cascade's drafts, judged too: does the upsampler keep the radical? (paired: the same samples)
    pred["heldout_base"] = predict(net, x["heldout_base"])[0]
    targets = pl.targets[pl.rep]
    metrics["adherence_heldout_base"], metrics["adherence_heldout_base_se"] = adherence(pred["heldout_base"], targets,
                                                                                        cluster=pl.rep)
    metrics["adherence_upsampler_difference"], metrics["adherence_upsampler_difference_se"] = paired_difference(
        pred["heldout"] == targets, pred["heldout_base"] == targets, cluster=pl.rep)
    pred["grid_targets"] = grid_targets
    metrics.update(long_tail(pred, pl, train, x["train"] if len(pl.train_pick) else None, net))
    return metrics, pred


def long_tail(pred: dict, pl: Plan, train, train_samples: torch.Tensor | None, net) -> dict:
    """Held-out adherence per third of the definitions by how common their radical is in training and per radical;
    the same thirds on training definitions (the execution gap without the generalisation gap)."""
    third = frequency_thirds(pl.targets, train.radicals)  # (n,) per held-out character
    targets = pl.targets[pl.rep]
    hits = pred["heldout"] == targets
    out = {f"adherence_heldout_{k}": v for k, v in by_third(hits, third[pl.rep], pl.rep).items()}
    out["heldout_thirds"] = thirds_summary(pl.targets, third, train.radicals)
    out["adherence_per_radical"] = per_radical(targets, pred["heldout"], train.radicals)
    if train_samples is not None:
        train_targets = train.radicals[pl.train_pick]
        pred["train"] = predict(net, train_samples)[0]
        train_hits = pred["train"] == train_targets
        out["adherence_train"], out["adherence_train_se"] = adherence(pred["train"], train_targets)
        # the held-out thirds' boundaries (the fewest training glyphs of a radical in the commonest and in the middle
        # third; the first two thirds are never empty) sort the training definitions; a boundary radical goes up
        count = np.bincount(train.radicals, minlength=215)
        edges = [count[pl.targets[third == i]].min() for i in range(2)]
        train_third = np.where(count[train_targets] >= edges[0], 0, np.where(count[train_targets] >= edges[1], 1, 2))
        out.update({f"adherence_train_{k}": v for k, v in by_third(train_hits, train_third).items()})
    # a third with no sample or a single one has no mean or standard error: null, so metrics.json stays valid JSON
    return {k: None if isinstance(v, float) and np.isnan(v) else v for k, v in out.items()}


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


def samples_table(params: Params, x: dict, pred: dict, pl: Plan, test, train, dist: dict) -> pa.Table:
    """Every sample with its prompt, target, seed and verdict (the umap stage projects them)."""
    s = params.sample
    heldout, grid, c, m = x["heldout"], x["grid"], len(pl.ctrl), len(pl.train_pick)
    images = torch.cat([heldout, x["empty"], x["shuffled"], grid, x["train"]])
    drafts = torch.cat([x["heldout_base"], x["empty_base"], x["shuffled_base"], x["grid_base"], x["train_base"]])
    heldout_defs = [test.definitions[i] for i in pl.pick]
    prompts = ([heldout_defs[i] for i in pl.rep] + [""] * c + [heldout_defs[i] for i in pl.shuffle]
               + list(np.repeat(s.prompts, s.seeds)) + [train.definitions[i] for i in pl.train_pick])
    train_pred = pred.get("train", np.zeros(0, dtype=np.int64))
    all_targets = np.concatenate([pl.targets[pl.rep], pl.targets[pl.ctrl], pl.targets[pl.ctrl], pred["grid_targets"],
                                  train.radicals[pl.train_pick]])
    all_pred = np.concatenate([pred["heldout"], pred["empty"], pred["shuffled"], pred["grid"], train_pred])
    nearest_d = np.full(len(images), np.nan)
    nearest_cp = np.full(len(images), -1)
    cond_rows = np.r_[np.arange(len(heldout)), np.arange(len(images) - len(grid) - m, len(images) - m)]
    nearest_d[cond_rows], nearest_cp[cond_rows] = dist["generated"], train.codepoints[dist["nearest"]]
    cps, train_cps = test.codepoints[pl.pick], train.codepoints[pl.train_pick]
    n, k = pl.n, pl.k
    return pa.table({
        "kind": ["heldout"] * len(heldout) + ["empty"] * c + ["shuffled"] * c + ["grid"] * len(grid) + ["train"] * m,
        "prompt": prompts,
        "target_codepoint": np.concatenate([cps[pl.rep], cps[pl.ctrl], cps[pl.ctrl], np.full(len(grid), -1),
                                            train_cps]).astype(np.int32),
        "prompt_codepoint": np.concatenate([cps[pl.rep], np.full(c, -1), cps[pl.shuffle],
                                            np.full(len(grid), -1), train_cps]).astype(np.int32),
        # the sampler seed: held-out samples pair up across models by (target_codepoint, seed)
        "seed": np.concatenate([np.arange(n * k), np.arange(10_000, 10_000 + c), np.arange(20_000, 20_000 + c),
                                np.tile(np.arange(s.seeds), len(s.prompts)), np.arange(30_000, 30_000 + m)]).astype(np.int64),
        "target_radical": all_targets.astype(np.int16), "predicted_radical": all_pred.astype(np.int16),
        "nearest_distance": nearest_d, "nearest_codepoint": nearest_cp.astype(np.int32),
        "png": [to_png(im) for im in tensor_to_images(images)],  # the final glyphs (the cascade's output side)
        "base_png": [to_png(im) for im in tensor_to_images(drafts)],  # the diffusion model's drafts
    })


def run_evaluate(params: Params, paths: EvaluatePaths, track: bool = True, pipe: GlyffuserPipeline | None = None) -> dict:
    """`pipe`: judge this pipeline instead of the model in paths.model (benchmarks/resolution.py's cascade)."""
    e, s, seed = params.evaluate, params.sample, params.base.seed
    check_outputs(*(paths.out / n for n in OUTPUTS))
    if track:
        require_store()
    start = time.perf_counter()
    judged_model_folder = pipe is None  # not a pipeline handed in (benchmarks/resolution.py's cascade)
    pipe = pipe or GlyffuserPipeline.from_pretrained(paths.model, bf16=s.autocast(), compile=s.compile,
                                                     upsampler=paths.upsampler or False)
    net, classifier_report = load_classifier(paths.classifier)
    splits = load_glyph_splits(paths.definitions, paths.glyphs, pipe.resolution)
    train, test = splits["train"], splits["test"]
    # the real glyphs at the output side, for paper, strokes and sharpness of the final glyphs
    final_splits = splits if pipe.upsampler is None else load_glyph_splits(paths.definitions, paths.glyphs,
                                                                           pipe.output_resolution)
    emb = load_embeddings(paths.embeddings)
    row_of = check_inputs(paths, pipe, emb, train, test)
    rng = np.random.default_rng(seed)
    pl = plan(e, test, train, row_of, rng, seed)
    x = draw_all(pipe, params, emb, pl)
    sampling_minutes = (time.perf_counter() - start) / 60

    adherences, pred = judge(net, params, x, pl, train)
    per_prompt = adherences.pop("per_prompt")
    probe = text_ceiling(emb, row_of, train, test, seed)
    scores = quality(net, x["heldout"], pred["heldout_features"], final_splits["train"], final_splits["test"], seed, rng)
    drafts = draft_quality(x["heldout_base"], x["heldout"], test)
    # copies are a matter of structure: the drafts against the training glyphs at the model's side
    copies, dist = novelty(e, torch.cat([x["heldout_base"], x["grid_base"]]), train, test, seed, rng)
    metrics = {
        **{k: v for k, v in adherences.items() if k != "seed_sweep_hits"},
        **probe,
        "classifier_test_accuracy": classifier_report["test_accuracy"],
        **{k: v for k, v in scores.items() if k != "kid_subset_size"},
        **drafts,
        **copies,
        "heldout_characters": pl.n, "samples_per_character": pl.k, "kid_subset_size": scores["kid_subset_size"],
        "seed_sweep_prompt": e.seed_sweep_prompt, "seed_sweep_hits": adherences["seed_sweep_hits"],
        "seed_sweep_seeds": e.seed_sweep_seeds,
        # two-tone pixel share at the output side: held-out samples vs the real test glyphs
        "sharpness": two_tone_share(x["heldout"]), "sharpness_real": two_tone_share(final_splits["test"].images),
        "resolution": pipe.output_resolution, "base_resolution": pipe.resolution,
        "sampling_minutes": round(sampling_minutes, 2),
        "minutes": round((time.perf_counter() - start) / 60, 2),
    }
    metrics["sharpness_ratio"] = metrics["sharpness"] / metrics["sharpness_real"]
    metrics["adherence_grid_per_prompt"] = per_prompt

    report = make_report(EvaluateMetrics, metrics, "the evaluate stage's metrics")  # before anything is written
    table = samples_table(params, x, pred, pl, test, train, dist)
    with atomic_outputs(*(paths.out / n for n in OUTPUTS)) as (samples_tmp, novelty_tmp, grid_tmp, cascade_tmp,
                                                               metrics_tmp):
        write_table(table, samples_tmp, {"model": str(paths.model), "resolution": pipe.output_resolution,
                                         "base_resolution": pipe.resolution})
        novelty_plot(dist["copy"], dist["real"], dist["generated"], dist["threshold"], novelty_tmp)
        labels = [f"{p} (radical {e.prompt_radicals[p]}): {per_prompt[p]:.0%}" for p in s.prompts]
        framed_grid(x["grid_images"], s.seeds, labels, list(pred["grid"] == pred["grid_targets"])).save(grid_tmp)
        columns = min(4, s.seeds)
        firsts = np.concatenate([np.arange(columns) + i * s.seeds for i in range(len(s.prompts))])
        cascade_sheet(tensor_to_images(x["grid_base"][firsts]), [x["grid_images"][i] for i in firsts], columns,
                      s.prompts).save(cascade_tmp)
        metrics_tmp.write_text(report_json(report))
    if track:
        log_to_model_run(pipe.info, {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                         [paths.out / "metrics.json", paths.out / "novelty.png", paths.out / "grid.png",
                          paths.out / "cascade.png"], "evaluate")
        if judged_model_folder:
            register(params, paths, pipe, metrics)
    return metrics


def register(params: Params, paths: EvaluatePaths, pipe: GlyffuserPipeline, metrics: dict) -> None:
    """The judged model as a registered MLflow model (glyffuser/registry.py), with these metrics."""
    from glyffuser.diffusion.encoders import resolve_encoder
    from glyffuser.registry import register_model

    s = params.sample
    defaults = {"num_images": 1, "steps": s.steps, "guidance": s.guidance, "seed": 0, "scheduler": s.scheduler}
    version = register_model(paths.model, resolve_encoder(pipe.info["encoder"]).path, pipe.info, defaults, metrics,
                             paths.upsampler if pipe.upsampler is not None else None)
    if version:
        print(f"evaluate: the model is registered in MLflow as models:/{version}", flush=True)


# `glyffuser evaluate`; the DVC stage `evaluate` runs it as stages/evaluate.py.
def add_arguments(p) -> None:
    inputs(p, "model", "classifier", "definitions", "glyphs", "embeddings")
    p.add_argument("--upsampler", type=Path,
                   help="the cascade's upsampler folder (default: data/upsampler when the upsampler stage has run for "
                        "this model's side)")
    p.add_argument("--base", action="store_true", help="judge the model's own drafts, without an upsampler")
    p.add_argument("--out", type=Path, default=Path("data/evaluate"))
    no_mlflow(p)


def command(args) -> dict:
    from glyffuser.diffusion.pipeline import choose_upsampler
    from glyffuser.params import load_params

    upsampler = choose_upsampler(args.model, args.upsampler, args.base)
    paths = EvaluatePaths(args.model, args.classifier, args.definitions, args.glyphs, args.embeddings, args.out,
                          upsampler or None)
    return run_evaluate(load_params(args.params), paths, track=not args.no_mlflow)


def main(argv: list[str] | None = None) -> int:
    return run_command("evaluate", __doc__.splitlines()[0], add_arguments, command, argv)
