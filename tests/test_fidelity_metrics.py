"""Fidelity metrics: invariances and agreement with an independent numpy/scipy implementation.

Most tests use `TinyExtractor`, a small torch-fidelity feature extractor registered under its own
name (fast, well-conditioned 16-d features); one test runs torch-fidelity's real Inception
architecture with seeded Kaiming-normal weights saved to a file (PyTorch's default init is degenerate), on a handful of images.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

from synthmri.fidelity import metrics as M
from synthmri import pretrained as W
from synthmri.fidelity.features import GrayAs3Channels, build_extractor, extract

TINY = "synthmri-tiny-test"


class TinyExtractor(FeatureExtractorBase):
    """8x8 average-pooled grey levels -> 16-d linear features -> 10 logits, weights read from a file."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        self.proj = torch.nn.Linear(64, 16)
        self.head = torch.nn.Linear(16, 10)
        self.load_state_dict(torch.load(feature_extractor_weights_path, weights_only=True))

    @staticmethod
    def get_provided_features_list():
        return ("feat", "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "logits" if metric == "isc" else "feat"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 16, 16, dtype=torch.uint8)

    def forward(self, x):
        assert x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3
        g = F.adaptive_avg_pool2d(x.float().mean(dim=1, keepdim=True) / 255.0, (8, 8)).flatten(1)
        feat = self.proj(g - 0.25)
        out = {"feat": feat, "logits": self.head(feat) * 4.0}
        return tuple(out[k] for k in self.features_list)


def tiny_weights(path, seed: int = 0):
    """Save TinyExtractor weights to `path` and register the extractor (once per process)."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if TINY not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(TINY, TinyExtractor)
    g = torch.Generator().manual_seed(seed)
    torch.save({"proj.weight": torch.randn(16, 64, generator=g), "proj.bias": torch.randn(16, generator=g) * 0.5,
                "head.weight": torch.randn(10, 16, generator=g), "head.bias": torch.zeros(10)}, path)
    return path


def tiny_extractor(tmp_path, seed: int = 0):
    return build_extractor(torch.device("cpu"), weights=tiny_weights(tmp_path / f"tiny-{seed}.pth", seed), name=TINY)


def blobs(n: int, size: int = 32, seed: int = 0) -> list[np.ndarray]:
    """Distinct image-like uint8 (size, size) arrays: a few random soft ellipses on black."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        img = np.zeros((size, size))
        for _ in range(3):
            cy, cx, ry, rx = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.3), rng.uniform(0.08, 0.3)
            img += rng.uniform(60, 200) * np.exp(-(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2))
        out.append(np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8))
    return out


# ---- independent reference implementations (numpy / scipy only) ------------------------------------


