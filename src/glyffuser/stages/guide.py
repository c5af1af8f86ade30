"""Stage `guide`: the visual guide to diffusion models as one HTML page, illustrated by this run.

Reads the figures stage's images and numbers, the umap, evaluate, train, render and classifier
reports and the model's config, and writes data/guide/index.html: ten sections in the order of the
article (data, points in a space, forward process, score, what the network learns, sampling,
conditioning, one prompt's trajectory, guidance, how good it is, the cascade to 128 px). Every image is inlined as a data
URI, so the page is one file that opens from the file system, offline, and in MLflow's artifact view.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from glyffuser.artifacts.atomic import atomic_outputs, check_output
from glyffuser.command import inputs, no_mlflow, run_command
from glyffuser.errors import GlyffuserError
from glyffuser.params import Params
from glyffuser.reports import EvaluateMetrics, TrainMetrics, read_report

MIME = {".png": "image/png", ".gif": "image/gif"}


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


def _escaped(value):
    """Every string in nested dicts and lists (keys too) HTML-escaped; numbers and the rest as they are."""
    if isinstance(value, str):
        return html.escape(value)
    if isinstance(value, dict):
        return {_escaped(k): _escaped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    if isinstance(value, BaseModel):  # a typed report (glyffuser/reports.py), its strings escaped the same way
        return type(value).model_validate(_escaped(value.model_dump(exclude_unset=True)))
    return value


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


def figure(path: Path, caption: str, width: int | None = None) -> str:
    """<figure> with the image inlined as a data URI and its caption."""
    try:
        data = base64.b64encode(_inline_bytes(path)).decode()
    except FileNotFoundError:
        raise GlyffuserError(f"{path} is missing: re-run the stage that draws it (dvc repro)") from None
    style = f' style="max-width:{width}px"' if width else ""
    return (f'<figure><img src="data:{MIME[path.suffix]};base64,{data}" alt="{html.escape(path.name)}"{style}>'
            f"<figcaption>{caption}</figcaption></figure>")


def _pct(x: float | None, digits: int = 0) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f} %"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _data(r: dict, paths: GuidePaths) -> str:
    fig = r["figures"]
    rd = r["render"]
    F = paths.figures
    res = r["info"]["resolution"]
    patch = r["info"].get("patch_size", 1)
    pairs = fig.get("data_pairs", [])
    return f"""
<p>The model learns from <b>{rd['glyphs']:,}</b> Chinese characters: every codepoint of Unicode {rd['unicode_version']}'s
CJK blocks that has an English definition in Unihan (kDefinition), drawn in {rd['font']} at 128 px and
shown to the model at <b>{res}×{res}</b> pixels. A hash of the codepoint puts {rd['splits']['train']:,} in the
training split, {rd['splits']['validation']:,} in validation and {rd['splits']['test']:,} in the test split: the
model never sees those last ones, and the evaluation asks it to draw them from their definitions.</p>
{figure(F / 'data.png', f"Real glyphs of {len(pairs)} held-out characters (top) and what the model drew from their "
        "definitions (bottom). The model has not seen these characters; it recombines parts it learned.")}
<p>To the network an image is just a grid of numbers. Each pixel is stored as 0 (ink) … 255 (paper) and rescaled to
−1 … +1; the model adds and removes noise on those numbers.</p>
{figure(F / 'pixels.png', f"{fig['pixel_glyph']} with its pixel values. The model draws {res}×{res} "
        f"(shown here at 32×32, where the numbers stay legible); its UNet works on a {res // patch}×{res // patch} grid of "
        f"{patch}×{patch}-pixel patches folded into {patch * patch} channels.", 560)}"""


def _points(r: dict, paths: GuidePaths) -> str:
    fig = r["figures"]
    um = r["umap"]
    F = paths.figures
    U = paths.umap
    res = r["info"]["resolution"]
    g = fig["gaussian_1d"]
    c0, c1 = um["kmeans2_clusters"]
    big, small = (c1, c0) if c1["glyphs"] > c0["glyphs"] else (c0, c1)
    return f"""
