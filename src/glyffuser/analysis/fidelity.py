"""Stroke fidelity: how far generated glyphs' local stroke texture is from real glyphs'.

KID on the radical classifier's features misses wobbly strokes, specks and soft edges: the classifier
was trained to ignore exactly those (its augmentation blurs, thickens and adds noise). What the eye sees
in a grid is local: a font's strokes have straight edges and clean corners, wobble makes jagged ones,
specks are isolated dots, blur leaves grey pixels at the edges. So the measure counts local patterns:

- every pixel's 3×3 neighbourhood, binarised at mid-grey (ink / paper): 512 patterns;
- times whether the centre pixel is clean (within 0.2 of paper or ink on a 0..1 scale) or grey: 1,024
  codes; the all-paper clean neighbourhood (most of the page) is left out;
- fidelity = Jensen–Shannon divergence (bits) between the pooled code frequencies of the real test
  glyphs and of the judged images, with a bootstrap standard error over images. 0 = same texture.

`validate` checks it sees what it should: real glyphs of another split score near 0, lightly degraded
real glyphs (a tenth of a pixel of smooth jitter, three specks, half a 3×3 blur) score above that, each kind
on its own, and the samples of the 2026-12 default score above all three (benchmarks/conditioning.py
--only fidelity, 3 seeds). It reads edges, not layout: a glyph with the wrong radical but clean strokes
scores as well as a real one.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

CODES = 1024
DEGRADATIONS = ("jitter", "specks", "blur")
JITTER_PX = 0.1
_WEIGHTS = (2 ** torch.arange(9, dtype=torch.float32)).view(1, 1, 3, 3)  # one bit per neighbour


def stroke_codes(images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Per-image histogram of the 1,024 local stroke codes: (N,1,R,R) in [-1,1] -> (N,1024) counts."""
    out = []
    for i in range(0, len(images), batch):
        x = images[i:i + batch].float()
        ink = (x < 0).float()  # ink is -1, paper +1
        pattern = F.conv2d(F.pad(ink, (1, 1, 1, 1), value=0.0), _WEIGHTS).round().long()  # (B,1,R,R) 0..511
        v = (x + 1) / 2
        grey = ((v > 0.2) & (v < 0.8)).long()
        code = (pattern + 512 * grey).flatten(1)  # (B,R²)
        counts = torch.zeros(len(x), CODES, dtype=torch.float64)
        counts.scatter_add_(1, code, torch.ones_like(code, dtype=torch.float64))
        counts[:, 0] = 0  # clean blank paper: most of the page, says nothing about strokes
        out.append(counts)
    return torch.cat(out)


def jensen_shannon(p: torch.Tensor, q: torch.Tensor) -> float:
    """JSD in bits between two count vectors (normalised here)."""
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: torch.Tensor) -> torch.Tensor:
        nz = a > 0
        return (a[nz] * (a[nz] / m[nz]).log2()).sum()

    return float((kl(p) + kl(q)) / 2)


def fidelity(real_codes: torch.Tensor, codes: torch.Tensor, boot: int = 200, seed: int = 0) -> tuple[float, float]:
    """Stroke-texture JSD (bits) between real and judged images, and its bootstrap SE (both sets resampled)."""
    value = jensen_shannon(real_codes.sum(0), codes.sum(0))
    gen = torch.Generator().manual_seed(seed)
    draws = []
    for _ in range(boot):
        a = real_codes[torch.randint(0, len(real_codes), (len(real_codes),), generator=gen)].sum(0)
        b = codes[torch.randint(0, len(codes), (len(codes),), generator=gen)].sum(0)
        draws.append(jensen_shannon(a, b))
    return value, float(np.std(draws, ddof=1))


def degrade(images: torch.Tensor, kind: str, gen: torch.Generator) -> torch.Tensor:
    """Lightly degraded real glyphs, the defects seen in sample grids:
    jitter: a smooth random displacement field of 0.1 px RMS (edges that wander; 0.3 px already scores
            3x worse than today's samples);
    specks: 3 ink dots of 1-2 px per glyph, in random places;
    blur: half-way to a 3×3 binomial blur (soft edges)."""
    b, _, r, _ = images.shape
    x = images.float()
    if kind == "jitter":
        coarse = torch.randn(b, 2, 6, 6, generator=gen)
        field = F.interpolate(coarse, size=(r, r), mode="bicubic", align_corners=False)
        field = field / field.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt() * (JITTER_PX * 2 / r)  # px -> [-1,1] units
        base = F.affine_grid(torch.eye(2, 3).expand(b, 2, 3), list(x.shape), align_corners=False)
        return (F.grid_sample(x + 1, base + field.permute(0, 2, 3, 1), padding_mode="zeros", align_corners=False) - 1
                ).clamp(-1, 1)
    if kind == "specks":
        out = x.clone()
        for i in range(b):
            for _ in range(3):
                s = int(torch.randint(1, 3, (1,), generator=gen))
                y0, x0 = (int(v) for v in torch.randint(0, r - s + 1, (2,), generator=gen))
                out[i, 0, y0:y0 + s, x0:x0 + s] = -1.0
        return out
    if kind == "blur":
        k = torch.tensor([1.0, 2.0, 1.0])
        k = (k[:, None] * k[None, :] / 16).view(1, 1, 3, 3)
        return torch.lerp(x, F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k), 0.5)
    raise ValueError(f"unknown degradation {kind!r}; choose jitter, specks or blur")




def validate(reference: torch.Tensor, other_real: torch.Tensor, seed: int = 0) -> dict:
    """Fidelity of another real split and of each light degradation of it, against `reference`."""
    ref = stroke_codes(reference)
    gen = torch.Generator().manual_seed(seed)
    out = {"real": fidelity(ref, stroke_codes(other_real), seed=seed)[0]}
    for kind in DEGRADATIONS:
        out[kind] = fidelity(ref, stroke_codes(degrade(other_real, kind, gen)), seed=seed)[0]
    return out
