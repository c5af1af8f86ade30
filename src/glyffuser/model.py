"""The denoiser: diffusers' UNet2DConditionModel on 1-channel glyphs, conditioned on text tokens.

Text enters twice: every token through cross-attention (with the padding masked out), and,
optionally, a pooled sentence vector added to the timestep embedding. The pooled vector is the
masked mean over real tokens, computed here because diffusers' own text pooling ignores the mask.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel


def build_unet(resolution: int, text_dim: int, block_channels: list[int], layers_per_block: int,
               attention_levels: list[bool], attention_head_dim: int, pooled_text: bool) -> UNet2DConditionModel:
    """UNet with cross-attention at the down levels flagged in `attention_levels` (mirrored on the way up)."""
    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention_levels]
    up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention_levels)]
    return UNet2DConditionModel(
        sample_size=resolution,
        in_channels=1,
        out_channels=1,
        block_out_channels=tuple(block_channels),
        layers_per_block=layers_per_block,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        mid_block_type="UNetMidBlock2DCrossAttn",
        cross_attention_dim=text_dim,
        attention_head_dim=attention_head_dim,
        norm_num_groups=min(32, block_channels[0]),
        # "projection" adds Linear(pooled text) to the timestep embedding: the sentence-level signal.
        class_embed_type="projection" if pooled_text else None,
        projection_class_embeddings_input_dim=text_dim if pooled_text else None,
    )


def pool_text(text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over real tokens: (B, L, D), (B, L) -> (B, D)."""
    m = mask.unsqueeze(-1).to(text.dtype)
    return (text * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)


def denoise(unet: UNet2DConditionModel, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor,
            mask: torch.Tensor) -> torch.Tensor:
    """One UNet call with the conditioning wired the same way in training and sampling."""
    config = getattr(unet, "module", unet).config  # unwrap DistributedDataParallel
    pooled = pool_text(text, mask) if config.class_embed_type == "projection" else None
    return unet(x, t, encoder_hidden_states=text, encoder_attention_mask=mask, class_labels=pooled).sample


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
