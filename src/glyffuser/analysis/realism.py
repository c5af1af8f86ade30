"""Realism: can a small CNN tell generated glyphs from real ones? (a classifier two-sample test)

Stroke fidelity counts 3×3 ink patterns; at 128 px the cascade's output now sits near its real floor, yet by eye
the strokes still wobble, end in rounded blobs and bend where a font's are straight. A classifier two-sample test
(Lopez-Paz & Oquab 2017) asks the question directly: a small CNN is trained to tell one set of glyphs from the
other and scored on glyphs it did not train on. 50 % = indistinguishable; 100 % = every glyph gives itself away.

- the two sets are balanced (the larger one subsampled) and split into `folds` parts; each part is scored by a
  CNN trained on the others, so every glyph is judged exactly once, by a CNN that never saw it;
- the CNN sees local texture only: four stride-2 3×3 convolutions (a receptive field of 31 px), then a global
  mean. It cannot read which characters are drawn, only how their strokes look;
- each CNN trains for `steps` batches, or ~20 passes over its training fold when that is fewer (so a handful of
  glyphs costs seconds, while the 1,004 of the default get the full 300 steps);
- the standard error is binomial over the judged glyphs.

`benchmarks/realism.py` checks it sees what it should: real test glyphs against real train glyphs score near
50 %, lightly degraded real glyphs (glyffuser.analysis.fidelity.degrade) between them and the samples.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class TextureNet(nn.Module):
    """(N,1,R,R) in [-1,1] -> (N,) logit of 'generated'. 16-32-64-64 channels, each conv halves the side."""

    def __init__(self, width: int = 16):
        super().__init__()
        w = [1, width, 2 * width, 4 * width, 4 * width]
        self.convs = nn.ModuleList(nn.Conv2d(w[i], w[i + 1], 3, stride=2, padding=1) for i in range(4))
        self.head = nn.Linear(w[-1], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.silu(conv(x))
        return self.head(x.mean(dim=(2, 3))).squeeze(1)


def _train(x: torch.Tensor, y: torch.Tensor, steps: int, batch: int, gen: torch.Generator) -> TextureNet:
    net = TextureNet()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    for _ in range(steps):
        i = torch.randint(0, len(x), (batch,), generator=gen)
        xb = x[i]
        flip = torch.rand(batch, generator=gen) < 0.5  # mirror half: texture, not layout
        xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
        loss = F.binary_cross_entropy_with_logits(net(xb), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def two_sample_accuracy(real: torch.Tensor, generated: torch.Tensor, folds: int = 2, steps: int = 300,
                        batch: int = 64, seed: int = 0) -> tuple[float, float]:
    """Held-out accuracy of telling `generated` (N,1,R,R) from `real` (M,1,R,R), both in [-1,1], and its standard
    error. 0.5: indistinguishable."""
    gen = torch.Generator().manual_seed(seed)
    n = min(len(real), len(generated))
    if n < 2 * folds:
        raise ValueError(f"a two-sample test with {folds} folds needs at least {2 * folds} glyphs per set, got {n}")
    a = real[torch.randperm(len(real), generator=gen)[:n]].float()
    b = generated[torch.randperm(len(generated), generator=gen)[:n]].float()
    x, y = torch.cat([a, b]), torch.cat([torch.zeros(n), torch.ones(n)])
    fold = torch.cat([torch.arange(n) % folds, torch.arange(n) % folds])
    correct = 0
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # the CNNs' initial weights
        for k in range(folds):
            # at most `steps`, and no more than ~20 passes over a small training fold (a few glyphs need seconds)
            fold_steps = min(steps, max(1, math.ceil(20 * int((fold != k).sum()) / batch)))
            net = _train(x[fold != k], y[fold != k], fold_steps, batch, gen)
            with torch.no_grad():
                logits = torch.cat([net(x[fold == k][i:i + 256]) for i in range(0, int((fold == k).sum()), 256)])
            correct += int(((logits > 0).float() == y[fold == k]).sum())
    acc = correct / (2 * n)
    return acc, math.sqrt(max(acc * (1 - acc), 1e-12) / (2 * n))
