"""The conditioning levers of issue 20 and the stroke-fidelity measure, on real glyphs."""

import pytest
import torch

from glyffuser.analysis.fidelity import DEGRADATIONS, degrade, fidelity, stroke_codes
from glyffuser.artifacts.glyph_tables import load_glyph_splits
from glyffuser.diffusion.process import diffusion_loss, loss_weight, sample_timesteps, snr, training_scheduler
from glyffuser.diffusion.unet import build_unet


def test_min_snr_plus_one_keeps_the_noisy_end_and_matches_min_snr_at_the_clean_end():
    sched = training_scheduler("linear", "v_prediction", False, snr_scale=0.25)
    t = torch.arange(1000)
    s = snr(sched, t)
    plain = loss_weight(sched, t, 5.0, "min_snr")
    plus = loss_weight(sched, t, 5.0, "min_snr_plus_one")
    noisy, clean = s < 0.05, s > 5
    assert noisy.sum() > 300 and clean.sum() > 20  # both ends exist on the 64 px schedule
    assert plain[noisy].max() < 0.05  # min-SNR leaves almost nothing where the radical is decided
    assert torch.allclose(plus[s + 1 < 5], torch.ones(int((s + 1 < 5).sum())))  # plain v-loss there
    assert torch.allclose(plus[clean], plain[clean])  # γ/(SNR+1) at the clean end, as min-SNR
    assert loss_weight(sched, t, 0.0, "min_snr_plus_one") is None  # γ = 0: plain MSE
    eps = training_scheduler("linear", "epsilon", False)
    # the same x0-space weight on the eps-loss: min(SNR+1, γ)/SNR
    w = loss_weight(eps, t, 5.0, "min_snr_plus_one")
    se = snr(eps, t)
    assert torch.allclose(w, (se + 1).clamp(max=5) / se.clamp(min=1e-8))


def test_timestep_sampling():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    # uniform draws exactly what the train loop drew before the option existed
    assert torch.equal(sample_timesteps(64, 1000, "uniform", g1), torch.randint(0, 1000, (64,), generator=g2))
    t = sample_timesteps(20_000, 1000, "logit_normal", torch.Generator().manual_seed(0))
    assert t.min() >= 0 and t.max() <= 999
    middle = ((t >= 250) & (t < 750)).float().mean()
    assert 0.7 < middle < 0.8  # P(|N(0,1)| < logit(0.75) = 1.10) = 0.73; uniform: 0.5
    shifted = sample_timesteps(20_000, 1000, "logit_normal", torch.Generator().manual_seed(0), mean=1.0)
    assert shifted.float().mean() > t.float().mean() + 100


def test_film_and_cross_only_attention_reach_the_unet_config():
    unet = build_unet(32, 24, [16, 32], 1, [True, True], 8, True, 1, film=True, cross_attention_only=[True, False])
    assert unet.config.resnet_time_scale_shift == "scale_shift"
    assert list(unet.config.only_cross_attention) == [True, False]
    block = unet.down_blocks[0].attentions[0].transformer_blocks[0]
    assert block.only_cross_attention and block.attn1.is_cross_attention
    plain = build_unet(32, 24, [16, 32], 1, [True, True], 8, True, 1)
    assert plain.config.resnet_time_scale_shift == "default" and plain.config.only_cross_attention is False


