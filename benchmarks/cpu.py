"""CPU suite: what the default pipeline costs on a laptop-class CPU, and where the time goes.

    python benchmarks/cpu.py                       # every part, ~25 min on 2 cores
    python benchmarks/cpu.py --only train,sampling
    python benchmarks/cpu.py --only precision      # bf16 training against fp32: ~35 min
    python benchmarks/cpu.py --only loop           # their train-loop speeds, side by side: ~20 min

Parts (each writes benchmarks/results/cpu_<part>-cpu<N>.json with device, date and command):
- train:    the CPU profile's training step on its own (the train stage's TrainStep on random images and
            the stored embeddings, batch 64)
            under each speed option, against the train stage's measured img/s (data/train/loss.csv):
            the gap is the loop's overhead.
- sampling: glyphs/s of the trained model (data/model) on the prompt grid for steps, bf16 autocast,
            memory layout and torch.compile (with its compile time), and the evaluate stage's numbers for
            each setting (equal quality or not).
- curve:    prompt adherence of the snapshots the train stage kept (data/train/checkpoints/snapshots,
            params train.snapshot_every) against training minutes.
- stages:   render and embed wall times on the full dataset (benchmarks/stage_times.py).
- precision: the default profile trained again with bf16 autocast (~32 min), both models evaluated:
            whether bf16 training, +10-18 % img/s on an AMX CPU, learns as well as fp32.
- loop:     the train stage's loop, fp32 against bf16 (channels_last and NCHW), half an epoch each,
            alternating twice (~20 min).
- guidance: the evaluate stage's numbers at guidance 2, 3, 5, 7.5 and 10 (~10 min).
Needs the default pipeline's outputs (dvc repro) for sampling, curve and precision.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, write_result  # noqa: E402
from timing import real_text_batches, train_ours  # noqa: E402

from glyffuser.params import load_params, with_overrides  # noqa: E402

DATA = ROOT / "data"


def part_train(params, rounds: int = 3) -> dict:
    p = params.train
    cpu = torch.device("cpu")

    variants = {
        "fp32, NCHW, plain AdamW, eager": dict(compile_mode=None, channels_last=False, fused=False, bf16=False),
        "channels_last": dict(compile_mode=None, channels_last=True, fused=False, bf16=False),
        "fused AdamW": dict(compile_mode=None, channels_last=False, fused=True, bf16=False),
        "channels_last + fused AdamW": dict(compile_mode=None, channels_last=True, fused=True, bf16=False),
        "bf16 autocast": dict(compile_mode=None, channels_last=False, fused=False, bf16=True),
        "torch.compile (inductor)": dict(compile_mode="inductor", channels_last=False, fused=False, bf16=False),
    }
    # Rounds interleave the variants, so a slow minute of the machine does not land on one of them;
    # two single runs differed by up to 15 % per variant on this 2-core VM.
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for r in range(rounds):
        for name, options in variants.items():
            texts = real_text_batches(p.batch_size, trim=options["compile_mode"] is None)
            runs[name].append(train_ours(p, cpu, p.batch_size, warmup=3, steps=15, texts=texts, **options))
            print(f"round {r + 1}: {name}: {runs[name][-1]['img_per_s']} img/s", flush=True)
    rows = {}
    for name, results in runs.items():
        speeds = [x["img_per_s"] for x in results]
        rows[name] = {"recipe": results[0]["recipe"], "img_per_s": statistics.median(speeds), "runs": speeds,
                      "first_step_s": results[0]["first_step_s"]}
    out = {"batch": p.batch_size, "rounds": rounds, "text": "stored definition embeddings, trimmed per batch",
           "variants": rows}
    curve = DATA / "train" / "loss.csv"
    if curve.is_file():
        with curve.open() as f:
            speeds = [float(r["img_per_s"]) for r in csv.DictReader(f)][1:]  # the first window holds start-up
        stage = statistics.median(speeds)
        # The bare step with the options params.yaml gives the train stage on this CPU.
        from glyffuser.diffusion.training import Speedups

        speed = Speedups.of(p, cpu)
        same = next(name for name, o in variants.items() if (o["channels_last"], o["fused"], o["compile_mode"] is not None,
                                                             o["bf16"]) == (speed.channels_last, speed.fused_optimizer,
                                                                            speed.compile, False))
        bare = rows[same]["img_per_s"]
        out["train_stage_img_per_s_median"] = round(stage, 1)
        out["bare_step_with_the_stage_options"] = same
        out["overhead_vs_bare_step"] = round(1 - stage / bare, 3)
        print(f"train stage {stage:.1f} img/s vs bare step ({same}) {bare} img/s: overhead {1 - stage / bare:.1%}",
              flush=True)
    return out


def _grid_speed(pipe, params, steps: int, bf16: bool, channels_last: bool, compile: bool = False) -> tuple[float, float]:
    """(glyphs/s on the prompt grid, seconds of the warm-up call: for `compile`, the compile itself)."""
    s = params.sample
    pipe.unet = pipe.unet.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    pipe.bf16, pipe.compile = bf16, compile
    start = time.perf_counter()
    if compile:  # warm up on the grid's own shapes, or the timed call would compile again
        pipe(s.prompts, num_images=s.seeds, steps=2, guidance=s.guidance, scheduler=s.scheduler)
    else:
        pipe(s.prompts[:1], num_images=2, steps=2, guidance=s.guidance, scheduler=s.scheduler)
    warm_up = time.perf_counter() - start
    start = time.perf_counter()
    images = pipe(s.prompts, num_images=s.seeds, steps=steps, guidance=s.guidance, scheduler=s.scheduler)
    return len(images) / (time.perf_counter() - start), warm_up


def run_evaluate_on_data(params, out: Path, model: Path = DATA / "model", classifier: Path = DATA / "classifier",
                         pipe=None) -> dict:
    """The evaluate stage (run_evaluate, untracked) on the pipeline's data/ tables; its whole metrics dict."""
    from glyffuser.evaluation import EvaluatePaths, run_evaluate

    paths = EvaluatePaths(model, classifier, DATA / "render" / "definitions.parquet",
                          DATA / "render" / "glyphs.parquet", DATA / "embed" / "embeddings.parquet", out)
    return run_evaluate(params, paths, track=False, pipe=pipe)


