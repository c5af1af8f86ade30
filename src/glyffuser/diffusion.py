"""Diffusion maths: the noise schedule, the training objective, and the samplers built from it.

The schedule is stored as a diffusers scheduler config (saved with the model); training and every
sampler are built from that one config, so they cannot disagree about betas or the prediction type.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.configuration_utils import FrozenDict

SAMPLERS = ("ddpm", "ddim", "dpmsolver++")


def shifted_betas(betas: torch.Tensor, snr_scale: float) -> torch.Tensor:
    """Betas whose SNR is `snr_scale` times that of `betas` at every t, i.e. log-SNR + log(snr_scale).

    Hoogeboom et al. 2023 shift the schedule by 2·log(base / R) for images of side R: neighbouring
    pixels of a larger image repeat each other, so the same noise level hides less of it; scaling
    the SNR by (base / R)² keeps how much of the glyph survives at each t."""
    alpha_bar = torch.cumprod(1 - betas.double(), 0)
    snr = alpha_bar / (1 - alpha_bar)
    shifted = snr * snr_scale
    alpha_bar = shifted / (1 + shifted)
    previous = torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
    return (1 - alpha_bar / previous).clamp(max=0.999).float()


def training_scheduler(schedule: str, prediction: str, zero_terminal_snr: bool, timesteps: int = 1000,
                       snr_scale: float = 1.0) -> DDPMScheduler:
    """linear: the glyffuser's betas 1e-4..0.02 over 1000 steps; cosine: Nichol & Dhariwal's (capped at 0.999).
    `snr_scale` != 1 shifts either (`shifted_betas`); the betas are then stored in the config itself."""
    beta_schedule = "linear" if schedule == "linear" else "squaredcos_cap_v2"
    trained_betas = None
    if snr_scale != 1.0:
        base = DDPMScheduler(num_train_timesteps=timesteps, beta_start=1e-4, beta_end=0.02, beta_schedule=beta_schedule)
        trained_betas = shifted_betas(base.betas, snr_scale).tolist()
    return DDPMScheduler(
        num_train_timesteps=timesteps,
        beta_start=1e-4,
        beta_end=0.02,
        beta_schedule=beta_schedule,
        trained_betas=trained_betas,
        prediction_type=prediction,
        # With zero terminal SNR the last step is pure noise, so no stray image mean leaks into
        # x_T that the model would learn to rely on (Lin et al. 2024); needs v-prediction.
        rescale_betas_zero_snr=zero_terminal_snr,
        clip_sample=True,
        clip_sample_range=1.0,
        timestep_spacing="trailing",
    )


def sampler(name: str, config: FrozenDict | dict):
    """A sampler sharing the training schedule. x0 is clipped to [-1, 1] at every step: without it
    DPM-Solver++ on the cosine schedule diverges near t = T (its x0 estimate is divided by a tiny alpha)."""
    config = dict(config)
    if name == "ddpm":
        return DDPMScheduler.from_config(config, clip_sample=True, timestep_spacing="trailing")
    if name == "ddim":
        return DDIMScheduler.from_config(config, clip_sample=True, set_alpha_to_one=True, timestep_spacing="trailing")
    if name == "dpmsolver++":
        return DPMSolverMultistepScheduler.from_config(
            config, algorithm_type="dpmsolver++", solver_order=2, thresholding=True, sample_max_value=1.0,
            dynamic_thresholding_ratio=0.995, timestep_spacing="trailing",
            # A zero-SNR schedule ends at sigma = inf; the final step must go straight to x0.
            final_sigmas_type="zero", lower_order_final=True,
        )
    raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def snr(scheduler: DDPMScheduler, t: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at integer timesteps t."""
    ab = scheduler.alphas_cumprod.to(t.device)[t]
    return ab / (1 - ab).clamp(min=1e-12)


def loss_weight(scheduler: DDPMScheduler, t: torch.Tensor, min_snr_gamma: float,
                weighting: str = "min_snr") -> torch.Tensor | None:
    """Per-image weight of the MSE to the eps or v target; None = plain MSE (γ = 0).

    min_snr (Hang et al. 2023): x0-space weight min(SNR, γ), i.e. min(SNR, γ)/(SNR+1) on the v-loss.
        It goes to 0 as SNR -> 0: the noisy half of the schedule, where the layout (the radical) is
        decided, gets almost no gradient.
    min_snr_plus_one: min(SNR+1, γ)/(SNR+1) on the v-loss: the plain v-loss (weight 1) where SNR+1 < γ,
        min-SNR's γ/(SNR+1) above it, so the clean end (stroke detail) is weighted as in min_snr."""
    if min_snr_gamma <= 0:
        return None
    s = snr(scheduler, t)
    v = scheduler.config.prediction_type == "v_prediction"
    if weighting == "min_snr_plus_one":
        w = (s + 1).clamp(max=min_snr_gamma) / (s + 1)  # v-loss weight
        return w if v else w * (s + 1) / s.clamp(min=1e-8)  # same x0-space weight on the eps-loss
    clipped = s.clamp(max=min_snr_gamma)
    # eps-loss weight min(snr,γ)/snr; v-loss weight min(snr,γ)/(snr+1) (same x0-space weighting)
    return clipped / (s + 1) if v else clipped / s.clamp(min=1e-8)


def diffusion_loss(pred: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                   scheduler: DDPMScheduler, min_snr_gamma: float, weighting: str = "min_snr") -> torch.Tensor:
    """MSE to the eps or v target, optionally weighted (`loss_weight`)."""
    if scheduler.config.prediction_type == "epsilon":
        target = noise
    else:
        target = scheduler.get_velocity(x0, noise, t)
    per_image = (pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3))  # (B,)
    weight = loss_weight(scheduler, t, min_snr_gamma, weighting)
    if weight is not None:
        per_image = per_image * weight
    return per_image.mean()


def sample_timesteps(n: int, timesteps: int, how: str, generator: torch.Generator, mean: float = 0.0,
                     std: float = 1.0) -> torch.Tensor:
    """Training timesteps (n,): uniform on 0..T-1, or logit-normal (Esser et al. 2024, SD3): t/T =
    sigmoid(N(mean, std)), which favours the middle of the schedule over both ends."""
    if how == "uniform":
        return torch.randint(0, timesteps, (n,), generator=generator)
    u = torch.sigmoid(mean + std * torch.randn(n, generator=generator))
    return (u * timesteps).long().clamp(0, timesteps - 1)
