"""The evaluate stage's numbers on cases with a known answer."""

import numpy as np
import pytest
import torch

from glyffuser.analysis.diffusion_plots import mixture
from glyffuser.analysis.judge import accuracy, augment, majority_share, train_classifier
from glyffuser.analysis.metrics import (
    adherence,
    by_third,
    copy_threshold,
    fid,
    frequency_thirds,
    kid,
    linear_probe,
    near_copies,
    nearest,
    nearest_k,
    per_radical,
    thirds_summary,
)
from glyffuser.artifacts.glyph_tables import LabelledGlyphs, load_glyph_splits


def test_kid_and_fid_are_zero_for_one_distribution_and_large_for_disjoint_sets():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 16, generator=gen), torch.randn(400, 16, generator=gen)
    far = torch.randn(400, 16, generator=gen) + 3.0
    same, _ = kid(a, b, subset_size=200)
    apart, _ = kid(a, far, subset_size=200)
    assert abs(same) < 0.05 and apart > 20 * max(abs(same), 0.01)
    # Identical sets: the unbiased estimator leaves out k(x_i, x_i) within a set but not across, so ≈ -O(1/n).
    assert kid(a, a, subset_size=400, subsets=3)[0] == pytest.approx(0.0, abs=0.05)
    assert fid(a, a) == pytest.approx(0.0, abs=1e-6)
    # Same covariance, means 3 apart in each of 16 dimensions: FID ≈ 16·9 = 144.
    assert fid(a, a + 3.0) == pytest.approx(144.0, rel=1e-6)


def test_adherence_standard_error_counts_each_prompt_once():
    predicted = np.array([5, 5, 1, 1, 5, 1])
    target = np.array([5, 5, 5, 5, 5, 5])
    share, se = adherence(predicted, target, cluster=np.array([0, 0, 1, 1, 2, 2]))
    assert share == pytest.approx(0.5)
    per_prompt = np.array([1.0, 0.0, 0.5])
    assert se == pytest.approx(per_prompt.std(ddof=1) / np.sqrt(3))


@pytest.fixture(scope="module")
def splits(rendered):
    out, _ = rendered
    return load_glyph_splits(out.definitions, out.glyphs, 32)


def test_a_copied_glyph_is_flagged_and_distinct_glyphs_are_not(splits):
    train = splits["train"]
    gen = torch.Generator().manual_seed(0)
    copies = near_copies(train.images[:50], gen)  # shifted ±1 px, blurred, toned
    d_copy, index = nearest(copies, train.images)
    assert (index == np.arange(50)).all()  # each copy finds its own original
    threshold = copy_threshold(d_copy, 0.99)
    others = torch.cat([splits["validation"].images, splits["test"].images])
    d_other, _ = nearest(others, train.images)
    assert (d_other > threshold).mean() > 0.95  # distinct characters are not copies
    exact, i = nearest(train.images[7:8], train.images)
    assert exact[0] == pytest.approx(0.0, abs=1e-3) and i[0] == 7


def test_classifier_reads_radicals_and_a_shuffled_label_classifier_sits_at_chance(splits):
    train = splits["train"]
    held = LabelledGlyphs(torch.cat([splits["validation"].images, splits["test"].images]),
                          np.concatenate([splits["validation"].radicals, splits["test"].radicals]), np.array([]), [])
    chance = majority_share(train.radicals, held.radicals)
    real = train_classifier(train, epochs=12, batch_size=32, lr=3e-3, width=8, seed=0)
    shuffled = train_classifier(train, epochs=12, batch_size=32, lr=3e-3, width=8, seed=0, shuffle_labels=True)
    assert accuracy(real, held) > 0.8 > chance
    assert accuracy(shuffled, held) < chance + 0.15


def test_augmentation_keeps_paper_light_and_ink_dark(splits):
    x = splits["train"].images[:64]
    y = augment(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    assert (y[..., 0, :].mean() > 0.2) and (y.mean(dim=(1, 2, 3)) < x.mean(dim=(1, 2, 3)) + 0.4).all()
    assert not torch.equal(x, y)


def test_text_probe_learns_real_labels_but_not_shuffled_ones():
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (600,), generator=gen)
    x = torch.randn(600, 8, generator=gen) + 2.5 * torch.nn.functional.one_hot(labels, 8).float()
    y = labels.numpy()
    assert linear_probe(x[:400], y[:400], x[400:], y[400:], classes=4) > 0.9
    shuffled = np.random.default_rng(0).permutation(y[:400])
    assert linear_probe(x[:400], shuffled, x[400:], y[400:], classes=4) < 0.45


