"""Stage `figures`: the visual guide's figures and numbers, drawn from the user's own data and model.

data.png            held-out characters: the real glyph beside the model's sample from its definition
pixels.png          one glyph with its pixel values in the cells
gaussian_1d.png     one pixel across all glyphs, noised (geometry.py, like the three below)
forward.png         forward diffusion of that glyph under three schedules, same noise
forward_q.png       q(x_t | x_0) for three points of the 2-D map
forward_2d.png      the map's density under the forward process
score.png           the same densities with the score field at one arrow scale
prediction.png      what the network predicts for one noisy glyph (v or ε) beside the truth
denoise.gif         sampling from noise to 16 glyphs, one frame per step
steps.png           one prompt with 1, 5, 20, 120 steps of DDIM and of DPM-Solver++
single_step.png     the model's one-step guess from pure noise (the blurry average) vs full sampling
trajectory.png      x_t and the model's guess x̂₀ along one sampling run of the single-step prompt
trajectory_curve.png  the classifier reading the prompt's radical at each step, over many seeds
guidance.png        a classifier-free guidance sweep for a few prompts
guidance_curve.png  the sample grid's adherence at each guidance scale
report.json         the numbers behind them (the guide stage writes them into the page)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler
from PIL import Image

from glyffuser.analysis.diffusion_plots import (
    busiest_pixel,
    density_figures,
    forward_q_figure,
    gaussian_1d_figure,
    standardise,
    timesteps_at,
)
from glyffuser.artifacts.atomic import atomic_outputs, check_output
from glyffuser.artifacts.glyph_tables import read_glyph_tables
from glyffuser.artifacts.images import pngs_to_tensor, tensor_to_images
from glyffuser.artifacts.tables import read_table
from glyffuser.command import inputs, no_mlflow, run_command
from glyffuser.diffusion.pipeline import GlyffuserPipeline
from glyffuser.diffusion.process import (
    forward_sample,
    guided_output,
    initial_noise,
    target_at,
    training_scheduler,
    x0_from_output,
)
from glyffuser.diffusion.unet import image_size, pool_text
from glyffuser.errors import GlyffuserError
from glyffuser.params import Params
from glyffuser.reports import FiguresReport, make_report, report_json

SEEDS = 4  # samples per cell row in the step, single-step and guidance figures


@dataclass(frozen=True)
class FigurePaths:
    model: Path
    definitions: Path
    glyphs: Path
    umap_points: Path
    out: Path
    classifier: Path | None = None  # reads the radicals of the trajectory and guidance curves (skipped without)
    embeddings: Path | None = None  # the nearest training definitions of each prompt (skipped without)
    samples: Path | None = None  # the evaluate stage's samples: real vs generated (skipped without)
    font: Path | None = None  # a CJK font for characters in titles


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _font(path: Path | None, size: float):
    from matplotlib.font_manager import FontProperties

    return FontProperties(fname=str(path), size=size) if path else FontProperties(size=size)


def image_table(path: Path, rows: list[list[torch.Tensor]], row_labels: list[str], col_labels: list[str],
                title: str, cell: float = 1.1, vrange: float | list[float] = 1.0, font: Path | None = None) -> None:
    """A grid of (1,R,R) images with row and column captions; grey from -vrange (black) to +vrange (white),
    one vrange for all rows or one per row."""
    plt = _plt()
    vranges = vrange if isinstance(vrange, list) else [vrange] * len(rows)
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.8 + cell * n_cols, 0.5 + cell * n_rows), dpi=120, squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([]), ax.set_yticks([])
            if j < len(row):
                ax.imshow(row[j][0].numpy(), cmap="gray", vmin=-vranges[i], vmax=vranges[i], interpolation="nearest")
            else:
                ax.axis("off")
            if i == 0 and j < len(col_labels):
                ax.set_title(col_labels[j], fontproperties=_font(font, 7.5))
            if j == 0:
                ax.set_ylabel(row_labels[i], fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontproperties=_font(font, 9.5))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def pixel_figure(path: Path, glyph: torch.Tensor, char: str, model_side: int, font: Path | None) -> None:
    """(1,R,R) glyph in [-1,1] drawn with its 8-bit pixel values (255 paper, 0 ink) printed in the cells.
    R is at most 32: more numbers would not be legible; the title says what side the model draws."""
    plt = _plt()
    values = ((glyph[0] + 1) * 127.5).round().int().numpy()
    r = values.shape[0]
    fig, ax = plt.subplots(figsize=(11, 11), dpi=110)
    ax.imshow(values, cmap="gray", vmin=0, vmax=255)
    for y in range(r):
        for x in range(r):
            ax.text(x, y, str(values[y, x]), ha="center", va="center", fontsize=4.8,
                    color="black" if values[y, x] > 128 else "white")
    ax.set_xticks([]), ax.set_yticks([])
    sees = "what the model sees" if r == model_side else f"the model draws it at {model_side}×{model_side}"
    ax.set_title(f"{char} (U+{ord(char):04X}) at {r}×{r}: {sees}; 255 = paper, 0 = ink", fontproperties=_font(font, 13))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def data_figure(path: Path, samples: Path, glyphs: torch.Tensor, codepoints: list[int], definitions: list[str],
                count: int = 8) -> list[dict]:
    """The first `count` held-out characters of the evaluate stage: real glyph above the sample from its definition."""
    table, _ = read_table(samples, required=("kind", "target_codepoint", "png"))
    kinds = table.column("kind").to_pylist()
    targets = table.column("target_codepoint").to_pylist()
    first: dict[int, int] = {}
    for i, (k, cp) in enumerate(zip(kinds, targets)):
        if k == "heldout" and cp not in first and cp in codepoints:
            first[cp] = i
    chosen = list(first.items())[:count]
    if not chosen:
        raise GlyffuserError(f"{samples} holds no held-out samples: re-run the evaluate stage")
    res = glyphs.shape[-1]
    row_of = {cp: i for i, cp in enumerate(codepoints)}
    real = [glyphs[row_of[cp]] for cp, _ in chosen]
    made = list(pngs_to_tensor([table.column("png")[i].as_py() for _, i in chosen], res))
    labels = [_short(definitions[row_of[cp]]) for cp, _ in chosen]
    image_table(path, [real, made], ["real glyph", "sample from\nits definition"], labels,
                "held-out characters (never trained on): the real glyph and the model's sample from its definition",
                cell=1.25)
    return [{"codepoint": cp, "definition": definitions[row_of[cp]]} for cp, _ in chosen]


def _short(text: str, width: int = 16) -> str:
    """A definition cut to fit a column title: its first clause, at most `width` characters per line, 2 lines."""
    import textwrap

    lines = textwrap.wrap(text.split(";")[0], width)[:2]
    return "\n".join(lines) + ("…" if len(textwrap.wrap(text.split(";")[0], width)) > 2 else "")


NOISE_RANGE = 2.5  # x_t and ε are drawn from -2.5 (black) to +2.5 (white): noise stays Gaussian grey, not clipped


def forward_figure(path: Path, glyph: torch.Tensor, timesteps: list[int], model_abar: torch.Tensor, seed: int) -> None:
    """x_t = sqrt(ᾱ_t) x0 + sqrt(1-ᾱ_t) ε for one ε under the glyffuser's linear, the cosine and this model's schedule."""
    noise = torch.randn(glyph.shape, generator=torch.Generator().manual_seed(seed))
    rows, labels = [], []
    schedules = [(name, training_scheduler(name, "v_prediction", False).alphas_cumprod) for name in ("linear", "cosine")]
    for name, abar in [*schedules, ("this model's", model_abar)]:
        rows.append([forward_sample(glyph, noise, abar[t]) for t in timesteps])
        labels.append(name)
    cols = [f"t={t}" for t in timesteps]
    image_table(path, rows, labels, cols, "forward diffusion of one glyph, one noise draw, three schedules "
                f"(grey scale −{NOISE_RANGE:g} … +{NOISE_RANGE:g}: the clean glyph's ±1 looks grey)", vrange=NOISE_RANGE)


def _encode(pipe: GlyffuserPipeline, prompts: list[str], per_prompt: int):
    text, mask, empty = pipe.encode(prompts)
    rows = torch.repeat_interleave(torch.arange(len(prompts)), per_prompt)
    return text[rows], mask[rows], empty


def guess_x0(pipe: GlyffuserPipeline, x: torch.Tensor, t: int, text, mask, empty, guidance: float) -> torch.Tensor:
    """The model's one-call guess of the clean glyph from x_t, clipped to [-1, 1]."""
    out = guided_output(pipe.unet, x, t, text, mask, empty, guidance)
    return x0_from_output(pipe.scheduler_config, x, t, out).clamp(-1, 1)


