"""Stage `figures`: the visual guide to diffusion models, drawn from the user's own data and model.

pixels.png          one glyph at the training resolution with its pixel values in the cells
forward.png         forward diffusion of that glyph, linear vs cosine schedule, same noise
forward_2d.png      the UMAP points noised with the training schedule, KDE density and score arrows
denoise.gif         sampling from noise to glyphs, one frame per step
steps.png           one prompt with 1, 5, 20, 120 sampling steps
single_step.png     the model's one-step guess from pure noise (the blurry average) vs full sampling
guidance.png        a classifier-free guidance sweep for a few prompts
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler
from PIL import Image

from glyffuser.atomic import atomic_outputs
from glyffuser.diffusion import training_scheduler
from glyffuser.errors import GlyffuserError
from glyffuser.images import pngs_to_tensor, tensor_to_images
from glyffuser.model import denoise, image_size
from glyffuser.params import Params
from glyffuser.pipeline import GlyffuserPipeline, guided_batch
from glyffuser.tables import read_table

SEEDS = 4  # samples per cell row in the step, single-step and guidance figures


@dataclass(frozen=True)
class FigurePaths:
    model: Path
    definitions: Path
    glyphs: Path
    umap_points: Path
    out: Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def image_table(path: Path, rows: list[list[torch.Tensor]], row_labels: list[str], col_labels: list[str],
                title: str, cell: float = 1.1) -> None:
    """A grid of (1,R,R) images in [-1,1] with row and column captions."""
    plt = _plt()
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.8 + cell * n_cols, 0.4 + cell * n_rows), dpi=120, squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([]), ax.set_yticks([])
            if j < len(row):
                ax.imshow(row[j][0].numpy(), cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
            else:
                ax.axis("off")
            if i == 0 and j < len(col_labels):
                ax.set_title(col_labels[j], fontsize=8)
            if j == 0:
                ax.set_ylabel(row_labels[i], fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def pixel_figure(path: Path, glyph: torch.Tensor, char: str, model_side: int) -> None:
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
    sees = "what the model sees" if r == model_side else f"the model draws {model_side}×{model_side}"
    ax.set_title(f"U+{ord(char):04X} downsampled to {r}×{r}: {sees} (255 = paper, 0 = ink)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def forward_figure(path: Path, glyph: torch.Tensor, timesteps: list[int], seed: int) -> None:
    """x_t = sqrt(ᾱ_t) x0 + sqrt(1-ᾱ_t) ε for one ε, under both schedules."""
    noise = torch.randn(glyph.shape, generator=torch.Generator().manual_seed(seed))
    rows, labels = [], []
    for schedule in ("linear", "cosine"):
        abar = training_scheduler(schedule, "v_prediction", False).alphas_cumprod
        rows.append([(abar[t].sqrt() * glyph + (1 - abar[t]).sqrt() * noise).clamp(-1, 1) for t in timesteps])
        labels.append(schedule)
    cols = [f"t={t}" for t in timesteps]
    image_table(path, rows, labels, cols, "forward diffusion of one glyph: linear (the glyffuser's) vs cosine schedule")


def score_field(points: torch.Tensor, grid: torch.Tensor, abar: float, bandwidth: float) -> torch.Tensor:
    """σ² ∇ log p_t at `grid` (G,2) for the KDE of `points` (N,2) noised to ᾱ: the mean step back to the data.

    The noised KDE is a mixture of N(sqrt(ᾱ) x_i, σ² I) with σ² = ᾱ h² + 1 - ᾱ, so its score is
    Σ_i w_i(x) (sqrt(ᾱ) x_i - x) / σ² with softmax weights w_i — exact, no autograd needed.
    """
    var = abar * bandwidth ** 2 + (1 - abar)
    centres = points * abar ** 0.5
    d2 = torch.cdist(grid, centres) ** 2  # (G, N)
    w = torch.softmax(-d2 / (2 * var), dim=1)
    return w @ centres - grid  # = σ² · score


def forward_2d_figure(path: Path, xy: np.ndarray, timesteps: list[int], seed: int) -> None:
    """The UMAP points (standardised) under the forward process, with densities and score arrows."""
    plt = _plt()
    from scipy.ndimage import gaussian_filter

    x0 = torch.from_numpy((xy - xy.mean(0)) / xy.std(0)).float()
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=gen)
    abar = training_scheduler("linear", "v_prediction", False).alphas_cumprod
    bandwidth = len(x0) ** (-1 / 6)  # Scott's rule in 2-D, standardised units
    arrows_from = x0[torch.randperm(len(x0), generator=gen)[:3000]]
    lim = 3.2
    g = torch.linspace(-lim * 0.92, lim * 0.92, 13)
    grid = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
    cols = (len(timesteps) + 1) // 2
    fig, axes = plt.subplots(2, cols, figsize=(3.2 * cols, 6.6), dpi=100, squeeze=False)
    for ax, t in zip(axes.flat, timesteps):
        a = float(abar[t])
        xt = a ** 0.5 * x0 + (1 - a) ** 0.5 * noise
        hist, _, _ = np.histogram2d(xt[:, 0].numpy(), xt[:, 1].numpy(), bins=120, range=[[-lim, lim]] * 2)
        ax.imshow(np.log(gaussian_filter(hist, 1.5).T + 1e-3), origin="lower", extent=(-lim, lim, -lim, lim),
                  cmap="Blues")
        field = score_field(arrows_from, grid, a, bandwidth)
        # Longest arrow = one grid spacing: directions and relative strengths within a panel.
        field = field / field.norm(dim=1).max() * float(g[1] - g[0]) * 0.95
        ax.quiver(grid[:, 0], grid[:, 1], field[:, 0], field[:, 1], angles="xy", scale_units="xy", scale=1,
                  color="crimson", width=0.006)
        ax.set_title(f"t={t}  ᾱ={a:.3f}", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_xlim(-lim, lim), ax.set_ylim(-lim, lim)
    for ax in list(axes.flat)[len(timesteps):]:
        ax.axis("off")
    fig.suptitle("the forward process on the 2-D UMAP map: data → Gaussian; arrows: the score ∇log p_t of each noised "
                 "density (scaled per panel)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _encode(pipe: GlyffuserPipeline, prompts: list[str], per_prompt: int):
    text, mask, empty = pipe.encode(prompts)
    rows = torch.repeat_interleave(torch.arange(len(prompts)), per_prompt)
    return text[rows], mask[rows], empty


@torch.inference_mode()
def one_step_guess(pipe: GlyffuserPipeline, text, mask, empty, seeds: list[int], guidance: float) -> torch.Tensor:
    """x0 predicted by one model call at t = T from pure noise, with classifier-free guidance."""
    sched = DDPMScheduler.from_config(pipe.scheduler_config)
    t = sched.config.num_train_timesteps - 1
    res = image_size(pipe.unet)
    x = torch.cat([torch.randn(1, 1, res, res, generator=torch.Generator().manual_seed(s)) for s in seeds])
    n = len(seeds)
    both, both_mask = guided_batch(text, mask, empty)
    device = pipe.unet.device
    out = denoise(pipe.unet, torch.cat([x, x]).to(device), torch.full((2 * n,), t, device=device),
                  both.float().to(device), both_mask.to(device)).float().cpu()
    c, u = out.chunk(2)
    out = u + guidance * (c - u)
    a = sched.alphas_cumprod[t]
    if sched.config.prediction_type == "v_prediction":
        x0 = a.sqrt() * x - (1 - a).sqrt() * out
    else:
        x0 = (x - (1 - a).sqrt() * out) / a.sqrt()
    return x0.clamp(-1, 1)


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

    res = image_size(pipe.unet)
    start = torch.cat([torch.randn(1, 1, res, res, generator=torch.Generator().manual_seed(s)) for s in seeds])
    frames.append(frame(start.clamp(-1, 1)))
    pipe.sample(text, mask, empty, seeds, steps, guidance, "ddim", callback=lambda i, t, x: frames.append(frame(x)))
    durations = [60] * (len(frames) - 1) + [2000]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0, optimize=True)
    return len(frames)


def run_figures(params: Params, paths: FigurePaths, track: bool = True) -> dict:
    f, s = params.figures, params.sample
    start = time.perf_counter()
    pipe = GlyffuserPipeline.from_pretrained(paths.model, bf16=s.autocast(), compile=s.compile)
    res = image_size(pipe.unet)
    defs, _ = read_table(paths.definitions, columns=["codepoint"])
    glyphs, _ = read_table(paths.glyphs, required=("png",))
    codepoints = defs.column("codepoint").to_pylist()
    if ord(f.pixel_glyph) not in codepoints:
        raise GlyffuserError(f"figures.pixel_glyph {f.pixel_glyph!r} is not among the rendered glyphs (render.ranges)")
    png = glyphs.column("png")[codepoints.index(ord(f.pixel_glyph))].as_py()
    glyph = pngs_to_tensor([png], res)[0]
    points, _ = read_table(paths.umap_points, columns=["x", "y"])
    xy = np.stack([points.column("x").to_numpy(), points.column("y").to_numpy()], 1)
    seed = params.base.seed
    seeds = list(range(SEEDS))

    with atomic_outputs(paths.out, dirs=True) as (tmp,):
        pixel_figure(tmp / "pixels.png", pngs_to_tensor([png], min(res, 32))[0], f.pixel_glyph, res)
        forward_figure(tmp / "forward.png", glyph, f.forward_timesteps, seed)
        forward_2d_figure(tmp / "forward_2d.png", xy, f.forward_timesteps, seed)
        frames = denoise_gif(tmp / "denoise.gif", pipe, f.animation_prompts, f.animation_steps, s.guidance)

        text, mask, empty = _encode(pipe, [f.steps_prompt], SEEDS)
        rows = [list(pipe.sample(text, mask, empty, seeds, n, s.guidance, s.scheduler)) for n in f.step_counts]
        image_table(tmp / "steps.png", rows, [f"{n} step{'s' * (n > 1)}" for n in f.step_counts],
                    [f"seed {i}" for i in seeds], f"“{f.steps_prompt}”, {s.scheduler}, guidance {s.guidance:g}")

        text, mask, empty = _encode(pipe, [f.single_step_prompt], SEEDS)
        guess = one_step_guess(pipe, text, mask, empty, seeds, s.guidance)
        full = pipe.sample(text, mask, empty, seeds, s.steps, s.guidance, s.scheduler)
        image_table(tmp / "single_step.png", [list(guess), list(full)],
                    ["one-step guess\nfrom pure noise", f"{s.steps}-step\nsampling"], [f"seed {i}" for i in seeds],
                    f"“{f.single_step_prompt}”: the model's x̂₀ at t = T is the average of plausible glyphs")

        rows, labels = [], []
        for prompt in f.guidance_prompts:
            text, mask, empty = _encode(pipe, [prompt], 2)
            per_scale = [pipe.sample(text, mask, empty, [0, 1], s.steps, g, s.scheduler) for g in f.guidance_scales]
            for j in range(2):
                rows.append([x[j] for x in per_scale])
                labels.append(f"{prompt}\nseed {j}")
        image_table(tmp / "guidance.png", rows, labels, [f"w = {g:g}" for g in f.guidance_scales],
                    f"classifier-free guidance sweep ({s.scheduler}, {s.steps} steps)")
    report = {"figures": sorted(p.name for p in paths.out.iterdir()), "gif_frames": frames,
              "minutes": round((time.perf_counter() - start) / 60, 2)}
    if track:
        from glyffuser.tracking import log_to_model_run

        log_to_model_run(pipe.info, {"minutes": report["minutes"]}, sorted(paths.out.iterdir()), "figures")
    return report
