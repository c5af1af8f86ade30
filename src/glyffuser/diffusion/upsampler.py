"""The cascade's second network: a super-resolution CNN from the base model's glyphs to twice their side.

Cascaded diffusion (Ho et al. 2022, Imagen) draws the structure small and upsamples in a separate model;
here the upsampler is a regression CNN (ESPCN-style: the convolutions run at the low resolution, a
pixel shuffle makes the high one) on top of a bilinear upsampling, trained on real glyph pairs from the
render tables. Its low-resolution inputs are degraded at random during training (`degrade`: noise at a
random level, grey haze, specks, blur and sub-pixel jitter: Imagen's noise-conditioning augmentation
without the conditioning; and `block_jitter`, the seams of a patchified diffusion model's blocks), so that what
the diffusion model draws, dirt and seams included, maps to clean strokes.

    net = Upsampler(width=48, depth=8)      # (B,1,64,64) in [-1,1] -> (B,1,128,128) in [-1,1]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glyffuser.analysis.fidelity import degrade as degrade_real


class Upsampler(nn.Module):
    """×`scale`: bilinear upsampling plus a learned residual computed at the low resolution."""

    def __init__(self, width: int = 48, depth: int = 8, scale: int = 2):
        super().__init__()
        self.config = {"width": width, "depth": depth, "scale": scale}
        layers: list[nn.Module] = [nn.Conv2d(1, width, 3, padding=1), nn.SiLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.SiLU()]
        layers += [nn.Conv2d(width, scale * scale, 3, padding=1), nn.PixelShuffle(scale)]
        self.net = nn.Sequential(*layers)
        self.scale = scale

    def forward(self, low: torch.Tensor) -> torch.Tensor:  # (B,1,r,r) -> (B,1,s·r,s·r), both in [-1,1]
        up = F.interpolate(low, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return (up + self.net(low)).clamp(-1, 1)


def block_jitter(x: torch.Tensor, gen: torch.Generator, block: int, p: float) -> torch.Tensor:
    """Each block×block tile of (B,1,r,r) moved by one pixel (each axis -1, 0 or +1 at random) with probability p: the
    broken, offset strokes a diffusion model that denoises block×block patches (train.patch_size) leaves at their seams.
    p 0 returns the input unchanged and draws nothing from `gen`."""
    if p <= 0:
        return x
    b, _, r, _ = x.shape
    n = r // block
    offset = torch.randint(-1, 2, (b, 2, n, n), generator=gen) * (torch.rand(b, 1, n, n, generator=gen) < p)
    offset = offset.repeat_interleave(block, 2).repeat_interleave(block, 3)  # (B,2,r,r), constant per tile
    ys = (torch.arange(r).view(1, r, 1) + offset[:, 0]).clamp(0, r - 1)
    xs = (torch.arange(r).view(1, 1, r) + offset[:, 1]).clamp(0, r - 1)
    return torch.gather(x.reshape(b, 1, r * r), 2, (ys * r + xs).view(b, 1, r * r)).view(b, 1, r, r)


def degrade(low: torch.Tensor, gen: torch.Generator, strength: float = 1.0, block: int = 4,
            block_p: float = 0.0) -> torch.Tensor:
    """Random degradations of a batch of clean low-resolution glyphs (B,1,r,r) in [-1,1], each image its own:
    - Gaussian noise of σ uniform in [0, 0.2·strength] (a diffusion sample's last steps leave some);
    - grey haze: the paper darkened by up to 0.15·strength (on the 2-wide scale) in a smooth blob;
    - 0-3 specks of 1-2 px, from light grey to ink;
    - half the images blurred half-way to a 3×3 binomial blur, half shifted by up to ±0.5 px;
    - first of all, block_jitter with (block, block_p).
    strength 0 returns the input unchanged."""
    if strength <= 0:
        return low
    b, _, r, _ = low.shape
    x = block_jitter(low.float(), gen, block, block_p).clone()
    u = lambda *shape: torch.rand(*shape, generator=gen)  # noqa: E731
    # blur (the stroke-fidelity check's light blur) or jitter
    blurred = degrade_real(x, "blur", gen)
    shift = (u(b, 1, 1, 2) - 0.5) * (2 / r) * strength  # up to ±0.5 px in grid units
    grid = F.affine_grid(torch.eye(2, 3).expand(b, 2, 3), list(x.shape), align_corners=False) + shift
    jittered = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    x = torch.where(u(b, 1, 1, 1) < 0.5, blurred, jittered)
    # haze: a smooth random darkening of the paper
    blob = F.interpolate(u(b, 1, 4, 4), size=(r, r), mode="bicubic", align_corners=False).clamp(0, 1)
    x = x - 0.15 * strength * u(b, 1, 1, 1) * blob
    # specks
    for i in range(b):
        for _ in range(int(u(1) * 4 * min(strength, 1))):
            s = 1 + int(u(1) * 2)
            y0, x0 = (int(v) for v in torch.randint(0, r - s + 1, (2,), generator=gen))
            x[i, 0, y0:y0 + s, x0:x0 + s] = torch.minimum(x[i, 0, y0:y0 + s, x0:x0 + s], 1 - 2 * u(1))
    # noise at a random level
    x = x + 0.2 * strength * u(b, 1, 1, 1) * torch.randn(x.shape, generator=gen)
    return x.clamp(-1, 1)


def train_upsampler(low: torch.Tensor, high: torch.Tensor, net: Upsampler, steps: int, batch: int, lr: float,
                    seed: int, strength: float = 1.0, bar=None, block: int = 4, block_p: float = 0.0,
                    loss_of=None) -> list[float]:
    """L1 regression from degraded `low` (N,1,r,r) to clean `high` (N,1,2r,2r), AdamW with a one-cycle schedule.
    Returns the loss of every step. NHWC (channels_last) memory layout: 0.23 against 0.33 s a step on 2 CPU cores.
    loss_of(error) -> scalar replaces the L1 loss (benchmarks/upsampler_screen.py tries L2: it greys the edges)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    net.train()
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(low), (batch,), generator=gen)
        x = degrade(low[idx], gen, strength, block, block_p).contiguous(memory_format=torch.channels_last)
        error = net(x) - high[idx]  # (B,1,2r,2r)
        loss = error.abs().mean() if loss_of is None else loss_of(error)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if bar is not None:
            bar.update(1)
    return losses


@torch.no_grad()
def upsample(net: Upsampler, low: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """(N,1,r,r) -> (N,1,2r,2r) in eval mode, in batches. The net is not changed (concurrent requests share it):
    train_upsampler and load_upsampler_folder leave it in channels_last layout."""
    net.eval()
    return torch.cat([net(low[i:i + batch].float().contiguous(memory_format=torch.channels_last)).contiguous()
                      for i in range(0, len(low), batch)])
