"""Did a code change leave the pipeline's outputs alone? Compare every stage output DVC recorded in two
dvc.lock files: the md5 DVC stored, and for a JSON output whose md5 differs, its content with the timing
fields left out (minutes, img/s: they differ on every run).

    python benchmarks/compare_outputs.py --before REV --after dvc.lock --out benchmarks/results/NAME.json

`--before`/`--after` each name a git revision (its dvc.lock and git-tracked JSON outputs are read with
`git show`) or `dvc.lock` (the workspace's). A folder output that differs is compared file by file
against `--before-root` (a checkout holding the before run's outputs), JSON files without timing fields. The train stage's weights are compared by
`benchmarks/same_weights.py` instead when the stage was recorded with `dvc commit` rather than re-run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# Fields that measure the run, not the result; ignored when a JSON output is compared by content.
TIMING = {"minutes", "train_minutes", "sampling_minutes", "wall_time_min", "img_per_s", "seconds"}


def _read(source: str, path: str) -> str | None:
    if source == "dvc.lock":
        file = ROOT / path
        return file.read_text(encoding="utf-8") if file.is_file() else None
    result = subprocess.run(["git", "show", f"{source}:{path}"], cwd=ROOT, capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else None


def _outs(source: str) -> dict[str, dict[str, str]]:
    lock = yaml.safe_load(_read(source, "dvc.lock") or "{}")
    return {stage: {o["path"]: o.get("md5", "") for o in entry.get("outs", [])}
            for stage, entry in lock.get("stages", {}).items()}


def _without_timing(node):
    if isinstance(node, dict):
        return {k: _without_timing(v) for k, v in node.items() if k not in TIMING}
    if isinstance(node, list):
        return [_without_timing(v) for v in node]
    return node


def _same_folder(before: Path, after: Path) -> bool:
    files = sorted(p.relative_to(after) for p in after.rglob("*") if p.is_file())
    if files != sorted(p.relative_to(before) for p in before.rglob("*") if p.is_file()):
        return False
    for rel in files:
        a, b = (before / rel).read_bytes(), (after / rel).read_bytes()
        if a != b and not (rel.suffix == ".json" and _without_timing(json.loads(a)) == _without_timing(json.loads(b))):
            return False
    return True


def compare(before: str, after: str, before_root: Path | None = None) -> dict:
    old, new = _outs(before), _outs(after)
    stages: dict[str, dict] = {}
    for stage, outs in new.items():
        for path, md5 in outs.items():
            entry = {"before": old.get(stage, {}).get(path), "after": md5}
            entry["identical"] = entry["before"] == md5
            if not entry["identical"] and path.endswith(".json"):
                a, b = _read(before, path), _read(after, path)
                if a is not None and b is not None:
                    entry["identical_without_timing"] = _without_timing(json.loads(a)) == _without_timing(json.loads(b))
            elif not entry["identical"] and before_root is not None and (ROOT / path).is_dir():
                entry["identical_without_timing"] = _same_folder(before_root / path, ROOT / path)
            stages.setdefault(stage, {})[path] = entry
    return stages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="git revision, or dvc.lock for the workspace")
    parser.add_argument("--after", default="dvc.lock", help="git revision, or dvc.lock for the workspace")
    parser.add_argument("--before-root", type=Path, help="a checkout holding the before run's outputs (folders)")
    parser.add_argument("--out", type=Path, help="write the comparison as JSON here")
    parser.add_argument("--note", action="append", default=[], help="a line for the record (device, commands)")
    args = parser.parse_args()
    stages = compare(args.before, args.after, args.before_root)
    differ = [f"{s}: {p}" for s, outs in stages.items() for p, e in outs.items()
              if not e["identical"] and not e.get("identical_without_timing")]
    for line in differ:
        print(f"differs: {line}")
    record = {"before": args.before, "after": args.after, "notes": args.note, "timing_keys_ignored": sorted(TIMING),
              "stages": stages, "all_identical": not differ}
    if args.out:
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{sum(len(o) for o in stages.values())} outputs, {len(differ)} differ")
    return 0 if not differ else 1


if __name__ == "__main__":
    sys.exit(main())