def test_thirds_order_targets_by_their_radicals_training_frequency():
    train = np.array([5] * 50 + [7] * 20 + [9] * 3 + [11])  # radical 5 commonest, 11 rarest
    targets = np.array([11, 5, 9, 7, 5, 9])  # counts 1, 50, 3, 20, 50, 3
    third = frequency_thirds(targets, train)
    assert third.tolist() == [2, 0, 1, 1, 0, 2]  # the two 5s, then 7 and the first 9, then the second 9 and 11
    summary = thirds_summary(targets, third, train)
    assert summary["commonest"] == {"definitions": 2, "radicals": 1, "train_glyphs_min": 50, "train_glyphs_max": 50}
    assert summary["rarest"] == {"definitions": 2, "radicals": 2, "train_glyphs_min": 1, "train_glyphs_max": 3}
    hits = np.array([0, 1, 1, 0, 1, 0])
    shares = by_third(hits, third)
    assert (shares["commonest"], shares["middle"], shares["rarest"]) == (1.0, 0.5, 0.0)
    assert shares["commonest_se"] == 0 and shares["middle_se"] == pytest.approx(0.5)
    records = per_radical(targets, np.where(hits == 1, targets, 0), train)
    assert [r["radical"] for r in records] == [5, 7, 9, 11]  # commonest in training first
    assert records[0] == {"radical": 5, "glyph": "⼄", "train_glyphs": 50, "samples": 2, "hits": 2, "adherence": 1.0}
    assert records[2]["samples"] == 2 and records[2]["hits"] == 1 and records[3]["hits"] == 0
    assert per_radical(np.array([195]), np.array([195]), train)[0]["glyph"] == "⿂"  # Kangxi radical 195, fish


def test_score_field_points_at_the_data():
    one = torch.zeros(1, 2)
    grid = torch.tensor([[1.0, 0.0], [0.0, -2.0]])
    # One point at the origin, no noise: σ²∇log p is the step back to it.
    assert torch.allclose(mixture(one, grid, abar=1.0, bandwidth=0.1)[1], -grid)
    two = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])
    _, mid = mixture(two, torch.zeros(1, 2), abar=0.5, bandwidth=0.1)
    assert torch.allclose(mid, torch.zeros(1, 2), atol=1e-6)  # symmetric: no pull either way


def test_nearest_k_ranks_references_and_agrees_with_nearest():
    gen = torch.Generator().manual_seed(0)
    reference = torch.rand(50, 1, 12, 12, generator=gen) * 2 - 1
    queries = reference[[3, 7]] + 0.01 * torch.randn(2, 1, 12, 12, generator=gen)
    d, i = nearest_k(queries, reference, 4)
    assert d.shape == i.shape == (2, 4) and list(i[:, 0]) == [3, 7]
    assert (np.diff(d, axis=1) >= 0).all()  # ascending
    d1, i1 = nearest(queries, reference)
    assert np.array_equal(i1, i[:, 0]) and np.allclose(d1, d[:, 0])
    # a query shifted by one pixel still finds its original at distance ~0 (paper fills the border)
    shifted = torch.nn.functional.pad(reference[5:6], (1, 0, 0, 0), value=1.0)[..., :12]
    assert nearest_k(shifted, reference, 2)[1][0, 0] == 5


def test_the_shading_density_and_the_score_arrows_are_one_distribution():
    gen = torch.Generator().manual_seed(0)
    points = torch.randn(300, 2, generator=gen) * torch.tensor([1.5, 0.5])
    abar, h = 0.6, 0.2
    var = abar * h ** 2 + 1 - abar
    grid = torch.tensor([[0.3, -0.2], [1.5, 0.7], [-2.0, 1.0]], dtype=torch.float64)
    density, field = mixture(points.double(), grid, abar, h)
    eps = 1e-5
    for axis in range(2):
        step = torch.zeros(2, dtype=torch.float64)
        step[axis] = eps
        up, _ = mixture(points.double(), grid + step, abar, h)
        down, _ = mixture(points.double(), grid - step, abar, h)
        grad_log = (up.log() - down.log()) / (2 * eps)
        assert torch.allclose(var * grad_log, field[:, axis], rtol=1e-4, atol=1e-6)  # arrows = σ²∇log(shading)
    # the shading is a normalised density: it integrates to one over a wide window
    g = torch.linspace(-8, 8, 321, dtype=torch.float64)
    mesh = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
    total = mixture(points.double(), mesh, abar, h)[0].sum() * (g[1] - g[0]) ** 2
    assert abs(float(total) - 1) < 1e-3


def test_realism_cannot_tell_real_from_real_but_sees_blurred_strokes(splits):
    """The two-sample test: ~50 % on two sets of real glyphs, far above it when one set's strokes are blurred
    (a full 3×3 blur twice: soft edges, what an upsampler's wobbly output looks like at worst)."""
    from glyffuser.analysis.fidelity import degrade
    from glyffuser.analysis.realism import two_sample_accuracy

    real = torch.cat([splits["train"].images, splits["validation"].images, splits["test"].images])
    a, b = real[0::2], real[1::2]  # two halves of ~460 real glyphs at 32 px
    same, se = two_sample_accuracy(a, b, steps=150, seed=0)
    gen = torch.Generator().manual_seed(0)
    blurred = degrade(degrade(b, "blur", gen), "blur", gen)
    told, _ = two_sample_accuracy(a, blurred, steps=150, seed=0)
    assert abs(same - 0.5) < 3 * se + 0.03 and told > 0.8, (same, told)
    with pytest.raises(ValueError, match="at least 4 glyphs"):
        two_sample_accuracy(a[:3], b[:3])
