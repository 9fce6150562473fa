"""classify.augment: seeded per-image transforms applied to whole batches on the device (one affine grid)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from synthmri.classify import augment as A
from synthmri.classify.config import AugmentParams
from synthmri.classify.data import DeviceData

RECIPE = AugmentParams(flip="horizontal", rotation=15, shift=0.1, shear=10, zoom=0.2, brightness=(0.8, 1.2))


def _batch(n=8, size=24, seed=0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 1, size, size))).float()


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_all_ranges_zero_is_the_identity():
    x = _batch()
    assert A.augment_batch(x, AugmentParams(), _g(0)) is x
    zero = AugmentParams(flip="none", rotation=0, shift=0, shear=0, zoom=0, brightness=(1.0, 1.0))
    assert not zero.active and torch.equal(A.augment_batch(x, zero, _g(0)), x)
    g = _g(0)
    A.augment_batch(x, zero, g)
    assert torch.equal(g.get_state(), _g(0).get_state())  # nothing drawn


def test_same_seed_same_batch_other_seed_other_batch():
    x = _batch()
    a, b = A.augment_batch(x, RECIPE, _g(7)), A.augment_batch(x, RECIPE, _g(7))
    assert torch.equal(a, b)
    assert not torch.equal(a, A.augment_batch(x, RECIPE, _g(8)))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 255


def test_one_grid_for_the_whole_batch_with_each_images_own_parameters(monkeypatch):
    calls = []
    real = A.F.affine_grid
    monkeypatch.setattr(A.F, "affine_grid", lambda theta, *a, **k: calls.append(theta.shape) or real(theta, *a, **k))
    x = _batch(1).expand(8, -1, -1, -1).contiguous()  # eight copies of one image
    geo = AugmentParams(rotation=15, shift=0.1, shear=10, zoom=0.2)
    out = A.augment_batch(x, geo, _g(3))
    assert calls == [torch.Size([8, 2, 3])]  # one call, one matrix per image
    assert len({out[i].numpy().tobytes() for i in range(8)}) == 8  # every copy moved differently
    # the batch result is each image warped alone by its own matrix
    theta = A.affine_matrices(geo, 8, _g(3))
    for i in range(8):
        grid = real(theta[i:i + 1], [1, 1, 24, 24], align_corners=False)
        alone = torch.nn.functional.grid_sample(x[i:i + 1], grid, mode="bilinear", padding_mode="border",
                                                align_corners=False)
        assert torch.allclose(out[i:i + 1], alone, atol=1e-4)


def test_matrices_are_keras_rotation_shear_zoom_and_shift_in_range():
    n = 500
    theta = A.affine_matrices(RECIPE, n, _g(1)).double().numpy()
    u = (torch.rand(n, 6, generator=_g(1)) * 2 - 1).double().numpy()  # the same draws, in the same order
    for i in range(0, n, 50):
        r, sh = math.radians(15 * u[i, 0]), math.radians(10 * u[i, 1])
        rot = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])
        shear = np.array([[1, -math.sin(sh)], [0, math.cos(sh)]])
        zoom = np.diag([1 + 0.2 * u[i, 2], 1 + 0.2 * u[i, 3]])
        assert np.allclose(theta[i, :, :2], rot @ shear @ zoom, atol=1e-6)
        assert np.allclose(theta[i, :, 2], [0.2 * u[i, 4], 0.2 * u[i, 5]], atol=1e-6)
    angles = np.degrees(np.arctan2(A.affine_matrices(AugmentParams(rotation=15), n, _g(2))[:, 1, 0].numpy(),
                                   A.affine_matrices(AugmentParams(rotation=15), n, _g(2))[:, 0, 0].numpy()))
    assert np.abs(angles).max() <= 15 + 1e-4 and np.abs(angles).max() > 14  # fills the range


def test_brightness_is_one_factor_per_image_within_range():
    x = _batch(16) * 0.5 + 10  # 10-137.5: no pixel reaches 255 at x1.2, none is 0
    out = A.augment_batch(x, AugmentParams(brightness=(0.8, 1.2)), _g(4))
    ratio = out / x
    per_image = ratio.flatten(1)
    assert torch.allclose(per_image.min(1).values, per_image.max(1).values, atol=1e-5)  # one factor an image
    assert per_image.min() >= 0.8 - 1e-6 and per_image.max() <= 1.2 + 1e-6
    assert A.augment_batch(torch.full((4, 1, 8, 8), 250.0), AugmentParams(brightness=(1.2, 1.2)), _g(0)).max() == 255


def test_the_flip_preset_draws_exactly_what_it_always_did():
    x = _batch(10).squeeze(1).to(torch.uint8)
    data = DeviceData(x, "unit", "flip", False)
    got = data.batch(torch.arange(10), train=True, generator=_g(5))
    old = x.unsqueeze(1).float()  # the code before the augmentation params: one uniform per image, < 0.5 flips
    flip = torch.rand(10, generator=_g(5)) < 0.5
    old = torch.where(flip.view(-1, 1, 1, 1), old.flip(-1), old) / 255.0
    assert torch.equal(got, old.expand(-1, 3, -1, -1).contiguous())
    assert torch.equal(data.batch(torch.arange(10), train=False), (x.unsqueeze(1).float() / 255).expand(-1, 3, -1, -1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_on_the_gpu_the_same_generator_gives_the_same_batch_as_on_the_cpu():
    x = _batch()
    cpu = A.augment_batch(x, RECIPE, _g(9))
    gpu = A.augment_batch(x.cuda(), RECIPE, _g(9))
    assert gpu.is_cuda and torch.allclose(gpu.cpu(), cpu, atol=1e-3)
