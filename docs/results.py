"""The headline results in README.md and docs/results.md, written from the reports in data/ (never typed by hand).

    python docs/results.py           # rewrite the marked blocks from data/ (after `dvc repro`)
    python docs/results.py --check   # exit 1 when a block no longer matches data/ (the tests run this)

Each block sits between `<!-- results:NAME -->` and `<!-- /results:NAME -->`; everything outside the markers is
prose and left alone. Reads data/evaluate/metrics.json, data/train/metrics.json, data/classifier/report.json and
data/umap/report.json, all kept in git (DVC metrics, `cache: false`), so a fresh clone can check them.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from glyffuser.reports import ClassifierReport, EvaluateMetrics, TrainMetrics, UmapReport, read_report

ROOT = Path(__file__).resolve().parent.parent
THIRDS = ("commonest", "middle", "rarest")


def load(root: Path = ROOT) -> dict:
    data = root / "data"
    return {"evaluate": read_report(EvaluateMetrics, data / "evaluate" / "metrics.json"),
            "train": read_report(TrainMetrics, data / "train" / "metrics.json"),
            "classifier": read_report(ClassifierReport, data / "classifier" / "report.json"),
            "umap": read_report(UmapReport, data / "umap" / "report.json"),
            "second_judge": read_report(ClassifierReport, data / "second_judge" / "report.json")}


def pct(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f} %"


def headline(r: dict) -> str:
    """The README's table: what the default model does, in one screen."""
    ev, tr = r["evaluate"], r["train"]
    per_prompt = ev.adherence_grid_per_prompt
    rows = [
        ("held-out adherence: the judge reads the definition's radical, all "
         f"{ev.heldout_characters:,} test definitions",
         f"**{pct(ev.adherence_heldout)} ± {pct(ev.adherence_heldout_se)}** (chance {pct(ev.chance)}, "
         f"text-only probe {pct(ev.text_probe_accuracy)})"),
    ]
    if ev.adherence_heldout_rarest is not None:
        rows.append(("… per third by the radical's training glyphs: commonest / middle / rarest",
                     " / ".join(pct(getattr(ev, f"adherence_heldout_{t}")) for t in THIRDS)))
    if ev.second_judge_heldout is not None:
        rows.append(("… the same glyphs read by the second judge (another architecture and seed) / per third",
                     f"{pct(ev.second_judge_heldout)} ± {pct(ev.second_judge_heldout_se)} / "
                     + " / ".join(pct(getattr(ev, f"second_judge_heldout_{t}")) for t in THIRDS)))
    if ev.prior_heldout is not None:
        rows.append(("the radical guessed from the definition and encoded before it (`embed.radical_prior`) is right",
                     f"{pct(ev.prior_heldout)} (per third {' / '.join(pct(getattr(ev, f'prior_heldout_{t}')) for t in THIRDS)})"))
    if ev.adherence_train is not None:
        rows.append(("adherence on training definitions, encoded as in training (with `embed.prior_true_share` 1 after "
                     "their true radical: how well it draws what it is told, not generalisation)",
                     f"{pct(ev.adherence_train)} ± {pct(ev.adherence_train_se)}"))
    rows += [
        (f"prompt grid: {len(per_prompt)} prompts × seeds",
         f"{pct(ev.adherence_grid)} (lowest: “{min(per_prompt, key=per_prompt.get)}” "
         f"{pct(min(per_prompt.values()), 0)})"),
        (f"“{ev.seed_sweep_prompt}” over {ev.seed_sweep_seeds} seeds",
         f"{ev.seed_sweep_hits} / {ev.seed_sweep_seeds} with its radical"),
        ("controls: empty prompt / shuffled definitions (should sit at chance)",
         f"{pct(ev.control_empty_prompt)} / {pct(ev.control_shuffled)}"),
        (f"KID · FID on the judge's features, {ev.resolution} px (real-vs-real floor)",
         f"{ev.kid:.3f} · {ev.fid:.1f} ({ev.kid_real_floor:.3f} · {ev.fid_real_floor:.1f})"),
        *([("realism: a small CNN tells samples from real glyphs by their strokes (50 % = indistinguishable)",
             f"{pct(ev.realism_c2st)} ± {pct(ev.realism_c2st_se)}")] if ev.realism_c2st is not None else []),
        ("novelty: samples farther from every training glyph than a near-copy", pct(ev.novelty, 0)),
        ("the judge (radical classifier) on real test glyphs", pct(r["classifier"].test_accuracy)),
        ("training", f"{tr.epochs:g} epochs, {tr.steps:,} steps, {tr.wall_time_min:.1f} min at "
                     f"{tr.img_per_s:.0f} img/s, {tr.parameters / 1e6:.2f} M parameters"),
    ]
    return "| measure | this commit's `data/` |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)