<p>Diffusion models are about probability distributions. Start with one number: the pixel at row {fig['pixel']['row']},
column {fig['pixel']['col']}, which is ink in {_pct(fig['pixel']['ink_share'])} of the glyphs. Over the whole
dataset its value is two spikes, paper at +1 and ink at −1: nothing like a Gaussian. The panels to the right already
add noise (next section); by ᾱ = {g[-1]['alpha_bar']:.3f} the histogram is N({g[-1]['mean']:.2f}, {g[-1]['std']:.2f}²),
indistinguishable from the standard normal.</p>
{figure(F / 'gaussian_1d.png', "One pixel's value over all glyphs (blue), the normal curve fitted to it (red) and "
        "N(0, 1) (dashed), at increasing noise. A Gaussian fits badly at first and perfectly at the end.")}
<p>A whole glyph is {res * res:,} such numbers: one point in a {res * res:,}-dimensional space, and the dataset a cloud
of points in it. To look at that cloud, the umap stage projects each glyph (pixels → PCA {um.get('pca_components', 50)}
→ UMAP) to 2-D. The map has two large continents. k-means with two clusters splits them into {big['glyphs']:,} glyphs
of which {_pct(big['share_left-right'])} are left-right compositions (⿰) and {small['glyphs']:,} glyphs of which
{_pct(small['share_top-bottom'])} are top-bottom (⿱) and only {_pct(small['share_left-right'])} left-right: the
layout is the first thing pixels see.</p>
{figure(U / 'umap_density.png', "UMAP map of every glyph with its density (a Gaussian KDE, log scale).", 620)}
{figure(U / 'umap_layouts.png', "The same map coloured by layout, from the first description character of cjklib's "
        "decomposition table. “single” means the table does not decompose the character (one component, or one it "
        f"leaves whole): {um['layout_counts']['single']:,} glyphs.", 620)}"""


def _forward(r: dict, paths: GuidePaths) -> str:
    fig = r["figures"]
    info = r["info"]
    F = paths.figures
    res = r["info"]["resolution"]
    m = fig["map"]
    first, last = m["alpha_bars"][0], m["alpha_bars"][-1]
    return f"""
<p>The forward process destroys an image step by step: x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε with ε ~ N(0, I). The
schedule ᾱ_t falls from 1 at t = 0 to almost 0 at t = 999; the glyffuser used a linear schedule of β_t, the cosine
one keeps more signal in the middle. This model draws {res} px with the {info['schedule']} schedule as tuned at
{info.get('schedule_base_resolution', res)} px, shifted: its signal-to-noise ratio at every t is
{(info.get('schedule_base_resolution', res) / res) ** 2:g} times the tuned one, because a larger image has more
redundant pixels and the same noise destroys less of it.</p>
{figure(F / 'forward.png', "One glyph and one draw of noise under the three schedules. Noise is drawn as Gaussian "
        "grey (values −2.5 … +2.5), not clipped into black and white.")}
<p>For one starting image x_0 the noisy x_t is a Gaussian, q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I): its centre slides
to the origin and its radius grows to 1. On the 2-D map (standardised) that is a circle per t:</p>
{figure(F / 'forward_q.png', "q(x_t | x_0) for three glyphs far apart on the map: all end as the same N(0, I).", 560)}
<p>Applied to every point, the whole density q_t melts into one Gaussian. The panels are chosen by signal level
(ᾱ = {first:.3f} … {last:.3f}, t = {m['timesteps'][0]} … {m['timesteps'][-1]}), not by equal t: with this schedule
everything after t ≈ {m['timesteps'][-1]} looks the same.</p>
{figure(F / 'forward_2d.png', "The map's density under the forward process (a Gaussian mixture: the KDE of 4,000 "
        "glyphs noised exactly). The dotted circle is radius 2 of N(0, I), the window is wide enough not to clip it.")}"""


def _score(r: dict, paths: GuidePaths) -> str:
    fig = r["figures"]
    F = paths.figures
    m = fig["map"]
    steps_len = m["mean_step_length"]
    return f"""
