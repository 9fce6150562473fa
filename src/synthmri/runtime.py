"""The one place for device, precision, seeds and torch.distributed: every stage that runs a network
(train_generator, generate, fidelity, classify, ratio) resolves them here.

Randomness during training comes from generators seeded per (seed, epoch, stream, rank), so a run
resumed at an epoch boundary draws exactly what an uninterrupted run draws; the global torch, numpy
and python states (model init, anything a library draws) are also saved in each checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """"auto" -> the LOCAL_RANK GPU if CUDA is available, else CPU; a named CUDA device must exist."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available (use device: auto or cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} requested but only {torch.cuda.device_count()} GPU(s) are visible")
    return device


def set_threads(n: int) -> None:
    """`threads: 0` keeps torch's default; on a shared CPU, fewer threads avoid oversubscription."""
    if n > 0:
        torch.set_num_threads(n)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """None means plain fp32. bf16 needs no GradScaler (its exponent range is fp32's)."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if precision == "bf16":
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts, stable across processes and Python runs (no hash randomisation)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(device: torch.device, *parts: Any) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(*parts))
    return g


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state() -> dict[str, Any]:
    """Global RNG states as tensors and plain numbers, so `torch.load(weights_only=True)` can read them."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": version, "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun job; a plain run is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_name: str) -> tuple[Dist, torch.device, bool]:
    """Join the torchrun job described by RANK/WORLD_SIZE/LOCAL_RANK, if any.

    Returns (dist info, this process's device, whether this call created the process group and so
    must destroy it). NCCL on CUDA, gloo on CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    info = Dist(rank, world, local)
    device = resolve_device(device_name, local)
    if world == 1:
        return info, device, False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if dist.is_initialized():
        return info, device, False
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    return info, device, True


def all_mean(t: torch.Tensor, info: Dist) -> torch.Tensor:
    """Mean over processes (a collective: every rank must call it)."""
    if info.enabled:
        t = t.clone()
        dist.all_reduce(t)
        t /= info.world_size
    return t


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """A digest of named tensors' exact bytes: equal digests mean bit-identical weights."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous().reshape(-1)
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