@pytest.fixture(scope="module")
def real_glyphs(rendered):
    out, _ = rendered
    splits = load_glyph_splits(out.definitions, out.glyphs, 32)
    images = torch.cat([splits[s].images for s in ("train", "validation", "test")])
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    return images[perm[: len(images) // 2]], images[perm[len(images) // 2:]]


@pytest.mark.parametrize("seed", [0, 1])
def test_stroke_fidelity_ranks_real_above_each_light_degradation(real_glyphs, seed):
    reference, other = real_glyphs
    ref = stroke_codes(reference)
    real, real_se = fidelity(ref, stroke_codes(other), boot=20, seed=seed)
    assert 0 < real < 0.01 and real_se > 0
    gen = torch.Generator().manual_seed(seed)
    for kind in DEGRADATIONS:
        degraded = degrade(other, kind, gen)
        assert degraded.shape == other.shape and degraded.min() >= -1 and degraded.max() <= 1
        value, _ = fidelity(ref, stroke_codes(degraded), boot=2, seed=seed)
        assert value > real, (kind, value, real, real_se)


def test_stroke_codes_count_every_pixel_but_blank_paper():
    x = torch.ones(2, 1, 8, 8)
    x[1, 0, 3:5, 3:5] = -1  # a 2×2 ink square
    codes = stroke_codes(x)
    assert codes[0].sum() == 0  # blank page: nothing to compare
    assert codes[1].sum() == 16  # the 4×4 pixels whose 3×3 neighbourhood touches the square
    assert codes[1, 511] == 0 and codes[1].max() == 1  # no pixel sees all ink; 16 different neighbourhoods


def test_embed_stores_each_tokens_sense(embeddings_path, rendered):
    from glyffuser.artifacts.embeddings import load_embeddings

    emb = load_embeddings(embeddings_path)
    assert emb.sense is not None and emb.sense.shape == emb.mask.shape
    assert (emb.sense[~emb.mask] == -1).all()  # padding
    firsts = emb.sense[:, 0]
    assert (firsts == -1).all()  # [CLS]
    out, _ = rendered
    import pyarrow.parquet as pq

    defs = pq.read_table(out.definitions).column("definition").to_pylist()
    for row, text in enumerate(defs):
        n = int(emb.mask[row].sum())
        real = emb.sense[row, 1 : n - 1]  # between [CLS] and [SEP]
        assert int(real.max()) == text.count(";") or n >= 64  # one sense per ';'-separated part (unless truncated)
        assert (real[1:] >= real[:-1]).all()  # in order


def test_sense_subsets_mask_whole_senses_and_keep_one():
    from glyffuser.diffusion.training import sense_subsets

    # two rows: "[CLS] a b ; c ; d [SEP]" (senses 0,0,0,1,1,2) and a one-sense row
    sense = torch.tensor([[-1, 0, 0, 0, 1, 1, 2, -1], [-1, 0, 0, -1, -1, -1, -1, -1]], dtype=torch.int8)
    mask = torch.tensor([[True] * 8, [True] * 4 + [False] * 4])
    seen = set()
    for seed in range(200):
        m = sense_subsets(mask, sense, 1.0, torch.Generator().manual_seed(seed))
        assert m[0, 0] and m[0, 7]  # special tokens stay
        assert m[0, 1] == m[0, 2] == m[0, 3] and m[0, 4] == m[0, 5]  # a sense is kept or dropped whole
        assert m[0, 1:7].any()  # at least one sense
        assert torch.equal(m[1], mask[1])  # a one-sense definition is never cut
        seen.add(tuple(m[0, [1, 4, 6]].tolist()))
    assert len(seen) == 7  # every non-empty subset of the three senses occurs
    assert torch.equal(sense_subsets(mask, sense, 0.0, torch.Generator().manual_seed(0)), mask)


def test_contrastive_flow_subtracts_the_distance_to_another_images_target():
    sched = training_scheduler("linear", "v_prediction", False)
    g = torch.Generator().manual_seed(0)
    x0, noise, pred = (torch.randn(6, 1, 8, 8, generator=g) for _ in range(3))
    t = torch.randint(0, 1000, (6,), generator=g)
    plain = diffusion_loss(pred, x0, noise, t, sched, 0.0)
    assert torch.equal(diffusion_loss(pred, x0, noise, t, sched, 0.0, contrast=0.0), plain)  # off: the old loss
    negative = sched.get_velocity(x0.roll(1, 0), noise.roll(1, 0), t)  # the previous image's target at this t
    expected = plain - 0.05 * (pred - negative).pow(2).mean()
    assert torch.allclose(diffusion_loss(pred, x0, noise, t, sched, 0.0, contrast=0.05), expected)
    # the term pulls a prediction away from the other image's target: the gradient of the contrastive part
    p = negative.clone().requires_grad_(True)
    diffusion_loss(p, x0, noise, t, sched, 0.0, contrast=0.05).backward()
    plain_grad = 2 * (negative - sched.get_velocity(x0, noise, t)) / p.numel()
    assert torch.allclose(p.grad, plain_grad)  # at the negative itself the contrastive gradient is zero
    p2 = (negative + 0.1).requires_grad_(True)
    diffusion_loss(p2, x0, noise, t, sched, 0.0, contrast=0.05).backward()
    assert torch.allclose(p2.grad, 2 * (p2.detach() - sched.get_velocity(x0, noise, t)) / p.numel()
                          - 0.05 * 2 * 0.1 / p.numel())


@pytest.mark.parametrize("seed", [0, 1])
def test_paper_darkness_is_zero_on_real_glyphs_and_sees_each_light_degradation(real_glyphs, seed):
    from glyffuser.analysis import paper

    _, other = real_glyphs
    real, _ = paper.paper_darkness(other)
    assert real < 0.01  # real glyphs: white paper away from the strokes (antialiasing stays within the radius)
    gen = torch.Generator().manual_seed(seed)
    for kind in paper.DEGRADATIONS:
        value, se = paper.paper_darkness(paper.degrade(other, kind, gen))
        assert value > real + 0.05 and se > 0, (kind, value, real)


def test_paper_darkness_counts_only_pixels_far_from_ink():
    from glyffuser.analysis.paper import far_from_ink, paper_darkness_per_image

    x = torch.ones(2, 1, 64, 64)
    x[:, 0, 30:34, 30:34] = -1  # a 4×4 ink square
    x[0, 0, 35, 35] = 0.5  # a light-grey pixel 2 px from the ink (within the radius of 64 // 32 = 2): not paper
    x[1, 0, 5, 5] = 0.0  # a mid-grey speck far away: paper, darkness 127.5
    far = far_from_ink(x)
    assert far.shape == x.shape and not far[0, 0, 28:36, 28:36].any() and far[0, 0, 27, 27] and far[0, 0, 36, 36]
    d = paper_darkness_per_image(x)
    assert d[0] == 0
    assert torch.isclose(d[1], torch.tensor(127.5 / int(far[1].sum())))


def test_radical_balance_draws_rare_radicals_more_often_and_zero_keeps_the_permutation():
    """Issue 42: rebalanced sampling. A radical with 900 glyphs and one with 100: at α = 0.5 each radical's share of
    an epoch's draws is ∝ count^0.5 (3 : 1 instead of 9 : 1); at α = 1 they are drawn equally; α = 0 keeps the
    plain permutation, so the default trains exactly as before."""
    import numpy as np

    from glyffuser.diffusion.training import epoch_permutation, radical_weights

    radicals = np.array([85] * 900 + [211] * 100, dtype=np.int16)
    assert radical_weights(radicals, 0.0) is None
    assert torch.equal(epoch_permutation(3, 2, 1000, None), epoch_permutation(3, 2, 1000))
    for alpha, expected_rare_share in ((0.5, 1 / 4), (1.0, 1 / 2)):
        w = radical_weights(radicals, alpha)
        draws = torch.cat([epoch_permutation(0, e, 1000, w) for e in range(20)])  # 20 epochs of 1,000 draws
        assert len(draws) == 20_000
        rare_share = (draws >= 900).float().mean().item()
        assert abs(rare_share - expected_rare_share) < 0.02, (alpha, rare_share)
    assert torch.equal(epoch_permutation(0, 1, 1000, w), epoch_permutation(0, 1, 1000, w))  # a pure function of (seed, epoch)
