"""`glyffuser compare`: study runs kept beside the code, and compared paired.

A study run is one evaluated model kept under benchmarks/results/runs/NAME/ with what a reader needs:
params.yaml, metrics.json (the evaluate stage's), train_metrics.json, evaluate_grid.png, and verdicts.parquet
(every sample's kind, prompt, target radical, seed and the judge's reading; no images, tens of kB). Two runs
evaluated on the same held-out definitions and sample seeds are paired: each (definition, seed) is one item that
is a hit or a miss in both, so their difference is measured far more tightly than the two adherences apart.

    glyffuser compare --save NAME               # this workspace's data/evaluate as run NAME
    glyffuser compare --save NAME --exp EXP     # the same from a `dvc exp run` (also --temp), read from the DVC cache
    glyffuser compare BASE RUN [RUN ...]        # each RUN against BASE: held-out adherence paired, overall and per
                                                # third of the radicals by training frequency; --out FILE.json
    glyffuser compare --second-judge data/second_judge BASE RUN ...   # also as the second judge reads them (a run
                                                # evaluated before that stage existed is read from its samples.parquet)
"""

from __future__ import annotations

import json
import shutil
import subprocess
from io import BytesIO
from pathlib import Path

import numpy as np

from glyffuser.command import run_command
from glyffuser.errors import GlyffuserError

RUNS = Path("benchmarks/results/runs")
IMAGE_COLUMNS = ("png", "base_png")
VERDICT_COLUMNS = ["kind", "target_codepoint", "seed", "target_radical", "predicted_radical"]
SECOND = "predicted_radical_second_judge"  # the evaluate stage's column when a second judge read the glyphs
# What each run's row shows beside the paired numbers (keys of the evaluate stage's metrics.json)
HEADLINE = ["adherence_heldout", "adherence_heldout_se", "adherence_heldout_commonest", "adherence_heldout_middle",
            "adherence_heldout_rarest", "adherence_train", "adherence_grid", "seed_sweep_hits", "kid", "fid",
            "realism_c2st", "stroke_fidelity", "paper_darkness", "control_shuffled", "novelty", "second_judge_heldout",
            "prior_heldout", "prior_heldout_rarest"]


def paired(a: np.ndarray, b: np.ndarray, boot: int = 2000, seed: int = 0) -> dict:
    """Paired difference b - a of two 0/1 vectors on the same items: means, difference, its standard error, a
    bootstrap 95 % interval, and how many items only a (only b) got right."""
    import torch

    d = b.astype(float) - a.astype(float)
    n = len(d)
    idx = torch.randint(0, n, (boot, n), generator=torch.Generator().manual_seed(seed)).numpy()
    means = np.sort(d[idx].mean(axis=1))
    return {"n": n, "a": round(float(a.mean()), 4), "b": round(float(b.mean()), 4),
            "difference": round(float(d.mean()), 4), "se": round(float(d.std(ddof=1) / n**0.5), 4),
            "ci95": [round(float(means[int(0.025 * boot)]), 4), round(float(means[int(0.975 * boot) - 1]), 4)],
            "only_a": int(((a == 1) & (b == 0)).sum()), "only_b": int(((a == 0) & (b == 1)).sum())}


def write_verdicts(samples: Path, out: Path) -> None:
    """samples.parquet (the evaluate stage's, with images) -> verdicts.parquet: every column but the images."""
    import pyarrow.parquet as pq

    table = pq.read_table(samples)
    pq.write_table(table.drop_columns([c for c in IMAGE_COLUMNS if c in table.column_names]), out)


def read_verdicts(run: Path, second_judge: Path | None = None):
    """A run's held-out samples (DataFrame: target_codepoint, seed, target_radical, predicted_radical, hit; with
    `second_judge`, hit_second too: the evaluate stage's reading, or that judge's reading of the run's kept images)."""
    import pandas as pd
    import pyarrow.parquet as pq

    path = next((run / f for f in ("verdicts.parquet", "samples.parquet") if (run / f).is_file()), None)
    if path is None:
        raise GlyffuserError(f"{run} holds no verdicts.parquet (save a run with: glyffuser compare --save NAME)")
    has_second = SECOND in pq.read_schema(path).names
    t = pd.read_parquet(path, columns=VERDICT_COLUMNS + [SECOND] * has_second)
    t = t[t.kind == "heldout"]
    t = t.assign(hit=(t.target_radical == t.predicted_radical).astype(int))
    if second_judge is None:
        return t
    if not has_second:
        from glyffuser.analysis.judge import load_classifier, predict

        t = t.assign(**{SECOND: predict(load_classifier(second_judge)[0], sample_images(run / "samples.parquet"))[0]})
    return t.assign(hit_second=(t.target_radical == t[SECOND]).astype(int))