def one_step_guess(pipe: GlyffuserPipeline, text, mask, empty, seeds: list[int], guidance: float) -> torch.Tensor:
    """x0 predicted by one model call at t = T from pure noise, with classifier-free guidance."""
    t = int(pipe.scheduler_config["num_train_timesteps"]) - 1
    return guess_x0(pipe, initial_noise(seeds, pipe.resolution), t, text, mask, empty, guidance)


def prediction_figure(path: Path, pipe: GlyffuserPipeline, glyph: torch.Tensor, definition: str,
                      timesteps: list[int], seed: int) -> list[dict]:
    """For one glyph noised at each t: x_t, the true target (v or ε), the network's output, and its x̂₀."""
    abar = DDPMScheduler.from_config(pipe.scheduler_config).alphas_cumprod
    vpred = pipe.scheduler_config["prediction_type"] == "v_prediction"
    text, mask, empty = pipe.encode([definition])
    noise = torch.randn(glyph.shape, generator=torch.Generator().manual_seed(seed))[None]
    x0 = glyph[None]
    rows: list[list[torch.Tensor]] = [[], [], [], []]
    errors = []
    for t in timesteps:
        xt = forward_sample(x0, noise, abar[t])
        truth = target_at(x0, noise, abar[t], "v_prediction" if vpred else "epsilon")
        out = guided_output(pipe.unet, xt, t, text, mask, empty, 1.0)  # conditional, no guidance: what training fits
        for row, image in zip(rows, (xt, truth, out, x0_from_output(pipe.scheduler_config, xt, t, out).clamp(-1, 1))):
            row.append(image[0])
        errors.append({"t": t, "mse": float(((out - truth) ** 2).mean()), "target_variance": float(truth.var())})
    name = "v" if vpred else "ε"
    image_table(path, rows, ["x_t", f"true {name}", f"predicted {name}", "its x̂₀"], [f"t={t}" for t in timesteps],
                f"what the network learns: it sees x_t and the definition “{_short(definition, 40)}” and predicts {name}"
                f" (rows 1-3: −{NOISE_RANGE:g} … +{NOISE_RANGE:g}; row 4: −1 … +1)",
                vrange=[NOISE_RANGE, NOISE_RANGE, NOISE_RANGE, 1.0])
    return errors


