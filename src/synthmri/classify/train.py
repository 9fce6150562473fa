"""Train and evaluate a classifier on an in-memory mixture (paper §5.2.1): Adam, cross-entropy, fixed epochs;
optionally (the SD-Turbo study's recipe) early stopping and a plateau LR cut on the validation loss.

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
from synthmri.classify.schedule import EarlyStopping, Plateau
from synthmri.runtime import autocast, autocast_dtype, derive_seed, seed_everything


@dataclass
class Fit:
    """What one training phase produced."""

    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch: loss, train accuracy, lr, val_*
    images: int = 0  # training images seen
    seconds: float = 0.0
    best_epoch: int | None = None  # early stopping: the epoch whose weights the model ends with (restore_best)
    stopped_epoch: int | None = None  # early stopping: the epoch it stopped after; None: ran every epoch

    @property
    def epochs(self) -> int:
        return len(self.history)

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
        seed: int, device: torch.device, live=None, prefix: str = "", eval_fn=None,
        val: tuple[torch.Tensor, torch.Tensor] | None = None) -> Fit:
    """Train `model` on rows `idx` (labels `y`) of `data` for up to `epochs`; log each epoch to dvclive `live`.

    With `val` (rows, labels) each epoch also measures the validation loss, which drives
    classify.train.early_stopping and classify.train.plateau when they are set (both need it).
    """
    t = cfg.train
    if len(idx) == 0:
        raise ValueError("cannot train on an empty training set")
    if t.needs_val and (val is None or len(val[0]) == 0):
        raise ValueError(f"{' and '.join(t.needs_val)} need validation images and there are none")
    if val is not None and set(idx.tolist()) & set(val[0].tolist()):
        raise ValueError("validation rows in the training set")  # run.py's leakage check catches this first
    torch.use_deterministic_algorithms(device.type == "cpu", warn_only=True)
    seed_everything(derive_seed("fit", seed, prefix) % 2**32)  # dropout draws
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=t.lr)
    loss_fn = nn.CrossEntropyLoss()
    dtype = autocast_dtype(t.precision, device)
    y_dev = y.to(device)
    out = Fit(model)
    stopper = EarlyStopping(t.early_stopping) if t.early_stopping else None
    plateau = Plateau(t.plateau, t.lr) if t.plateau else None
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
        row = {"epoch": epoch + 1, "loss": loss_sum / total, "train_accuracy": correct / total,
               "lr": opt.param_groups[0]["lr"]}
        if t.precise_bn:
            recalibrate_bn(model, data, idx, batch_size=t.batch_size)
        stop = False
        if val is not None:
            row["val_loss"], row["val_accuracy"] = val_loss(model, data, val[0], val[1], cfg=cfg, device=device)
            if stopper is not None:
                stop = stopper.step(row["val_loss"], epoch + 1, model)
            if plateau is not None:  # the rate the next epoch trains at
                plateau.step(row["val_loss"])
                plateau.apply(opt)
        if eval_fn is not None:  # logged only; no decision reads it
            row["test_accuracy"] = eval_fn(model)
        out.history.append(row)
        if live is not None:
            for k, v in row.items():
                if k != "epoch":
                    live.log_metric(f"{prefix}{k}", v)
            live.next_step()
        if stop:
            break
    if stopper is not None:
        out.stopped_epoch = stopper.stopped_epoch
        if stopper.restore(model):  # Keras restore_best_weights
            out.best_epoch = stopper.best_epoch
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    out.seconds = time.perf_counter() - start
    out.images = out.epochs * len(idx)
    return out


@torch.no_grad()
def val_loss(model: nn.Module, data: DeviceData, idx: torch.Tensor, y: torch.Tensor, *, cfg: ClassifyParams,
             device: torch.device) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on rows `idx` in eval mode (Keras' val_loss, val_accuracy)."""
    logits = _logits(model, data, idx, cfg=cfg, device=device)
    target = y.to(logits.device)
    loss = nn.functional.cross_entropy(logits, target, reduction="sum").item() / len(idx)
    return loss, (logits.argmax(1) == target).double().mean().item()


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
def _logits(model: nn.Module, data: DeviceData, idx: torch.Tensor, *, cfg: ClassifyParams, device: torch.device) -> torch.Tensor:
    """fp32 logits (N, k) for rows `idx`, in eval mode, on the CPU."""
    model.eval()
    dtype = autocast_dtype(cfg.train.precision, device)
    out = []
    for s in range(0, len(idx), cfg.train.eval_batch_size):
        x = data.batch(idx[s:s + cfg.train.eval_batch_size], train=False)
        with autocast(device, dtype):
            out.append(model(x).float().cpu())
    return torch.cat(out)


def predict(model: nn.Module, data: DeviceData, idx: torch.Tensor, *, cfg: ClassifyParams, device: torch.device) -> np.ndarray:
    """Predicted label indices for rows `idx`."""
    if len(idx) == 0:
        return np.zeros(0, dtype=np.int64)
    return _logits(model, data, idx, cfg=cfg, device=device).argmax(1).numpy()


def predict_proba(model: nn.Module, data: DeviceData, idx: torch.Tensor, *, cfg: ClassifyParams,
                  device: torch.device) -> np.ndarray:
    """Softmax probabilities (N, k), float64, columns in the model's label order."""
    return torch.softmax(_logits(model, data, idx, cfg=cfg, device=device).double(), 1).numpy()


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
