"""Images in, network features out: the grayscale-to-RGB boundary, the extractor and a content cache.

torch-fidelity's networks take uint8 RGB (B, 3, H, W). Our images are uint8 grayscale (H, W) from
the first stage to the last; `GrayAs3Channels` is the one place they become 3-channel, by
repeating the grey band (what the paper's Keras pipeline did when it loaded grey PNGs as RGB).

Features of a fixed set of images depend only on the images' bytes and the network's weights, so
they are cached under a key made of both: the real reference sets, the same for every generator,
are extracted once and every later experiment pays only for its own synthetic images.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from synthmri.images import ImageError, read_gray, sha256_file, thumbnail
from synthmri import pretrained as W
from synthmri.io import atomic_path, parallel_map, progress

INCEPTION = "inception-v3-compat"  # torch-fidelity's FID Inception
METRICS = ("fid", "isc", "kid", "prc")
BOUNDARY = "gray-uint8-repeat3/v1"  # how images reach the network; part of the cache key


class GrayAs3Channels(Dataset):
    """uint8 (H, W) grayscale arrays -> uint8 (3, H, W) tensors, torch-fidelity's input contract."""

    def __init__(self, images: Sequence[np.ndarray]):
        for i, a in enumerate(images):
            if a.dtype != np.uint8 or a.ndim != 2:
                raise ValueError(f"image {i}: expected uint8 (H, W) grayscale, got {a.dtype} {a.shape}")
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.images[i]).unsqueeze(0).expand(3, -1, -1).contiguous()


# ---- decoded image sets -------------------------------------------------------------------------


@dataclass
class ImageSet:
    """The usable images of one set, decoded once, and the files that could not be used."""

    name: str
    paths: list[str] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)  # uint8 (H, W)
    digests: list[str] = field(default_factory=list)  # sha256 of each file's bytes
    thumbs: np.ndarray | None = None  # (N, px, px, 3) uint8, as the dedup stage makes them
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def __len__(self) -> int:
        return len(self.paths)


def _load_job(job: tuple[str, int]):
    path, px = job
    try:
        if not os.path.isfile(path):
            raise ImageError("missing file")
        gray = read_gray(path)
        thumb, _ = thumbnail(path, px)
        return gray, sha256_file(path), thumb
    except ImageError as e:
        return f"unreadable: {e}"
    except (OSError, ValueError, SyntaxError) as e:  # a conversion Pillow refuses
        return f"unreadable: {type(e).__name__}: {e}"


def load_images(name: str, paths: Sequence[str], px_size: int, workers: int | None) -> ImageSet:
    """Decode each file once (in parallel): grey array, content digest and dedup-style thumbnail."""
    out = parallel_map(_load_job, [(str(p), px_size) for p in paths], desc=f"decode {name}", workers=workers)
    s = ImageSet(name)
    thumbs = []
    for p, res in zip(paths, out):
        if isinstance(res, str):
            s.rejected.append((str(p), res))
            continue
        s.paths.append(str(p))
        s.images.append(res[0])
        s.digests.append(res[1])
        thumbs.append(res[2])
    s.thumbs = np.stack(thumbs) if thumbs else np.zeros((0, px_size, px_size, 3), np.uint8)
    return s


# ---- the feature extractor ----------------------------------------------------------------------


@dataclass
class Extractor:
    """A torch-fidelity feature extractor with what identifies its output."""

    module: torch.nn.Module
    name: str  # torch-fidelity registry name
    weights_sha256: str  # the weights file's digest (random weights: digest of the tensors)
    device: torch.device
    layers: dict[str, str]  # metric (fid, isc, kid, prc) -> feature layer
    weights_file: dict | None = None  # pretrained.Checked.record() of the file loaded; None for random weights

    @property
    def feature_layers(self) -> list[str]:
        return sorted(set(self.layers.values()))

    def identity(self) -> str:
        """What, besides the images, the features depend on (cache key part)."""
        return "|".join([BOUNDARY, self.name, self.weights_sha256, ",".join(self.feature_layers),
                         self.device.type, f"torch-{torch.__version__.split('+')[0]}"])