def _evaluate(params, out: Path, model: Path = DATA / "model") -> dict:
    return _evaluate_row(run_evaluate_on_data(params, out, model))


def _evaluate_row(m: dict) -> dict:
    keep = ("adherence_grid", "adherence_grid_se", "adherence_heldout", "adherence_heldout_se", "control_empty_prompt",
            "control_shuffled", "kid", "kid_real_floor", "fid", "novelty", "sampling_minutes")
    return {k: round(m[k], 4) for k in keep}


def part_sampling(params) -> dict:
    import os

    from glyffuser.diffusion.pipeline import GlyffuserPipeline

    # A fresh inductor cache: the compiled rows then pay the compile a new machine pays.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
    pipe = GlyffuserPipeline.from_pretrained(DATA / "model", device="cpu")
    s = params.sample
    settings = [(20, False, False, False), (20, False, True, False), (20, True, False, False), (20, True, True, False),
                (10, False, True, False), (10, True, True, False), (20, False, False, True), (20, True, False, True)]
    rows = []
    for steps, bf16, channels_last, compile in settings:
        rate, warm_up = _grid_speed(pipe, params, steps, bf16, channels_last, compile)
        rows.append({"steps": steps, "bf16": bf16, "channels_last": channels_last, "compile": compile,
                     "glyphs_per_s": round(rate, 2), "warm_up_s": round(warm_up, 1),
                     "glyphs": len(s.prompts) * s.seeds, "sampler": s.scheduler, "guidance": s.guidance})
        print(rows[-1], flush=True)
    quality = {}
    with tempfile.TemporaryDirectory() as tmp:
        for steps, bf16, compile in ((20, False, False), (20, True, False), (10, True, False), (10, False, False),
                                     (20, True, True)):
            name = f"{steps}_steps_{'bf16' if bf16 else 'fp32'}{'_compiled' if compile else ''}"
            variant = with_overrides(params, {"sample.steps": steps, "sample.bf16": bf16, "sample.compile": compile})
            quality[name] = _evaluate(variant, Path(tmp) / name)
            print(name, quality[name], flush=True)
    return {"grid_speed": rows, "evaluate": quality}


def part_curve(params) -> dict:
    import json

    folder = DATA / "train" / "checkpoints" / "snapshots"
    models = sorted(folder.glob("step-*")) + [DATA / "model"]
    metrics = json.loads((DATA / "train" / "metrics.json").read_text())
    small = with_overrides(params, {"evaluate.heldout_characters": 100, "evaluate.samples_per_character": 1})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            info = json.loads((model / "glyffuser.json").read_text())
            m = run_evaluate_on_data(small, Path(tmp) / model.name, model)
            rows.append({"step": info.get("step", metrics["steps"]),
                         "train_minutes": info.get("train_minutes", metrics["wall_time_min"]),
                         "adherence_grid": round(m["adherence_grid"], 4), "adherence_grid_se": round(m["adherence_grid_se"], 4),
                         "adherence_heldout": round(m["adherence_heldout"], 4),
                         "adherence_heldout_se": round(m["adherence_heldout_se"], 4), "kid": round(m["kid"], 4)})
            print(rows[-1], flush=True)
    first = next((r for r in rows if r["adherence_grid"] >= 0.25), None)
    return {"evaluate": "heldout 100 characters x 1 sample, the sample stage's prompt grid", "points": rows,
            "first_minutes_with_grid_adherence_25pct": first["train_minutes"] if first else None}


