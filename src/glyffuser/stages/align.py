"""Stage `align`: fine-tune the trained model on preferences with Diffusion-DPO (issue 44; params `align`).

1. Judge pairs: `align.characters` training definitions (never the test split), `samples_per_prompt` drafts each with
   the sample stage's sampler, read by the reward judge (data/reward_judge, a radical reader neither evaluate judge
   shares); best against worst by the probability of the definition's radical (alignment.judge_pairs).
2. People's pairs: every left/right answer of the feedback table, when one exists (glyffuser label); a table that is
   there but empty or malformed is refused with one line.
3. Diffusion-DPO from the trained model against a frozen copy of it (diffusion/preference.py), `epochs` passes.
4. The curve: `dev_characters` other training definitions, one draft each at fixed seeds, read by the reward judge
   and by both evaluate judges, with their ink share, before the first epoch and every `eval_every` epochs.
Writes the aligned model folder (with align.enabled false: the trained model's files, unchanged), report.json and
curve.csv. The test split's numbers come from the draw and evaluate stages as for any model.
"""

from __future__ import annotations

import copy
import csv
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler

from glyffuser.analysis.judge import load_classifier, predict, target_probability
from glyffuser.artifacts.atomic import atomic_outputs, check_outputs
from glyffuser.artifacts.embeddings import load_embeddings
from glyffuser.artifacts.glyph_tables import load_glyph_splits
from glyffuser.artifacts.images import pngs_to_tensor
from glyffuser.artifacts.model_folder import read_model_info
from glyffuser.command import PIPELINE_FILES, inputs, no_mlflow, run_command
from glyffuser.diffusion.alignment import Pairs, fine_tune_epoch, human_pairs, ink_share, judge_pairs
from glyffuser.diffusion.pipeline import GlyffuserPipeline
from glyffuser.errors import GlyffuserError
from glyffuser.feedback import read_answers
from glyffuser.params import Params
from glyffuser.progress import progress
from glyffuser.reports import AlignReport, read_align_curve

BATCH = 64  # drafts per sampler batch
CURVE_COLUMNS = ("epoch", "loss", "ranked_right", "reward_margin", "dev_reward", "dev_reward_judge", "dev_judge",
                 "dev_second_judge", "dev_ink_share")


@dataclass(frozen=True)
class AlignPaths:
    model: Path  # the trained model folder (the reference)
    definitions: Path
    glyphs: Path
    embeddings: Path
    reward_judge: Path
    classifier: Path  # the evaluate judge: the curve only
    second_judge: Path  # the second evaluate judge: the curve only
    feedback: Path  # people's answers; absent: judge pairs alone
    out: Path  # data/align: model/, report.json, curve.csv


def drafts(pipe: GlyffuserPipeline, text: torch.Tensor, mask: torch.Tensor, empty: torch.Tensor, seeds: list[int],
           params: Params, bar) -> torch.Tensor:
    """(N,1,R,R) drafts of N prompts' states with the sample stage's sampler, in batches."""
    s = params.sample
    return torch.cat([pipe.sample(text[i:i + BATCH], mask[i:i + BATCH], empty, seeds[i:i + BATCH], s.steps, s.guidance,
                                  s.scheduler, bar) for i in range(0, len(seeds), BATCH)])


def people(pipe: GlyffuserPipeline, path: Path, weight: float) -> Pairs | None:
    """The feedback table's answered pairs, or None when there is no table (or human_weight is 0)."""
    if not path.exists() or weight == 0:
        return None
    answers = read_answers(path)  # present but empty or malformed: one error line
    text, mask, _ = pipe.encode(answers.prompt.tolist())
    left = pngs_to_tensor(answers.png_left.tolist(), pipe.resolution, path)  # 128 px glyphs, box-downsampled
    right = pngs_to_tensor(answers.png_right.tolist(), pipe.resolution, path)
    return human_pairs(left, right, answers.choice.tolist(), text, mask, weight, pipe.resolution)


