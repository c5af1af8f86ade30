"""The cascade's upsampler (glyffuser.diffusion.upsampler) on real glyphs rendered at 32 px, upsampled from 16."""

import pytest
import torch
import torch.nn.functional as F

from glyffuser.analysis.paper import paper_darkness
from glyffuser.artifacts.glyph_tables import load_glyph_splits
from glyffuser.diffusion.upsampler import Upsampler, degrade, train_upsampler, upsample


@pytest.fixture(scope="module")
def pairs(rendered):
    out, _ = rendered
    low, high = load_glyph_splits(out.definitions, out.glyphs, 16), load_glyph_splits(out.definitions, out.glyphs, 32)
    return low["train"].images, high["train"].images, low["test"].images, high["test"].images


def test_degrade_stays_in_range_varies_per_image_and_is_off_at_strength_zero(pairs):
    low = pairs[0][:64]
    assert torch.equal(degrade(low, torch.Generator().manual_seed(0), 0.0), low)
    a = degrade(low, torch.Generator().manual_seed(0))
    assert torch.equal(a, degrade(low, torch.Generator().manual_seed(0)))  # seeded
    assert a.shape == low.shape and a.min() >= -1 and a.max() <= 1
    per_image = (a - low).abs().mean(dim=(1, 2, 3))
    assert per_image.min() > 0 and per_image.std() > 0.1 * per_image.mean()  # every image degraded, by different amounts
    assert paper_darkness(a)[0] > paper_darkness(low)[0] + 1  # the paper gets dirty, as a diffusion sample's does


def test_the_upsampler_learns_real_glyph_pairs_and_cleans_dirty_inputs(pairs):
    low, high, low_test, high_test = pairs
    net = Upsampler(width=16, depth=4)
    assert net(low[:2]).shape == (2, 1, 32, 32)
    losses = train_upsampler(low, high, net, steps=150, batch=32, lr=3e-3, seed=0)
    assert sum(losses[-20:]) < 0.7 * sum(losses[:20])
    bilinear = F.interpolate(low_test, scale_factor=2, mode="bilinear", align_corners=False)
    assert (upsample(net, low_test) - high_test).abs().mean() < (bilinear - high_test).abs().mean()
    # trained on degraded inputs, it maps a dirty draft to clean paper, far cleaner than one trained on clean inputs
    clean_trained = Upsampler(width=16, depth=4)
    train_upsampler(low, high, clean_trained, steps=150, batch=32, lr=3e-3, seed=0, strength=0.0)
    dirty = degrade(low_test, torch.Generator().manual_seed(1))
    paper = paper_darkness(upsample(net, dirty))[0]
    assert paper < 0.1 * paper_darkness(dirty)[0]
    assert paper < 0.6 * paper_darkness(upsample(clean_trained, dirty))[0]  # measured: 0.74 against 1.97
