"""The diffusion process in one place: what train, the pipeline and the figures all call.

    schedule        training_scheduler, solver (the samplers built from the same config)
    forward         q(x_t | x_0): the scheduler's add_noise in training, forward_sample written out;
                    target / target_at (ε or v); x0_from_output (x̂₀ back from a network output)
    objective       loss_weight, diffusion_loss, sample_timesteps, with_dropped_prompts (CFG dropout)
    guidance        guided_batch ([conditional; unconditional] rows), guidance_mix, guided_output
    reverse         initial_noise, check_sampling, sample_progressive (yields each Step: t, x_t, x̂₀),
                    sample (the same loop, the final glyphs only), native_bf16

The schedule is stored as a diffusers scheduler config (saved with the model); training and every
sampler are built from that one config, so they cannot disagree about betas or the prediction type.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.configuration_utils import FrozenDict

from glyffuser.diffusion.unet import denoise, image_size
from glyffuser.params import InvalidSetting, check_guidance, check_steps

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


def solver(name: str, config: FrozenDict | dict):
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


def forward_sample(x0: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """x_t = √ᾱ_t x₀ + √(1-ᾱ_t) ε, written out (the scheduler's add_noise is the same in training)."""
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise


def target_at(x0: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor, prediction: str) -> torch.Tensor:
    """`target` written out for one ᾱ_t: ε, or v = √ᾱ ε − √(1-ᾱ) x₀."""
    return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0 if prediction == "v_prediction" else noise


def target(scheduler: DDPMScheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the network is trained to output at x_t = √ᾱ x₀ + √(1-ᾱ) ε: ε, or v = √ᾱ ε − √(1-ᾱ) x₀."""
    if scheduler.config.prediction_type == "epsilon":
        return noise
    return scheduler.get_velocity(x0, noise, t)


def x0_from_output(scheduler_config: dict, x: torch.Tensor, t: int, out: torch.Tensor) -> torch.Tensor:
    """x̂₀ from x_t and the network output at integer timestep t (inverting the `target` relation)."""
    a = DDPMScheduler.from_config(scheduler_config).alphas_cumprod[t]
    if scheduler_config["prediction_type"] == "v_prediction":
        return a.sqrt() * x - (1 - a).sqrt() * out
    return (x - (1 - a).sqrt() * out) / a.sqrt()


def diffusion_loss(pred: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                   scheduler: DDPMScheduler, min_snr_gamma: float, weighting: str = "min_snr",
                   contrast: float = 0.0) -> torch.Tensor:
    """MSE to the eps or v target, optionally weighted (`loss_weight`).

    contrast > 0: contrastive flow matching (ΔFM, Stoica et al. 2025): minus `contrast` times the MSE to the
    target of another image of the batch (its glyph and noise, this one's t), so that the flows of different
    prompts are pushed apart; the negatives are the batch rolled by one, so it costs no extra forward pass."""
    pred = pred.float()
    per_image = (pred - target(scheduler, x0, noise, t).float()).pow(2).mean(dim=(1, 2, 3))  # (B,)
    if contrast > 0:
        negative = target(scheduler, x0.roll(1, 0), noise.roll(1, 0), t).float()  # (B,1,R,R)
        per_image = per_image - contrast * (pred - negative).pow(2).mean(dim=(1, 2, 3))
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


def pad_tokens(rows: list[torch.Tensor], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """[(l_i, D)] -> (N, L, D) zero-padded, (N, L) bool mask."""
    length = length or max(r.shape[0] for r in rows)
    text = torch.zeros(len(rows), length, rows[0].shape[1], dtype=rows[0].dtype)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, r in enumerate(rows):
        text[i, : r.shape[0]] = r[:length]
        mask[i, : r.shape[0]] = True
    return text, mask


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast runs on hardware here: CUDA with bf16, or a CPU with AMX / AVX512-BF16.

    Measured on a 2-core AMX CPU: 20-step sampling 9.9 glyphs/s in bf16 against 4.1 in fp32, with the
    same evaluate numbers (README). Without native bf16 a CPU emulates it, slower than fp32.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def guided_batch(text: torch.Tensor, mask: torch.Tensor, empty: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[conditional; unconditional] rows for one classifier-free-guidance forward: (N,L,D),(N,L) -> (2N,L',D),(2N,L')."""
    n = text.shape[0]
    length = max(text.shape[1], empty.shape[0])
    uncond, umask = pad_tokens([empty] * n, length)
    cond, cmask = pad_text(text, mask, length)
    return torch.cat([cond, uncond]), torch.cat([cmask, umask])


def pad_text(text: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, L, D), (N, L) -> (N, length, D), (N, length) with masked-out zero tokens; L > length is left as is."""
    extra = length - text.shape[1]
    if extra <= 0:
        return text, mask
    return (torch.cat([text, text.new_zeros(text.shape[0], extra, text.shape[2])], dim=1),
            torch.cat([mask, mask.new_zeros(mask.shape[0], extra)], dim=1))


def check_sampling(steps: int, guidance: float, scheduler_config: dict, scheduler: str | None = None) -> None:
    """Refuse settings no sampler can honour (and, when given, an unknown sampler name), in one sentence, before
    any work."""
    check_steps(steps, int(scheduler_config.get("num_train_timesteps", 1000)))
    check_guidance(guidance)
    if scheduler is not None and scheduler not in SAMPLERS:
        raise InvalidSetting(f"unknown scheduler {scheduler!r}; choose one of {', '.join(SAMPLERS)}")


def with_dropped_prompts(text: torch.Tensor, mask: torch.Tensor, empty: torch.Tensor, drop: torch.Tensor):
    """Classifier-free guidance's prompt dropout in training: the rows flagged in `drop` (B,) get the
    empty prompt (L0, D), the same unconditional input sampling uses. (B,L,D),(B,L) -> (B,L',D),(B,L')."""
    length = max(text.shape[1], empty.shape[0])
    if length > text.shape[1]:
        text = F.pad(text, (0, 0, 0, length - text.shape[1]))
        mask = F.pad(mask, (0, length - mask.shape[1]))
    text, mask = text.clone(), mask.clone()
    text[drop] = 0
    text[drop, : empty.shape[0]] = empty.to(text.dtype)
    mask[drop] = False
    mask[drop, : empty.shape[0]] = True
    return text, mask


def guidance_mix(cond: torch.Tensor, uncond: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + w (cond - uncond); w = 1 is the conditional model, 0 the unconditional."""
    return uncond + guidance * (cond - uncond)


@torch.inference_mode()
def guided_output(unet, x: torch.Tensor, t: int, text: torch.Tensor, mask: torch.Tensor, empty: torch.Tensor,
                  guidance: float) -> torch.Tensor:
    """The guided network output (v or ε, as trained) for a batch x_t (N,1,R,R) at one timestep t, fp32 on the CPU."""
    n = len(x)
    both, both_mask = guided_batch(text, mask, empty)
    device = unet.device
    out = denoise(unet, torch.cat([x, x]).to(device), torch.full((2 * n,), t, device=device),
                  both.float().to(device), both_mask.to(device)).float().cpu()
    cond, uncond = out.chunk(2)
    return guidance_mix(cond, uncond, guidance)


def initial_noise(seeds: list[int], resolution: int) -> torch.Tensor:
    """x_T of `sample`: one (1, 1, R, R) standard normal draw per seed -> (N, 1, R, R); seed s gives the same
    noise whatever the batch, so a grid's columns are comparable across prompts."""
    return torch.cat([torch.randn(1, 1, resolution, resolution, generator=torch.Generator().manual_seed(s))
                      for s in seeds])


@dataclass
class Step:
    """One step of a sampling run: `x` is x_t after the step (the next step's input; the glyphs after the last),
    (N,1,R,R) fp32 on the sampler's device; `x0` is the model's clean-glyph guess x̂₀ from this step's input, made
    from the same guided output the step used (computed on first use, on the CPU, clipped to [-1, 1])."""

    index: int  # 0 .. steps-1
    t: int  # the timestep this step started from
    x: torch.Tensor  # (N,1,R,R) after the step
    x_in: torch.Tensor  # (N,1,R,R) this step's input x_t
    output: torch.Tensor  # (N,1,R,R) the guided network output (v or ε) at x_in
    scheduler_config: dict

    @cached_property
    def x0(self) -> torch.Tensor:
        return x0_from_output(self.scheduler_config, self.x_in.float().cpu(), self.t, self.output.float().cpu()).clamp(-1, 1)


@torch.inference_mode()
def sample_progressive(unet, scheduler_config: dict, text: torch.Tensor, mask: torch.Tensor, empty: torch.Tensor,
                       seeds: list[int], steps: int, guidance: float, scheduler: str = "dpmsolver++",
                       bf16: bool | None = None, text_length: int | None = None) -> Iterator[Step]:
    """The sampling loop, one `Step` per denoising step as it is made (improved-diffusion's
    p_sample_loop_progressive): animations, trajectories and a live page read x_t and x̂₀ from it; closing the
    generator stops the loop at the next step. Arguments as for `sample`."""
    check_sampling(steps, guidance, scheduler_config, scheduler)
    device = unet.device
    res = image_size(unet)
    sched = solver(scheduler, scheduler_config)
    sched.set_timesteps(steps, device=device)
    x = (initial_noise(seeds, res) * sched.init_noise_sigma).to(device)
    n = x.shape[0]
    if guidance == 0:  # unconditional
        text, mask = pad_tokens([empty] * n)
    elif guidance != 1:  # [conditional; unconditional] in one batch
        text, mask = guided_batch(text, mask, empty)
    if text_length is not None:
        text, mask = pad_text(text, mask, text_length)
    text, mask = text.to(device, torch.float32), mask.to(device)
    noise_gen = torch.Generator(device=device).manual_seed(seeds[0] + 1_000_003)  # DDPM's per-step noise
    use_bf16 = native_bf16(device) if bf16 is None else bf16
    for i, t in enumerate(sched.timesteps):
        inp = sched.scale_model_input(x, t)
        both = guidance not in (0, 1)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            out = denoise(unet, torch.cat([inp, inp]) if both else inp, t.expand(2 * n if both else n), text, mask)
        out = out.float()
        if both:
            cond, uncond = out.chunk(2)
            out = guidance_mix(cond, uncond, guidance)
        x_in = x
        x = sched.step(out, t, x, generator=noise_gen).prev_sample if scheduler == "ddpm" else sched.step(out, t, x).prev_sample
        yield Step(i, int(t), x, x_in, out, scheduler_config)


@torch.inference_mode()
def sample(unet, scheduler_config: dict, text: torch.Tensor, mask: torch.Tensor,
           empty: torch.Tensor, seeds: list[int], steps: int, guidance: float, scheduler: str = "dpmsolver++",
           progress=None, callback=None, bf16: bool | None = None,
           text_length: int | None = None) -> torch.Tensor:
    """Denoise one image per row of `text` (N, L, D) from the noise of `seeds`; returns (N, 1, R, R) in [-1, 1].

    `progress`: a progress bar (glyffuser.progress) advanced by one per step.
    `callback(i, t, x)`, if given, sees the noisy batch x_t after each step i (fp32 on the CPU).
    `bf16`: autocast the UNet to bfloat16; None = where the hardware has it (`native_bf16`).
    `text_length`: pad the text to this many (masked-out) tokens, so that a torch.compile'd UNet sees
    the same shape whatever the prompts; the padding changes no output beyond rounding.
    """
    x = None
    for step in sample_progressive(unet, scheduler_config, text, mask, empty, seeds, steps, guidance, scheduler, bf16,
                                   text_length):
        x = step.x
        if callback is not None:
            callback(step.index, step.t, x.float().cpu())
        if progress is not None:
            progress.update(1)
    return x.clamp(-1, 1).float().cpu()
