"""Where the time goes on CPUs without AVX-512 or AMX: the train stage's own step and the later stages, run with this
CPU's full instruction set and under AVX2 emulation, alternated back to back on one machine.

    python benchmarks/isa.py --part step              # the train step's img/s (eager, compiled), its operator profile
                                                      # and its FLOPs per image (forward + backward)
    python benchmarks/isa.py --part stages            # wall minutes of the stages after training, as DVC runs them
    python benchmarks/isa.py --part step --isa avx2 -S train.batch_size=128   # a variant, AVX2 only

AVX2 emulation (issue 41): PyTorch's own kernels (ATEN_CPU_CAPABILITY=avx2), oneDNN's convolutions and matmuls
(ONEDNN_MAX_CPU_ISA=AVX2), MKL's BLAS (MKL_ENABLE_INSTRUCTIONS=AVX2) and inductor's generated C++ (it reads
ATEN_CPU_CAPABILITY) are all held to AVX2 + FMA, what most laptops and pre-Zen-4 AMD machines have; each run checks
that torch reports the capability and that oneDNN's verbose log names the ISA it dispatched to. Every variant runs
in a fresh process (the settings are read once, at import), each ISA in turn, `--rounds` times.

The step part times the train stage's TrainStep on batches drawn by its own TrainBatches from the real data
(data/render, data/embed: run `dvc repro embed` first), the stages part runs each stage's `glyffuser` command on the
pipeline's real inputs into a temporary folder (data/ is not touched). Results: benchmarks/results/isa_<part>-cpu<N>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, write_result  # noqa: E402

DATA = ROOT / "data"
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
ISAS = {"native": {}, "avx2": AVX2}


def isa_env(isa: str) -> dict:
    """The child's environment. Each ISA gets its own inductor cache: torch 2.13 reuses kernels compiled for AVX-512
    under ATEN_CPU_CAPABILITY=avx2 (its cache key misses the setting), which crashed the emulated run (SIGSEGV)."""
    env = {k: v for k, v in os.environ.items() if k not in AVX2}
    tmp = Path(tempfile.gettempdir())
    return {**env, **ISAS[isa], "HF_HUB_OFFLINE": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/glyffuser-isa-mlflow.db",
            "TORCHINDUCTOR_CACHE_DIR": str(tmp / f"glyffuser-isa-inductor-{isa}")}


def onednn_isa() -> str:
    """The ISA oneDNN dispatches to in this process, from one verbose line of a small convolution."""
    code = ("import torch; cl = torch.channels_last\n"
            "torch.nn.functional.conv2d(torch.randn(8, 32, 16, 16).to(memory_format=cl),\n"
            "                           torch.randn(32, 32, 3, 3).to(memory_format=cl), padding=1)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "ONEDNN_VERBOSE": "1"}).stdout
    isa = next((x.split("isa:", 1)[1].split(",")[0].strip() for x in out.splitlines() if "isa:" in x), "unknown")
    kernel = next((x.split("convolution,", 1)[1].split(",")[0] for x in out.splitlines() if ",convolution," in x), "")
    return f"{isa} ({kernel})"


# --- one variant, in its own process ----------------------------------------------------------------------------

def child_step(overrides: dict, compile: bool, warmup: int, steps: int, profile_steps: int) -> dict:
    """img/s of the train stage's step, on batches its TrainBatches draws from the real data."""
    import math

    from accelerate import Accelerator

    from glyffuser.diffusion.training import TrainBatches, build_training, load_training_data, precision
    from glyffuser.params import load_params, with_overrides

    params = with_overrides(load_params(ROOT / "params.yaml"), {**overrides, "train.compile": compile})
    p = params.train
    accelerator = Accelerator(mixed_precision=precision(p.mixed_precision), cpu=True)
    t0 = time.perf_counter()
    data = load_training_data(DATA / "render" / "definitions.parquet", DATA / "render" / "glyphs.parquet",
                              DATA / "embed" / "embeddings.parquet", p.resolution)
    load_s = time.perf_counter() - t0
    per_epoch = math.ceil(len(data.train) / p.batch_size)
    trainer = build_training(p, 0, int(data.embedding_meta["dim"]), accelerator, max(per_epoch * 15, 2))
    batches = TrainBatches(data, p, 0, 0, 1, per_epoch, trainer.noise_sched.config.num_train_timesteps,
                           trainer.speed, accelerator.device)
    trainer.unet.train()
    t0 = time.perf_counter()
    trainer(*batches.draw(0), 0)
    first_s = time.perf_counter() - t0
    for i in range(1, warmup):
        trainer(*batches.draw(i), i)
    times = []
    for i in range(warmup, warmup + steps):
        t0 = time.perf_counter()
        trainer(*batches.draw(i), i)
        times.append(time.perf_counter() - t0)
    out = {"batch": p.batch_size, "compile": compile, "first_step_s": round(first_s, 2), "load_s": round(load_s, 1),
           "img_per_s": round(p.batch_size / statistics.median(times), 1),
           "img_per_s_mean": round(p.batch_size * len(times) / sum(times), 1)}
    if not compile:  # the work per image: forward + backward FLOPs of one step
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            trainer(*batches.draw(warmup + steps), warmup + steps)
        out["gflop_per_image"] = round(counter.get_total_flops() / p.batch_size / 1e9, 3)
        out["gflop_per_s"] = round(out["gflop_per_image"] * out["img_per_s"], 1)
    if profile_steps:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for i in range(warmup + steps, warmup + steps + profile_steps):
                trainer(*batches.draw(i), i)
        rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in rows)
        out["profile_top"] = [{"op": e.key, "self_ms_per_step": round(e.self_cpu_time_total / 1000 / profile_steps, 2),
                               "share": round(e.self_cpu_time_total / total, 3), "calls_per_step": e.count // profile_steps}
                              for e in rows[:25]]
        out["profile_ms_per_step"] = round(total / 1000 / profile_steps, 1)
    return out


STAGES = {  # stage -> its glyffuser command on the pipeline's real inputs, writing under OUT
    "render": ["render", "--out", "{out}/render"],
    "embed": ["embed", "--out", "{out}/embeddings.parquet"],
    "classifier": ["classifier", "--out", "{out}/classifier"],
    "upsampler": ["upsampler", "--out", "{out}/upsampler"],
    "draw": ["draw", "--upsampler", "data/upsampler", "--out", "{out}/draws.parquet"],
    "evaluate": ["evaluate", "--no-mlflow", "--out", "{out}/evaluate"],
    "umap": ["umap", "--no-mlflow", "--samples", "data/evaluate/samples.parquet", "--out", "{out}/umap"],
    "figures": ["figures", "--no-mlflow", "--umap", "data/umap/points.parquet", "--out", "{out}/figures"],
    "guide": ["guide", "--no-mlflow", "--out", "{out}/index.html"],
}


def child_stage(stage: str, params: Path) -> dict:
    with tempfile.TemporaryDirectory() as out:
        args = [a.format(out=out) for a in STAGES[stage]]
        t0 = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "glyffuser.cli", args[0], "--params", str(params), *args[1:]],
                                cwd=ROOT, capture_output=True, text=True, env=os.environ)
        minutes = (time.perf_counter() - t0) / 60
    if result.returncode != 0:
        raise SystemExit(f"{stage} failed:\n{result.stderr[-2000:]}")
    return {"stage": stage, "minutes": round(minutes, 2)}