def sample_images(samples: Path, kind: str = "heldout"):
    """The images of one kind of sample in an evaluate stage's samples.parquet, (N,1,R,R) in [-1, 1]."""
    import pandas as pd
    from PIL import Image

    from glyffuser.artifacts.images import pngs_to_tensor

    if not samples.is_file():
        raise GlyffuserError(f"{samples} is not here: a study run keeps its verdicts in git, not its images; draw them "
                             "again with `dvc exp run` on the run's params.yaml and save it with --save --exp")
    rows = pd.read_parquet(samples, columns=["kind", "png"])
    pngs = list(rows.png[rows.kind == kind])
    if not pngs:
        raise GlyffuserError(f"{samples} holds no {kind!r} samples")
    return pngs_to_tensor(pngs, Image.open(BytesIO(pngs[0])).size[0])


def _keep(out: Path, files: dict[str, bytes | Path]) -> Path:
    """Write a run folder whole: into a sibling temporary folder first, then moved into place."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, content in files.items():
        if isinstance(content, Path):
            shutil.copy2(content, tmp / name)
        else:
            (tmp / name).write_bytes(content)
    write_verdicts(tmp / "samples.parquet", tmp / "verdicts.parquet")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def save_run(name: str, runs: Path = RUNS, evaluate: Path = Path("data/evaluate"),
             train_metrics: Path = Path("data/train/metrics.json"), params: Path = Path("params.yaml")) -> Path:
    """This workspace's evaluated run (the evaluate stage's folder, the train stage's metrics, params.yaml) as
    runs/NAME/. samples.parquet is kept too, on this machine (git ignores it); verdicts.parquet is what git keeps."""
    files = {"metrics.json": evaluate / "metrics.json", "samples.parquet": evaluate / "samples.parquet",
             "evaluate_grid.png": evaluate / "grid.png", "train_metrics.json": train_metrics, "params.yaml": params}
    if missing := [str(p) for p in files.values() if not p.is_file()]:
        raise GlyffuserError(f"nothing to save: {missing[0]} is missing (run dvc repro first)")
    return _keep(runs / name, files)


def save_exp(name: str, exp: str, runs: Path = RUNS, root: Path = Path(".")) -> Path:
    """Like save_run, from the `dvc exp run` named `exp`: the files its commit's dvc.lock records, read from the
    DVC cache (an output with `cache: false` from the experiment's commit itself)."""
    import yaml

    def git(*args: str) -> bytes:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True)
        if result.returncode:
            raise GlyffuserError(f"git {' '.join(args)}: {result.stderr.decode(errors='replace').strip()}")
        return result.stdout

    refs = git("for-each-ref", "refs/exps", "--format=%(refname)").decode().split()
    ref = next((r for r in refs if r.rsplit("/", 1)[-1] == exp), None)
    if ref is None:
        raise GlyffuserError(f"no experiment named {exp!r} (see: dvc exp list)")
    lock = yaml.safe_load(git("show", f"{ref}:dvc.lock"))["stages"]
    md5 = {o["path"]: o["md5"] for stage in ("evaluate", "train") for o in lock[stage]["outs"]}
    files: dict[str, bytes | Path] = {"params.yaml": git("show", f"{ref}:params.yaml")}
    for src, dst in (("data/evaluate/metrics.json", "metrics.json"), ("data/evaluate/samples.parquet", "samples.parquet"),
                     ("data/evaluate/grid.png", "evaluate_grid.png"), ("data/train/metrics.json", "train_metrics.json")):
        cached = root / ".dvc" / "cache" / "files" / "md5" / md5[src][:2] / md5[src][2:]
        files[dst] = cached if cached.is_file() else git("show", f"{ref}:{src}")
    return _keep(runs / name, files)


def train_radicals(definitions: Path) -> np.ndarray:
    """The radical of every training-split character of a definitions table."""
    import pyarrow.parquet as pq

    defs = pq.read_table(definitions, columns=["radical", "split"]).to_pandas()
    return defs.radical[defs.split == "train"].to_numpy(dtype=np.int64)