def fid_reference(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def mmd2_unbiased_reference(x: np.ndarray, y: np.ndarray) -> float:
    """KID's estimator on whole sets: cubic polynomial kernel (x.y/d + 1)^3, unbiased MMD^2."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    d, m = x.shape[1], len(x)
    k = lambda p, q: (p @ q.T / d + 1.0) ** 3  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2 * kxy.mean())


@pytest.fixture(scope="module")
def feats(tmp_path_factory):
    """Tiny-extractor features of two different sets of 48 images (16-d, well conditioned)."""
    ex = tiny_extractor(tmp_path_factory.mktemp("tiny"))
    a = extract(ex, blobs(48, seed=1), 16, "a")
    b = extract(ex, blobs(48, seed=2), 16, "b")
    return a, b


def test_fid_and_kid_agree_with_scipy_reference(feats):
    a, b = feats
    fa, fb = a["feat"], b["feat"]
    ours = M.fid(fa, fb)
    assert ours > 1e-3  # different sets
    assert ours == pytest.approx(fid_reference(fa, fb), rel=1e-6)
    # subset size = whole set: every subset is a permutation, so KID is the whole-set estimate
    kid = M.kid(fa, fb, subsets=3, subset_size=len(fa), seed=0)
    assert kid["mean"] == pytest.approx(mmd2_unbiased_reference(fa, fb), rel=1e-6)
    assert kid["std"] == pytest.approx(0.0, abs=1e-12)


def test_fid_of_a_set_with_itself_is_zero(feats):
    a, b = feats
    assert abs(M.fid(a["feat"], a["feat"])) < 1e-8 * np.trace(np.cov(a["feat"], rowvar=False))
    # N < D: singular covariances, the case of a class's few hundred images in 2048-d
    few = a["feat"][:10]
    assert abs(M.fid(few, few)) < 1e-6 * np.trace(np.cov(few, rowvar=False))
    assert M.kid(a["feat"], a["feat"], subsets=2, subset_size=48, seed=0)["mean"] < 0  # unbiased: same set -> < 0
    assert M.fid(a["feat"], b["feat"]) > 1e-3


def test_features_and_fid_do_not_depend_on_the_batch_size(tmp_path):
    ex = tiny_extractor(tmp_path)
    imgs = blobs(20, seed=4)
    one, many = extract(ex, imgs, 1, "1"), extract(ex, imgs, 16, "16")
    np.testing.assert_allclose(one["feat"], many["feat"], rtol=1e-5, atol=1e-6)
    assert abs(M.fid(one["feat"], many["feat"])) < 1e-6 * np.trace(np.cov(one["feat"], rowvar=False))


def test_kid_subset_size_is_lowered_to_the_smaller_set(feats):
    a, b = feats
    out = M.kid(a["feat"][:10], b["feat"], subsets=5, subset_size=92, seed=0)
    assert out["subset_size"] == 10 and out["subsets"] == 5


def test_inception_score_paper_formula_is_the_power_one_over_ln2(feats):
    a, _ = feats
    one_split = M.inception_score(a["logits"], splits=1, seed=0)["mean"]
    assert one_split > 1.5  # the tiny logits are informative
    assert M.inception_score_paper(a["logits"]) == pytest.approx(one_split ** (1 / math.log(2)), rel=1e-9)
    ten = M.inception_score(a["logits"], splits=10, seed=0)
    assert ten["splits"] == 10 and ten["std"] > 0
    assert M.inception_score(a["logits"][:4], splits=10, seed=0)["splits"] == 4  # lowered to the images


def test_precision_recall(feats):
    a, b = feats
    same = M.precision_recall(a["feat"], a["feat"], neighborhood=3)
    assert same == {M.PRECISION: 1.0, M.RECALL: 1.0}
    far = M.precision_recall(a["feat"] + 100.0, a["feat"], neighborhood=3)
    assert far == {M.PRECISION: 0.0, M.RECALL: 0.0}
    few = M.precision_recall(a["feat"][:3], a["feat"], neighborhood=3)
    assert few[M.PRECISION] is None and "prc_neighborhood" in few["note"]


def test_gray_becomes_three_identical_uint8_channels():
    img = blobs(1, size=8)[0]
    t = GrayAs3Channels([img])[0]
    assert t.dtype == torch.uint8 and t.shape == (3, 8, 8)
    assert all(np.array_equal(t[c].numpy(), img) for c in range(3))
    with pytest.raises(ValueError, match="uint8"):
        GrayAs3Channels([img.astype(np.float32)])


def test_mixed_sizes_are_batched_by_size_and_keep_their_order(tmp_path):
    ex = tiny_extractor(tmp_path)
    small, large = blobs(3, size=16, seed=5), blobs(2, size=24, seed=6)
    mixed = [small[0], large[0], small[1], large[1], small[2]]
    together = extract(ex, mixed, 2, "mixed")["feat"]
    alone = np.concatenate([extract(ex, [im], 1, "one")["feat"] for im in mixed])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)


def test_random_inception_from_file_is_usable_and_batch_size_independent(tmp_path):
    """torch-fidelity's Inception with Kaiming-normal weights saved to a file, on 5 images.

    No 2048-d FID here: its 2048x2048 eigendecomposition alone costs 5-25 s on 2 cores; FID's
    invariances are checked on the tiny extractor's features above.
    """
    path = W.save_random_inception(tmp_path / "random-inception.pth", seed=0)
    ex = build_extractor(torch.device("cpu"), weights=path)
    assert ex.layers["fid"] == "2048" and ex.layers["isc"] == "logits_unbiased"
    varied = blobs(3, size=40, seed=3)
    constant = [np.full((40, 40), 90, np.uint8)] * 2
    one = extract(ex, varied + constant, 1, "batch 1")
    five = extract(ex, varied + constant, 5, "batch 5")
    for layer in one:  # batch-size independence of the features ...
        np.testing.assert_allclose(one[layer], five[layer], rtol=1e-4, atol=1e-5)
    assert float(one["2048"][:3].std(axis=0).mean()) > 1e-3  # Kaiming init: features vary with the image
    # a constant image set has IS exactly 1, by both formulas
    assert M.inception_score(one["logits_unbiased"][3:], splits=1, seed=0)["mean"] == pytest.approx(1.0, abs=1e-9)
    assert M.inception_score_paper(one["logits_unbiased"][3:]) == pytest.approx(1.0, abs=1e-9)
    # the demo's random weights (no file) are these same weights
    demo = build_extractor(torch.device("cpu"), random_seed=0)
    np.testing.assert_allclose(extract(demo, varied[:1], 1, "demo")["2048"], one["2048"][:1], rtol=1e-4, atol=1e-5)
    assert demo.weights_sha256.startswith("random-") and demo.identity() != ex.identity()


@pytest.mark.parametrize("n1, n2, d", [(48, 40, 16), (30, 20, 64), (300, 200, 256)])
def test_fid_equals_torch_fidelity_fid_with_fewer_or_more_images_than_dimensions(n1, n2, d):
    """`fid` skips torch-fidelity's d x d sqrtm (the cross-Gram identity); same number, n < d and n > d."""
    rng = np.random.default_rng(n1 + d)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)  # correlated features, like a network's
    a = rng.normal(size=(n1, d)) @ mix
    b = (rng.normal(size=(n2, d)) * 1.3 + 0.2) @ mix
    ours, theirs = M.fid(a, b), M.fid_torch_fidelity(a, b)
    assert theirs > 1e-2
    assert ours == pytest.approx(theirs, rel=1e-6)
    assert M.fid(b, a) == pytest.approx(ours, rel=1e-12)  # symmetric
