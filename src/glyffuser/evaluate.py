"""Stage `evaluate`: how good and how prompt-faithful a trained model's glyphs are.

Samples are drawn with the sample stage's sampler settings and judged by the radical classifier:
- heldout: K samples from each of N test-split definitions (never trained on), scored against the
  radical of the character the definition belongs to;
- grid: the sample stage's prompt grid, scored against `evaluate.prompt_radicals`;
- controls: the empty prompt, and the held-out definitions shuffled across characters, both scored
  against the same targets. If either sits far above chance the metric measures something else.
Plus KID/FID on classifier features (with the real-vs-real floor at the same sizes), stroke fidelity
(glyffuser.fidelity: local stroke texture against the real test glyphs, which KID does not see), novelty
(nearest training glyph against a copy threshold calibrated on real near-copies) and a text-only
ceiling (linear probe from the pooled text embedding to the radical).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from PIL import Image, ImageDraw

from glyffuser.atomic import atomic_outputs, check_outputs
from glyffuser.classifier import load_classifier, load_glyph_splits, majority_share, predict
from glyffuser.embed import load_embeddings
from glyffuser.errors import GlyffuserError
from glyffuser.fidelity import fidelity, stroke_codes
from glyffuser.glyphs import to_png
from glyffuser.images import labelled_grid, tensor_to_images
from glyffuser.metrics import adherence, copy_threshold, fid, kid, linear_probe, near_copies, nearest, two_tone_share
from glyffuser.model import pool_text
from glyffuser.params import Params
from glyffuser.pipeline import GlyffuserPipeline
from glyffuser.progress import progress
from glyffuser.tables import write_table
from glyffuser.tracking import log_to_model_run, require_store

OUTPUTS = ("samples.parquet", "novelty.png", "grid.png", "metrics.json")


@dataclass(frozen=True)
class EvaluatePaths:
    model: Path
    classifier: Path
    definitions: Path
    glyphs: Path
    embeddings: Path
    out: Path  # folder: metrics.json, samples.parquet, novelty.png, grid.png

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
    cell, pad, lw = 64, 2, 150
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


def run_evaluate(params: Params, paths: EvaluatePaths, track: bool = True, pipe: GlyffuserPipeline | None = None) -> dict:
    """`pipe`: judge this pipeline instead of the model in paths.model (benchmarks/resolution.py's cascade)."""
    e, s = params.evaluate, params.sample
    check_outputs(*(paths.out / n for n in OUTPUTS))
    if track:
        require_store()
    start = time.perf_counter()
    pipe = pipe or GlyffuserPipeline.from_pretrained(paths.model, bf16=s.autocast(), compile=s.compile)
    net, classifier_report = load_classifier(paths.classifier)
    resolution = pipe.resolution
    splits = load_glyph_splits(paths.definitions, paths.glyphs, resolution)
    train, test = splits["train"], splits["test"]
    emb = load_embeddings(paths.embeddings)
    if emb.meta.get("encoder_sha256", pipe.info["encoder_sha256"]) != pipe.info["encoder_sha256"]:
        raise GlyffuserError(f"{paths.embeddings} comes from another text encoder than the model in {paths.model}")
    row_of = {int(cp): i for i, cp in enumerate(emb.codepoints)}
    if missing := [int(cp) for cp in np.concatenate([train.codepoints, test.codepoints]) if int(cp) not in row_of]:
        raise GlyffuserError(f"{paths.embeddings} has no embedding of U+{missing[0]:04X} ({len(missing)} characters "
                             f"missing): it was made from other definitions than {paths.definitions}; re-run the embed "
                             "stage (dvc repro embed)")
    rng = np.random.default_rng(params.base.seed)

    # Held-out definitions: N test characters (all by default), K samples each, seeds 0..N·K-1 in codepoint
    # order, so two models' samples pair up by (character, seed). The controls use C of the same characters.
    n = len(test.radicals) if e.heldout_characters == "all" else min(e.heldout_characters, len(test.radicals))
    if n < 2:
        raise GlyffuserError("the test split has fewer than 2 characters: widen render.ranges or raise render.split.test")
    pick = np.arange(n) if n == len(test.radicals) else np.sort(rng.choice(len(test.radicals), n, replace=False))
    rows = np.array([row_of[int(cp)] for cp in test.codepoints[pick]])
    targets = test.radicals[pick]
    k = e.samples_per_character
    rep = np.repeat(np.arange(n), k)
    text, mask = emb.hidden[rows], emb.mask[rows]
    c = min(e.control_characters, n)
    ctrl = np.sort(rng.choice(n, c, replace=False))
    n_grid = len(s.prompts) * s.seeds
    print(f"evaluate: {n * k} held-out samples, {c} empty-prompt, {c} shuffled, {n_grid} grid", flush=True)
    batches = sum(-(-size // BATCH) for size in (n * k, c, c, n_grid, e.seed_sweep_seeds))
    order = rng.permutation(c)  # a random cycle: every control character gets another one's definition
    shuffle = np.empty(c, dtype=np.int64)
    shuffle[order] = ctrl[np.roll(order, -1)]
    with progress(batches * s.steps, desc="evaluate: sampling", unit="step") as bar:
        heldout = _draw(pipe, text[rep], mask[rep], emb.empty_hidden, list(range(n * k)), params, bar)
        empty = _draw(pipe, text[ctrl], mask[ctrl], emb.empty_hidden, list(range(10_000, 10_000 + c)), params, bar,
                      guidance=0.0)
        shuffled = _draw(pipe, text[shuffle], mask[shuffle], emb.empty_hidden, list(range(20_000, 20_000 + c)),
                         params, bar)
        grid_text, grid_mask, grid_empty = pipe.encode(s.prompts)
        grid_rows = np.repeat(np.arange(len(s.prompts)), s.seeds)
        grid_images = tensor_to_images(_draw(pipe, grid_text[grid_rows], grid_mask[grid_rows], grid_empty,
                                             list(range(s.seeds)) * len(s.prompts), params, bar))
        # One prompt over many seeds: how reliably it draws its radical ("gold; metal": 金 in 16 of 16?).
        sweep_text, sweep_mask, _ = pipe.encode([e.seed_sweep_prompt])
        ones = np.zeros(e.seed_sweep_seeds, dtype=np.int64)
        sweep = _draw(pipe, sweep_text[ones], sweep_mask[ones], grid_empty, list(range(e.seed_sweep_seeds)), params, bar)
    # judged as saved: 8-bit, like the sample stage's grid
    grid = torch.stack([torch.from_numpy(np.asarray(im, dtype=np.float32) / 127.5 - 1)[None] for im in grid_images])
    grid_targets = np.repeat([e.prompt_radicals[p] for p in s.prompts], s.seeds)
    sampling_minutes = (time.perf_counter() - start) / 60

    # Judge every sample with the classifier.
    pred_heldout, feat_heldout = predict(net, heldout)
    pred_empty, _ = predict(net, empty)
    pred_shuffled, _ = predict(net, shuffled)
    pred_grid, _ = predict(net, grid)
    sweep_hits = int((predict(net, sweep)[0] == e.prompt_radicals[e.seed_sweep_prompt]).sum())
    chance = majority_share(train.radicals, targets)
    held, held_se = adherence(pred_heldout, targets[rep], cluster=rep)
    grid_adh, grid_se = adherence(pred_grid, grid_targets, cluster=np.repeat(np.arange(len(s.prompts)), s.seeds))
    empty_adh, empty_se = adherence(pred_empty, targets[ctrl])
    shuf_adh, shuf_se = adherence(pred_shuffled, targets[ctrl])
    train_share = np.bincount(train.radicals, minlength=215) / len(train.radicals)
    per_prompt = {p: float((pred_grid[i * s.seeds:(i + 1) * s.seeds] == e.prompt_radicals[p]).mean())
                  for i, p in enumerate(s.prompts)}

    # Text-only ceiling: pooled text embedding -> radical, linear.
    train_rows = np.array([row_of[int(cp)] for cp in train.codepoints])
    test_rows = np.array([row_of[int(cp)] for cp in test.codepoints])
    pooled = pool_text(emb.hidden.float(), emb.mask)
    probe = linear_probe(pooled[train_rows], train.radicals, pooled[test_rows], test.radicals, classes=215,
                         seed=params.base.seed)

    # Sample quality on classifier features; the floor is real train glyphs vs the same real test glyphs.
    _, feat_test = predict(net, test.images)
    real_pick = rng.choice(len(train.radicals), min(len(heldout), len(train.radicals)), replace=False)
    _, feat_real = predict(net, train.images[real_pick])
    subset = max(2, min(len(heldout), len(test.radicals)) // 2)
    kid_gen, kid_gen_std = kid(feat_heldout, feat_test, subset, seed=params.base.seed)
    kid_real, kid_real_std = kid(feat_real, feat_test, subset, seed=params.base.seed)
    # Stroke texture (wobble, specks, soft edges) against the real test glyphs; floor: real train glyphs.
    test_codes = stroke_codes(test.images)
    fid_stroke, fid_stroke_se = fidelity(test_codes, stroke_codes(heldout), seed=params.base.seed)
    fid_stroke_real, _ = fidelity(test_codes, stroke_codes(train.images[real_pick]), boot=2, seed=params.base.seed)

    # Novelty: nearest training glyph, copy threshold from near-copies of real training glyphs.
    gen = torch.Generator().manual_seed(params.base.seed)
    probe_idx = torch.from_numpy(rng.choice(len(train.radicals), min(e.copy_calibration, len(train.radicals)), replace=False))
    copy_d, copy_i = nearest(near_copies(train.images[probe_idx], gen), train.images)
    real_d, _ = nearest(test.images, train.images)
    conditional = torch.cat([heldout, grid])
    gen_d, gen_i = nearest(conditional, train.images)
    threshold = copy_threshold(copy_d, e.copy_quantile)
    novelty = float((gen_d > threshold).mean())

    metrics = {
        "adherence_grid": grid_adh, "adherence_grid_se": grid_se,
        "adherence_heldout": held, "adherence_heldout_se": held_se,
        "chance": chance,
        "grid_chance": float(train_share[grid_targets].mean()),
        "control_empty_prompt": empty_adh, "control_empty_prompt_se": empty_se,
        "control_shuffled": shuf_adh, "control_shuffled_se": shuf_se,
        "text_probe_accuracy": probe,
        "classifier_test_accuracy": classifier_report["test_accuracy"],
        "kid": kid_gen, "kid_std": kid_gen_std, "kid_real_floor": kid_real, "kid_real_floor_std": kid_real_std,
        "stroke_fidelity": fid_stroke, "stroke_fidelity_se": fid_stroke_se, "stroke_fidelity_real_floor": fid_stroke_real,
        "fid": fid(feat_heldout, feat_test), "fid_real_floor": fid(feat_real, feat_test),
        "novelty": novelty, "copy_threshold": threshold,
        "copy_calibration_recall": float((copy_i == probe_idx.numpy()).mean()),
        "real_test_below_threshold": float((real_d <= threshold).mean()),
        "heldout_characters": n, "samples_per_character": k, "kid_subset_size": subset,
        "seed_sweep_prompt": e.seed_sweep_prompt, "seed_sweep_hits": sweep_hits, "seed_sweep_seeds": e.seed_sweep_seeds,
        # two-tone pixel share at the model's resolution: held-out samples vs the real test glyphs
        "sharpness": two_tone_share(heldout), "sharpness_real": two_tone_share(test.images),
        "resolution": resolution,
        "sampling_minutes": round(sampling_minutes, 2),
        "minutes": round((time.perf_counter() - start) / 60, 2),
    }
    metrics["sharpness_ratio"] = metrics["sharpness"] / metrics["sharpness_real"]
    metrics["adherence_grid_per_prompt"] = per_prompt

    # Outputs: metrics, every sample with its verdict (the umap stage projects them), two figures.
    kinds = ["heldout"] * len(heldout) + ["empty"] * c + ["shuffled"] * c + ["grid"] * len(grid)
    images = torch.cat([heldout, empty, shuffled, grid])
    heldout_defs = [test.definitions[i] for i in pick]
    prompts = ([heldout_defs[i] for i in rep] + [""] * c + [heldout_defs[i] for i in shuffle]
               + list(np.repeat(s.prompts, s.seeds)))
    all_targets = np.concatenate([targets[rep], targets[ctrl], targets[ctrl], grid_targets])
    all_pred = np.concatenate([pred_heldout, pred_empty, pred_shuffled, pred_grid])
    nearest_d = np.full(len(images), np.nan)
    nearest_cp = np.full(len(images), -1)
    cond_rows = np.r_[np.arange(len(heldout)), np.arange(len(images) - len(grid), len(images))]
    nearest_d[cond_rows], nearest_cp[cond_rows] = gen_d, train.codepoints[gen_i]
    cps = test.codepoints[pick]
    table = pa.table({
        "kind": kinds, "prompt": prompts,
        "target_codepoint": np.concatenate([cps[rep], cps[ctrl], cps[ctrl], np.full(len(grid), -1)]).astype(np.int32),
        "prompt_codepoint": np.concatenate([cps[rep], np.full(c, -1), cps[shuffle],
                                            np.full(len(grid), -1)]).astype(np.int32),
        # the sampler seed: held-out samples pair up across models by (target_codepoint, seed)
        "seed": np.concatenate([np.arange(n * k), np.arange(10_000, 10_000 + c), np.arange(20_000, 20_000 + c),
                                np.tile(np.arange(s.seeds), len(s.prompts))]).astype(np.int64),
        "target_radical": all_targets.astype(np.int16), "predicted_radical": all_pred.astype(np.int16),
        "nearest_distance": nearest_d, "nearest_codepoint": nearest_cp.astype(np.int32),
        "png": [to_png(im) for im in tensor_to_images(images)],
    })
    with atomic_outputs(*(paths.out / n for n in OUTPUTS)) as (samples_tmp, novelty_tmp, grid_tmp, metrics_tmp):
        write_table(table, samples_tmp, {"model": str(paths.model), "resolution": resolution})
        novelty_plot(copy_d, real_d, gen_d, threshold, novelty_tmp)
        labels = [f"{p} (radical {e.prompt_radicals[p]}): {per_prompt[p]:.0%}" for p in s.prompts]
        framed_grid(grid_images, s.seeds, labels, list(pred_grid == grid_targets)).save(grid_tmp)
        metrics_tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    if track:
        log_to_model_run(pipe.info, {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                         [paths.out / "metrics.json", paths.out / "novelty.png", paths.out / "grid.png"], "evaluate")
    return metrics
