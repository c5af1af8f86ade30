"""Preference pairs and the Diffusion-DPO fine-tuning loop of the align stage (issue 44).

Pairs come from two places, and both end as (winner, loser) drafts at the model's side with one prompt's encoder states:
- a judge: K drafts of one training definition, drawn with the sampler users run, read by the reward judge; the draft
  that gives the definition's radical the highest probability wins over the one that gives it the lowest, when the
  two are at least `min_margin` apart (a near tie teaches noise);
- people: each answered pair of the feedback table (glyffuser label), its 128 px glyphs area-downsampled to the
  model's side (the drafts they were upsampled from are close to that), its prompt encoded as a typed prompt is.
The loop (`fine_tune`) is dpo_loss (preference.py) over shuffled batches of pairs, each with fresh shared noise and t.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from glyffuser.diffusion.preference import dpo_loss
from glyffuser.diffusion.process import pad_text


@dataclass
class Pairs:
    """P preference pairs: winner, loser (P,1,R,R) in [-1,1], the prompt's states text (P,L,D) and mask (P,L), each
    pair's loss weight (P,), and where it came from ('judge' or 'human')."""

    winner: torch.Tensor
    loser: torch.Tensor
    text: torch.Tensor
    mask: torch.Tensor
    weight: torch.Tensor
    source: list[str]

    def __len__(self) -> int:
        return len(self.source)

    @staticmethod
    def join(a: Pairs, b: Pairs) -> Pairs:
        length = max(a.text.shape[1], b.text.shape[1])
        (ta, ma), (tb, mb) = pad_text(a.text, a.mask, length), pad_text(b.text, b.mask, length)
        return Pairs(torch.cat([a.winner, b.winner]), torch.cat([a.loser, b.loser]), torch.cat([ta.float(), tb.float()]),
                     torch.cat([ma, mb]), torch.cat([a.weight, b.weight]), a.source + b.source)


def judge_pairs(drafts: torch.Tensor, rewards: np.ndarray, text: torch.Tensor, mask: torch.Tensor,
                min_margin: float, all_pairs: bool = False) -> tuple[Pairs, np.ndarray]:
    """From N prompts' K drafts each: drafts (N,K,1,R,R), rewards (N,K), text (N,L,D), mask (N,L) -> the pairs whose
    rewards differ by ≥ min_margin, and which prompts gave one (N,) bool. Each prompt's best draft against its worst,
    or (all_pairs) every two of its drafts that far apart, the better one winning."""
    n, k = rewards.shape
    if all_pairs:
        i, j = np.triu_indices(k, 1)  # every unordered pair of a prompt's drafts
        better = rewards[:, i] >= rewards[:, j]  # (N, K(K-1)/2)
        win, lose = np.where(better, i, j), np.where(better, j, i)
    else:
        win, lose = rewards.argmax(axis=1)[:, None], rewards.argmin(axis=1)[:, None]  # (N,1)
    rows = np.arange(n)[:, None]
    ok = rewards[rows, win] - rewards[rows, lose] >= min_margin  # (N, pairs per prompt)
    p, c = np.nonzero(ok)
    idx = torch.from_numpy(p)
    w, lo = torch.from_numpy(win[p, c]), torch.from_numpy(lose[p, c])
    m = len(p)
    return Pairs(drafts[idx, w], drafts[idx, lo], text[idx].float(), mask[idx], torch.ones(m), ["judge"] * m), ok.any(axis=1)


def human_pairs(left: torch.Tensor, right: torch.Tensor, choices: list[str], text: torch.Tensor, mask: torch.Tensor,
                weight: float, resolution: int) -> Pairs:
    """People's answers: left/right glyphs (N,1,S,S) in [-1,1] at any side, choices 'left'/'right'/'skip' (skips are
    dropped), text (N,L,D), mask (N,L) -> pairs at the model's side."""
    def fit(x: torch.Tensor) -> torch.Tensor:
        return x if x.shape[-1] == resolution else F.interpolate(x, size=resolution, mode="area")

    pick = [i for i, c in enumerate(choices) if c in ("left", "right")]
    idx = torch.tensor(pick, dtype=torch.long)
    left_won = torch.tensor([choices[i] == "left" for i in pick], dtype=torch.bool).view(-1, 1, 1, 1)
    l, r = fit(left[idx]), fit(right[idx])
    n = len(pick)
    return Pairs(torch.where(left_won, l, r), torch.where(left_won, r, l), text[idx].float(), mask[idx],
                 torch.full((n,), weight), ["human"] * n)


def fine_tune_epoch(policy, reference, scheduler: DDPMScheduler, optimizer: torch.optim.Optimizer, pairs: Pairs,
                    batch_size: int, beta: float, generator: torch.Generator) -> dict[str, float]:
    """One pass over the pairs in a random order, each batch with its own noise ε and timesteps t shared by its
    winner and loser; the mean of dpo_loss's statistics over the batches (weighted by batch size)."""
    device = next(policy.parameters()).device
    order = torch.randperm(len(pairs), generator=generator)
    sums: dict[str, float] = {}
    timesteps = scheduler.config.num_train_timesteps
    for chunk in order.split(batch_size):
        w, lo = pairs.winner[chunk], pairs.loser[chunk]
        noise = torch.randn(w.shape, generator=generator)
        t = torch.randint(0, timesteps, (len(chunk),), generator=generator)
        loss, stats = dpo_loss(policy, reference, scheduler, w.to(device), lo.to(device), noise.to(device),
                               t.to(device), pairs.text[chunk].to(device), pairs.mask[chunk].to(device), beta,
                               pairs.weight[chunk].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        for k, v in {"loss": loss.item(), **stats}.items():
            sums[k] = sums.get(k, 0.0) + v * len(chunk)
    return {k: v / len(pairs) for k, v in sums.items()}


def ink_share(images: torch.Tensor) -> float:
    """The share of ink pixels (darker than mid-grey) of (N,1,R,R) images in [-1,1]: the author's complexity check
    (aligned glyphs that lose strokes lose ink)."""
    return float((images < 0).float().mean())
