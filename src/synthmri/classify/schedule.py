"""Early stopping and the plateau learning-rate cut, both on the validation loss, as Keras' callbacks do it.

The SD-Turbo study trained Keras' ResNet50 with EarlyStopping(patience 5, restore_best_weights) and
ReduceLROnPlateau(factor 0.5, patience 3, min_lr 1e-7) on val_loss. Their rules, kept here:
an improvement is a loss below best - min_delta; the wait counts epochs without one; early
stopping stops when the wait reaches its patience; the plateau rule cuts the rate when the wait
reaches its patience and starts the wait again (Keras' cooldown 0). torch's ReduceLROnPlateau
differs: it cuts only after patience + 1 bad epochs, with a relative threshold.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from synthmri.classify.config import EarlyStoppingParams, PlateauParams


class EarlyStopping:
    """Watches one loss per epoch; keeps a copy of the best epoch's weights when asked to restore them."""

    def __init__(self, p: EarlyStoppingParams):
        self.p = p
        self.best = math.inf
        self.best_epoch: int | None = None  # 1-based
        self.stopped_epoch: int | None = None
        self.wait = 0
        self._state: dict[str, torch.Tensor] | None = None

    def step(self, loss: float, epoch: int, model: nn.Module) -> bool:
        """Record epoch `epoch`'s (1-based) loss; True when training should stop now."""
        if loss < self.best - self.p.min_delta:  # NaN is never an improvement
            self.best, self.best_epoch, self.wait = loss, epoch, 0
            if self.p.restore_best:
                self._state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.wait += 1
        if self.wait >= self.p.patience:
            self.stopped_epoch = epoch
            return True
        return False

    def restore(self, model: nn.Module) -> bool:
        """Load the best epoch's weights (and BatchNorm statistics) into `model`; False if nothing to restore."""
        if not self.p.restore_best or self._state is None:
            return False
        model.load_state_dict(self._state)
        return True


class Plateau:
    """The learning rate after each epoch's loss: `factor` times lower after `patience` epochs without improvement."""

    def __init__(self, p: PlateauParams, lr: float):
        self.p = p
        self.lr = lr
        self.best = math.inf
        self.wait = 0

    def step(self, loss: float) -> float:
        if loss < self.best - self.p.min_delta:
            self.best, self.wait = loss, 0
        else:
            self.wait += 1
            if self.wait >= self.p.patience and self.lr > self.p.min_lr:
                self.lr = max(self.lr * self.p.factor, self.p.min_lr)
                self.wait = 0
        return self.lr

    def apply(self, opt: torch.optim.Optimizer) -> None:
        for group in opt.param_groups:
            group["lr"] = self.lr