def thirds_of(codepoints: np.ndarray, radicals: np.ndarray, train: np.ndarray) -> np.ndarray:
    """The third (0 commonest .. 2 rarest) of each held-out character by its radical's training glyphs (`train`: the
    training split's radicals), cut over the distinct characters in codepoint order exactly as the evaluate stage cuts
    them (its adherence_heldout_<third>)."""
    from glyffuser.analysis.metrics import frequency_thirds

    chars, first = np.unique(codepoints, return_index=True)
    third = frequency_thirds(radicals[first].astype(np.int64), train)
    return third[np.searchsorted(chars, codepoints)]


def compare(names: list[str], runs: Path = RUNS, definitions: Path | None = Path("data/render/definitions.parquet"),
            second_judge: Path | None = None) -> dict:
    """Each run against the first (the baseline) on their shared held-out items, overall and per third (when the
    definitions table is here), beside each run's headline numbers; with `second_judge`, the same pairs as that judge
    reads them (`..._second_judge`)."""
    from glyffuser.analysis.metrics import THIRDS

    if len(names) < 2:
        raise GlyffuserError("compare needs a baseline and at least one other run")
    if missing := [n for n in names if not (runs / n / "metrics.json").is_file()]:
        raise GlyffuserError(f"no run {missing[0]!r} under {runs} (known: {', '.join(sorted(p.name for p in runs.iterdir() if p.is_dir())) if runs.is_dir() else 'none'})")
    base = names[0]
    tables = {n: read_verdicts(runs / n, second_judge) for n in names}
    with_thirds = definitions is not None and definitions.is_file()
    train = train_radicals(definitions) if with_thirds else None
    out: dict = {"baseline": base, "per_third": with_thirds, "runs": {}}
    for n in names:
        metrics = json.loads((runs / n / "metrics.json").read_text())
        row: dict = {k: metrics.get(k) for k in HEADLINE}
        if n != base:
            merged = tables[base].merge(tables[n], on=["target_codepoint", "seed"], suffixes=("_a", "_b"))
            if merged.empty:
                raise GlyffuserError(f"{base} and {n} share no held-out sample (other definitions or seeds)")
            third = (thirds_of(merged.target_codepoint.to_numpy(), merged.target_radical_a.to_numpy(), train)
                     if with_thirds else None)
            for suffix, a, b in (("", "hit_a", "hit_b"), ("_second_judge", "hit_second_a", "hit_second_b")):
                if a not in merged:
                    continue
                row[f"paired_heldout{suffix}"] = paired(merged[a].to_numpy(), merged[b].to_numpy())
                for i, name in enumerate(THIRDS if with_thirds else ()):
                    sel = third == i
                    row[f"paired_heldout_{name}{suffix}"] = paired(merged[a].to_numpy()[sel], merged[b].to_numpy()[sel])
        out["runs"][n] = row
    return out


def add_arguments(p) -> None:
    p.add_argument("runs", nargs="*", help="saved run names under --runs-dir; the first is the baseline")
    p.add_argument("--runs-dir", type=Path, default=RUNS, help="where study runs live (default: %(default)s)")
    p.add_argument("--save", metavar="NAME", help="save this workspace's evaluated run (or --exp's) as NAME")
    p.add_argument("--exp", metavar="EXP", help="with --save: the `dvc exp run` named EXP instead of the workspace")
    p.add_argument("--definitions", type=Path, default=Path("data/render/definitions.parquet"),
                   help="the definitions table whose train split sorts the radicals into thirds (default: %(default)s)")
    p.add_argument("--out", type=Path, help="also write the comparison to this JSON file")
    p.add_argument("--second-judge", type=Path, metavar="FOLDER",
                   help="also pair the runs as this judge reads them (the second_judge stage's folder, data/second_judge)")


def command(args) -> dict | None:
    if args.exp and not args.save:
        raise GlyffuserError("--exp names the experiment to save: give --save NAME too")
    result: dict = {}
    if args.save:
        saved = save_exp(args.save, args.exp, args.runs_dir) if args.exp else save_run(args.save, args.runs_dir, params=args.params)
        result["saved"] = str(saved)
    if args.runs:
        result.update(compare(args.runs, args.runs_dir, args.definitions, args.second_judge))
        if args.out:
            args.out.write_text(json.dumps(result, indent=2) + "\n")
    elif not args.save:
        raise GlyffuserError("name the runs to compare (the baseline first), or --save NAME")
    return result


def main(argv: list[str] | None = None) -> int:
    return run_command("compare", "study runs: save an evaluated run, compare runs paired on the same held-out "
                       "definitions and seeds", add_arguments, command, argv)
