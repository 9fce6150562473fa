"""Training-batch augmentation on the device: flips, one affine warp and a brightness factor per image.

The per-image parameters are drawn in one call per transform from the epoch's seeded CPU generator
(the same seed gives the same batch on any device), then the whole batch is warped at once: one
`affine_grid` + `grid_sample` (bilinear, edge pixels repeated: Keras' fill_mode "nearest"). The
matrix is Keras' ImageDataGenerator's, rotation @ shear @ zoom plus a shift (the SD-Turbo study's
recipe was Keras'). Flips are exact index flips; a transform set to 0 draws nothing and changes nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from synthmri.classify.config import AugmentParams


def _uniform(n: int, generator: torch.Generator | None, *cols: int) -> torch.Tensor:
    """(n, *cols) uniforms in [-1, 1) from `generator` (CPU)."""
    return torch.rand(n, *cols, generator=generator, device="cpu") * 2 - 1


def affine_matrices(aug: AugmentParams, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """(n, 2, 3) matrices mapping output to input coordinates in [-1, 1] (square images)."""
    u = _uniform(n, generator, 6)
    rot = torch.deg2rad(u[:, 0] * aug.rotation)
    shear = torch.deg2rad(u[:, 1] * aug.shear)
    zx, zy = 1 + u[:, 2] * aug.zoom, 1 + u[:, 3] * aug.zoom
    tx, ty = 2 * u[:, 4] * aug.shift, 2 * u[:, 5] * aug.shift  # the side spans 2 in grid units
    c, s = torch.cos(rot), torch.sin(rot)
    # Keras apply_affine_transform: [[c, -s], [s, c]] @ [[1, -sin(sh)], [0, cos(sh)]] @ diag(zx, zy)
    a = torch.stack([torch.stack([c * zx, (-c * torch.sin(shear) - s * torch.cos(shear)) * zy], -1),
                     torch.stack([s * zx, (-s * torch.sin(shear) + c * torch.cos(shear)) * zy], -1)], -2)
    return torch.cat([a, torch.stack([tx, ty], -1).unsqueeze(-1)], -1)


def augment_batch(x: torch.Tensor, aug: AugmentParams, generator: torch.Generator | None) -> torch.Tensor:
    """Augment a (B, C, S, S) batch of 0-255 floats; the same generator state gives the same batch."""
    if not aug.active:
        return x
    n = x.shape[0]
    for name, dim in (("horizontal", -1), ("vertical", -2)):
        if aug.flip in (name, "both"):  # one draw per image, as the old `augment: flip` drew
            flip = torch.rand(n, generator=generator, device="cpu") < 0.5
            x = torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(dim), x)
    if aug.geometric:
        theta = affine_matrices(aug, n, generator).to(x.device, x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    lo, hi = aug.brightness
    if (lo, hi) != (1.0, 1.0):
        f = lo + (hi - lo) * torch.rand(n, generator=generator, device="cpu")
        x = (x * f.to(x.device, x.dtype).view(-1, 1, 1, 1)).clamp(0, 255)
    return x

