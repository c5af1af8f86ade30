"""Preference alignment of a trained model: the Diffusion-DPO loss (Wallace et al. 2023, arXiv 2311.12908).

A pair is one prompt with a preferred glyph x_w (the winner) and a rejected one x_l (the loser). Both are noised with
the same ε and the same t, and each model's denoising error is measured against its own target (ε or v):

    e_θ(x) = ‖target(x, ε, t) − f_θ(x_t, t, prompt)‖²      per image, the mean over pixels
    d(x)   = e_policy(x) − e_reference(x)                    how much better (< 0) the policy denoises x than the
                                                             frozen reference it started from
    L      = −log σ(−β/2 · (d(x_w) − d(x_l)))

So the policy is pushed to denoise the winner better than the reference does, and the loser worse, and β sets how
far it may drift from the reference for that (large β: the same preference gap is worth more, so less drift is
needed; the glyffuser's author saw no change at β 5,000 and over-optimisation by ~200 epochs at 1,500).

At policy = reference, d = 0 for both glyphs: L = log 2 and every implicit reward is 0. Its gradient there is
β/4 · ∇(e_θ(x_w) − e_θ(x_l)), the direction in which the winner's error falls faster than the loser's, which is zero
only for a tie (x_w = x_l: a pair that carries no preference).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from glyffuser.diffusion.process import target
from glyffuser.diffusion.unet import denoise


def denoising_errors(unet, scheduler: DDPMScheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                     text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per image, the mean squared error of the network's output to its target at x_t: (B,). x0, noise: (B,1,R,R);
    t: (B,); text: (B,L,D); mask: (B,L)."""
    pred = denoise(unet, scheduler.add_noise(x0, noise, t), t, text.float(), mask)
    return (pred.float() - target(scheduler, x0, noise, t).float()).pow(2).mean(dim=(1, 2, 3))


def dpo_loss(policy, reference, scheduler: DDPMScheduler, winner: torch.Tensor, loser: torch.Tensor,
             noise: torch.Tensor, t: torch.Tensor, text: torch.Tensor, mask: torch.Tensor,
             beta: float, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The Diffusion-DPO loss of B pairs (winner, loser: (B,1,R,R), the same prompt `text`/`mask`, noise and t per
    pair) and what to watch while training: the share of pairs the policy already ranks right, the mean implicit
    reward margin, and each glyph's error against the reference (the author's warning: a rising margin alone does
    not say the glyphs are still good)."""
    x0 = torch.cat([winner, loser])
    both = (torch.cat([noise, noise]), torch.cat([t, t]), torch.cat([text, text]), torch.cat([mask, mask]))
    errors = denoising_errors(policy, scheduler, x0, *both)  # (2B,)
    with torch.no_grad():
        reference_errors = denoising_errors(reference, scheduler, x0, *both)
    d_w, d_l = (errors - reference_errors).chunk(2)  # (B,) each
    inside = -0.5 * beta * (d_w - d_l)
    per_pair = -F.logsigmoid(inside)  # (B,)
    loss = per_pair.mean() if weights is None else (weights * per_pair).sum() / weights.sum().clamp(min=1e-12)
    inside, d_w, d_l = inside.detach(), d_w.detach(), d_l.detach()  # the numbers to watch carry no gradient
    stats = {"ranked_right": float((inside > 0).float().mean()), "reward_margin": float(inside.mean()),
             "winner_error_vs_reference": float(d_w.mean()), "loser_error_vs_reference": float(d_l.mean())}
    return loss, stats
