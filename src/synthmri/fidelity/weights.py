"""Pretrained weight files: a checked registry, `weights fetch`, safe loading, and the missing-file error.

Every pretrained network of the project reads a file under `models/pretrained/` (tracked by DVC, so
a team downloads once and `dvc pull`s after). Nothing downloads at run time: a stage that lacks a
file stops with an error naming it and the command that gets it. `fetch` is the one place that
touches the network, and only when a user runs it.

The sha256 check is the one torch.hub applies: the file name carries the first 8 hex digits of the
file's sha256 (`...-6726825d.pth`); the full digest is reported so DVC's record can be compared.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from synthmri.io import atomic_path

DEFAULT_DIR = Path("models/pretrained")
FETCH_COMMAND = "synthmri weights fetch"


@dataclass(frozen=True)
class WeightsFile:
    name: str  # registry key, as `synthmri weights fetch <name>` takes it
    file: str  # file name under models/pretrained/ (torch.hub's name: it ends in -<sha256 prefix>.pth)
    url: str
    sha256_prefix: str  # leading hex digits of the file's sha256
    used_by: str  # what reads it

    def __post_init__(self):
        if not self.sha256_prefix or any(c not in "0123456789abcdef" for c in self.sha256_prefix):
            raise ValueError(f"weights {self.name}: sha256_prefix must be lowercase hex, got {self.sha256_prefix!r}")


# URLs: torch-fidelity's feature_extractor_inceptionv3.URL_INCEPTION_V3 and torchvision's
# <Model>_Weights.IMAGENET1K_V1.url (tests check both against the installed libraries).
REGISTRY: dict[str, WeightsFile] = {w.name: w for w in (
    WeightsFile("inception", "weights-inception-2015-12-05-6726825d.pth",
                "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
                "6726825d", "fidelity (torch-fidelity's FID Inception, converted from TF 2015-12-05)"),
    WeightsFile("vgg19", "vgg19-dcbb9e9d.pth", "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
                "dcbb9e9d", "classify (torchvision vgg19, IMAGENET1K_V1)"),
    WeightsFile("resnet50", "resnet50-0676ba61.pth", "https://download.pytorch.org/models/resnet50-0676ba61.pth",
                "0676ba61", "classify (torchvision resnet50, IMAGENET1K_V1)"),
    WeightsFile("resnet152", "resnet152-394f9c45.pth", "https://download.pytorch.org/models/resnet152-394f9c45.pth",
                "394f9c45", "classify (torchvision resnet152, IMAGENET1K_V1)"),
    WeightsFile("mobilenet_v2", "mobilenet_v2-b0353104.pth", "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
                "b0353104", "classify (torchvision mobilenet_v2, IMAGENET1K_V1)"),
)}


class MissingWeightsError(FileNotFoundError):
    """A pretrained weights file is absent; the message names it and how to get it."""


def get(name: str) -> WeightsFile:
    if name not in REGISTRY:
        raise ValueError(f"unknown weights {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def by_file(path: str | os.PathLike) -> WeightsFile | None:
    """The registry entry whose file name `path` has, if any."""
    name = Path(path).name
    return next((w for w in REGISTRY.values() if w.file == name), None)


def require(path: str | os.PathLike) -> Path:
    """`path` if it is a file, else MissingWeightsError naming it and the command that fetches it."""
    path = Path(path)
    if path.is_file():
        return path
    entry = by_file(path)
    if entry is None:
        how = f"put the file there (`{FETCH_COMMAND}` fetches the registered files: {', '.join(REGISTRY)})"
    else:
        how = (f"run `{FETCH_COMMAND} {entry.name}` on a machine with internet (it writes "
               f"{(DEFAULT_DIR / entry.file).as_posix()}), or `dvc pull` where the team has pushed it")
        if path.parent != DEFAULT_DIR:
            how += f", and put it at {path.as_posix()}"
    raise MissingWeightsError(f"pretrained weights not found: {path.as_posix()}; {how}. Nothing is downloaded at run time.")


def weights_path(name: str, weights_dir: str | os.PathLike = DEFAULT_DIR) -> Path:
    """The file of registry entry `name` under `weights_dir`, or MissingWeightsError."""
    return require(Path(weights_dir) / get(name).file)


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def verify(path: str | os.PathLike, entry: WeightsFile | None = None) -> str:
    """The file's sha256; ValueError if it is a registry file whose digest does not start as recorded."""
    entry = entry or by_file(path)
    digest = sha256_of(path)
    if entry is not None and not digest.startswith(entry.sha256_prefix):
        raise ValueError(f"{Path(path).as_posix()}: sha256 {digest} does not start with {entry.sha256_prefix} "
                         f"({entry.name}); the file is corrupt or not the published one: delete it and run "
                         f"`{FETCH_COMMAND} {entry.name}` again")
    return digest


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict read without unpickling code (`weights_only=True`); registry files are sha256-checked first."""
    return load_checked(path)[0]


def load_checked(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """`load_state_dict` and the file's sha256."""
    path = require(path)
    digest = verify(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any refusal means the file is not plain tensors
        raise ValueError(f"{Path(path).as_posix()}: not a plain state dict of tensors ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{Path(path).as_posix()}: expected a state dict, got {type(state).__name__}")
    return state, digest


# ---- fetch: the only network access, on request ----------------------------------------------------


def fetch(names: list[str] | tuple[str, ...] | None, dest_dir: str | os.PathLike = DEFAULT_DIR) -> list[dict[str, Any]]:
    """Download the named registry files (all when `names` is empty) into `dest_dir`, checking sha256.

    A file already there with the right digest is kept; a wrong one is an error (it is not overwritten).
    """
    entries = [get(n) for n in (names or list(REGISTRY))]
    return [fetch_one(e, dest_dir) for e in entries]


def fetch_one(entry: WeightsFile, dest_dir: str | os.PathLike = DEFAULT_DIR, timeout: float = 60.0) -> dict[str, Any]:
    dest = Path(dest_dir) / entry.file
    if dest.is_file():
        digest = verify(dest, entry)
        return {"name": entry.name, "path": dest.as_posix(), "sha256": digest, "bytes": dest.stat().st_size,
                "status": "present"}
    h = hashlib.sha256()
    size = 0
    with atomic_path(dest) as tmp:  # a failed or wrong download leaves nothing behind
        try:
            with urllib.request.urlopen(entry.url, timeout=timeout) as response, open(tmp, "wb") as out:
                while block := response.read(1 << 20):
                    h.update(block)
                    out.write(block)
                    size += len(block)
        except OSError as e:
            raise OSError(f"downloading {entry.name} from {entry.url} failed: {e}") from None
        digest = h.hexdigest()
        if not digest.startswith(entry.sha256_prefix):
            raise ValueError(f"{entry.url}: downloaded sha256 {digest} does not start with {entry.sha256_prefix} "
                             f"({entry.name}); nothing was written")
    return {"name": entry.name, "path": dest.as_posix(), "sha256": digest, "bytes": size, "status": "downloaded"}


# ---- random Inception weights (demo profile and tests) ---------------------------------------------


def random_inception_state_dict(seed: int) -> dict[str, torch.Tensor]:
    """torch-fidelity's Inception architecture with seeded random weights, as a state dict.

    PyTorch's default init makes degenerate features (IS 1, FID ~0 between different sets); a
    Kaiming-normal init of the convolutions gives usable numbers (FACTS.md). The network is built by
    torch-fidelity's own class, so the keys and shapes are exactly those its loader expects.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):  # keep the fresh init
            return None

    with tempfile.TemporaryDirectory(prefix="synthmri-inception-") as tmp:
        empty = Path(tmp) / "empty.pth"
        torch.save({}, empty)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = _Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
            for module in net.modules():
                if isinstance(module, torch.nn.Conv2d):
                    torch.nn.init.kaiming_normal_(module.weight)
    return {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}


def save_random_inception(path: str | os.PathLike, seed: int) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(random_inception_state_dict(seed), tmp)
    return path