<p>To run the process backwards we need, at every noise level, the direction in which the density grows: the score
∇log q_t(x). Tweedie's formula ties it to denoising: σ_t² ∇log q_t(x) = E[√ᾱ_t x_0 | x_t = x] − x, the step from a noisy
point to the average clean point it may have come from. The arrows below draw that step for the same densities as
above, all panels at one scale (× {m['arrow_scale']:.2f}). Near the data at low noise the arrows point into the nearest
island; at high noise they all point to the centre. Their mean length over the window grows from {steps_len[0]:.2f} to
{steps_len[-1]:.2f} map units.</p>
{figure(F / 'score.png', "The score field σ²∇log q_t on the 2-D map; shading and arrows come from the same density.")}
<p>The model never sees this field: it learns it implicitly, by learning to denoise (next section).</p>"""


def _learning(r: dict, paths: GuidePaths) -> str:
    fig = r["figures"]
    tr = r["train"]
    F = paths.figures
    pe = fig["prediction_errors"]
    name = "v" if fig["prediction"] == "v_prediction" else "ε"
    what = ("v = √ᾱ ε − √(1 − ᾱ) x_0, a mix of noise and image that stays well scaled at every t"
            if name == "v" else "the noise ε that was added")
    rows = [[str(e["t"]), f"{e['mse']:.3f}", f"{e['target_variance']:.3f}"] for e in pe]
    g = r.get("min_snr_gamma", 0)
    weighting = {"plain": ", the same weight at every t, so the noisiest steps, where the layout and the radical are "
                          "decided, count as much as the last touches",
                 "min_snr": f", weighted by min(SNR, {g:g}) / (SNR + 1): little weight at the noisy end",
                 "min_snr_plus_one": f", weighted by min(SNR + 1, {g:g}) / (SNR + 1): full weight at the noisy end, "
                                     "less at the clean end"}.get(r.get("loss_weighting", "plain"), "")
    augmented = (f" For {_pct(r['caption_augmentation'])} of the definitions with several “;”-separated senses, a "
                 "random subset of the senses is kept, so that short prompts are trained too."
                 if r.get("caption_augmentation") else "")
    contrast = (f" From it, {r['contrastive_flow']:g} times the squared error to another glyph's target in the batch "
                "is subtracted (contrastive flow matching): the network is also pushed away from answers that would "
                "fit any prompt, so different definitions lead to more different glyphs." if r.get("contrastive_flow")
                else "")
    return f"""
<p>Training is a regression. Take a glyph, pick t at random, add noise, and ask the network for {what}. From its
answer x_0 follows: x̂_0 = √ᾱ x_t − √(1 − ᾱ) v. The loss is the mean squared error{weighting}.{contrast}{augmented} After {tr.steps:,} steps
({tr.epochs:g} epochs, {tr.wall_time_min:.1f} min at {tr.img_per_s:.0f} images/s) it is {tr.train_loss:.4f}
on training batches and {tr.val_loss:.4f} on validation glyphs.</p>
{figure(F / 'prediction.png', f"What the network predicts for {fig['pixel_glyph']} at several t, with its "
        "own definition as the prompt and no guidance. At high t it cannot know the glyph and predicts the average "
        "of plausible ones: a blur.")}
{_table(["t", f"MSE of predicted {name}", f"variance of true {name}"], rows)}"""


def _sampling(r: dict, paths: GuidePaths) -> str:
    fig = r["figures"]
    F = paths.figures
    return f"""
<p>Sampling runs the learned denoiser from pure noise: at each step the model guesses x̂_0, and the sampler moves x_t
a little towards it, to a lower noise level. The animation shows {r['gif_glyphs']} glyphs over {fig['gif_frames'] - 1} steps
of DPM-Solver++, the pipeline's sampler.</p>
{figure(F / 'denoise.gif', f"Sampling {r['gif_glyphs']} glyphs (two seeds for each of {r['gif_glyphs'] // 2} prompts), one "
        "frame per step.", 560)}