def child(args) -> None:
    import torch

    info = {"isa": args.isa, "torch_capability": torch.backends.cpu.get_cpu_capability(), "onednn_isa": onednn_isa(),
            "threads": torch.get_num_threads()}
    expected = {"native": None, "avx2": "AVX2"}[args.isa]
    if expected and info["torch_capability"] != expected:
        raise SystemExit(f"the emulation did not take: torch reports {info['torch_capability']}")
    overrides = dict(o.split("=", 1) for o in args.S)
    overrides = {k: json.loads(v) for k, v in overrides.items()}
    if args.child == "step":
        info.update(child_step(overrides, args.compile, args.warmup, args.steps, args.profile_steps))
    else:
        params = ROOT / "params.yaml"
        if overrides:
            from glyffuser.params import load_params, with_overrides

            tmp = Path(tempfile.mkdtemp()) / "params.yaml"
            import yaml

            tmp.write_text(yaml.safe_dump(with_overrides(load_params(params), overrides).model_dump()))
            params = tmp
        info.update(child_stage(args.child, params))
    print("RESULT " + json.dumps(info), flush=True)


# --- the parent: variants alternated, each in a fresh process ---------------------------------------------------

def run_child(isa: str, *args: str) -> dict:
    result = subprocess.run([sys.executable, __file__, "--isa", isa, *args], capture_output=True, text=True,
                            env=isa_env(isa), cwd=ROOT)
    line = next((x for x in result.stdout.splitlines() if x.startswith("RESULT ")), None)
    if result.returncode != 0 or line is None:
        raise SystemExit(f"{isa} {' '.join(args)} failed:\n{result.stdout[-1500:]}\n{result.stderr[-3000:]}")
    out = json.loads(line[len("RESULT "):])
    print(json.dumps({k: v for k, v in out.items() if k != "profile_top"}), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["step", "stages"])
    parser.add_argument("--isa", default="native,avx2", help="comma-separated: native, avx2")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--compile", default="false,true", help="step part: eager and/or compiled (comma-separated)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--profile-steps", type=int, default=5)
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("-S", action="append", default=[], help="a params override key=JSON, e.g. train.batch_size=128")
    parser.add_argument("--tag", default="", help="suffix of the results file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.compile = args.compile == "true"
        return child(args)
    isas = args.isa.split(",")
    overrides = [a for o in args.S for a in ("-S", o)]
    runs = []
    for r in range(args.rounds):
        for isa in isas:
            if args.part == "step":
                for compiled in args.compile.split(","):
                    more = ["--profile-steps", str(args.profile_steps if r == 0 else 0)]
                    runs.append(run_child(isa, "--child", "step", "--compile", compiled, "--warmup", str(args.warmup),
                                          "--steps", str(args.steps), *more, *overrides))
            else:
                for stage in args.stages.split(","):
                    runs.append(run_child(isa, "--child", stage, *overrides))
    write_result(f"isa_{args.part}{'_' + args.tag if args.tag else ''}", {"overrides": args.S, "runs": runs})


if __name__ == "__main__":
    main()
