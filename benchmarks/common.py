"""Shared by the benchmark scripts: what machine this is, and where results go."""

from __future__ import annotations

import datetime
import json
import os
import platform
import socket
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from NVIDIA's data sheets.
BF16_PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.4, "H200": 989.4, "A100": 312.0,
                    "L40S": 362.0, "RTX 4090": 165.2}


def bf16_peak(name: str) -> float | None:
    for key in sorted(BF16_PEAK_TFLOPS, key=len, reverse=True):  # "H100 PCIe" before "H100"
        if key in name:
            return BF16_PEAK_TFLOPS[key]
    return None


def device_description() -> dict:
    return {
        "host": socket.gethostname(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def device_kind() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0).replace("NVIDIA ", "").replace(" ", "-").lower()
    return f"cpu{os.cpu_count()}"


def write_result(name: str, results: dict, out_dir: Path = RESULTS) -> Path:
    """benchmarks/results/<name>-<device>.json with date, device and the command that made it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"date": datetime.date.today().isoformat(), "device": device_description(),
               "command": " ".join(["python", *sys.argv]), **results}
    path = out_dir / f"{name}-{device_kind()}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")
    return path
