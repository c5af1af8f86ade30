"""Stage `guide`: the visual guide to diffusion models as one HTML page, illustrated by this run.

Reads the figures stage's images and numbers, the umap, evaluate, train, render and classifier
reports and the model's config, and writes data/guide/index.html: twelve sections, eleven in the order of the
article (data, points in a space, forward process, score, what the network learns, sampling,
conditioning, one prompt's trajectory, guidance, how good it is, the cascade to 128 px), then learning from
feedback (the align stage's report and curve). The prose lives in a
Jinja template (glyffuser/templates/guide.html, autoescaped); this module reads the reports, derives the numbers
and tables the template prints, and inlines every image as a data URI, so the page is one file that opens from the
file system, offline, and in MLflow's artifact view.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined, UndefinedError
from markupsafe import Markup

from glyffuser.artifacts.atomic import atomic_outputs, check_output
from glyffuser.command import inputs, no_mlflow, run_command
from glyffuser.errors import GlyffuserError
from glyffuser.params import Params
from glyffuser.reports import (
    AlignReport,
    ClassifierReport,
    EvaluateMetrics,
    FiguresReport,
    RenderReport,
    TrainMetrics,
    UmapReport,
    UpsamplerReport,
    read_align_curve,
    read_report,
)

MIME = {".png": "image/png", ".gif": "image/gif"}
TEMPLATES = ("guide.html",)  # glyffuser/templates/: the page's prose (a dep of this stage, see glyffuser/deps.py)


@dataclass(frozen=True)
class GuidePaths:
    figures: Path
    umap: Path
    evaluate: Path
    train_metrics: Path
    render_report: Path
    classifier_report: Path
    model: Path
    out: Path  # the page: data/guide/index.html
    upsampler: Path | None = None  # the upsampler stage's folder (its report.json); None: a run without the cascade
    align: Path | None = None  # the align stage's folder (report.json, curve.csv); None: a run without that stage



def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GlyffuserError(f"{path} is missing: run the stage that writes it first (dvc repro)") from None
    except ValueError as err:
        raise GlyffuserError(f"{path} is not JSON ({err}): re-run the stage that writes it") from None


def _inline_bytes(path: Path) -> bytes:
    """The file's bytes; a PNG as a 256-colour palette PNG, which halves the page (figures have few colours)."""
    data = path.read_bytes()
    if path.suffix != ".png":
        return data
    from PIL import Image

    buf = io.BytesIO()
    image = Image.open(io.BytesIO(data)).convert("RGB")
    image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(buf, "PNG", optimize=True)
    return min(data, buf.getvalue(), key=len)


def figure(path: Path, caption: str, width: int | None = None) -> Markup:
    """<figure> with the image inlined as a data URI and its caption (escaped)."""
    try:
        data = base64.b64encode(_inline_bytes(path)).decode()
    except FileNotFoundError:
        raise GlyffuserError(f"{path} is missing: re-run the stage that draws it (dvc repro)") from None
    style = f' style="max-width:{width}px"' if width else ""
    return Markup(f'<figure><img src="data:{MIME[path.suffix]};base64,{data}" alt="{html.escape(path.name)}"{style}>'
                  f"<figcaption>{html.escape(str(caption), quote=False)}</figcaption></figure>")


def pct(x: float | None, digits: int = 0) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f} %"


def num(x, spec: str) -> str:
    """format(x, spec) for the template: num(20605, ",") -> "20,605"."""
    return format(x, spec)


TITLES = ["The data", "Images as points in a space", "The forward process: adding noise", "The score",
          "What the network learns", "Sampling: from noise to glyphs", "Conditioning on a definition",
          "One prompt, step by step", "Classifier-free guidance", "How good is it?", "From 64 to 128 px: the cascade",
          "Learning from feedback: preference alignment"]

_STYLE = """body{font:16px/1.55 Georgia,serif;max-width:980px;margin:0 auto;padding:16px 24px;color:#222}
h1{font:600 30px sans-serif;margin-bottom:0}h2{font:600 22px sans-serif;margin-top:42px;border-top:2px solid #c8c8c9;
padding-top:14px}nav{font:14px sans-serif;columns:2;background:#f6f6f6;padding:8px 16px}.sub{color:#666;font:14px sans-serif}
figure{margin:18px 0;text-align:center}img{max-width:100%;height:auto}figcaption{font:13px sans-serif;color:#555;
margin-top:4px}table{border-collapse:collapse;font:13px sans-serif;margin:12px 0}td,th{border:1px solid #ddd;
padding:4px 8px;vertical-align:top;text-align:left}code{font-size:12px;background:#f2f2f2;padding:0 2px}
.nb{display:inline-block;margin:2px 6px 2px 0}.nb img{width:32px;height:32px;vertical-align:middle;
image-rendering:pixelated;border:1px solid #ccc;margin-right:3px}"""


