"""The classifier registry's small CNN (the demo's): shapes, size, and no pretrained weights to load."""

from __future__ import annotations

import pytest
import torch

from synthmri.classify.config import ModelParams
from synthmri.classify.models import build_model


def test_small_cnn_maps_images_to_class_logits():
    net = build_model(ModelParams(arch="small_cnn", pretrained=False, trainable="all"), 4, 64)
    assert net(torch.zeros(2, 3, 64, 64)).shape == (2, 4)
    assert net(torch.zeros(1, 3, 96, 96)).shape == (1, 4)  # global pooling: any size the params allow
    assert sum(p.numel() for p in net.parameters()) == 98_196  # 3x3 convs 16-32-64-128, batch norms, one linear layer


def test_small_cnn_refuses_pretrained_weights_with_the_fix():
    with pytest.raises(ValueError, match=r"'small_cnn' has no pretrained weights: set classify.model.pretrained: false"):
        build_model(ModelParams(arch="small_cnn", pretrained=True), 4, 64)