def long_tail(r: dict) -> str:
    """docs/results.md: adherence per frequency third, on held-out and training definitions, and the text probe."""
    ev = r["evaluate"]
    if ev.heldout_thirds is None:
        return "*(this `data/` predates the per-third diagnostics: re-run `dvc repro evaluate`)*"
    rows = []
    for t in THIRDS:
        h = ev.heldout_thirds[t]
        rows.append(f"| {t} | {h.definitions} | {h.radicals} | {h.train_glyphs_min}–{h.train_glyphs_max} | "
                    f"{pct(getattr(ev, f'adherence_heldout_{t}'))} ± {pct(getattr(ev, f'adherence_heldout_{t}_se'))} | "
                    f"{pct(getattr(ev, f'adherence_train_{t}'))} | {pct(getattr(ev, f'text_probe_{t}'))} | "
                    f"{pct(getattr(ev, f'judge_real_{t}'))} | {pct(getattr(ev, f'second_judge_heldout_{t}'))} | "
                    f"{pct(getattr(ev, f'prior_heldout_{t}'))} |")
    records = ev.adherence_per_radical
    never = [x for x in records if x.hits == 0]
    drawn = sorted((x for x in records if x.samples >= 5), key=lambda x: -x.adherence)[:8]
    table = ("| third of the held-out definitions | definitions | radicals | training glyphs per radical | "
             "held-out adherence | training definitions | text probe | judge on real glyphs | second judge | "
             "radical guessed from the text |\n|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows))
    best = ", ".join(f"{x.glyph} {pct(x.adherence, 0)} of {x.samples}" for x in drawn)
    rare = ", ".join(f"{x.glyph} ({x.train_glyphs})" for x in never[:24])
    return (f"{table}\n\nOf the {len(records)} radicals the held-out definitions ask for, {len(never)} were never "
            f"drawn. Best read (5 or more definitions): {best}. Never drawn (training glyphs): {rare}"
            f"{' …' if len(never) > 24 else ''}. Every radical's record: `adherence_per_radical` in "
            "`data/evaluate/metrics.json`.")


def minutes(r: dict) -> str:
    ev, tr = r["evaluate"], r["train"]
    rows = [("train", tr.wall_time_min), ("classifier (the judge)", r["classifier"].train_minutes),
            ("second judge", r["second_judge"].train_minutes),
            ("draw (the evaluation's samples)", ev.sampling_minutes),
            ("evaluate (scoring them)", ev.minutes - ev.sampling_minutes), ("umap", r["umap"].minutes)]
    return "| stage | minutes, as recorded by the stage |\n|---|---|\n" + "\n".join(f"| {a} | {b:.1f} |" for a, b in rows)


BLOCKS = {"README.md": {"headline": headline},
          "docs/results.md": {"headline": headline, "long-tail": long_tail, "minutes": minutes}}


def rewrite(text: str, blocks: dict, r: dict) -> str:
    for name, make in blocks.items():
        pattern = re.compile(rf"(<!-- results:{name} -->\n).*?(<!-- /results:{name} -->)", re.DOTALL)
        if not pattern.search(text):
            raise SystemExit(f"results: no <!-- results:{name} --> block to fill")
        block = make(r)
        text = pattern.sub(lambda m, block=block: m.group(1) + block + "\n" + m.group(2), text)
    return text


def main(argv: list[str] | None = None, root: Path = ROOT) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if a block is stale instead of rewriting it")
    args = p.parse_args(argv)
    r = load(root)
    stale = []
    for name, blocks in BLOCKS.items():
        path = root / name
        old = path.read_text(encoding="utf-8")
        new = rewrite(old, blocks, r)
        if new != old:
            stale.append(name)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    if args.check and stale:
        print(f"results: {', '.join(stale)} no longer match data/: run `python docs/results.py`", file=sys.stderr)
        return 1
    print(f"results: {'rewrote ' + ', '.join(stale) if stale else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
