"""The denoiser: diffusers' UNet2DConditionModel on 1-channel glyphs, conditioned on text tokens.

Patchified pixel diffusion (Hoogeboom et al. 2023, "simple diffusion"): with patch_size p the UNet sees
each p×p block of pixels as p² channels (pixel unshuffle) and unfolds its output the same way, so a
64 px glyph costs about what a 32 px one did. The patch size is the UNet's in_channels = p²; the
scheduler and samplers work on full-resolution images and never see the folding.

Text enters twice: every token through cross-attention (with the padding masked out), and,
optionally, a pooled sentence vector added to the timestep embedding. The pooled vector is the
masked mean over real tokens, computed here because diffusers' own text pooling ignores the mask.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel


def build_unet(resolution: int, text_dim: int, block_channels: list[int], layers_per_block: int,
               attention_levels: list[bool], attention_head_dim: int, pooled_text: bool,
               patch_size: int = 1, film: bool = False,
               cross_attention_only: list[bool] | None = None) -> UNet2DConditionModel:
    """UNet with cross-attention at the down levels flagged in `attention_levels` (mirrored on the way up),
    running at resolution / patch_size on patch_size² channels.

    film: the timestep (+ pooled text) embedding scales and shifts each ResNet's normalised features
    (FiLM, diffusers' resnet_time_scale_shift="scale_shift") instead of only being added to them.
    cross_attention_only: per level, attention blocks without self-attention (both attention layers
    attend to the text); self-attention over a 16×16 grid costs 256² per head, the text ≤ 64 tokens."""
    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention_levels]
    up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention_levels)]
    return UNet2DConditionModel(
        sample_size=resolution // patch_size,  # the UNet's grid; image_size() gives the glyph side
        in_channels=patch_size**2,
        out_channels=patch_size**2,
        block_out_channels=tuple(block_channels),
        layers_per_block=layers_per_block,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        mid_block_type="UNetMidBlock2DCrossAttn",
        cross_attention_dim=text_dim,
        attention_head_dim=attention_head_dim,
        norm_num_groups=min(32, block_channels[0]),
        resnet_time_scale_shift="scale_shift" if film else "default",
        only_cross_attention=tuple(cross_attention_only) if cross_attention_only else False,
        # "projection" adds Linear(pooled text) to the timestep embedding: the sentence-level signal.
        class_embed_type="projection" if pooled_text else None,
        projection_class_embeddings_input_dim=text_dim if pooled_text else None,
    )


def patch_size(unet) -> int:
    """Pixels per side folded into one UNet cell: 1 (plain) or p, read from in_channels = p²."""
    config = getattr(unet, "module", unet).config  # unwrap DistributedDataParallel
    return math.isqrt(config.in_channels)


def image_size(unet) -> int:
    """Side in pixels of the glyphs the model draws (the UNet's grid times the patch size)."""
    config = getattr(unet, "module", unet).config
    return config.sample_size * patch_size(unet)


def pool_text(text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over real tokens: (B, L, D), (B, L) -> (B, D)."""
    m = mask.unsqueeze(-1).to(text.dtype)
    return (text * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)


def denoise(unet: UNet2DConditionModel, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor,
            mask: torch.Tensor) -> torch.Tensor:
    """One UNet call with the conditioning wired the same way in training and sampling."""
    # x: (B,1,R,R) -> (B,p²,R/p,R/p) for the UNet -> back to (B,1,R,R)
    config = getattr(unet, "module", unet).config  # unwrap DistributedDataParallel
    pooled = pool_text(text, mask) if config.class_embed_type == "projection" else None
    p = math.isqrt(config.in_channels)
    if p > 1:
        x = F.pixel_unshuffle(x, p)
    out = unet(x, t, encoder_hidden_states=text, encoder_attention_mask=mask, class_labels=pooled).sample
    return F.pixel_shuffle(out, p) if p > 1 else out


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
