"""The classification images, decoded once and held in memory as uint8; batches are built on the device.

Every image a stage may train, validate or test on (kept Training, kept val, kept Testing, synthetic) is
decoded once, in parallel, into one (N, S, S) uint8 tensor; a scenario is a list of row indices into it. Normalisation,
augmentation and the 1 -> 3 channel repeat happen per batch on the device.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from synthmri.classify.mixtures import LeakageError, Pools, assert_no_leakage, read_real, read_synthetic
from synthmri.images import ImageError, read_gray
from synthmri.io import parallel_map, read_table

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# how a batch becomes the network's input (DeviceData.normalize)
NORM_IMAGENET = "imagenet"  # (x/255 - mean) / std: what torchvision's ImageNet weights expect
NORM_NO_MEAN = "imagenet_no_mean"  # x/255 / std: the paper's slip (below), same scale, mean not subtracted
NORM_UNIT = "unit"  # x/255
NORMALIZATIONS = (NORM_IMAGENET, NORM_NO_MEAN, NORM_UNIT)
COPY_REASON = "duplicates a test image"
VAL = "val"  # the split stage's validation split: for model selection (early stopping), never trained on


@dataclass
class ImageSet:
    """Decoded images and what is known of each: `pixels[i]` is the image at `paths[i]`."""

    pixels: torch.Tensor  # uint8 (N, S, S), CPU
    paths: list[str]
    keys: dict[str, frozenset[str]]  # content keys: pixel hash and, for real images, the source sha256
    pools: Pools  # Training copies of test images left out (classify.drop_test_copies: true)
    pools_keeping_copies: Pools | None = None  # the same with those copies kept and listed (false)
    # kept val images (path, class), decoded like the others; a val image that copies a test image is
    # left out (listed in val_excluded): choosing a model on it would be choosing on the test set
    val: list[tuple[str, str]] = field(default_factory=list)
    val_excluded: list[dict] = field(default_factory=list)

    def pools_for(self, drop_test_copies: bool) -> Pools:
        """The pools a scenario draws from under `classify.drop_test_copies`."""
        if drop_test_copies or self.pools_keeping_copies is None:
            return self.pools
        return self.pools_keeping_copies

    @property
    def test_copies_found(self) -> int:
        """Real Training images that copy a test image (by source sha256 or decoded pixels)."""
        return sum(1 for e in self.pools.excluded if e["reason"].startswith(COPY_REASON))

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
                workers: int | None = None, folders: dict[str, Sequence[str]] | None = None) -> ImageSet:
    """Decode the kept processed images and the synthetic images; find training rows that copy a test image.

    A kept Training row whose source file (sha256) or decoded pixels equal a Testing image's is left
    out of `pools` with a reason (`pools.excluded`), so no scenario can draw it (paper §4.1). The paper's
    code never compared Training with Testing (docs/paper_as_coded.md), so `pools_keeping_copies` holds them in
    their place, listed in `kept_test_copies`, for `classify.drop_test_copies: false`. A synthetic image
    identical to a test image is left out of both. The kept val rows (`ImageSet.val`) no scenario draws from.
    """
    train, test = read_real(manifest, classes)
    val = read_val(manifest)
    synthetic = read_synthetic(synthetic_dir, classes, folders)  # folders: a task's pooled generators
    syn_paths = [p for c in classes for p in synthetic[c]]
    real_paths = list(train["out_path"]) + list(test["out_path"]) + list(val["out_path"])
    paths = real_paths + syn_paths
    if len(set(paths)) != len(paths):
        raise ValueError("the same image path appears twice among the processed and synthetic images")
    decoded = parallel_map(_decode, [(p, size) for p in paths], desc="decode", workers=workers)
    pixels = torch.from_numpy(np.stack([img for img, _ in decoded])) if decoded else torch.zeros((0, size, size), torch.uint8)
    keys: dict[str, frozenset[str]] = {}
    sha = dict(zip(real_paths, list(train["sha256"]) + list(test["sha256"]) + list(val["sha256"])))
    for p, (_, digest) in zip(paths, decoded):
        keys[p] = frozenset({f"px:{digest}"} | ({f"sha:{sha[p]}"} if p in sha and sha[p] else set()))

    test_keys = {k for p in test["out_path"] for k in keys[p]}
    copies, syn_excluded = [], []
    real_pool, real_with_copies = {c: [] for c in classes}, {c: [] for c in classes}
    for p, c in zip(train["out_path"], train["class"]):
        real_with_copies[c].append(p)
        hit = keys[p] & test_keys
        if hit:
            what = "source file" if any(k.startswith("sha:") for k in hit) else "pixels"
            copies.append({"path": p, "class": c, "reason": f"{COPY_REASON} ({what})"})
        else:
            real_pool[c].append(p)
    syn_pool = {c: [] for c in classes}
    for c in classes:
        for p in synthetic[c]:
            if keys[p] & test_keys:
                syn_excluded.append({"path": p, "class": c, "reason": "synthetic image identical to a test image"})
            else:
                syn_pool[c].append(p)
    pools = Pools(real=real_pool, synthetic=syn_pool, test=list(zip(test["out_path"], test["class"])),
                  excluded=copies + syn_excluded)
    keeping = replace(pools, real=real_with_copies, excluded=syn_excluded,
                      kept_test_copies=frozenset(e["path"] for e in copies))
    val_pool, val_excluded = [], []
    for p, c in zip(val["out_path"], val["class"]):
        if keys[p] & test_keys:
            val_excluded.append({"path": p, "class": c, "reason": COPY_REASON})
        else:
            val_pool.append((p, c))
    return ImageSet(pixels=pixels, paths=paths, keys=keys, pools=pools, pools_keeping_copies=keeping,
                    val=val_pool, val_excluded=val_excluded)


def read_val(manifest: str | Path) -> pd.DataFrame:
    """Kept val rows of the processed manifest, sorted by out_path (none before the split stage made a val)."""
    df = read_table(manifest)
    return df[(df["status"] == "kept") & (df["split"] == VAL)].sort_values("out_path", kind="stable").reset_index(drop=True)


def check_plan(images: ImageSet, plan, pools: Pools | None = None) -> int:
    """The code-level guarantee: no test image, copy or synthetic stand-in of one, in `plan`.

    `pools` are those `plan` was drawn from (default `images.pools`); only the test-image copies they
    list as kept (classify.drop_test_copies: false) pass, and their number is returned.
    """
    pools = images.pools if pools is None else pools
    if any(src not in ("real", "synthetic") for _, _, src in plan.rows):
        raise LeakageError("a training row of unknown source")
    val_paths = {p for p, _ in images.val} | {e["path"] for e in images.val_excluded}
    if any(p in val_paths for p, _, _ in plan.rows):
        raise LeakageError("a val image in a training set: val is held out for model selection")
    test_paths = {p for p, _ in pools.test}
    return assert_no_leakage(plan, pools, train_keys=images.keys, test_keys={p: images.keys[p] for p in test_paths})


@dataclass
class DeviceData:
    """The uint8 images on the device, and how a batch becomes the network's input."""

    pixels: torch.Tensor  # uint8 (N, S, S) on `device`
    normalize: str  # one of NORMALIZATIONS
    augment: str  # "none" | "flip"
    channels_last: bool

    def __post_init__(self):
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"unknown input normalisation {self.normalize!r}; known: {', '.join(NORMALIZATIONS)}")

    @classmethod
    def create(cls, images: ImageSet, device: torch.device, *, normalize: str, augment: str) -> DeviceData:
        return cls(images.pixels.to(device, non_blocking=True), normalize, augment, device.type == "cuda")

    def batch(self, idx: torch.Tensor, *, train: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        x = self.pixels[idx.to(self.pixels.device)].unsqueeze(1).float()  # (B, 1, S, S)
        if train and self.augment == "flip":
            flip = torch.rand(x.shape[0], generator=generator, device="cpu") < 0.5
            x = torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)
        x = x / 255.0
        x = x.expand(-1, 3, -1, -1)  # grayscale -> the 3 channels the network expects, here only
        if self.normalize == NORM_UNIT:
            x = x.contiguous()
        else:
            std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
            if self.normalize == NORM_IMAGENET:
                x = x - torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
            # NORM_NO_MEAN, paper's code (docs/paper_as_coded.md, "Classifier"): raw 0-255 into Keras' caffe-style VGG-19,
            # whose weights expect the ImageNet mean subtracted at that scale. The same slip on torchvision
            # weights: their scale (/255, /std), no mean subtraction; raw 0-255 here would also be ~58x too large.
            x = x / std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
