"""FID, IS, KID and precision/recall from features: torch-fidelity's own functions, and its FID formula.

FID is torch-fidelity's formula computed without its 2048x2048 matrix square root (`fid`): the trace of
sqrtm(S1 S2) equals the sum of the singular values of the (n1 x n2) cross-Gram matrix of the centred
features. Exact, and 1,000x faster on a CPU (scipy's sqrtm took 15-40 s a call on 2 cores, three calls a
class); tests/test_fidelity_metrics.py holds it to torch-fidelity's value.

Features arrive as float32 and are promoted to float64 first: FID's trace terms and KID's kernel
sums cancel to small differences of large numbers, which float32 cannot hold to 1e-6 relative.

Paper §5.1.3 and docs/paper_as_coded.md, "Fidelity": the paper's FID used Keras's ImageNet InceptionV3
(`include_top=False, pooling='avg'`), not the FID Inception used here, so its FID values are not
comparable with these; its formula is the standard one. Its IS took `entropy(..., base=2)` and then
`exp`, on one split: every IS it reports is the true one-split IS raised to 1/ln 2.
`inception_score_paper` applies that formula to our logits so a reader can put the two side by side.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import entropy
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric, KEY_METRIC_FID
from torch_fidelity.metric_isc import isc_features_to_metric, KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD
from torch_fidelity.metric_kid import kid_features_to_metric, KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD
from torch_fidelity.metric_prc import prc_features_to_metric, KEY_METRIC_PRECISION, KEY_METRIC_RECALL

# metric names of metrics/fidelity.json (per class)
FID = "fid"
FID_REAL_FLOOR = "fid_real_floor"  # Testing vs Training (paper's notebooks: real-vs-real)
FID_REAL_FLOOR_RESAMPLED = "fid_real_floor_resampled"  # Testing, resampled as generated images are, vs Training
IS_REAL = "is_real"
IS_GENERATED = "is_generated"
IS_REAL_PAPER = "is_real_paper_formula"
IS_GENERATED_PAPER = "is_generated_paper_formula"
KID = "kid"
KID_REAL_FLOOR = "kid_real_floor"
KID_REAL_FLOOR_RESAMPLED = "kid_real_floor_resampled"
PRECISION = "precision"
RECALL = "recall"
MEMORISED_SHARE = "memorised_share"


def _t(x: np.ndarray) -> torch.Tensor:
    x = np.asarray(x)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need features of at least 2 images as (N, D), got shape {x.shape}")
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))


def fid(generated: np.ndarray, real: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (torch-fidelity's formula).

    |mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr sqrtm(S1 S2), with S = X^T X / (n - 1) for centred X: the nonzero
    eigenvalues of S1 S2 are the squared singular values of X1 X2^T / sqrt((n1 - 1)(n2 - 1)), so the last
    trace is their sum (exact; no d x d square root).
    """
    x1, x2 = _t(generated).numpy(), _t(real).numpy()
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(f"feature sizes differ: {x1.shape[1]} vs {x2.shape[1]}")
    c1, c2 = x1 - x1.mean(0), x2 - x2.mean(0)
    n1, n2 = len(x1) - 1, len(x2) - 1
    cross = np.linalg.svd(c1 @ c2.T, compute_uv=False).sum() / math.sqrt(n1 * n2)
    mean_term = float(((x1.mean(0) - x2.mean(0)) ** 2).sum())
    return float(mean_term + (c1 * c1).sum() / n1 + (c2 * c2).sum() / n2 - 2 * cross)


def fid_torch_fidelity(generated: np.ndarray, real: np.ndarray) -> float:
    """torch-fidelity's own FID (scipy sqrtm of S1 S2): the reference `fid` is tested against."""
    s1 = fid_features_to_statistics(_t(generated))
    s2 = fid_features_to_statistics(_t(real))
    return float(fid_statistics_to_metric(s1, s2, False)[KEY_METRIC_FID])


def kid(generated: np.ndarray, real: np.ndarray, *, subsets: int, subset_size: int, seed: int) -> dict:
    """Kernel Inception Distance (unbiased MMD^2, cubic polynomial kernel) over random subsets.

    The subset size is lowered to the smaller set when it has fewer images (the estimate stays
    unbiased; only its spread grows); the size used is reported.
    """
    g, r = _t(generated), _t(real)
    size = min(subset_size, len(g), len(r))
    out = kid_features_to_metric(g, r, kid_subsets=subsets, kid_subset_size=size, rng_seed=seed, verbose=False)
    return {"mean": float(out[KEY_METRIC_KID_MEAN]), "std": float(out[KEY_METRIC_KID_STD]), "subset_size": size,
            "subsets": subsets}


def inception_score(logits: np.ndarray, *, splits: int, seed: int) -> dict:
    """exp(E KL(p(y|x) || p(y))) per split (torch-fidelity; natural log), mean and std over splits.

    Splits are lowered to the number of images when there are fewer.
    """
    x = _t(logits)
    n = min(splits, len(x))
    out = isc_features_to_metric(x, n, True, seed)
    return {"mean": float(out[KEY_METRIC_ISC_MEAN]), "std": float(out[KEY_METRIC_ISC_STD]), "splits": n}


def inception_score_paper(logits: np.ndarray) -> float:
    """The paper's code: one split, KL with `scipy.stats.entropy(..., base=2)`, then `exp` (docs/paper_as_coded.md).

    Equals the one-split IS to the power 1/ln 2 (about 1.4427).
    """
    p = torch.softmax(_t(logits), dim=1).numpy()
    p_y = p.mean(axis=0)
    kl_bits = entropy(p.T, p_y[:, None], base=2)  # per image, in bits
    return float(np.exp(kl_bits.mean()))


PAPER_IS_EXPONENT = 1 / math.log(2)


def precision_recall(generated: np.ndarray, real: np.ndarray, *, neighborhood: int) -> dict:
    """Improved precision and recall (Kynkaanniemi et al. 2019), torch-fidelity's implementation.

    torch-fidelity's default extractor for these is VGG-16; here they use the same Inception
    features as FID, so one weights file serves every metric. None when a set has <= k images.
    """
    if min(len(generated), len(real)) <= neighborhood:
        return {PRECISION: None, RECALL: None,
                "note": f"needs more than prc_neighborhood={neighborhood} images in each set"}
    out = prc_features_to_metric(_t(generated), _t(real), prc_neighborhood=neighborhood,
                                 prc_batch_size=10000, save_cpu_ram=False, verbose=False)
    return {PRECISION: float(out[KEY_METRIC_PRECISION]), RECALL: float(out[KEY_METRIC_RECALL])}