def build_extractor(device: torch.device, *, weights: str | os.PathLike | None = None, random_seed: int | None = None,
                    name: str = INCEPTION) -> Extractor:
    """torch-fidelity's extractor `name` with the weights file `weights`, or seeded random Inception weights.

    The file must exist (MissingWeightsError names it and `synthmri weights fetch`); a registry file
    is sha256-checked, and every file is first read with `weights_only=True`, so torch-fidelity's own
    (unrestricted) load only ever sees plain tensors. Nothing is downloaded.
    """
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
    from torch_fidelity.utils import create_feature_extractor

    if name not in FEATURE_EXTRACTORS_REGISTRY:
        raise ValueError(f"unknown feature extractor {name!r}; registered: {', '.join(FEATURE_EXTRACTORS_REGISTRY)}")
    cls = FEATURE_EXTRACTORS_REGISTRY[name]
    layers = {m: cls.get_default_feature_layer_for_metric(m) for m in METRICS}
    if random_seed is not None:
        if name != INCEPTION:
            raise ValueError(f"random weights exist only for {INCEPTION}, not {name!r}")
        state = W.random_inception_state_dict(random_seed)
        digest, record = _tensors_digest(state), None
        module = _create_from_state(create_feature_extractor, name, layers, state)
    else:
        if weights is None:
            raise ValueError("a weights file is needed (nothing is downloaded at run time)")
        state, checked = W.load(weights)  # existence, sha256 (full, prefix, or recorded only) and a safe read
        del state
        digest, record = checked.sha256, checked.record()
        module = create_feature_extractor(name, sorted(set(layers.values())), cuda=False, verbose=False,
                                          feature_extractor_weights_path=str(weights))
    module = module.to(device).eval()
    return Extractor(module, name, digest, device, layers, record)


def _create_from_state(create, name, layers, state):
    import tempfile

    with tempfile.TemporaryDirectory(prefix="synthmri-weights-") as tmp:
        path = Path(tmp) / "weights.pth"
        torch.save(state, path)
        return create(name, sorted(set(layers.values())), cuda=False, verbose=False,
                      feature_extractor_weights_path=str(path))


def _tensors_digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return "random-" + h.hexdigest()


def extract(extractor: Extractor, images: Sequence[np.ndarray], batch_size: int, desc: str) -> dict[str, np.ndarray]:
    """Features (float32, one row per image, in order) of every layer the extractor was built for.

    Images are batched with others of the same size (torch-fidelity's networks resize each one);
    the result does not depend on the batch size (tests check it).
    """
    data = GrayAs3Channels(images)
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, a in enumerate(images):
        by_shape.setdefault(a.shape, []).append(i)
    out: dict[str, np.ndarray] = {}
    with progress() as bar, torch.no_grad():
        task = bar.add_task(desc, total=len(images))
        for idx in by_shape.values():
            loader = DataLoader(Subset(data, idx), batch_size=batch_size, shuffle=False, num_workers=0)
            start = 0
            for batch in loader:
                feats = extractor.module.convert_features_tuple_to_dict(extractor.module(batch.to(extractor.device)))
                rows = idx[start:start + len(batch)]
                for layer, value in feats.items():
                    if layer not in out:
                        out[layer] = np.zeros((len(images), *value.shape[1:]), np.float32)
                    out[layer][rows] = value.float().cpu().numpy()
                start += len(batch)
                bar.advance(task, len(batch))
    return out


# ---- content cache --------------------------------------------------------------------------------


class FeatureCache:
    """Features of a set of images, keyed by the images' digests (in order) and the extractor's identity.

    One safetensors file per set (no pickle); written atomically, so a killed run leaves no entry.
    """

    def __init__(self, root: str | os.PathLike | None):
        self.root = Path(os.path.expanduser(str(root))) if root else None
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(extractor: Extractor, digests: Sequence[str]) -> str:
        h = hashlib.sha256(extractor.identity().encode())
        for d in digests:
            h.update(d.encode())
        return h.hexdigest()

    def features(self, extractor: Extractor, images: ImageSet, batch_size: int) -> dict[str, np.ndarray]:
        if self.root is None:
            self.misses += 1
            return extract(extractor, images.images, batch_size, f"features {images.name}")
        from safetensors.numpy import load_file, save_file

        path = self.root / f"{self.key(extractor, images.digests)}.safetensors"
        if path.is_file():
            try:
                feats = load_file(path)
            except Exception:  # noqa: BLE001 - an unreadable entry is recomputed and replaced
                feats = None
            if feats is not None and set(feats) == set(extractor.feature_layers) and \
                    all(len(v) == len(images) for v in feats.values()):
                self.hits += 1
                return feats
        self.misses += 1
        feats = extract(extractor, images.images, batch_size, f"features {images.name}")
        with atomic_path(path) as tmp:
            save_file(feats, str(tmp), metadata={"images": str(len(images)), "extractor": extractor.name})
        return feats