def run_align(params: Params, paths: AlignPaths) -> dict:
    a = params.align
    model_out, report_out, curve_out = paths.out / "model", paths.out / "report.json", paths.out / "curve.csv"
    check_outputs(report_out, curve_out)
    check_outputs(model_out, folders=True)
    start = time.perf_counter()
    if not a.enabled:  # downstream reads the trained model itself
        read_model_info(paths.model)  # a folder that is not a model is refused here, not copied
        with atomic_outputs(model_out, dirs=True) as (tmp,):
            shutil.copytree(paths.model, tmp, dirs_exist_ok=True)
        report = {"enabled": False}
        _write(report_out, curve_out, report, [])
        return report

    pipe = GlyffuserPipeline.from_pretrained(paths.model, bf16=params.sample.autocast(), upsampler=False)
    humans = people(pipe, paths.feedback, a.human_weight)  # first: a bad table is refused before any drawing
    train = load_glyph_splits(paths.definitions, paths.glyphs, pipe.resolution)["train"]
    emb = load_embeddings(paths.embeddings)
    if emb.meta.get("encoder_sha256") != pipe.info["encoder_sha256"]:
        raise GlyffuserError(f"{paths.embeddings} comes from another text encoder than the model in {paths.model}")
    row_of = {int(cp): i for i, cp in enumerate(emb.codepoints)}
    if missing := [int(cp) for cp in train.codepoints if int(cp) not in row_of]:
        raise GlyffuserError(f"{paths.embeddings} has no embedding of U+{missing[0]:04X}: re-run the embed stage")
    n, n_dev = min(a.characters, len(train.radicals) // 2), min(a.dev_characters, len(train.radicals) // 2)
    order = np.random.default_rng([a.seed, 44]).permutation(len(train.radicals))
    chosen, dev = np.sort(order[:n]), np.sort(order[n:n + n_dev])
    rows = lambda idx: np.array([row_of[int(cp)] for cp in train.codepoints[idx]], dtype=np.int64)  # noqa: E731
    reward, _ = load_classifier(paths.reward_judge)
    readers = {"reward_judge": reward, "judge": load_classifier(paths.classifier)[0],
               "second_judge": load_classifier(paths.second_judge)[0]}

    # 1. judge pairs: K drafts of each chosen definition, seeds 40,000 + i·K + k
    k = a.samples_per_prompt
    text, mask = emb.hidden[rows(chosen)], emb.mask[rows(chosen)]  # (N,L,D), (N,L)
    seeds = (40_000 + np.arange(n * k)).tolist()
    with progress(-(-n * k // BATCH) * params.sample.steps, desc="align: judge drafts", unit="step") as bar:
        made = drafts(pipe, text.repeat_interleave(k, 0), mask.repeat_interleave(k, 0), emb.empty_hidden, seeds, params,
                      bar)  # (N·K,1,R,R)
    targets = train.radicals[chosen]  # (N,)
    rewards = target_probability(reward, made, np.repeat(targets, k)).reshape(n, k)
    pairs, kept = judge_pairs(made.view(n, k, *made.shape[1:]), rewards, text, mask, a.min_margin, a.all_pairs)
    draft_minutes = (time.perf_counter() - start) / 60
    if humans is not None and len(humans):
        pairs = Pairs.join(pairs, humans)
    if not len(pairs):
        raise GlyffuserError(f"no preference pairs: no prompt's {k} drafts differ by align.min_margin {a.min_margin} in "
                             "reward, and no feedback answers: lower align.min_margin or raise align.samples_per_prompt")
    print(f"align: {len(pairs)} pairs (from the judge: {int(kept.sum())} of {n} definitions; "
          f"from people: {0 if humans is None else len(humans)})", flush=True)

    # 2. Diffusion-DPO against a frozen copy; the policy stays in eval mode (no dropout): at step 0 it IS the reference
    reference = pipe.unet.requires_grad_(False)
    policy = copy.deepcopy(reference).float().requires_grad_(True)
    scheduler = pipe.scheduler_config
    noise_sched = DDPMScheduler.from_config(scheduler)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=a.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(a.seed)
    student = GlyffuserPipeline(policy, scheduler, pipe.info, pipe.bf16, prior=pipe.prior)
    dev_text, dev_mask = emb.hidden[rows(dev)], emb.mask[rows(dev)]
    dev_seeds = (50_000 + np.arange(len(dev))).tolist()

    def dev_point(epoch: int, stats: dict) -> dict:
        with progress(-(-len(dev) // BATCH) * params.sample.steps, desc=f"align: dev curve, epoch {epoch}",
                      unit="step") as bar:
            images = drafts(student, dev_text, dev_mask, emb.empty_hidden, dev_seeds, params, bar)
        point = {"epoch": epoch, **{c: stats.get(c, "") for c in ("loss", "ranked_right", "reward_margin")},
                 "dev_reward": float(target_probability(reward, images, train.radicals[dev]).mean()),
                 "dev_ink_share": ink_share(images)}
        for name, net in readers.items():
            point[f"dev_{name}"] = float((predict(net, images)[0] == train.radicals[dev]).mean())
        print("align: " + ", ".join(f"{c} {v:.4g}" if isinstance(v, float) else f"{c} {v}" for c, v in point.items()),
              flush=True)
        return point

    dev_start = time.perf_counter()
    curve = [dev_point(0, {})]
    dev_seconds = time.perf_counter() - dev_start
    dpo_seconds = 0.0
    for epoch in range(1, a.epochs + 1):
        tick = time.perf_counter()
        stats = fine_tune_epoch(policy, reference, noise_sched, optimizer, pairs, a.batch_size, a.beta, gen)
        dpo_seconds += time.perf_counter() - tick
        if epoch % a.eval_every == 0 or epoch == a.epochs:
            tick = time.perf_counter()
            curve.append(dev_point(epoch, stats))
            dev_seconds += time.perf_counter() - tick

    info = {**pipe.info, "align": {"parent_weights_sha256": pipe.info.get("weights_sha256"), "beta": a.beta,
                                   "lr": a.lr, "epochs": a.epochs, "pairs": len(pairs)}}
    student.info = info
    student.save_pretrained(model_out)
    first, last = curve[0], curve[-1]
    report = {
        "enabled": True,
        "pairs_judge": sum(s == "judge" for s in pairs.source), "prompts_paired": int(kept.sum()), "pairs_human": 0 if humans is None else len(humans),
        "definitions": n, "samples_per_prompt": k, "dev_definitions": len(dev),
        "reward_mean_drafts": float(rewards.mean()),
        **{f"{c}_before": first[c] for c in CURVE_COLUMNS[4:]},
        **{f"{c}_after": last[c] for c in CURVE_COLUMNS[4:]},
        "draft_minutes": round(draft_minutes, 2), "dpo_minutes": round(dpo_seconds / 60, 2),
        "dev_curve_minutes": round(dev_seconds / 60, 2), "minutes": round((time.perf_counter() - start) / 60, 2),
    }
    _write(report_out, curve_out, report, curve)
    return report


def _write(report_out: Path, curve_out: Path, report: dict, curve: list[dict]) -> None:
    with atomic_outputs(report_out, curve_out) as (rep, cur):
        rep.write_text(json.dumps(AlignReport(**report).model_dump(exclude_none=True), indent=2) + "\n")
        with cur.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CURVE_COLUMNS)
            writer.writeheader()
            writer.writerows(curve)


# `glyffuser align`; the DVC stage `align` runs it as stages/align.py.
def add_arguments(p) -> None:
    p.add_argument("--trained", type=Path, default=Path(PIPELINE_FILES["trained"]),
                   help="the train stage's model folder: the policy's start and the frozen reference")
    inputs(p, "definitions", "glyphs", "embeddings", "reward_judge", "classifier", "second_judge", "feedback")
    p.add_argument("--out", type=Path, default=Path("data/align"))
    no_mlflow(p)


def command(args) -> dict:
    from glyffuser.params import load_params

    paths = AlignPaths(args.trained, args.definitions, args.glyphs, args.embeddings, args.reward_judge, args.classifier,
                       args.second_judge, args.feedback, args.out)
    params = load_params(args.params)
    track = params.align.enabled and not args.no_mlflow
    if track:
        from glyffuser.tracking import require_store

        require_store()  # an unusable store stops here, before any work
    report = run_align(params, paths)
    if track:  # the curve over epochs and the report, on the run that trained the parent model
        from glyffuser.tracking import log_to_model_run

        log_to_model_run(read_model_info(args.out / "model"), {k: v for k, v in report.items()
                                                               if isinstance(v, (int, float))},
                         [args.out / "curve.csv", args.out / "report.json"], "align",
                         read_align_curve(args.out / "curve.csv"))
    return report


def main(argv: list[str] | None = None) -> int:
    return run_command("align", __doc__.splitlines()[0], add_arguments, command, argv)
