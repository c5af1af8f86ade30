"""Patchified pixel diffusion and the shifted noise schedule: the maths, then a model trained with both."""

import json

import numpy as np
import pytest
import torch

from glyffuser.analysis.judge import RadicalNet
from glyffuser.analysis.metrics import two_tone_share
from glyffuser.diffusion.pipeline import GlyffuserPipeline
from glyffuser.diffusion.process import solver, training_scheduler
from glyffuser.diffusion.unet import build_unet, denoise, image_size, patch_size
from glyffuser.errors import GlyffuserError
from glyffuser.params import with_overrides
from glyffuser.stages.train import run_train
from tests.conftest import TINY_TRAIN, train_paths


def test_shifted_schedule_scales_the_snr_at_every_step_and_samplers_share_it():
    plain = training_scheduler("linear", "v_prediction", False)
    shifted = training_scheduler("linear", "v_prediction", False, snr_scale=0.25)
    snr = lambda s: s.alphas_cumprod.double() / (1 - s.alphas_cumprod.double())  # noqa: E731
    torch.testing.assert_close(snr(shifted) / snr(plain), torch.full((1000,), 0.25, dtype=torch.float64), rtol=2e-3, atol=0)
    assert (shifted.alphas_cumprod < plain.alphas_cumprod).all()  # more noise at every t
    for name in ("ddpm", "ddim", "dpmsolver++"):  # the betas travel in the saved config
        torch.testing.assert_close(solver(name, dict(shifted.config)).alphas_cumprod, shifted.alphas_cumprod)
    # no shift: exactly the schedule the 32 px models were trained with
    torch.testing.assert_close(training_scheduler("linear", "v_prediction", False, snr_scale=1.0).betas, plain.betas,
                               rtol=0, atol=0)


def test_patchified_unet_runs_at_a_quarter_of_the_pixels_and_returns_full_images():
    unet = build_unet(32, 24, [16, 32], 1, [False, True], 8, True, patch_size=2)
    assert (unet.config.sample_size, unet.config.in_channels, unet.config.out_channels) == (16, 4, 4)
    assert patch_size(unet) == 2 and image_size(unet) == 32
    x = torch.randn(3, 1, 32, 32)
    text, mask = torch.randn(3, 5, 24), torch.ones(3, 5, dtype=torch.bool)
    out = denoise(unet, x, torch.tensor([1, 500, 999]), text, mask)
    assert out.shape == (3, 1, 32, 32)
    # each output pixel comes from its own channel: the 4 pixels of a 2x2 patch are predicted separately
    assert not torch.allclose(out[..., 0::2, 0::2], out[..., 1::2, 1::2])


def test_a_patchified_model_trains_and_draws_at_its_full_resolution(params, rendered, embeddings_path, tmp_path):
    # (render.image_size as a 32 px model's pipeline needs for its upsampler; training reads the 32 px table as it is)
    p = with_overrides(params, {**TINY_TRAIN, "train.resolution": 32, "train.patch_size": 2, "render.image_size": 64,
                                "train.schedule_base_resolution": 16, "train.epochs": 1})
    result = run_train(p, train_paths(tmp_path, rendered, embeddings_path), track=False)
    assert result["steps"] > 10 and np.isfinite(result["val_loss"])
    info = json.loads((tmp_path / "model" / "glyffuser.json").read_text())
    assert info["patch_size"] == 2 and info["schedule_base_resolution"] == 16 and info["resolution"] == 32
    pipe = GlyffuserPipeline.from_pretrained(tmp_path / "model", device="cpu")
    assert pipe.resolution == 32 and pipe.unet.config.sample_size == 16
    expected = training_scheduler("linear", "v_prediction", False, snr_scale=0.25).alphas_cumprod
    torch.testing.assert_close(solver("ddim", pipe.scheduler_config).alphas_cumprod, expected)
    images = pipe(["a kind of fish"], num_images=2, steps=4, guidance=3.0)
    assert [im.size for im in images] == [(32, 32), (32, 32)]


def test_patch_size_must_divide_the_resolution(params):
    with pytest.raises(GlyffuserError, match="divisible by patch_size"):
        with_overrides(params, {"train.resolution": 64, "train.patch_size": 3})
    with pytest.raises(GlyffuserError, match="resolution / patch_size must be divisible"):
        with_overrides(params, {"train.resolution": 30, "train.patch_size": 3})


def test_classifier_above_32_px_reads_every_pixel_at_the_cost_of_a_32_px_net():
    small, large = RadicalNet(32, width=8), RadicalNet(64, width=8)
    assert large.conv[0][0].in_channels == 4 and large.embed[1].in_features == small.embed[1].in_features
    torch.manual_seed(0)
    x = torch.ones(2, 1, 64, 64)
    x[1, 0, 20:44:2, 20:44:2] = -1  # a checkerboard of single pixels that a 32 px thumbnail averages away
    thumbnail = torch.nn.functional.avg_pool2d(x, 2)
    assert thumbnail[0].allclose(thumbnail[1], atol=0.6)
    feats = large.eval().features(x)
    assert not torch.allclose(feats[0], feats[1])


def test_sharpness_is_the_two_tone_share():
    two_tone = torch.tensor([-1.0, 1.0, -0.9, 0.85]).view(1, 1, 2, 2)  # 0.05 and 0.925 on the 0..1 scale: both count
    assert two_tone_share(two_tone) == 1.0
    grey = torch.tensor([-1.0, 1.0, 0.0, 0.5]).view(1, 1, 2, 2)
    assert two_tone_share(grey) == 0.5
