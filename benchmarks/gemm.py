"""One core's fp32 matmul rate through MKL (torch.mm) and through oneDNN (the same product as a 1×1 convolution),
with the CPU's full instruction set, with MKL told it may use AVX-512, and held to AVX2.

    python benchmarks/gemm.py [--rounds 3]    # writes benchmarks/results/gemm-<device>.json

Why (issue 41, docs/speed.md): in the train step's profile `aten::mm` (the linear layers) costs the same with the
CPU's full instruction set and under AVX2 emulation, while the convolutions (oneDNN) slow down. If MKL runs its AVX2
path on this CPU whatever it has, oneDNN does the same product faster here. Each setting runs in a fresh process
(MKL and oneDNN read their settings once), alternated `--rounds` times, one thread, on a (4096 × 128) @ (128 × 384)
product: the UNet's attention projections at batch 64 on an 8×8 map (the 1×1 convolution: 64 images × 128 channels
× 8×8, channels-last, to 384 channels).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from common import write_result

CHILD = r"""
import json, time, torch, torch.nn.functional as F
torch.set_num_threads(1)
a, b = torch.randn(4096, 128), torch.randn(128, 384)
x = torch.randn(64, 128, 8, 8).to(memory_format=torch.channels_last)
w = b.T.reshape(384, 128, 1, 1).contiguous(memory_format=torch.channels_last)
def rate(f, n=300):
    for _ in range(10):
        f()
    t = time.perf_counter()
    for _ in range(n):
        f()
    return round(2 * 4096 * 128 * 384 * n / (time.perf_counter() - t) / 1e9, 1)
print(json.dumps({"mkl_mm": rate(lambda: a @ b), "onednn_conv1x1": rate(lambda: F.conv2d(x, w)),
                  "capability": torch.backends.cpu.get_cpu_capability()}))
"""
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
SETTINGS = {"native": {}, "mkl_may_use_avx512": {"MKL_ENABLE_INSTRUCTIONS": "AVX512"}, "avx2": AVX2}


def run(setting: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in AVX2}
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env={**env, **SETTINGS[setting]},
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rates: dict[str, list[dict]] = {s: [] for s in SETTINGS}
    for _ in range(args.rounds):
        for setting in SETTINGS:
            rates[setting].append(run(setting))
            print(setting, rates[setting][-1], flush=True)
    cpuinfo = open("/proc/cpuinfo").read()
    family = next((x.split(":")[1].strip() for x in cpuinfo.splitlines() if x.startswith("cpu family")), None)
    write_result("gemm", {"shape": "(4096x128)@(128x384) fp32, 1 thread", "gflop_per_s": rates,
                          "cpu_family": family, "avx512f": "avx512f" in cpuinfo})


if __name__ == "__main__":
    main()