def numbers(params: Params, r: dict) -> dict:
    """What the sections derive from the reports: the template only prints."""
    t, fig, ev, cl, unet, info = params.train, r["figures"], r["evaluate"], r["classifier"], r["unet"], r["info"]
    c0, c1 = r["umap"].kmeans2_clusters
    res, patch = info["resolution"], info.get("patch_size", 1)
    levels = len(unet["block_out_channels"])
    attn = [i for i, b in enumerate(unet["down_block_types"]) if "CrossAttn" in b]
    grids = [res // patch // 2 ** i for i in range(levels)]
    gc, tj = fig.guidance_curve or [], fig.trajectory
    n = {
        "big_cluster": c1 if c1["glyphs"] > c0["glyphs"] else c0, "small_cluster": c0 if c1["glyphs"] > c0["glyphs"] else c1,
        "weighting": t.loss_weighting if t.min_snr_gamma > 0 else "plain", "min_snr_gamma": t.min_snr_gamma,
        "contrastive_flow": t.contrastive_flow, "caption_augmentation": t.caption_augmentation,
        "cfg_dropout": t.cfg_dropout, "gif_glyphs": 2 * len(params.figures.animation_prompts),
        "pca_components": params.umap.pca_components,
        "prediction_rows": [[str(e.t), f"{e.mse:.3f}", f"{e.target_variance:.3f}"] for e in fig.prediction_errors],
        "attention_levels": ", ".join(f"{grids[i]}×{grids[i]} ({unet['block_out_channels'][i]} channels)" for i in attn),
        "attention_count": len(attn), "film": unet.get("resnet_time_scale_shift") == "scale_shift",
        "trajectory_reached": (next((i for i, v in enumerate(tj.read_guess) if v >= tj.read_guess[-1]),
                                    len(tj.read_guess)) if tj else None),
        "best_guidance": max(gc, key=lambda x: x.adherence) if gc else None,
        "guidance_rows": [[f"{x.guidance:g}", pct(x.adherence, 1), pct(x.adherence_se, 1), f"{x.diversity:.3f}",
                           pct(x.sharpness, 1)] for x in gc],
        "never_drawn": sum(1 for x in ev.adherence_per_radical if x.hits == 0),
        "third_rows": [[name, f"{ev.heldout_thirds[name].definitions} definitions, {ev.heldout_thirds[name].radicals} "
                        f"radicals", f"{ev.heldout_thirds[name].train_glyphs_min}–{ev.heldout_thirds[name].train_glyphs_max}",
                        f"{pct(getattr(ev, f'adherence_heldout_{name}'), 1)} ± "
                        f"{pct(getattr(ev, f'adherence_heldout_{name}_se'), 1)}",
                        pct(getattr(ev, f"adherence_train_{name}"), 1), pct(getattr(ev, f"text_probe_{name}"), 1),
                        pct(getattr(ev, f"judge_real_{name}"), 1),
                        pct(getattr(ev, f"second_judge_heldout_{name}"), 1),
                        pct(getattr(ev, f"prior_heldout_{name}"), 1)]
                       for name in ("commonest", "middle", "rarest")],
        "quality_rows": quality_rows(ev, cl),
        "cascade_rows": cascade_rows(ev, r["upsampler"]),
        "align_rows": align_rows(r["align_curve"]), "align_params": params.align,
    }
    return n


def quality_rows(ev: EvaluateMetrics, cl: ClassifierReport) -> list[list[str]]:
    return [
        ["grid adherence", f"{pct(ev.adherence_grid, 1)} ± {pct(ev.adherence_grid_se, 1)}",
         f"the 8 grid prompts × seeds drawn with their radical; chance (the radicals' share of training glyphs) "
         f"{pct(ev.grid_chance, 1)}"],
        ["held-out adherence", f"{pct(ev.adherence_heldout, 1)} ± {pct(ev.adherence_heldout_se, 1)}",
         f"{ev.heldout_characters} test characters never trained on, drawn from their definitions with the radical "
         f"of the real character; chance {pct(ev.chance, 1)}"],
        ["control: empty prompt", pct(ev.control_empty_prompt, 1), "the same targets without any prompt: must be near chance"],
        ["control: shuffled", pct(ev.control_shuffled, 1), "each character drawn from another's definition: near chance"],
        ["text-only ceiling", pct(ev.text_probe_accuracy, 1), "a linear probe reads the radical from the definition's "
         "mean embedding: what the text can tell at all"],
        ["held-out adherence, second judge", f"{pct(ev.second_judge_heldout, 1)} ± {pct(ev.second_judge_heldout_se, 1)}",
         f"the same glyphs read by another classifier (residual, another seed; {pct(ev.second_judge_test_accuracy, 1)} "
         "on real test glyphs): a gain counts where both judges see it"],
        ["radical guessed from the text", pct(ev.prior_heldout, 1), "how often the radical each held-out definition "
         "was encoded after (embed.radical_prior) is its own: what the model is told"],
        ["classifier accuracy", pct(ev.classifier_test_accuracy, 1), f"the judge on real test glyphs (chance "
         f"{pct(cl.chance, 1)})"],
        ["seed sweep", f"{ev.seed_sweep_hits} / {ev.seed_sweep_seeds}", f"“{ev.seed_sweep_prompt}” with its radical"],
        ["KID", f"{ev.kid:.3f} (real floor {ev.kid_real_floor:.3f})", "kernel distance of classifier features, "
         "samples vs real test glyphs; the floor compares real with real"],
        ["FID", f"{ev.fid:.1f} (real floor {ev.fid_real_floor:.1f})", "the same with Gaussians (biased at this "
         "sample size: compare runs, not papers)"],
        ["novelty", pct(ev.novelty, 1), "samples farther from every training glyph than a near-copy would be"],
        ["realism", f"{pct(ev.realism_c2st, 1)} ± {pct(ev.realism_c2st_se, 1)}", "how often a small CNN, "
         "trained on other glyphs, tells a sample from a real test glyph by its local stroke texture: 50 % = "
         "indistinguishable, 100 % = every sample gives itself away"],
        ["sharpness", f"{ev.sharpness:.3f} vs real {ev.sharpness_real:.3f} ({pct(ev.sharpness_ratio)})",
         "share of pixels within 0.1 of paper or ink"],
        ["stroke fidelity", f"{ev.stroke_fidelity:.4f} bits (real floor {ev.stroke_fidelity_real_floor:.4f})",
         "how far the samples' local stroke texture (3×3 ink patterns and grey edges) is from real glyphs': wobble, "
         "specks and blur raise it; 0 = real"],
        ["paper darkness", f"{ev.paper_darkness:.2f} of 255 (real {ev.paper_darkness_real:.2f})",
         "mean darkness of the pixels far from every stroke: the grey haze and specks on the paper; real glyphs' "
         "paper is white"],
    ]


def cascade_rows(ev: EvaluateMetrics, up: UpsamplerReport | None) -> list[list[str]] | None:
    """The drafts against the final glyphs; None: a run without the cascade."""
    if up is None or ev.adherence_heldout_base is None or ev.resolution == ev.base_resolution:
        return None
    blur = up.test.real_with_half_blur.stroke_fidelity
    return [
        ["held-out adherence", pct(ev.adherence_heldout_base, 1), pct(ev.adherence_heldout, 1),
         f"paired difference {100 * ev.adherence_upsampler_difference:+.1f} ± "
         f"{100 * ev.adherence_upsampler_difference_se:.1f} points: the judge reads the same radical"],
        ["paper darkness", f"{ev.paper_darkness_base:.2f}", f"{ev.paper_darkness:.2f}",
         f"of 255, far from every stroke; real glyphs {ev.paper_darkness_real:.2f}"],
        ["stroke fidelity", f"{ev.stroke_fidelity_base:.4f}", f"{ev.stroke_fidelity:.4f}",
         f"bits, each against real glyphs at its own side; real glyphs with half a 3×3 blur at {ev.resolution} px: "
         f"{blur:.4f}"],
        ["sharpness", pct(ev.sharpness_ratio_base), pct(ev.sharpness_ratio), "of real glyphs' two-tone share"],
    ]


def align_rows(curve: list[dict[str, float]] | None) -> list[list[str]] | None:
    """The align stage's dev curve as table rows (epoch 0: the trained model); None: alignment off or no stage."""
    if not curve:
        return None
    def cell(row: dict[str, float], key: str, spec: str) -> str:
        return format(row[key], spec) if key in row else "—"
    return [[str(int(row["epoch"])), cell(row, "loss", ".3f"), cell(row, "ranked_right", ".0%"),
             cell(row, "reward_margin", ".2f"), cell(row, "dev_reward_judge", ".1%"), cell(row, "dev_judge", ".1%"),
             cell(row, "dev_second_judge", ".1%"), cell(row, "dev_ink_share", ".1%")] for row in curve]


def template():
    env = Environment(loader=PackageLoader("glyffuser", "templates"), autoescape=True, undefined=StrictUndefined,
                      keep_trailing_newline=True)
    env.filters.update(pct=pct, num=num)
    return env.get_template(TEMPLATES[0])


def build_guide(params: Params, paths: GuidePaths) -> dict:
    """Write the page; returns its sections and images (the test and the stage summary use them)."""
    r = {"figures": read_report(FiguresReport, paths.figures / "report.json"),
         "umap": read_report(UmapReport, paths.umap / "report.json"),
         "evaluate": read_report(EvaluateMetrics, paths.evaluate / "metrics.json"),
         "train": read_report(TrainMetrics, paths.train_metrics),
         "render": read_report(RenderReport, paths.render_report),
         "classifier": read_report(ClassifierReport, paths.classifier_report),
         "upsampler": read_report(UpsamplerReport, paths.upsampler / "report.json") if paths.upsampler else None,
         "align": read_report(AlignReport, paths.align / "report.json") if paths.align else None,
         "align_curve": read_align_curve(paths.align / "curve.csv") if paths.align else None,
         # the model folder's config files (validated where they are read for the model: artifacts/model_folder.py)
         "info": _json(paths.model / "glyffuser.json"), "unet": _json(paths.model / "unet" / "config.json")}
    try:
        n = numbers(params, r)
        page = template().render(r=r, n=n, paths=paths, titles=TITLES, style=Markup(_STYLE), figure=figure)
    except (KeyError, UndefinedError) as err:  # a report without a number the page quotes: an older stage wrote it
        raise GlyffuserError(f"the guide needs {err} from a report that lacks it: re-run the stages before it "
                             "(dvc repro)") from None
    with atomic_outputs(paths.out) as (tmp,):
        tmp.write_text(page, encoding="utf-8")
    return {"sections": len(TITLES), "images": page.count("<img "), "kilobytes": round(len(page.encode()) / 1024)}


def run_guide(params: Params, paths: GuidePaths, track: bool = True) -> dict:
    check_output(paths.out)
    if track:
        from glyffuser.tracking import require_store

        require_store()
    start = time.perf_counter()
    summary = build_guide(params, paths)
    summary["minutes"] = round((time.perf_counter() - start) / 60, 2)
    if track:
        from glyffuser.tracking import log_to_model_run

        log_to_model_run(_json(paths.model / "glyffuser.json"), {"minutes": summary["minutes"]}, [paths.out], "guide")
    return summary


# `glyffuser guide`; the DVC stage `guide` runs it as stages/guide.py.
def add_arguments(p) -> None:
    inputs(p, "model", "classifier", "upsampler")
    p.add_argument("--figures", type=Path, default=Path("data/figures"))
    p.add_argument("--umap", type=Path, default=Path("data/umap"))
    p.add_argument("--evaluate", type=Path, default=Path("data/evaluate"))
    p.add_argument("--train-metrics", type=Path, default=Path("data/train/metrics.json"))
    p.add_argument("--render-report", type=Path, default=Path("data/render/report.json"))
    p.add_argument("--align", type=Path, default=Path("data/align"), help="the align stage's folder (report, curve)")
    p.add_argument("--out", type=Path, default=Path("data/guide/index.html"))
    no_mlflow(p)


def command(args) -> dict:
    from glyffuser.params import load_params

    paths = GuidePaths(args.figures, args.umap, args.evaluate, args.train_metrics, args.render_report,
                       args.classifier / "report.json", args.model, args.out, args.upsampler, args.align)
    return run_guide(load_params(args.params), paths, track=not args.no_mlflow)


def main(argv: list[str] | None = None) -> int:
    return run_command("guide", __doc__.splitlines()[0], add_arguments, command, argv)
