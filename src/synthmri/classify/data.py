"""The classification images, decoded once and held in memory as uint8; batches are built on the device.

Every image a stage may train or test on (kept Training, kept Testing, synthetic) is decoded once, in
parallel, into one (N, S, S) uint8 tensor; a scenario is a list of row indices into it. Normalisation,
augmentation and the 1 -> 3 channel repeat happen per batch on the device.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from synthmri.classify.mixtures import LeakageError, Pools, assert_no_leakage, read_real, read_synthetic
from synthmri.data.images import ImageError, read_gray
from synthmri.io import parallel_map

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ImageSet:
    """Decoded images and what is known of each: `pixels[i]` is the image at `paths[i]`."""

    pixels: torch.Tensor  # uint8 (N, S, S), CPU
    paths: list[str]
    keys: dict[str, frozenset[str]]  # content keys: pixel hash and, for real images, the source sha256
    pools: Pools

    def index(self, paths: Sequence[str]) -> torch.Tensor:
        where = {p: i for i, p in enumerate(self.paths)}
        return torch.tensor([where[p] for p in paths], dtype=torch.long)


def _decode(job: tuple[str, int]) -> tuple[np.ndarray, str]:
    path, size = job
    try:
        img = read_gray(path)
    except ImageError as e:
        raise ImageError(f"{path}: {e}") from None
    digest = hashlib.sha256(np.ascontiguousarray(img).tobytes() + str(img.shape).encode()).hexdigest()
    if img.shape != (size, size):  # synthetic images may come at another size than the processed set
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return img, digest


def load_images(manifest: str | Path, synthetic_dir: str | Path | None, classes: Sequence[str], size: int,
                workers: int | None = None) -> ImageSet:
    """Decode the kept processed images and the synthetic images; drop training rows that copy a test image.

    A kept Training row whose source file (sha256) or decoded pixels equal a Testing image's is left
    out of the pools with a reason (`pools.excluded`), so no scenario can draw it (paper §4.1).
    """
    train, test = read_real(manifest, classes)
    synthetic = read_synthetic(synthetic_dir, classes)
    syn_paths = [p for c in classes for p in synthetic[c]]
    real_paths = list(train["out_path"]) + list(test["out_path"])
    paths = real_paths + syn_paths
    if len(set(paths)) != len(paths):
        raise ValueError("the same image path appears twice among the processed and synthetic images")
    decoded = parallel_map(_decode, [(p, size) for p in paths], desc="decode", workers=workers)
    pixels = torch.from_numpy(np.stack([img for img, _ in decoded])) if decoded else torch.zeros((0, size, size), torch.uint8)
    keys: dict[str, frozenset[str]] = {}
    sha = dict(zip(real_paths, list(train["sha256"]) + list(test["sha256"])))
    for p, (_, digest) in zip(paths, decoded):
        keys[p] = frozenset({f"px:{digest}"} | ({f"sha:{sha[p]}"} if p in sha and sha[p] else set()))

    test_keys = {k for p in test["out_path"] for k in keys[p]}
    excluded, real_pool = [], {c: [] for c in classes}
    for p, c in zip(train["out_path"], train["class"]):
        hit = keys[p] & test_keys
        if hit:
            what = "source file" if any(k.startswith("sha:") for k in hit) else "pixels"
            excluded.append({"path": p, "class": c, "reason": f"duplicates a test image ({what})"})
        else:
            real_pool[c].append(p)
    syn_pool = {c: [] for c in classes}
    for c in classes:
        for p in synthetic[c]:
            if keys[p] & test_keys:
                excluded.append({"path": p, "class": c, "reason": "synthetic image identical to a test image"})
            else:
                syn_pool[c].append(p)
    pools = Pools(real=real_pool, synthetic=syn_pool, test=list(zip(test["out_path"], test["class"])), excluded=excluded)
    return ImageSet(pixels=pixels, paths=paths, keys=keys, pools=pools)


def check_plan(images: ImageSet, plan) -> None:
    """The code-level guarantee: no test image, copy or synthetic stand-in of one, in `plan`."""
    test_paths = {p for p, _ in images.pools.test}
    assert_no_leakage(plan, images.pools, train_keys=images.keys, test_keys={p: images.keys[p] for p in test_paths})
    if any(src not in ("real", "synthetic") for _, _, src in plan.rows):
        raise LeakageError("a training row of unknown source")


@dataclass
class DeviceData:
    """The uint8 images on the device, and how a batch becomes the network's input."""

    pixels: torch.Tensor  # uint8 (N, S, S) on `device`
    normalize: str  # "imagenet" (pretrained inputs) | "unit" (0-1) | "raw255" (paper's code)
    augment: str  # "none" | "flip"
    channels_last: bool

    @classmethod
    def create(cls, images: ImageSet, device: torch.device, *, normalize: str, augment: str) -> DeviceData:
        return cls(images.pixels.to(device, non_blocking=True), normalize, augment, device.type == "cuda")

    def batch(self, idx: torch.Tensor, *, train: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        x = self.pixels[idx.to(self.pixels.device)].unsqueeze(1).float()  # (B, 1, S, S)
        if train and self.augment == "flip":
            flip = torch.rand(x.shape[0], generator=generator, device="cpu") < 0.5
            x = torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)
        if self.normalize != "raw255":
            x = x / 255.0
        x = x.expand(-1, 3, -1, -1)  # grayscale -> the 3 channels the network expects, here only
        if self.normalize == "imagenet":
            mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
            x = (x - mean) / std
        else:
            x = x.contiguous()
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