def denoise_gif(path: Path, pipe: GlyffuserPipeline, prompts: list[str], steps: int, guidance: float) -> int:
    """Two seeds per prompt sampled with DDIM, one frame per step (4 columns, nearest-neighbour upscaled)."""
    text, mask, empty = _encode(pipe, prompts, 2)
    seeds = list(range(len(text)))
    frames: list[Image.Image] = []

    def frame(x: torch.Tensor) -> Image.Image:
        cells = tensor_to_images(x)
        size, cols = 64, 4
        rows = (len(cells) + cols - 1) // cols
        sheet = Image.new("L", (cols * (size + 4) + 4, rows * (size + 4) + 4), 255)
        for k, c in enumerate(cells):
            r, q = divmod(k, cols)
            sheet.paste(c.resize((size, size), Image.NEAREST), (4 + q * (size + 4), 4 + r * (size + 4)))
        return sheet

    start = initial_noise(seeds, pipe.resolution)
    frames.append(frame(start.clamp(-1, 1)))
    # The pipeline's own sampler: at high guidance DDIM's clipped x̂_0 overshoots into speckled glyphs (steps.png).
    for step in pipe.sample_progressive(text, mask, empty, seeds, steps, guidance, "dpmsolver++"):
        frames.append(frame(step.x.float().cpu()))
    durations = [60] * (len(frames) - 1) + [2000]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0, optimize=True)
    return len(frames)


