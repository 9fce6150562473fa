"""Train and evaluate a classifier on an in-memory mixture (paper §5.2.1): Adam, cross-entropy, fixed epochs.

bf16 autocast and channels_last on CUDA; on CPU the same seed gives the same weights bit for bit
(shuffles from an explicit generator, dropout from the seeded global state, deterministic kernels).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from synthmri.classify.config import ClassifyParams
from synthmri.classify.data import DeviceData
from synthmri.classify.models import build_model
from synthmri.runtime import autocast, autocast_dtype, derive_seed, seed_everything


@dataclass
class Fit:
    """What one training phase produced."""

    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch: loss, train accuracy
    images: int = 0  # training images seen
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def label_order(classes: Sequence[str], seed: int, as_coded: bool) -> list[str]:
    """Sorted class names; as coded, `list(set(...))` gave an arbitrary order, drawn here from the seed."""
    classes = sorted(classes)
    if not as_coded:
        return classes
    return [classes[i] for i in np.random.default_rng(derive_seed("label-order", seed) % 2**32).permutation(len(classes))]


def new_model(cfg: ClassifyParams, n_classes: int, device: torch.device, seed: int) -> nn.Module:
    seed_everything(seed)  # the head's initial weights come from this seed
    model = build_model(cfg.model, n_classes, cfg.train.image_size).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def fit(model: nn.Module, data: DeviceData, idx: torch.Tensor, y: torch.Tensor, *, epochs: int, cfg: ClassifyParams,
        seed: int, device: torch.device, live=None, prefix: str = "", eval_fn=None) -> Fit:
    """Train `model` on rows `idx` (labels `y`) of `data` for `epochs`; log each epoch to dvclive `live`."""
    t = cfg.train
    if len(idx) == 0:
        raise ValueError("cannot train on an empty training set")
    torch.use_deterministic_algorithms(device.type == "cpu", warn_only=True)
    seed_everything(derive_seed("fit", seed, prefix) % 2**32)  # dropout draws
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=t.lr)
    loss_fn = nn.CrossEntropyLoss()
    dtype = autocast_dtype(t.precision, device)
    y_dev = y.to(device)
    out = Fit(model)
    start = time.perf_counter()
    for epoch in range(epochs):
        g = torch.Generator().manual_seed(derive_seed("shuffle", seed, prefix, epoch))
        perm = torch.randperm(len(idx), generator=g)
        model.train()
        total, correct, loss_sum = 0, 0, 0.0
        for s in range(0, len(perm), t.batch_size):
            b = perm[s:s + t.batch_size]
            x = data.batch(idx[b], train=True, generator=g)
            target = y_dev[b.to(device)]
            with autocast(device, dtype):
                logits = model(x)
                loss = loss_fn(logits.float(), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(b)
            correct += int((logits.argmax(1) == target).sum())
            total += len(b)
        row = {"epoch": epoch + 1, "loss": loss_sum / total, "train_accuracy": correct / total}
        if t.precise_bn:
            recalibrate_bn(model, data, idx, batch_size=t.batch_size)
        if eval_fn is not None:
            row["test_accuracy"] = eval_fn(model)
        out.history.append(row)
        if live is not None:
            for k, v in row.items():
                if k != "epoch":
                    live.log_metric(f"{prefix}{k}", v)
            live.next_step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    out.seconds = time.perf_counter() - start
    out.images = epochs * len(idx)
    return out


@torch.no_grad()
def recalibrate_bn(model: nn.Module, data: DeviceData, idx: torch.Tensor, *, batch_size: int) -> None:
    """Precise BatchNorm: recompute running statistics as exact averages over the training set.

    After few steps (tiny data, the demo) the momentum averages lag the weights and an eval-mode
    network predicts one class; VGG-19 (the paper's model) has no BatchNorm, so it is unaffected.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    for s in range(0, len(idx), batch_size):
        model(data.batch(idx[s:s + batch_size], train=False))
    for m, mom in zip(bns, saved):
        m.momentum = mom


@torch.no_grad()
def predict(model: nn.Module, data: DeviceData, idx: torch.Tensor, *, cfg: ClassifyParams, device: torch.device) -> np.ndarray:
    """Predicted label indices for rows `idx`."""
    model.eval()
    dtype = autocast_dtype(cfg.train.precision, device)
    preds = []
    for s in range(0, len(idx), cfg.train.eval_batch_size):
        x = data.batch(idx[s:s + cfg.train.eval_batch_size], train=False)
        with autocast(device, dtype):
            preds.append(model(x).float().argmax(1).cpu())
    return torch.cat(preds).numpy() if preds else np.zeros(0, dtype=np.int64)


def open_live(live_dir: str | Path | None, name: str):
    """A dvclive logger writing per-epoch curves under `live_dir/name` (no dvc.yaml, no experiment of its own)."""
    if live_dir is None:
        return None
    from dvclive import Live
    from scmrepo.exceptions import SCMError

    try:
        return Live(dir=str(Path(live_dir) / name), save_dvc_exp=False, dvcyaml=None)
    except SCMError as e:  # dvclive 3.49 fails in a git repo without commits
        raise ValueError(f"dvclive cannot log in this git repository ({e}): make a first commit (git commit)") from None
