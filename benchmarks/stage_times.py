"""Wall time of the data stages (sources, render, embed) on the full default dataset.

    python benchmarks/stage_times.py [--params params.yaml]

Runs each stage through the same CLI that DVC calls, into a temporary folder (the pipeline's own
data/ is not touched), and writes benchmarks/results/stage_times-<host>.json with device and date.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, write_result  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    args = parser.parse_args()
    results = {"params": str(args.params), "stages": {}}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        commands = {
            "sources": ["sources", "--out", d / "sources"],
            "render": ["render", "--sources", d / "sources", "--out", d / "render"],
            "embed": ["embed", "--definitions", d / "render" / "definitions.parquet", "--out", d / "embed.parquet"],
        }
        for stage, cmd in commands.items():
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "glyffuser.cli", cmd[0], "--params", str(args.params),
                                  *map(str, cmd[1:])], capture_output=True, text=True, check=True).stdout
            seconds = time.perf_counter() - start
            summary = json.loads(out)
            results["stages"][stage] = {"wall_s": round(seconds, 1)}
            if stage == "render":
                results["stages"][stage]["glyphs"] = summary["glyphs"]
            if stage == "embed":
                results["stages"][stage].update(texts=summary["texts"], encoder=summary["encoder"])
            print(f"{stage}: {seconds:.1f} s", flush=True)
    write_result("stage_times", results)


if __name__ == "__main__":
    main()