def steps_figure(path: Path, pipe: GlyffuserPipeline, prompt: str, counts: list[int], samplers: list[str],
                 guidance: float) -> None:
    """The same two seeds with each step count under each sampler: a better solver needs fewer steps."""
    text, mask, empty = _encode(pipe, [prompt], 2)
    rows, labels = [], []
    for name in samplers:
        per_count = [pipe.sample(text, mask, empty, [0, 1], n, guidance, name) for n in counts]
        for j in range(2):
            rows.append([x[j] for x in per_count])
            labels.append(f"{SAMPLER_NAMES[name]}\nseed {j}")
    image_table(path, rows, labels, [f"{n} step{'s' * (n > 1)}" for n in counts],
                f"“{prompt}”, guidance {guidance:g}: each sampler from the same noise")


SAMPLER_NAMES = {"ddpm": "DDPM", "ddim": "DDIM", "dpmsolver++": "DPM-Solver++"}


def _quantised(x: torch.Tensor) -> torch.Tensor:
    """As saved to PNG (8 bits), the way the evaluate stage judges its grid."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def trajectory_figures(image_path: Path, curve_path: Path, pipe: GlyffuserPipeline, net, prompt: str, radical: int,
                       seeds: int, steps: int, guidance: float, scheduler: str) -> dict:
    """One sampling run of `prompt` for many seeds: x_t and the model's x̂₀ at every step, read by the classifier."""
    from glyffuser.analysis.judge import predict

    plt = _plt()
    text, mask, empty = _encode(pipe, [prompt], seeds)
    seed_list = list(range(seeds))
    run = list(pipe.sample_progressive(text, mask, empty, seed_list, steps, guidance, scheduler))
    timesteps = [step.t for step in run]
    states = [step.x_in.float().cpu() for step in run]  # x_t before each step: noise, then after steps 1 .. steps-1
    final = run[-1].x.clamp(-1, 1).float().cpu()
    guesses = [step.x0 for step in run] + [final]  # x̂₀ from the very output each step used
    noisy = [x.clamp(-1, 1) for x in states] + [final]
    read_guess = [float((predict(net, _quantised(g))[0] == radical).mean()) for g in guesses]
    read_noisy = [float((predict(net, _quantised(x))[0] == radical).mean()) for x in noisy]

    shown = sorted({0, 1, 2, 3, steps // 4, steps // 2, 3 * steps // 4, steps - 1, steps} & set(range(steps + 1)))
    rows, labels = [], []
    for j in range(min(3, seeds)):
        rows.append([noisy[k][j] for k in shown])
        rows.append([guesses[k][j] for k in shown])
        labels += [f"seed {j}\nx_t", f"seed {j}\nx̂₀"]
    cols = [f"step {k}\nt={timesteps[k]}" if k < steps else "final" for k in shown]
    image_table(image_path, rows, labels, cols, f"“{prompt}”, {SAMPLER_NAMES[scheduler]} {steps} steps, guidance "
                f"{guidance:g}: the noisy x_t and the model's guess x̂₀ before each step")

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    ax.plot(range(steps + 1), read_guess, "o-", color="crimson", ms=3, label="reading the model's guess x̂₀")
    ax.plot(range(steps + 1), read_noisy, "s--", color="grey", ms=3, label="reading the noisy x_t")
    ax.set_xlabel("sampling step (0 = pure noise; last = the final glyph)")
    ax.set_ylabel(f"share of {seeds} seeds read as radical {radical}")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"“{prompt}”: when does the radical appear?", fontsize=10)
    fig.tight_layout()
    fig.savefig(curve_path)
    plt.close(fig)
    return {"prompt": prompt, "radical": radical, "seeds": seeds, "steps": steps, "timesteps": timesteps,
            "read_guess": read_guess, "read_noisy": read_noisy}


def guidance_curve(path: Path, pipe: GlyffuserPipeline, net, prompts: list[str], radicals: dict[str, int],
                   seeds: int, scales: list[float], steps: int, scheduler: str) -> list[dict]:
    """The sample grid (every prompt × seeds) at each guidance scale, judged like the evaluate stage's grid."""
    from glyffuser.analysis.judge import predict
    from glyffuser.analysis.metrics import adherence, two_tone_share

    plt = _plt()
    text, mask, empty = _encode(pipe, prompts, seeds)
    targets = np.repeat([radicals[p] for p in prompts], seeds)
    cluster = np.repeat(np.arange(len(prompts)), seeds)
    rows = []
    for w in scales:
        x = _quantised(pipe.sample(text, mask, empty, list(range(seeds)) * len(prompts), steps, w, scheduler))
        share, se = adherence(predict(net, x)[0], targets, cluster)
        per_prompt = x.flatten(1).reshape(len(prompts), seeds, -1)
        pairs = len(prompts) * seeds * max(seeds - 1, 1)  # ordered pairs of distinct seeds per prompt
        spread = torch.cdist(per_prompt, per_prompt).sum() / pairs / x[0].numel() ** 0.5
        rows.append({"guidance": w, "adherence": share, "adherence_se": se, "sharpness": two_tone_share(x),
                     "diversity": float(spread)})
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    w = [r["guidance"] for r in rows]
    ax.errorbar(w, [r["adherence"] for r in rows], yerr=[r["adherence_se"] for r in rows], fmt="o-", color="crimson",
                capsize=3, label="adherence (± s.e. over prompts)")
    ax.plot(w, [r["diversity"] for r in rows], "s--", color="tab:blue", label="diversity (RMS pixel distance between seeds)")
    ax.set_xlabel("guidance scale w (0: unconditional, 1: conditional, >1: pushed past it)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"the sample grid ({len(prompts)} prompts × {seeds} seeds) at each guidance scale", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return rows


def prompt_neighbours(pipe: GlyffuserPipeline, prompts: list[str], embeddings: Path, definitions: dict[int, str],
                      pngs: dict[int, bytes], k: int = 5) -> list[dict]:
    """Each prompt's tokens, and the k training definitions nearest to it (cosine of mean-pooled embeddings)."""
    from glyffuser.artifacts.embeddings import load_embeddings
    from glyffuser.artifacts.images import thumbnail

    emb = load_embeddings(embeddings)
    pooled = torch.cat([pool_text(h.float(), m) for h, m in zip(emb.hidden.split(2048), emb.mask.split(2048))])
    pooled = torch.nn.functional.normalize(pooled, dim=1)
    text, mask, _ = pipe.encode(prompts)
    queries = torch.nn.functional.normalize(pool_text(text.float(), mask), dim=1)
    tokenizer = pipe.encoder.tokenizer
    out = []
    for prompt, q in zip(prompts, queries):
        sims = pooled @ q
        top = sims.topk(k)
        out.append({
            "prompt": prompt, "tokens": tokenizer.convert_ids_to_tokens(tokenizer(prompt)["input_ids"]),
            "neighbours": [{"codepoint": int(emb.codepoints[i]), "character": chr(int(emb.codepoints[i])),
                            "definition": definitions[int(emb.codepoints[i])], "cosine": round(float(c), 3),
                            "png": thumbnail(pngs[int(emb.codepoints[i])], 48)}
                           for c, i in zip(top.values.tolist(), top.indices.tolist())]})
    return out


def trajectory_section(tmp: Path, pipe: GlyffuserPipeline, net, params: Params) -> dict:
    """Section 8: the one-step guess from pure noise beside full sampling, then the trajectory (with a judge)."""
    f, s = params.figures, params.sample
    seeds = list(range(SEEDS))
    text, mask, empty = _encode(pipe, [f.single_step_prompt], SEEDS)
    guess = one_step_guess(pipe, text, mask, empty, seeds, s.guidance)
    full = pipe.sample(text, mask, empty, seeds, s.steps, s.guidance, s.scheduler)
    image_table(tmp / "single_step.png", [list(guess), list(full)],
                ["one-step guess\nfrom pure noise", f"{s.steps}-step\nsampling"], [f"seed {i}" for i in seeds],
                f"“{f.single_step_prompt}”: the model's x̂₀ at t = T is the average of plausible glyphs")
    if net is None:
        return {}
    return {"trajectory": trajectory_figures(
        tmp / "trajectory.png", tmp / "trajectory_curve.png", pipe, net, f.single_step_prompt,
        params.evaluate.prompt_radicals[f.single_step_prompt], f.trajectory_seeds, s.steps, s.guidance, s.scheduler)}


def guidance_section(tmp: Path, pipe: GlyffuserPipeline, net, params: Params) -> dict:
    """Section 9: two seeds per prompt at each guidance scale, and (with a judge) the grid's adherence curve."""
    f, s = params.figures, params.sample
    rows, labels = [], []
    for prompt in f.guidance_prompts:
        text, mask, empty = _encode(pipe, [prompt], 2)
        per_scale = [pipe.sample(text, mask, empty, [0, 1], s.steps, g, s.scheduler) for g in f.guidance_scales]
        for j in range(2):
            rows.append([x[j] for x in per_scale])
            labels.append(f"{prompt}\nseed {j}")
    image_table(tmp / "guidance.png", rows, labels, [f"w = {g:g}" for g in f.guidance_scales],
                f"classifier-free guidance sweep ({SAMPLER_NAMES[s.scheduler]}, {s.steps} steps)")
    if net is None:
        return {}
    return {"guidance_curve": guidance_curve(tmp / "guidance_curve.png", pipe, net, s.prompts,
                                             params.evaluate.prompt_radicals, s.seeds, f.guidance_scales, s.steps,
                                             s.scheduler)}


def run_figures(params: Params, paths: FigurePaths, track: bool = True) -> dict:
    f, s, seed = params.figures, params.sample, params.base.seed
    check_output(paths.out, folder=True)
    if track:
        from glyffuser.tracking import require_store

        require_store()
    start = time.perf_counter()
    pipe = GlyffuserPipeline.from_pretrained(paths.model, bf16=s.autocast(), compile=s.compile)
    res = image_size(pipe.unet)
    defs, glyphs = read_glyph_tables(paths.definitions, paths.glyphs, ("definition",))
    codepoints = defs.column("codepoint").to_pylist()
    definitions = defs.column("definition").to_pylist()
    if ord(f.pixel_glyph) not in codepoints:
        raise GlyffuserError(f"figures.pixel_glyph {f.pixel_glyph!r} is not among the rendered glyphs (render.ranges)")
    pngs = glyphs.column("png").to_pylist()
    row = codepoints.index(ord(f.pixel_glyph))
    images = pngs_to_tensor(pngs, res, paths.glyphs, codepoints)  # (N, 1, R, R): every glyph at the model's side
    glyph = images[row]
    points, _ = read_table(paths.umap_points, columns=["x", "y"])
    map_xy = standardise(np.stack([points.column("x").to_numpy(), points.column("y").to_numpy()], 1))
    abar = DDPMScheduler.from_config(pipe.scheduler_config).alphas_cumprod  # this model's (shifted) schedule
    levels = timesteps_at(abar, f.signal_levels)
    net = None
    if paths.classifier is not None:
        from glyffuser.analysis.judge import load_classifier

        net, _ = load_classifier(paths.classifier)
    report: dict = {"resolution": res, "pixel_glyph": f.pixel_glyph, "prediction": pipe.scheduler_config["prediction_type"],
                    "sampler": s.scheduler, "steps": s.steps, "guidance": s.guidance}

    with atomic_outputs(paths.out, dirs=True) as (tmp,):
        # 1. the data
        if paths.samples is not None:
            report["data_pairs"] = data_figure(tmp / "data.png", paths.samples, images, codepoints, definitions)
        pixel_figure(tmp / "pixels.png", pngs_to_tensor([pngs[row]], min(res, 32))[0], f.pixel_glyph, res, paths.font)
        # 2. one pixel as a 1-D distribution; 3-4. the forward process and the score on the 2-D map
        y, x, ink = busiest_pixel(images)
        report["pixel"] = {"row": y, "col": x, "ink_share": ink}
        report["gaussian_1d"] = gaussian_1d_figure(tmp / "gaussian_1d.png", images[:, 0, y, x], abar, levels,
                                                   f"row {y}, column {x}: ink in {ink:.0%} of glyphs", seed)
        forward_figure(tmp / "forward.png", glyph, f.forward_timesteps, abar, seed)
        forward_q_figure(tmp / "forward_q.png", map_xy, abar, levels, seed)
        report["map"] = density_figures(tmp / "forward_2d.png", tmp / "score.png", map_xy, abar, levels, seed)
        # 5. what the network learns
        report["prediction_errors"] = prediction_figure(tmp / "prediction.png", pipe, glyph, definitions[row],
                                                        [t for t in f.forward_timesteps if t > 0], seed)
        # 6. sampling
        report["gif_frames"] = denoise_gif(tmp / "denoise.gif", pipe, f.animation_prompts, f.animation_steps, s.guidance)
        steps_figure(tmp / "steps.png", pipe, f.steps_prompt, f.step_counts, f.step_samplers, s.guidance)
        # 7. conditioning
        if paths.embeddings is not None:
            report["neighbours"] = prompt_neighbours(pipe, s.prompts, paths.embeddings, dict(zip(codepoints, definitions)),
                                                     dict(zip(codepoints, pngs)))
        # 8. "gold": the one-step guess, then the whole trajectory read by the classifier
        report.update(trajectory_section(tmp, pipe, net, params))
        # 9. guidance
        report.update(guidance_section(tmp, pipe, net, params))
        report["figures"] = sorted(p.name for p in tmp.iterdir()) + ["report.json"]
        report["minutes"] = round((time.perf_counter() - start) / 60, 2)
        typed = make_report(FiguresReport, report, "the figures stage's report")
        (tmp / "report.json").write_text(report_json(typed, indent=1, ensure_ascii=False), encoding="utf-8")
    if track:
        from glyffuser.tracking import log_to_model_run

        log_to_model_run(pipe.info, {"minutes": report["minutes"]}, sorted(paths.out.iterdir()), "figures")
    return {k: report[k] for k in ("figures", "gif_frames", "minutes")}


# `glyffuser figures`; the DVC stage `figures` runs it as stages/figures.py.
def add_arguments(p) -> None:
    inputs(p, "model", "definitions", "glyphs", "classifier", "embeddings", "sources")
    p.add_argument("--umap", type=Path, default=Path("data/umap/points.parquet"))
    p.add_argument("--samples", type=Path, default=Path("data/evaluate/samples.parquet"))
    p.add_argument("--out", type=Path, default=Path("data/figures"))
    no_mlflow(p)


def command(args) -> dict:
    from glyffuser.artifacts.source_manifest import SourceManifest
    from glyffuser.params import load_params

    check_output(args.out, folder=True)  # before reading anything
    font = args.sources / SourceManifest.read(args.sources).font_file
    paths = FigurePaths(args.model, args.definitions, args.glyphs, args.umap, args.out, args.classifier,
                        args.embeddings, args.samples, font)
    return run_figures(load_params(args.params), paths, track=not args.no_mlflow)


def main(argv: list[str] | None = None) -> int:
    return run_command("figures", __doc__.splitlines()[0], add_arguments, command, argv)
