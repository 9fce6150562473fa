"""Typed params of the `fidelity` stage (params.yaml section `fidelity`).

Defaults follow the paper where it says something (KID subset size 92 as its code; paper §5.1.3,
docs/paper_as_coded.md, "Fidelity") and torch-fidelity's defaults elsewhere. Built with
`synthmri.params.build`, which refuses unknown keys and wrong types; the range checks name the key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from synthmri.params import ParamsError, build

INCEPTION_FILE = "models/pretrained/weights-inception-2015-12-05-6726825d.pth"


def _check(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ParamsError(f"{key}: {msg}")


@dataclass(frozen=True)
class MemorisationParams:
    """Nearest real Training image of every synthetic image, in pixels and in feature space."""

    px_size: int = 50  # thumbnail side, made exactly as the dedup stage (difPy) makes them
    pixel_mse: float = 100.0  # near-copy: thumbnail MSE (0-255 scale, dedup's unit) <= this; RMSE 10 grey levels
    mirror: bool = True  # also compare each synthetic image's left-right mirror (the paper's code saved mirrored samples)
    feature_k: int = 10  # feature near-copy: distance to the nearest over the mean distance to the k nearest ...
    feature_ratio: float = 0.33  # ... is <= this (Carlini et al. 2023's relative criterion: 1/3)
    pairs_shown: int = 8  # closest pairs drawn per class in the PNG

    def __post_init__(self):
        _check(8 <= self.px_size <= 256, "fidelity.memorisation.px_size", "must be in [8, 256]")
        _check(self.pixel_mse >= 0, "fidelity.memorisation.pixel_mse", "must be >= 0")
        _check(self.feature_k >= 2, "fidelity.memorisation.feature_k", "must be >= 2")
        _check(0 <= self.feature_ratio < 1, "fidelity.memorisation.feature_ratio", "must be in [0, 1)")
        _check(0 <= self.pairs_shown <= 64, "fidelity.memorisation.pairs_shown", "must be in [0, 64]")


@dataclass(frozen=True)
class FidelityParams:
    weights: str = INCEPTION_FILE  # torch-fidelity's FID Inception; `synthmri weights fetch inception` gets it
    random_weights: bool = False  # demo only: a seeded Kaiming-normal Inception, no file; numbers compare with nothing
    weights_seed: int = 0  # seed of the random weights
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    batch_size: int = 32  # images per forward pass (metrics do not depend on it)
    threads: int = 0  # CPU threads of torch; 0 = torch's default
    workers: int = 0  # decoding processes; 0 = all cores
    isc_splits: int = 10  # Inception Score splits (torch-fidelity default; the paper's code: 1)
    kid_subsets: int = 100  # KID: random subsets averaged (torch-fidelity default)
    kid_subset_size: int = 92  # KID: images per subset (paper's code); lowered to the smaller set when needed
    prc_neighborhood: int = 3  # precision/recall: k of the k-NN radius (Kynkaanniemi et al. 2019)
    seed: int = 2020  # torch-fidelity's rng_seed: IS shuffling and KID subsets
    cache_dir: str = "~/.cache/synthmri/fidelity"  # real-set features by content; "" = no cache
    memorisation: MemorisationParams = field(default_factory=MemorisationParams)

    def __post_init__(self):
        _check(bool(self.weights) or self.random_weights, "fidelity.weights", "must name a file")
        ok = self.device in ("auto", "cpu", "cuda") or (self.device.startswith("cuda:") and self.device[5:].isdigit())
        _check(ok, "fidelity.device", f"expected auto, cpu, cuda or cuda:N, got {self.device!r}")
        _check(1 <= self.batch_size <= 4096, "fidelity.batch_size", "must be in [1, 4096]")
        _check(self.threads >= 0, "fidelity.threads", "must be >= 0")
        _check(self.workers >= 0, "fidelity.workers", "must be >= 0")
        _check(self.isc_splits >= 1, "fidelity.isc_splits", "must be >= 1")
        _check(self.kid_subsets >= 1, "fidelity.kid_subsets", "must be >= 1")
        _check(self.kid_subset_size >= 2, "fidelity.kid_subset_size", "must be >= 2")
        _check(self.prc_neighborhood >= 1, "fidelity.prc_neighborhood", "must be >= 1")
        _check(self.seed >= 0, "fidelity.seed", "must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_fidelity(raw: dict[str, Any] | None) -> FidelityParams:
    """The `fidelity` section of params.yaml (missing -> defaults)."""
    return build(FidelityParams, raw or {}, "fidelity")
