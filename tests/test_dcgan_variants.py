"""The DCGAN studies' differences as params: layer structure and output shapes (docs/studies.md)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from synthmri.generative.config import load_generator
from synthmri.generative.dcgan import DCGAN
from synthmri.params import ParamsError


def _model(**dcgan) -> DCGAN:
    base = {"image_size": 32, "batch_size": 4, "latent": 8, "g_features": 8, "d_features": 8}
    return DCGAN(load_generator({"kind": "dcgan", "dcgan": base | dcgan}), torch.device("cpu"))


def _types(net: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in net.modules())


def test_default_is_radford_dcgan():
    m = _model()
    g, d = m.generator, m.discriminator
    assert _types(g, nn.ConvTranspose2d) == 4 and _types(g, nn.ReLU) == 4 and _types(g, nn.LeakyReLU) == 0
    assert isinstance(list(g.body)[-1], nn.Tanh)
    assert _types(d, nn.Conv2d) == 4 and _types(d, nn.LeakyReLU) == 4 and _types(d, nn.Dropout) == 0
    assert _types(d, nn.BatchNorm2d) == 3  # none after the first convolution
    assert m.sample(3, seed=0).shape == (3, 1, 32, 32)
    p = m.discriminator(torch.zeros(2, 1, 32, 32))
    assert p.shape == (2,) and ((p > 0) & (p < 1)).all()  # a sigmoid probability


def test_tumour_vs_normal_study_variant():
    m = _model(g_activation="leaky_relu", d_dropout=0.3)
    g, d = m.generator, m.discriminator
    assert _types(g, nn.LeakyReLU) == 4 and _types(g, nn.ReLU) == 0
    drops = [x for x in d.modules() if isinstance(x, nn.Dropout)]
    assert len(drops) == 4 and all(x.p == 0.3 for x in drops)
    body = list(d.body)
    assert all(isinstance(body[i + 1], nn.Dropout) for i, x in enumerate(body) if isinstance(x, nn.LeakyReLU))
    assert m.sample(2, seed=0).shape == (2, 1, 32, 32)


def test_64px_study_as_coded():
    m = _model(image_size=64, d_first_batchnorm=True, init="torch")
    d = m.discriminator
    assert isinstance(list(d.body)[1], nn.BatchNorm2d) and _types(d, nn.BatchNorm2d) == 4
    assert m.sample(2, seed=0).shape == (2, 1, 64, 64)
    # torch's default init: batch-norm scales start at exactly 1 (the DCGAN init draws N(1, 0.02))
    assert all(torch.equal(b.weight, torch.ones_like(b.weight)) for b in d.modules() if isinstance(b, nn.BatchNorm2d))
    x = torch.rand(4, 1, 64, 64) * 2 - 1
    losses = m.train_step(x, torch.Generator().manual_seed(0))
    assert set(losses) == {"loss_d", "loss_g"} and all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("dcgan, match", [({"d_dropout": 1.0}, "generator.dcgan.d_dropout"),
                                          ({"g_activation": "gelu"}, "generator.dcgan.g_activation"),
                                          ({"init": "xavier"}, "generator.dcgan.init")])
def test_bad_variants_name_the_key(dcgan, match):
    with pytest.raises(ParamsError, match=match):
        load_generator({"dcgan": dcgan})