def _train(variant, folder: Path) -> dict:
    """`glyffuser train` with these params into `folder` (model/, metrics.json, loss.csv), in its own
    process: accelerate fixes the mixed precision once per process. Returns its metrics.json."""
    import json

    import yaml

    (folder / "params.yaml").write_text(yaml.safe_dump(variant.model_dump(), allow_unicode=True))
    subprocess.run([sys.executable, "-m", "glyffuser.cli", "train", "--params", str(folder / "params.yaml"),
                    "--model", str(folder / "model"), "--metrics", str(folder / "metrics.json"),
                    "--curve", str(folder / "loss.csv"), "--checkpoints", str(folder / "checkpoints"), "--no-mlflow"],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return json.loads((folder / "metrics.json").read_text())


def part_precision(params) -> dict:
    """The default profile trained again with bf16 autocast, against the fp32 model of `dvc repro`:
    train-loop time and img/s, losses, and the evaluate stage's numbers of both."""
    import json

    bf16 = with_overrides(params, {"train.mixed_precision": "bf16", "train.snapshot_every": 0})
    keep = ("train_loss", "val_loss", "img_per_s", "wall_time_min", "steps")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        trained = _train(bf16, tmp)
        rows = {"bf16_autocast": {**{k: trained[k] for k in keep}, **_evaluate(params, tmp / "evaluate", tmp / "model")}}
    # The default model's own numbers, as `dvc repro` wrote them (evaluate is deterministic).
    fp32 = json.loads((DATA / "train" / "metrics.json").read_text())
    evaluated = json.loads((DATA / "evaluate" / "metrics.json").read_text())
    rows["fp32 (data/model)"] = {**{k: fp32[k] for k in keep}, **_evaluate_row(evaluated)}
    for name, row in rows.items():
        print(name, row, flush=True)
    return {"profile": "params.yaml, train.mixed_precision bf16 vs the default (fp32 on CPUs)", "runs": rows}


def part_loop(params, epochs: float = 0.5, rounds: int = 2) -> dict:
    """The train stage's loop itself, fp32 against bf16 autocast, alternating in the same half hour
    (loop speeds measured hours apart on this VM differ by more than the effect)."""
    # the default (channels_last on), and bf16 with NCHW, the layout of the bare step's bf16 gain
    variants = {"fp32": {"train.mixed_precision": "no"}, "bf16": {"train.mixed_precision": "bf16"},
                "bf16, NCHW": {"train.mixed_precision": "bf16", "train.channels_last": False}}
    runs: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(rounds):
        for precision, options in variants.items():
            variant = with_overrides(params, {**options, "train.epochs": epochs, "train.snapshot_every": 0})
            with tempfile.TemporaryDirectory() as tmp:
                _train(variant, Path(tmp))
                with (Path(tmp) / "loss.csv").open() as f:
                    speeds = [float(row["img_per_s"]) for row in csv.DictReader(f)][1:]  # the first window holds start-up
            runs[precision].append(round(statistics.median(speeds), 1))
            print(f"round {r + 1}: {precision} train loop {runs[precision][-1]} img/s", flush=True)
    medians = {name: statistics.median(v) for name, v in runs.items()}
    return {"epochs_per_run": epochs, "rounds": rounds, "img_per_s_runs": runs, "img_per_s_median": medians,
            "gain_vs_fp32": {name: round(m / medians["fp32"] - 1, 3) for name, m in medians.items()}}


def part_guidance(params, scales=(2.0, 3.0, 5.0, 7.5, 10.0)) -> dict:
    """The evaluate stage's numbers of the default model at several guidance scales (100 held-out
    characters x 2 samples each): where adherence, the controls, KID and sharpness go as guidance grows."""
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for scale in scales:
            variant = with_overrides(params, {"sample.guidance": scale, "evaluate.heldout_characters": 100})
            m = run_evaluate_on_data(variant, Path(tmp) / str(scale))
            rows[str(scale)] = {**_evaluate_row(m), "seed_sweep_hits": m["seed_sweep_hits"],
                                "sharpness_ratio": round(m["sharpness_ratio"], 4)}
            print(scale, rows[str(scale)], flush=True)
    return {"evaluate": "heldout 100 characters x 2 samples, the prompt grid, 16-seed sweep", "guidance": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="train,sampling,curve,stages", help="comma-separated parts (also: precision, loop, guidance)")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    args = parser.parse_args()
    params = load_params(args.params)
    for part in args.only.split(","):
        if part == "stages":
            subprocess.run([sys.executable, str(ROOT / "benchmarks" / "stage_times.py"), "--params", str(args.params)],
                           check=True)
            continue
        func = {"train": part_train, "sampling": part_sampling, "curve": part_curve,
                "precision": part_precision, "loop": part_loop, "guidance": part_guidance}.get(part)
        if func is None:
            parser.error(f"unknown part {part!r}")
        write_result(f"cpu_{part}", func(params))


if __name__ == "__main__":
    main()
