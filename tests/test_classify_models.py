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


# ---- the GAN study's models: ResNet152V2 (pre-activation) and MobileNetV2 with a Keras head -----------------------

from synthmri.classify import models as M  # noqa: E402
from synthmri.params import ParamsError  # noqa: E402


def _conv_inputs_are_bn_outputs(block: torch.nn.Module, x: torch.Tensor) -> list[str]:
    """Run `block`; return the names of its convolutions whose input is not the output of one of its BatchNorms."""
    bn_out, bad, hooks = [], [], []
    for name, m in block.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            hooks.append(m.register_forward_hook(lambda mod, i, o: bn_out.append(o)))
        elif isinstance(m, torch.nn.Conv2d):
            hooks.append(m.register_forward_hook(
                lambda mod, i, o, name=name: None if any(i[0] is t for t in bn_out) else bad.append(name)))
    block(x)
    for h in hooks:
        h.remove()
    return bad


def test_resnet152v2_blocks_put_batchnorm_and_relu_before_every_convolution():
    net = M._resnet152v2(3, 32, layers=(1, 1, 1, 1)).eval()  # tiny: one block a stage
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
    x = net.stem(torch.zeros(1, 3, 32, 32))
    for stage in net.stages:
        for block in stage.blocks:
            # pre-activation: every convolution, the shortcut's too, reads a BatchNorm -> ReLU output
            assert _conv_inputs_are_bn_outputs(block, x) == []
            norms = [m for _, m in block.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
            assert all(isinstance(m.act, torch.nn.ReLU) for m in norms)
            x = block(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.stem.modules())  # v2: no BN after the stem conv
    assert isinstance(net.norm, torch.nn.BatchNorm2d)  # the final BN -> ReLU before pooling


def test_resnet152v2_has_resnet152s_convolutions_and_a_batchnorm_before_each():
    import torchvision

    net = build_model(ModelParams(arch="resnet152v2", pretrained=False, trainable="all"), 2, 32)
    assert net.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 2)
    v1 = torchvision.models.resnet152(weights=None)
    conv = sum(m.weight.numel() for m in v1.modules() if isinstance(m, torch.nn.Conv2d))  # 57,992,384
    # BatchNorm (weight + bias) on each block's input, twice on its bottleneck width, and once at the end:
    # stages of 3/8/36/3 blocks, widths 64/128/256/512, outputs 4x, 2 x (69,824 + 2,048) = 143,744
    blocks = [(3, 64), (8, 128), (36, 256), (3, 512)]
    bn, cin = 0, 64
    for n, mid in blocks:
        bn += sum((cin if i == 0 else 4 * mid) + 2 * mid for i in range(n))
        cin = 4 * mid
    assert 2 * (bn + 2048) == 143_744
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert trainable == conv + 143_744 + 2048 * 2 + 2 == 58_140_226


def test_resnet152v2_trains_from_scratch_only():
    with pytest.raises(ValueError, match=r"'resnet152v2' has no pretrained weights \(no published ImageNet file .* "
                                         r"from scratch\): set classify.model.pretrained: false"):
        build_model(ModelParams(arch="resnet152v2", pretrained=True), 2, 32)


def test_mobilenet_v2_keras_head_is_pool_then_one_dense_layer():
    keras = build_model(ModelParams(arch="mobilenet_v2", pretrained=False, trainable="all", head="gap_dense"), 1000, 32)
    assert [type(m).__name__ for m in keras.classifier] == ["Linear"] and keras.classifier[0].in_features == 1280
    # Keras' MobileNetV2 (include_top, 1000 classes) lists 3,504,872 trainable parameters; torchvision's has the same
    assert sum(p.numel() for p in keras.parameters() if p.requires_grad) == 3_504_872
    tv = build_model(ModelParams(arch="mobilenet_v2", pretrained=False, trainable="all"), 2, 32)
    assert [type(m).__name__ for m in tv.classifier] == ["Dropout", "Linear"]
    small = build_model(ModelParams(arch="mobilenet_v2", pretrained=False, trainable="all", head="gap_dense"), 2, 32)
    assert small.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 2)
    with pytest.raises(ParamsError, match=r"classify.model.head: gap_dense applies to mobilenet_v2"):
        ModelParams(arch="resnet50", head="gap_dense")