<p>How many steps are needed depends on the solver. DDIM takes first-order steps along the probability-flow ODE;
DPM-Solver++ (the pipeline's sampler) uses the last two model outputs for a second-order step, so 5–20 steps already
give clean glyphs. With guidance {fig['guidance']:g}, DDIM can degrade, the more so the more steps it takes: each
step's guided x̂_0 overshoots and is only clipped, while DPM-Solver++ thresholds it dynamically.</p>
{figure(F / 'steps.png', "The same two seeds with 1, 5, 20 and 120 steps of each sampler. One step gives the blurry "
        "average; the sampler matters more than the step count.", 760)}"""


def _conditioning(r: dict, paths: GuidePaths) -> str:
    fig = r["figures"]
    info = r["info"]
    unet = r["unet"]
    U = paths.umap
    res = r["info"]["resolution"]
    patch = r["info"].get("patch_size", 1)
    enc_rows = []
    for n in fig.get("neighbours", []):
        tokens = " ".join(f"<code>{t}</code>" for t in n["tokens"])
        near = "".join(f'<span class="nb"><img src="data:image/png;base64,{x["png"]}" alt="U+{x["codepoint"]:04X}">'
                       f'{x["definition"][:40]} <small>{x["cosine"]:.2f}</small></span>'
                       for x in n["neighbours"][:3])
        enc_rows.append([f"“{n['prompt']}”", tokens, near])
    levels = len(unet["block_out_channels"])
    attn = [i for i, b in enumerate(unet["down_block_types"]) if "CrossAttn" in b]
    grids = [res // patch // 2 ** i for i in range(levels)]
    attn_text = ", ".join(f"{grids[i]}×{grids[i]} ({unet['block_out_channels'][i]} channels)" for i in attn)
    film = ("; in this run that embedding also scales and shifts each block's normalised features (FiLM), not only "
            "adds to them" if unet.get("resnet_time_scale_shift") == "scale_shift" else "")
    return f"""
<p>The prompt is a definition in English. The text encoder ({info['encoder']}, {info['dim']}-d,
at most {info['max_length']} tokens) turns it into one vector per token; the embed stage did this once for every
definition and stored them in Parquet. Similar definitions get similar vectors: the nearest training definitions by
cosine similarity of the mean token vector:</p>
{_table(["prompt", "tokens", "nearest training definitions (cosine)"], enc_rows)}
<p>The vectors enter the UNet in two places. <b>Cross-attention</b>: at the {attn_text} level{'s' * (len(attn) > 1)}
and in the middle block, every image position attends to the tokens (queries from the image, keys and values from the
text). <b>Pooled text</b>{'' if info.get('pooled_text') else ' (off in this run)'}: the mean of the token vectors is
added to the timestep embedding, so every ResNet block hears the prompt{film}. In {_pct(r['cfg_dropout'])} of training
examples the prompt is replaced by the empty one, so the same network also learns the unconditional density (needed
for guidance, section 9).</p>
<p>Conditioning selects a slice of the data density, p(x | y). On the map, the samples of each grid prompt land
where the real glyphs of its radical lie, when the model follows the prompt:</p>
{figure(U / 'umap_prompts.png', "For each grid prompt: the real glyphs with its radical (blue) and the prompt's 8 "
        "samples (red ×), projected with the same PCA and UMAP.")}
{figure(U / 'umap_samples.png', "All evaluate samples on the map: held-out definitions, the grid, and the "
        "unconditional (empty prompt) control.", 620)}"""


def _trajectory(r: dict, paths: GuidePaths) -> str:
    fig = r["figures"]
    F = paths.figures
    tj = fig.get("trajectory")
    if tj:
        reached = next((i for i, v in enumerate(tj["read_guess"]) if v >= tj["read_guess"][-1]), len(tj["read_guess"]))
        text = f"""
<p>Follow one prompt, “{tj['prompt']}”, through sampling. From pure noise the model's first guess x̂_0 is
the average of the glyphs that fit the prompt and this noise: a blur in which the layout is already visible.</p>
{figure(F / 'single_step.png', "The one-step guess from pure noise beside the full sampling, four seeds.", 640)}
{figure(F / 'trajectory.png', "x_t and the model's guess x̂_0 before each step, three seeds.")}
<p>The evaluate stage's classifier reads the radical of each x̂_0 and x_t, for {tj['seeds']} seeds. It reads radical
{tj['radical']} in {_pct(tj['read_guess'][0])} of the one-step guesses, reaches its final share at step {reached} of
{tj['steps']}{f" (t = {tj['timesteps'][reached]})" if reached < tj['steps'] else ''}, and ends at
{_pct(tj['read_guess'][-1])} of the finished glyphs; in the noisy x_t it can read the radical only in the last steps.
What the glyph will be is settled while the image still looks like noise; the late steps draw the strokes.</p>
{figure(F / 'trajectory_curve.png', "Share of seeds whose image the classifier reads as the prompt's radical, per step.", 640)}"""
    else:
        text = "<p>(No classifier was given to the figures stage: the trajectory was not drawn.)</p>"
    return text


def _guidance(r: dict, paths: GuidePaths) -> str:
    fig = r["figures"]
    F = paths.figures
    gc = fig.get("guidance_curve", [])
    best = max(gc, key=lambda x: x["adherence"]) if gc else None
    gtext = (f"Adherence of the sample grid rises from {_pct(gc[0]['adherence'])} without the prompt (w = 0) to "
             f"{_pct(best['adherence'])} at w = {best['guidance']:g}, while diversity between seeds falls from "
             f"{gc[0]['diversity']:.2f} to {best['diversity']:.2f}. The pipeline samples at w = {fig['guidance']:g}."
             if gc else "")
    return f"""
<p>A conditional model follows its prompt only weakly on its own. Classifier-free guidance runs the network twice,
with the prompt and with the empty prompt, and extrapolates: ε̂ = ε̂_∅ + w (ε̂_y − ε̂_∅). w = 1 is the plain conditional
model; w &gt; 1 pushes samples towards what distinguishes the prompt. {gtext}</p>
{figure(F / 'guidance.png', "The same seeds at each guidance scale.", 760)}
{figure(F / 'guidance_curve.png', "The sample grid at each scale, judged by the evaluate stage's classifier like its "
        "grid (8-bit images).", 640)}
{_table(["w", "adherence", "± s.e.", "diversity", "two-tone pixels"],
        [[f"{x['guidance']:g}", _pct(x['adherence'], 1), _pct(x['adherence_se'], 1), f"{x['diversity']:.3f}",
          _pct(x['sharpness'], 1)] for x in gc])}"""


def _quality(r: dict, paths: GuidePaths) -> str:
    ev = r["evaluate"]
    cl = r["classifier"]
    E = paths.evaluate
    rows = [
        ["grid adherence", f"{_pct(ev.adherence_grid, 1)} ± {_pct(ev.adherence_grid_se, 1)}",
         f"the 8 grid prompts × seeds drawn with their radical; chance (the radicals' share of training glyphs) "
         f"{_pct(ev.grid_chance, 1)}"],
        ["held-out adherence", f"{_pct(ev.adherence_heldout, 1)} ± {_pct(ev.adherence_heldout_se, 1)}",
         f"{ev.heldout_characters} test characters never trained on, drawn from their definitions with the radical "
         f"of the real character; chance {_pct(ev.chance, 1)}"],
        ["control: empty prompt", _pct(ev.control_empty_prompt, 1), "the same targets without any prompt: must be near chance"],
        ["control: shuffled", _pct(ev.control_shuffled, 1), "each character drawn from another's definition: near chance"],
        ["text-only ceiling", _pct(ev.text_probe_accuracy, 1), "a linear probe reads the radical from the definition's "
         "mean embedding: what the text can tell at all"],
        ["classifier accuracy", _pct(ev.classifier_test_accuracy, 1), f"the judge on real test glyphs (chance "
         f"{_pct(cl['chance'], 1)})"],
        ["seed sweep", f"{ev.seed_sweep_hits} / {ev.seed_sweep_seeds}", f"“{ev.seed_sweep_prompt}” "
         "with its radical"],
        ["KID", f"{ev.kid:.3f} (real floor {ev.kid_real_floor:.3f})", "kernel distance of classifier features, "
         "samples vs real test glyphs; the floor compares real with real"],
        ["FID", f"{ev.fid:.1f} (real floor {ev.fid_real_floor:.1f})", "the same with Gaussians (biased at this "
         "sample size: compare runs, not papers)"],
        ["novelty", _pct(ev.novelty, 1), "samples farther from every training glyph than a near-copy would be"],
        ["realism", f"{_pct(ev.realism_c2st, 1)} ± {_pct(ev.realism_c2st_se, 1)}", "how often a small CNN, "
         "trained on other glyphs, tells a sample from a real test glyph by its local stroke texture: 50 % = "
         "indistinguishable, 100 % = every sample gives itself away"],
        ["sharpness", f"{ev.sharpness:.3f} vs real {ev.sharpness_real:.3f} ({_pct(ev.sharpness_ratio)})",
         "share of pixels within 0.1 of paper or ink"],
        ["stroke fidelity", f"{ev.stroke_fidelity:.4f} bits (real floor "
         f"{ev.stroke_fidelity_real_floor:.4f})", "how far the samples' local stroke texture "
         "(3×3 ink patterns and grey edges) is from real glyphs': wobble, specks and blur raise it; 0 = real"],
        ["paper darkness", f"{ev.paper_darkness:.2f} of 255 (real "
         f"{ev.paper_darkness_real:.2f})", "mean darkness of the pixels far from every stroke: "
         "the grey haze and specks on the paper; real glyphs' paper is white"],
    ]
    return f"""
<p>The evaluate stage judges the model with a separate radical classifier (trained on real glyphs at {cl['resolution']}
px, {_pct(cl['test_accuracy'], 1)} on the test split). Adherence is the share of samples in which it reads the radical the
prompt asks for; the controls show what the same judge says when the prompt is removed or swapped.</p>
{_table(["measure", "this run", "what it means"], rows)}
{_long_tail(ev)}
{figure(E / 'grid.png', "The evaluate stage's grid: green frames where the classifier reads the intended radical.")}
{figure(E / 'novelty.png', "Distance to the nearest training glyph: samples, real test glyphs, and near-copies that "
        "set the copy threshold.", 640)}"""


def _long_tail(ev: EvaluateMetrics) -> str:
    """Adherence per third of the held-out definitions by how common their radical is in training."""
    rows = []
    for name in ("commonest", "middle", "rarest"):
        t = ev.heldout_thirds[name]
        train = getattr(ev, f"adherence_train_{name}")
        rows.append([name, f"{t.definitions} definitions, {t.radicals} radicals",
                     f"{t.train_glyphs_min}–{t.train_glyphs_max}",
                     f"{_pct(getattr(ev, f'adherence_heldout_{name}'), 1)} ± "
                     f"{_pct(getattr(ev, f'adherence_heldout_{name}_se'), 1)}",
                     _pct(train, 1), _pct(getattr(ev, f"text_probe_{name}"), 1)])
    never = [r for r in ev.adherence_per_radical if r.hits == 0]
    return f"""
<p>Adherence is not even across radicals. Ordered by how many training glyphs share their radical, the held-out
definitions fall into three equal thirds; the same model on definitions it trained on shows how much of the gap is
generalisation (held-out below training) and how much is execution (training definitions missed too); the text probe
shows whether the radical can be read from the definition at all. {len(never)} of the
{len(ev.adherence_per_radical)} radicals asked for were never drawn (metrics.json lists every radical).</p>
{_table(["third", "holds", "training glyphs per radical", "held-out adherence", "training definitions",
         "text probe"], rows)}"""


def _cascade(r: dict, paths: GuidePaths) -> str:
    ev, up = r["evaluate"], r["upsampler"]
    if not up or ev.adherence_heldout_base is None or ev.resolution == ev.base_resolution:
        return "<p>This run draws without the cascade's upsampler (no upsampler stage output).</p>"
    base, final = ev.base_resolution, ev.resolution
    test = up["test"]
    rows = [
        ["held-out adherence", _pct(ev.adherence_heldout_base, 1), _pct(ev.adherence_heldout, 1),
         f"paired difference {100 * ev.adherence_upsampler_difference:+.1f} ± "
         f"{100 * ev.adherence_upsampler_difference_se:.1f} points: the judge reads the same radical"],
        ["paper darkness", f"{ev.paper_darkness_base:.2f}", f"{ev.paper_darkness:.2f}",
         f"of 255, far from every stroke; real glyphs {ev.paper_darkness_real:.2f}"],
        ["stroke fidelity", f"{ev.stroke_fidelity_base:.4f}", f"{ev.stroke_fidelity:.4f}",
         f"bits, each against real glyphs at its own side; real glyphs with half a 3×3 blur at {final} px: "
         f"{test['real_with_half_blur']['stroke_fidelity']:.4f}"],
        ["sharpness", _pct(ev.sharpness_ratio_base), _pct(ev.sharpness_ratio), "of real glyphs' two-tone share"],
    ]
    return f"""
<p>Large text-to-image models rarely run their diffusion at full resolution. Imagen draws 64 px images and hands
them to separate super-resolution models; Stable Diffusion denoises a small latent and decodes it. The structure (which
radical, where, how many strokes) is decided small, where every step is cheap; a second network adds the detail that
structure implies. This pipeline does the same on a laptop: the diffusion model draws a {base} px draft, and the
upsampler stage's network ({up['parameters']:,} parameters, trained in {up['train_minutes']:.1f} min on real glyph pairs,
{base} px in, {final} px out) draws the {final} px glyph. It never saw a diffusion sample: during training its inputs
were dirtied at random (noise, grey haze, specks, blur, sub-pixel shifts, as Imagen's noise-conditioning augmentation
does, and tiles moved by a pixel, as the seams of the diffusion model's patches), so it learned to map a dirty draft to
clean strokes on white paper.</p>
{figure(paths.evaluate / 'cascade.png', f"The grid prompts: the diffusion model's {base} px drafts (enlarged without "
        f"smoothing), then the {final} px glyphs the upsampler draws from them.", 900)}
{_table(["", f"{base} px draft", f"{final} px glyph", ""], rows)}
<p>On real test glyphs the upsampler reaches stroke fidelity {test['upsampler']['stroke_fidelity']:.4f} at {final} px
(bilinear upsampling: {test['bilinear']['stroke_fidelity']:.4f}); what it cannot do is fix a draft's structure, so
adherence is decided by the diffusion model.</p>"""


# (title, body): each body gets `r`, every report the page quotes (HTML-escaped), and the input paths.
SECTIONS = [("The data", _data), ("Images as points in a space", _points),
            ("The forward process: adding noise", _forward), ("The score", _score),
            ("What the network learns", _learning), ("Sampling: from noise to glyphs", _sampling),
            ("Conditioning on a definition", _conditioning), ("One prompt, step by step", _trajectory),
            ("Classifier-free guidance", _guidance), ("How good is it?", _quality),
            ("From 64 to 128 px: the cascade", _cascade)]


_STYLE = """body{font:16px/1.55 Georgia,serif;max-width:980px;margin:0 auto;padding:16px 24px;color:#222}
h1{font:600 30px sans-serif;margin-bottom:0}h2{font:600 22px sans-serif;margin-top:42px;border-top:2px solid #c8c8c9;
padding-top:14px}nav{font:14px sans-serif;columns:2;background:#f6f6f6;padding:8px 16px}.sub{color:#666;font:14px sans-serif}
figure{margin:18px 0;text-align:center}img{max-width:100%;height:auto}figcaption{font:13px sans-serif;color:#555;
margin-top:4px}table{border-collapse:collapse;font:13px sans-serif;margin:12px 0}td,th{border:1px solid #ddd;
padding:4px 8px;vertical-align:top;text-align:left}code{font-size:12px;background:#f2f2f2;padding:0 2px}
.nb{display:inline-block;margin:2px 6px 2px 0}.nb img{width:32px;height:32px;vertical-align:middle;
image-rendering:pixelated;border:1px solid #ccc;margin-right:3px}"""


def build_guide(params: Params, paths: GuidePaths) -> dict:
    """Write the page; returns its sections and images (the test and the stage summary use them)."""
    t = params.train
    reports = {"cfg_dropout": t.cfg_dropout, "loss_weighting": t.loss_weighting if t.min_snr_gamma > 0 else "plain",
               "min_snr_gamma": t.min_snr_gamma, "caption_augmentation": t.caption_augmentation,
               "contrastive_flow": t.contrastive_flow, "gif_glyphs": 2 * len(params.figures.animation_prompts),
               "figures": _json(paths.figures / "report.json"), "umap": _json(paths.umap / "report.json"),
               "evaluate": read_report(EvaluateMetrics, paths.evaluate / "metrics.json"),
               "train": read_report(TrainMetrics, paths.train_metrics),
               "render": _json(paths.render_report), "classifier": _json(paths.classifier_report),
               "info": _json(paths.model / "glyffuser.json"), "unet": _json(paths.model / "unet" / "config.json"),
               "upsampler": _json(paths.upsampler / "report.json") if paths.upsampler else {}}
    # Every string the page quotes (definitions, prompts, the model folder's glyffuser.json, ...) is data:
    # escaped once, here, where it enters the HTML.
    reports = _escaped(reports)
    info = reports["info"]
    toc = "".join(f'<li><a href="#s{i}">{html.escape(t)}</a></li>' for i, (t, _) in enumerate(SECTIONS, 1))
    sections = "".join(f'<section id="s{i}"><h2>{i}. {html.escape(t)}</h2>{body(reports, paths)}</section>'
                       for i, (t, body) in enumerate(SECTIONS, 1))
    run = info.get("mlflow_run_id")
    page = f"""<!doctype html><html lang="en"><meta charset="utf-8"><title>glyffuser: a visual guide to diffusion</title>
<style>{_STYLE}</style><h1>How a diffusion model invents Chinese glyphs</h1>
<p class="sub">A visual guide, drawn from this run: {info['resolution']} px model, encoder {info['encoder']},
{reports['train'].steps:,} training steps{f', MLflow run {run}' if run else ''}. Every figure and number below was
computed by the pipeline (<code>dvc repro</code>) from your data and model.</p>
<nav><ol>{toc}</ol></nav>{sections}</html>
"""
    with atomic_outputs(paths.out) as (tmp,):
        tmp.write_text(page, encoding="utf-8")
    return {"sections": len(SECTIONS), "images": page.count("<img "), "kilobytes": round(len(page.encode()) / 1024)}


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
    p.add_argument("--out", type=Path, default=Path("data/guide/index.html"))
    no_mlflow(p)


def command(args) -> dict:
    from glyffuser.params import load_params

    paths = GuidePaths(args.figures, args.umap, args.evaluate, args.train_metrics, args.render_report,
                       args.classifier / "report.json", args.model, args.out, args.upsampler)
    return run_guide(load_params(args.params), paths, track=not args.no_mlflow)


def main(argv: list[str] | None = None) -> int:
    return run_command("guide", __doc__.splitlines()[0], add_arguments, command, argv)
