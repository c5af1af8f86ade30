"""The guide's pictures of the forward process and the score, on real data but without the model.

gaussian_1d.png   one pixel across every glyph: two spikes (paper, ink) that noise turns into N(0, 1)
forward_q.png     q(x_t | x_0) on the 2-D map: a Gaussian that slides to the origin and widens
forward_2d.png    the whole map's density q_t under the forward process
score.png         the same densities with the score field, one arrow scale across panels

The 2-D "data" is the umap stage's map, standardised; its density is a Gaussian KDE of a subsample,
which noised stays a Gaussian mixture, so the shading and the arrows are exact for one density.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

LIM = 4.2  # half-width of the 2-D window in standard units: N(0, I) puts 99.99 % of its mass inside


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def timesteps_at(alphas_cumprod: torch.Tensor, levels: list[float]) -> list[int]:
    """For each signal level ᾱ, the first timestep whose ᾱ_t is at or below it (the last one if none)."""
    a = alphas_cumprod.numpy()
    return [int(np.argmax(a <= level)) if (a <= level).any() else len(a) - 1 for level in levels]


def busiest_pixel(images: torch.Tensor) -> tuple[int, int, float]:
    """(row, col, ink share) of the central pixel whose ink share is closest to one half: the most bimodal."""
    ink = (images[:, 0] < 0).float().mean(0)  # (R, R)
    r = ink.shape[0]
    centre = ink[r // 4: 3 * r // 4, r // 4: 3 * r // 4]
    k = int((centre - 0.5).abs().argmin())
    y, x = divmod(k, centre.shape[1])
    return y + r // 4, x + r // 4, float(centre.flatten()[k])


def gaussian_1d_figure(path: Path, values: torch.Tensor, abar: torch.Tensor, timesteps: list[int], where: str,
                       seed: int) -> list[dict]:
    """Histograms of one pixel's value x_t over all glyphs at a few t, with the fitted normal; returns the fits."""
    plt = _plt()
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(values.shape, generator=gen)
    fig, axes = plt.subplots(1, len(timesteps), figsize=(2.7 * len(timesteps), 2.9), dpi=110, squeeze=False)
    grid = np.linspace(-4, 4, 400)
    fits = []
    for ax, t in zip(axes[0], timesteps):
        a = float(abar[t])
        xt = (a ** 0.5 * values + (1 - a) ** 0.5 * noise).numpy()
        mu, sd = float(xt.mean()), float(xt.std())
        ax.hist(xt, bins=80, range=(-4, 4), density=True, color="#9ecae1")
        ax.plot(grid, np.exp(-0.5 * ((grid - mu) / sd) ** 2) / (sd * (2 * np.pi) ** 0.5), color="crimson", lw=1.2,
                label=f"fit N({mu:.2f}, {sd:.2f}²)")
        ax.plot(grid, np.exp(-0.5 * grid ** 2) / (2 * np.pi) ** 0.5, "k--", lw=0.8, label="N(0, 1)")
        ax.set_title(f"t = {t}, ᾱ = {a:.3f}", fontsize=9)
        ax.set_yticks([])
        ax.legend(fontsize=6.5, loc="upper left", frameon=False)
        fits.append({"t": t, "alpha_bar": a, "mean": mu, "std": sd})
    fig.suptitle(f"one pixel ({where}) across {len(values):,} glyphs: paper (+1) and ink (−1), noised", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return fits


def standardise(xy: np.ndarray) -> torch.Tensor:
    return torch.from_numpy((xy - xy.mean(0)) / xy.std(0)).float()


def forward_q_figure(path: Path, x0: torch.Tensor, abar: torch.Tensor, timesteps: list[int], seed: int) -> None:
    """q(x_t | x_0) = N(√ᾱ x_0, (1-ᾱ) I) for three data points: the 1σ circle at each t, and its centre's path."""
    plt = _plt()
    gen = torch.Generator().manual_seed(seed)
    # three points far apart on the map: the extremes along x, and the one farthest from both
    left, right = int(x0[:, 0].argmin()), int(x0[:, 0].argmax())
    third = int(torch.minimum((x0 - x0[left]).norm(dim=1), (x0 - x0[right]).norm(dim=1)).argmax())
    chosen = x0[[left, right, third]]
    fig, ax = plt.subplots(figsize=(5.6, 5.4), dpi=110)
    ax.scatter(*x0[torch.randperm(len(x0), generator=gen)[:4000]].T, s=1, color="#cccccc", lw=0)
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(timesteps)))
    path_t = np.linspace(0, len(abar) - 1, 60).astype(int)
    for p in chosen:
        centres = np.array([float(abar[t]) ** 0.5 * p.numpy() for t in path_t])
        ax.plot(*centres.T, color="k", lw=0.6)
        for t, c in zip(timesteps, colours):
            a = float(abar[t])
            centre = a ** 0.5 * p.numpy()
            ax.add_patch(plt.Circle(centre, (1 - a) ** 0.5, fill=False, color=c, lw=1.2))
            ax.plot(*centre, "o", color=c, ms=3)
        ax.plot(*p.numpy(), "k*", ms=9)
    for t, c in zip(timesteps, colours):
        ax.plot([], [], "o-", color=c, label=f"t = {t} (ᾱ = {float(abar[t]):.3f})")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_xlim(-LIM, LIM), ax.set_ylim(-LIM, LIM), ax.set_aspect("equal")
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title("q(x_t | x_0) for three glyphs (★): centre √ᾱ·x_0, circle radius √(1−ᾱ)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def mixture(points: torch.Tensor, grid: torch.Tensor, abar: float, bandwidth: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Density and σ²·score at `grid` (G,2) of the KDE of `points` (N,2) noised to ᾱ.

    The noised KDE is a mixture of N(√ᾱ x_i, σ² I) with σ² = ᾱ h² + 1 − ᾱ, so the score is
    Σ_i w_i(x) (√ᾱ x_i − x) / σ² with softmax weights w_i: exact, no autograd needed.
    σ²·score = E[√ᾱ x_0 | x_t] − x_t is Tweedie's step back towards the data.
    """
    var = abar * bandwidth ** 2 + (1 - abar)
    centres = points * abar ** 0.5
    density, field = [], []
    for chunk in grid.split(4096):
        logits = -torch.cdist(chunk, centres) ** 2 / (2 * var)  # (g, N)
        density.append(torch.logsumexp(logits, dim=1).exp() / (len(points) * 2 * np.pi * var))
        field.append(torch.softmax(logits, dim=1) @ centres - chunk)
    return torch.cat(density), torch.cat(field)


def density_figures(forward_path: Path, score_path: Path, x0: torch.Tensor, abar: torch.Tensor,
                    timesteps: list[int], seed: int) -> dict:
    """forward_2d.png (densities) and score.png (the same densities with arrows at one scale)."""
    plt = _plt()
    gen = torch.Generator().manual_seed(seed)
    points = x0[torch.randperm(len(x0), generator=gen)[:4000]]
    # A narrow kernel: UMAP islands are far tighter than Scott's rule (0.25 here) assumes for one Gaussian.
    bandwidth = 0.08
    fine = torch.linspace(-LIM, LIM, 160)
    fine_grid = torch.stack(torch.meshgrid(fine, fine, indexing="xy"), -1).reshape(-1, 2)
    coarse = torch.linspace(-LIM * 0.9, LIM * 0.9, 15)
    arrow_grid = torch.stack(torch.meshgrid(coarse, coarse, indexing="xy"), -1).reshape(-1, 2)
    panels = []
    for t in timesteps:
        a = float(abar[t])
        density, _ = mixture(points, fine_grid, a, bandwidth)
        _, field = mixture(points, arrow_grid, a, bandwidth)
        panels.append((t, a, density.reshape(len(fine), len(fine)).numpy(), field))
    # One arrow scale for all panels: the longest arrow anywhere is 1.3 grid spacings.
    spacing = float(coarse[1] - coarse[0])
    longest = max(float(f.norm(dim=1).max()) for *_, f in panels)
    scale = 1.3 * spacing / longest

    cols = (len(timesteps) + 1) // 2
    report = {"timesteps": timesteps, "alpha_bars": [p[1] for p in panels], "arrow_scale": scale,
              "mean_step_length": [float(p[3].norm(dim=1).mean()) for p in panels]}
    for path, arrows in ((forward_path, False), (score_path, True)):
        fig, axes = plt.subplots(2, cols, figsize=(3.1 * cols, 6.5), dpi=105, squeeze=False)
        for ax, (t, a, density, field) in zip(axes.flat, panels):
            ax.imshow(np.log(density + 1e-4), origin="lower", extent=(-LIM, LIM, -LIM, LIM), cmap="Blues",
                      vmin=np.log(1e-4), vmax=np.log(density.max() + 1e-4))
            ax.contour(fine.numpy(), fine.numpy(), density, levels=[0.01, 0.05], colors="#08306b", linewidths=0.5)
            if arrows:
                ax.quiver(arrow_grid[:, 0], arrow_grid[:, 1], field[:, 0] * scale, field[:, 1] * scale,
                          angles="xy", scale_units="xy", scale=1, color="crimson", width=0.006)
            ax.add_patch(plt.Circle((0, 0), 2, fill=False, ls=":", color="k", lw=0.7))
            ax.set_title(f"t = {t}   ᾱ = {a:.3f}", fontsize=9)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_xlim(-LIM, LIM), ax.set_ylim(-LIM, LIM)
        for ax in list(axes.flat)[len(timesteps):]:
            ax.axis("off")
        if arrows:
            title = (f"the score of q_t: arrows show σ²∇log q_t = E[√ᾱ x₀ | x_t] − x_t, all panels at one scale "
                     f"(drawn × {scale:.2f}); dotted: radius 2 of N(0, I)")
        else:
            title = "the forward process on the 2-D map: the data density q_t turns into N(0, I) (dotted: radius 2)"
        fig.suptitle(title, fontsize=9.5)
        fig.tight_layout(h_pad=1.5)
        fig.savefig(path)
        plt.close(fig)
    return report
