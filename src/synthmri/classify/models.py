"""Classifier registry: VGG-19 as the paper's code built it, the related studies' ResNet50, ResNet152,
ResNet152V2 and MobileNetV2 (docs/studies.md), and a small CNN that learns the demo data in seconds on a CPU.
ImageNet weights are registry files under models/pretrained/, read through `synthmri.pretrained` (full sha256
checked, tensors only), never downloaded here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import nn

from synthmri import pretrained
from synthmri.classify.config import ModelParams


# VGG-19 features indices of block5_conv2, block5_conv3, block5_conv4 (Keras names)
_VGG_TRAINABLE = (30, 32, 34)


class VGG19Classifier(nn.Module):
    """Keras VGG19(include_top=False) + Flatten, Dropout 0.3, Dense 256 ReLU, Dropout 0.2, Dense k (paper's code)."""

    def __init__(self, n_classes: int, image_size: int):
        super().__init__()
        self.features = torchvision.models.vgg19(weights=None).features
        side = image_size // 32
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(512 * side * side, 256), nn.ReLU(inplace=True),
            nn.Dropout(0.2), nn.Linear(256, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def load_backbone(self, state: dict) -> None:
        feats = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        self.features.load_state_dict(feats)

    def freeze_as_paper(self) -> None:
        """Everything frozen except block5_conv2-4 and the head (paper's code)."""
        for i, layer in enumerate(self.features):
            for p in layer.parameters():
                p.requires_grad = i in _VGG_TRAINABLE


def _vgg19(n_classes: int, image_size: int) -> nn.Module:
    return VGG19Classifier(n_classes, image_size)


def _resnet(builder: Callable[..., nn.Module]) -> Callable[[int, int], nn.Module]:
    def make(n_classes: int, image_size: int) -> nn.Module:
        net = builder(weights=None)
        net.load_backbone = _loader(net, drop=("fc.",))  # type: ignore[attr-defined]
        net.fc = nn.Linear(net.fc.in_features, n_classes)
        return net

    return make


def _mobilenet_v2(n_classes: int, image_size: int, head: str = "default") -> nn.Module:
    net = torchvision.models.mobilenet_v2(weights=None)
    net.load_backbone = _loader(net, drop=("classifier.",))  # type: ignore[attr-defined]
    if head == "gap_dense":  # Keras MobileNetV2's include_top head: global average pool -> Dense(k), no dropout
        net.classifier = nn.Sequential(nn.Linear(net.last_channel, n_classes))  # torchvision pools in forward()
    else:
        net.classifier[1] = nn.Linear(net.classifier[1].in_features, n_classes)
    return net


def _resnet152v2(n_classes: int, image_size: int, layers: tuple[int, ...] = (3, 8, 36, 3)) -> nn.Module:
    """Keras' ResNet152V2: a pre-activation ResNet (He et al. 2016, "Identity Mappings"): BatchNorm -> ReLU before
    every convolution, a final BatchNorm -> ReLU, global average pooling, one dense layer; timm's ResNetV2, built
    from its classes (no weights). One difference from Keras: a stage downsamples in its first block, as He et
    al.'s code did, where Keras downsamples in its last. No published ImageNet file is pinned: from scratch only."""
    from functools import partial

    from timm.layers import BatchNormAct2d, create_conv2d
    from timm.models.resnetv2 import ResNetV2

    return ResNetV2(layers=list(layers), num_classes=n_classes, conv_layer=create_conv2d,
                    norm_layer=partial(BatchNormAct2d), preact=True)


def _small_cnn(n_classes: int, image_size: int, width: int = 16) -> nn.Module:
    """The demo's classifier, trained from scratch: a stride-2 stem, three conv-BN-ReLU-maxpool blocks,
    global average pooling. About 0.1 M weights, ~2 ms of one CPU core per 64-px training image
    (MobileNetV2: ~11 ms), so every demo scenario trains in seconds. No ImageNet weights exist for it."""
    layers: list[nn.Module] = [nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
    for cin, cout in ((width, 2 * width), (2 * width, 4 * width), (4 * width, 8 * width)):
        layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                   nn.MaxPool2d(2)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(8 * width, n_classes))


def _loader(net: nn.Module, drop: tuple[str, ...]):
    def load(state: dict) -> None:
        kept = {k: v for k, v in state.items() if not k.startswith(drop)}
        missing, unexpected = net.load_state_dict(kept, strict=False)
        bad = [k for k in missing if not k.startswith(drop)]
        if bad or unexpected:
            raise ValueError(f"pretrained weights do not fit: missing {bad[:3]}, unexpected {list(unexpected)[:3]}")

    return load


ARCHITECTURES: dict[str, Callable[[int, int], nn.Module]] = {
    "vgg19": _vgg19,
    "resnet50": _resnet(torchvision.models.resnet50),
    "resnet152": _resnet(torchvision.models.resnet152),  # the tumour-vs-normal study used Keras ResNet152V2; torchvision has v1
    "resnet152v2": _resnet152v2,  # the GAN study's (Keras ResNet152V2); pretrained: false only
    "mobilenet_v2": _mobilenet_v2,
    "small_cnn": _small_cnn,  # the demo's; pretrained: false only
}


# why an arch has no registry file
NO_WEIGHTS = {"resnet152v2": "no published ImageNet file of this pre-activation ResNet-152 is pinned; it trains from scratch"}


def weights_path(cfg: ModelParams) -> Path:
    """The arch's ImageNet file under `cfg.weights_dir`: the name `synthmri weights fetch` writes (one registry)."""
    return Path(cfg.weights_dir) / pretrained.get(cfg.arch).file


def build_model(cfg: ModelParams, n_classes: int, image_size: int) -> nn.Module:
    """A fresh classifier; ImageNet backbone weights from `weights_path(cfg)` when `cfg.pretrained`."""
    if cfg.arch not in ARCHITECTURES:
        raise ValueError(f"unknown classifier {cfg.arch!r}; known: {', '.join(ARCHITECTURES)}")
    extra = {"head": cfg.head} if cfg.head != "default" else {}
    net = ARCHITECTURES[cfg.arch](n_classes, image_size, **extra)
    if cfg.pretrained:
        if cfg.arch not in pretrained.REGISTRY:
            why = f" ({NO_WEIGHTS[cfg.arch]})" if cfg.arch in NO_WEIGHTS else ""
            raise ValueError(f"classify.model.arch {cfg.arch!r} has no pretrained weights{why}: "
                             "set classify.model.pretrained: false")
        try:  # the published bytes (full sha256), read as tensors only
            state, _ = pretrained.load_registered(cfg.arch, cfg.weights_dir)
        except pretrained.MissingWeightsError as e:
            raise pretrained.MissingWeightsError(
                f"{e} Or set classify.model.pretrained: false to train from random weights.") from None
        net.load_backbone(state)
    if cfg.trainable == "paper" and isinstance(net, VGG19Classifier):
        net.freeze_as_paper()
    return net
