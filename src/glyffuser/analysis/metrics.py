"""The numbers of the evaluate stage, each small enough to check on a case with a known answer.

- adherence: share of samples whose predicted radical is the intended one, with a standard error
  that treats the samples of one prompt as one cluster (they are not independent);
- KID/FID between two feature sets (KID: unbiased MMD² with a cubic polynomial kernel, averaged over
  random subsets, Bińkowski et al. 2018; FID: Fréchet distance of fitted Gaussians);
- nearest-neighbour distance up to a 1-pixel shift, and a copy threshold calibrated on real glyphs;
- a linear probe from pooled text embeddings to the radical (what the text alone says);
- the long tail: adherence per third of the targets ordered by their radical's training frequency, and per radical;
- sharpness: the share of two-tone pixels (rendered glyphs are nearly all paper or ink; blurred or
  upscaled ones are not).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F


def clustered_mean(values: np.ndarray, cluster: np.ndarray | None = None) -> tuple[float, float]:
    """Mean of per-sample values and its standard error over clusters (default: every sample its own cluster)."""
    values = np.asarray(values, dtype=float)
    if cluster is None:
        cluster = np.arange(len(values))
    _, inverse = np.unique(cluster, return_inverse=True)
    per_cluster = np.bincount(inverse, weights=values) / np.bincount(inverse)
    se = per_cluster.std(ddof=1) / np.sqrt(len(per_cluster)) if len(per_cluster) > 1 else float("nan")
    return float(values.mean()), float(se)


def adherence(predicted: np.ndarray, target: np.ndarray, cluster: np.ndarray | None = None) -> tuple[float, float]:
    """Share of predicted == target and its standard error over clusters (default: every sample its own)."""
    return clustered_mean(np.asarray(predicted) == np.asarray(target), cluster)


def paired_difference(hits: np.ndarray, other_hits: np.ndarray, cluster: np.ndarray | None = None) -> tuple[float, float]:
    """Mean of hits - other_hits over the same samples (e.g. a cascade's final glyphs and their drafts) and its
    standard error over clusters (default: every sample its own)."""
    return clustered_mean(np.asarray(hits, dtype=float) - np.asarray(other_hits, dtype=float), cluster)


def kid(x: torch.Tensor, y: torch.Tensor, subset_size: int, subsets: int = 100, seed: int = 0) -> tuple[float, float]:
    """KID between feature sets x (m,d) and y (n,d): mean and std over random subsets of both."""
    x, y = x.double(), y.double()
    d = x.shape[1]
    size = min(subset_size, len(x), len(y))
    if size < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    gen = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        a = x[torch.randperm(len(x), generator=gen)[:size]]
        b = y[torch.randperm(len(y), generator=gen)[:size]]
        kxx, kyy, kxy = ((a @ a.T) / d + 1) ** 3, ((b @ b.T) / d + 1) ** 3, ((a @ b.T) / d + 1) ** 3
        off = 1 - torch.eye(size, dtype=torch.float64)  # unbiased: leave out k(x_i, x_i)
        mmd = ((kxx * off).sum() + (kyy * off).sum()) / (size * (size - 1)) - 2 * kxy.mean()
        values.append(float(mmd))
    return float(np.mean(values)), float(np.std(values))


def fid(x: torch.Tensor, y: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to feature sets x (m,d) and y (n,d)."""
    a, b = x.double().numpy(), y.double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # with fewer samples than dimensions the product is singular; fine here
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean, _ = scipy.linalg.sqrtm(cov_a @ cov_b, disp=False)
    covmean = covmean.real  # tiny imaginary parts are numerical noise
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


def _shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """(N,1,R,R) moved by (dy, dx) pixels, the uncovered border filled with paper (+1)."""
    r = x.shape[-1]
    padded = F.pad(x, (1, 1, 1, 1), value=1.0)
    return padded[..., 1 - dy:1 - dy + r, 1 - dx:1 - dx + r]


def nearest(queries: torch.Tensor, reference: torch.Tensor, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """For each query (N,1,R,R), the closest reference image (M,1,R,R) allowing a shift of up to 1 pixel.

    Distance: root-mean-square pixel difference on a 0..1 ink scale (0 identical, 1 inverted).
    Returns (distances (N,), reference indices (N,)).
    """
    d, i = nearest_k(queries, reference, 1, chunk)
    return d[:, 0], i[:, 0]


def nearest_k(queries: torch.Tensor, reference: torch.Tensor, k: int, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """`nearest`, the k closest references of each query: distances (N, k) ascending, indices (N, k)."""
    ref = reference.flatten(1).float()  # (M, P)
    ref_sq = (ref ** 2).sum(1)
    pixels = ref.shape[1]
    dists, indices = [], []
    for s in range(0, len(queries), chunk):
        best = torch.full((len(queries[s:s + chunk]), len(ref)), float("inf"))  # (n, M) over the 9 shifts
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                q = _shifted(queries[s:s + chunk].float(), dy, dx).flatten(1)
                best = torch.minimum(best, (q ** 2).sum(1, keepdim=True) + ref_sq[None] - 2 * q @ ref.T)
        d, i = best.topk(min(k, len(ref)), dim=1, largest=False)
        dists.append(d), indices.append(i)
    rms = torch.cat(dists).clamp(min=0).div(pixels).sqrt() / 2  # model space spans 2
    return rms.numpy(), torch.cat(indices).numpy()


def near_copies(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """What a generated copy of a glyph could look like: shifted ±1 px, slightly blurred, lighter or darker strokes."""
    b, _, r, _ = images.shape
    shifts = torch.randint(-1, 2, (b, 2), generator=gen)
    x = torch.stack([_shifted(images[i:i + 1], int(dy), int(dx))[0] for i, (dy, dx) in enumerate(shifts)])
    k = torch.tensor([1.0, 2.0, 1.0])
    k = (k[:, None] * k[None, :] / 16).view(1, 1, 3, 3)
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k)
    x = torch.lerp(x, blurred, 0.5 * torch.rand(b, 1, 1, 1, generator=gen))
    return (x + 0.1 * (torch.rand(b, 1, 1, 1, generator=gen) - 0.5)).clamp(-1, 1)


def copy_threshold(copy_distances: np.ndarray, quantile: float) -> float:
    """Distances below this count as copies: the `quantile` of near-copy distances (e.g. 0.99)."""
    return float(np.quantile(copy_distances, quantile))


def linear_probe(train_x: torch.Tensor, train_y: np.ndarray, test_x: torch.Tensor, test_y: np.ndarray,
                 classes: int, steps: int = 300, seed: int = 0) -> float:
    """Test accuracy of multinomial logistic regression (standardised inputs, L2 0.001, full-batch Adam)."""
    return float((probe_predictions(train_x, train_y, test_x, classes, steps, seed) == np.asarray(test_y)).mean())


def probe_predictions(train_x: torch.Tensor, train_y: np.ndarray, test_x: torch.Tensor, classes: int, steps: int = 300,
                      seed: int = 0) -> np.ndarray:
    """`linear_probe`'s class for each test input (N,)."""
    torch.manual_seed(seed)
    mean, std = train_x.mean(0), train_x.std(0).clamp(min=1e-6)
    a, b = (train_x - mean) / std, (test_x - mean) / std
    y = torch.from_numpy(np.asarray(train_y)).long()
    layer = torch.nn.Linear(a.shape[1], classes)
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    for _ in range(steps):
        loss = F.cross_entropy(layer(a), y) + 1e-3 * layer.weight.pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return layer(b).argmax(1).numpy()


def two_tone_share(images: torch.Tensor, tolerance: float = 0.1) -> float:
    """Share of pixels within `tolerance` of paper or ink on a 0..1 ink scale, over (N,1,R,R) images in [-1,1]."""
    v = (images.float() + 1) / 2
    return float(((v <= tolerance) | (v >= 1 - tolerance)).float().mean())


# --- the long tail: adherence by how common a radical is in training -------------------------------------------------
THIRDS = ("commonest", "middle", "rarest")


def frequency_thirds(targets: np.ndarray, train_radicals: np.ndarray) -> np.ndarray:
    """Each target's third, 0 (commonest) .. 2 (rarest): the targets ordered by how many training glyphs share their
    radical, most first, and cut into three parts of equal size (targets with equal counts keep their order, so a
    radical can straddle two thirds)."""
    counts = np.bincount(train_radicals, minlength=215)[np.asarray(targets)]
    order = np.argsort(-counts, kind="stable")
    third = np.empty(len(order), dtype=np.int64)
    for i, part in enumerate(np.array_split(order, 3)):
        third[part] = i
    return third


def by_third(hits: np.ndarray, third: np.ndarray, cluster: np.ndarray | None = None) -> dict[str, float]:
    """The mean of per-sample hits in each third, with its standard error over clusters: {'rarest': .., 'rarest_se': ..}."""
    hits, cluster = np.asarray(hits, dtype=float), np.arange(len(hits)) if cluster is None else np.asarray(cluster)
    out = {}
    for i, name in enumerate(THIRDS):
        sel = third == i
        out[name], out[name + "_se"] = clustered_mean(hits[sel], cluster[sel]) if sel.any() else (float("nan"),) * 2
    return out


def thirds_summary(targets: np.ndarray, third: np.ndarray, train_radicals: np.ndarray) -> dict[str, dict]:
    """What each third holds: definitions, distinct radicals, and the range of training glyphs per radical."""
    counts = np.bincount(train_radicals, minlength=215)
    out = {}
    for i, name in enumerate(THIRDS):
        radicals = np.unique(np.asarray(targets)[third == i])
        glyphs = counts[radicals] if len(radicals) else np.zeros(1, dtype=np.int64)  # an empty third (2 targets)
        out[name] = {"definitions": int((third == i).sum()), "radicals": len(radicals),
                     "train_glyphs_min": int(glyphs.min()), "train_glyphs_max": int(glyphs.max())}
    return out


def per_radical(targets: np.ndarray, predicted: np.ndarray, train_radicals: np.ndarray) -> list[dict]:
    """One record per target radical, commonest in training first: its training glyphs, samples, and how many of them
    the judge read as that radical (and the share)."""
    targets, predicted = np.asarray(targets), np.asarray(predicted)
    counts = np.bincount(train_radicals, minlength=215)
    records = []
    for r in sorted(np.unique(targets), key=lambda r: (-counts[r], r)):
        sel = targets == r
        hits = int((predicted[sel] == r).sum())
        records.append({"radical": int(r), "glyph": chr(0x2F00 + int(r) - 1), "train_glyphs": int(counts[r]),
                        "samples": int(sel.sum()), "hits": hits, "adherence": round(hits / int(sel.sum()), 4)})
    return records
