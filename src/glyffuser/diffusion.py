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


def diffusion_loss(pred: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                   scheduler: DDPMScheduler, min_snr_gamma: float) -> torch.Tensor:
    """MSE to the eps or v target, optionally weighted by min-SNR-γ (Hang et al. 2023)."""
    if scheduler.config.prediction_type == "epsilon":
        target = noise
    else:
        target = scheduler.get_velocity(x0, noise, t)
    per_image = (pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3))  # (B,)
    if min_snr_gamma > 0:
        s = snr(scheduler, t)
        clipped = s.clamp(max=min_snr_gamma)
        # eps-loss weight min(snr,γ)/snr; v-loss weight min(snr,γ)/(snr+1) (same x0-space weighting)
        weight = clipped / (s + 1) if scheduler.config.prediction_type == "v_prediction" else clipped / s.clamp(min=1e-8)
        per_image = per_image * weight
    return per_image.mean()
