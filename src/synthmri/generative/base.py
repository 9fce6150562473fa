"""What every generator kind offers the training and sampling loops.

A kind owns its networks and optimizers; the loops own data order, epochs, logging, checkpoints
and files. Training randomness comes in through an explicit `torch.Generator`; sampling is seeded
inside `torch.random.fork_rng`, so neither touches the global RNG the rest of a run sees.
"""

from __future__ import annotations

import contextlib
from typing import ClassVar

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from synthmri.generative.config import GeneratorParams
from synthmri.runtime import Dist, autocast, autocast_dtype


class GeneratorModel:
    kind: ClassVar[str]
    losses: ClassVar[tuple[str, ...]]  # names of what `train_step` returns, logged as train/<name>
    val_loss_name: ClassVar[str]  # logged as val/<name>
    conditional: ClassVar[bool] = False  # one model for all classes (registry.CONDITIONAL)

    def __init__(self, cfg: GeneratorParams, device: torch.device, precision: str = "fp32"):
        self.cfg = cfg
        self.params = cfg.model
        self.device = device
        self.amp_dtype = autocast_dtype(precision, device)
        self.channels_last = device.type == "cuda"  # cuDNN's fast convolution layout
        self.size = self.params.image_size
        self._train_nets: dict[str, nn.Module] = {}
        self._sample_nets: dict[str, nn.Module] = {}

    # ---- to implement -------------------------------------------------------------------------
    def nets(self) -> dict[str, nn.Module]:
        """The networks whose weights are saved, by name."""
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def to_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 1, H, W) -> the float range the network trains on."""
        raise NotImplementedError

    def train_step(self, x: torch.Tensor, g: torch.Generator) -> dict[str, torch.Tensor]:
        """One optimisation step; returns detached losses (no host sync)."""
        raise NotImplementedError

    def val_loss(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def _sample(self, n: int, sampler: str, steps: int) -> torch.Tensor:
        raise NotImplementedError

    # ---- shared -------------------------------------------------------------------------------
    def prepare_training(self, info: Dist, compile: bool) -> None:
        """Wrap the networks for training: DDP across processes, then optionally torch.compile."""
        for name, net in self.train_modules().items():
            wrapped: nn.Module = net
            if info.enabled:
                ids = [self.device.index] if self.device.type == "cuda" else None
                wrapped = DistributedDataParallel(net, device_ids=ids)
            if compile:
                wrapped = torch.compile(wrapped)
            self._train_nets[name] = wrapped

    def train_modules(self) -> dict[str, nn.Module]:
        """The modules a training step calls, by name (DDP and compile wrap these)."""
        return self.nets()

    def train_net(self, name: str) -> nn.Module:
        return self._train_nets[name] if name in self._train_nets else self.train_modules()[name]

    def compile_for_sampling(self) -> None:
        self._sample_nets = {name: torch.compile(net) for name, net in self.nets().items()}

    def sample_net(self, name: str) -> nn.Module:
        return self._sample_nets[name] if name in self._sample_nets else self.nets()[name]

    def amp(self):
        return autocast(self.device, self.amp_dtype)

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """All weights and buffers as `<net>.<key>` -> tensor (what model.safetensors holds)."""
        return {f"{name}.{k}": v for name, net in self.nets().items() for k, v in net.state_dict().items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, net in self.nets().items():
            prefix = f"{name}."
            part = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            net.load_state_dict(part, strict=True)
        known = {f"{name}." for name in self.nets()}
        extra = [k for k in tensors if not any(k.startswith(p) for p in known)]
        if extra:
            raise ValueError(f"weights for unknown networks: {extra[:5]}")

    @torch.no_grad()
    def sample(self, n: int, seed: int, *, sampler: str = "ddpm", steps: int = 50) -> torch.Tensor:
        """`n` images as float (n, 1, S, S) in [0, 1], seeded; the global RNG is left as it was."""
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with eval_mode(self.nets().values()), torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            x = self._sample(n, sampler, steps)
        return x.float().clamp(0, 1)


@contextlib.contextmanager
def eval_mode(nets):
    nets = list(nets)
    modes = [n.training for n in nets]
    for n in nets:
        n.eval()
    try:
        yield
    finally:
        for n, m in zip(nets, modes):
            n.train(m)
