"""DCGAN as in the two DCGAN studies (docs/studies.md): 64x64, Adam 2e-4 (beta1 0.5), batch 128, BCE.

Generator: a linear projection of the latent to a 4x4 map, then four stride-2 transposed
convolutions (batch norm + ReLU, Tanh out). Discriminator: four stride-2 convolutions (LeakyReLU 0.2,
batch norm from the second on, as in Radford et al.) and a sigmoid score. The loss is BCE on the
sigmoid output, computed from the logit (`binary_cross_entropy_with_logits`: the same value,
numerically stable and safe under autocast). Images are scaled to [-1, 1] for the Tanh.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from synthmri.generative.base import GeneratorModel, eval_mode
from synthmri.generative.config import DCGANParams, GeneratorParams


def _init_weights(m: nn.Module) -> None:
    """DCGAN initialisation: N(0, 0.02) convolutions, N(1, 0.02) batch-norm scales."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def _activation(name: str) -> nn.Module:
    return nn.LeakyReLU(0.2, True) if name == "leaky_relu" else nn.ReLU(True)


class Generator(nn.Module):
    """`activation`: relu (Radford et al.; the 64x64 study) or leaky_relu (the tumour-vs-normal study's README).
    The linear projection of the latent to a 4x4 map is the same map as the 64x64 study's first
    ConvTranspose2d(latent, 8f, 4, 1, 0) on a 1x1 input (docs/studies.md)."""

    def __init__(self, latent: int, features: int, image_size: int, *, activation: str = "relu", init: str = "dcgan"):
        super().__init__()
        self.start = image_size // 16  # four stride-2 layers double it to image_size
        c = features * 8
        self.project = nn.Linear(latent, c * self.start * self.start, bias=False)
        self.bn0 = nn.BatchNorm2d(c)
        self.act0 = _activation(activation)
        layers: list[nn.Module] = []
        for cin, cout in ((c, c // 2), (c // 2, c // 4), (c // 4, c // 8)):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), _activation(activation)]
        layers += [nn.ConvTranspose2d(features, 1, 4, 2, 1, bias=False), nn.Tanh()]
        self.body = nn.Sequential(*layers)
        if init == "dcgan":
            self.apply(_init_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(z.shape[0], -1, self.start, self.start)
        return self.body(self.act0(self.bn0(x)))


class Discriminator(nn.Module):
    """`first_batchnorm`: batch norm after the first convolution too (the 64x64 study's code; Radford et
    al. leave it out). `dropout` > 0: a Dropout after each LeakyReLU (the tumour-vs-normal study)."""

    def __init__(self, features: int, image_size: int, *, dropout: float = 0.0, first_batchnorm: bool = False,
                 init: str = "dcgan"):
        super().__init__()
        f = features
        drop = [nn.Dropout(dropout)] if dropout > 0 else []  # none at 0: the default's layers stay as they were
        layers: list[nn.Module] = [nn.Conv2d(1, f, 4, 2, 1, bias=False),
                                   *([nn.BatchNorm2d(f)] if first_batchnorm else []), nn.LeakyReLU(0.2, True), *drop]
        for cin, cout in ((f, 2 * f), (2 * f, 4 * f), (4 * f, 8 * f)):
            layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, True),
                       *[nn.Dropout(dropout) for _ in drop]]
        self.body = nn.Sequential(*layers, nn.Flatten())
        side = image_size // 16
        self.head = nn.Linear(8 * f * side * side, 1)
        if init == "dcgan":
            self.apply(_init_weights)

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Probability that `x` is real (the sigmoid output of the DCGAN studies)."""
        return torch.sigmoid(self.logit(x))


class _Logit(nn.Module):
    """D's logit as a module's forward, so DDP and torch.compile wrap what training calls."""

    def __init__(self, d: Discriminator):
        super().__init__()
        self.d = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.d.logit(x)


class DCGAN(GeneratorModel):
    kind = "dcgan"
    losses = ("loss_d", "loss_g")  # discriminator BCE (real + fake), generator BCE (non-saturating)
    val_loss_name = "loss_d_real"  # D's BCE on held-out real images: rises when D overfits the training set

    def __init__(self, cfg: GeneratorParams, device: torch.device, precision: str = "fp32"):
        super().__init__(cfg, device, precision)
        p: DCGANParams = cfg.dcgan
        self.generator = Generator(p.latent, p.g_features, p.image_size, activation=p.g_activation,
                                   init=p.init).to(device)
        self.discriminator = Discriminator(p.d_features, p.image_size, dropout=p.d_dropout,
                                           first_batchnorm=p.d_first_batchnorm, init=p.init).to(device)
        if self.channels_last:
            self.generator = self.generator.to(memory_format=torch.channels_last)
            self.discriminator = self.discriminator.to(memory_format=torch.channels_last)
        self.d_logit = _Logit(self.discriminator)
        betas = (p.beta1, 0.999)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=p.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=p.lr, betas=betas)

    def nets(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adam_g": self.opt_g, "adam_d": self.opt_d}

    def train_modules(self) -> dict[str, nn.Module]:
        # The discriminator trains through its logit: DDP and compile wrap that, not the sigmoid forward.
        return {"generator": self.generator, "d_logit": self.d_logit}

    def to_input(self, images: torch.Tensor) -> torch.Tensor:
        return self.layout(images.float() / 127.5 - 1.0)  # Tanh range

    def train_step(self, x: torch.Tensor, g: torch.Generator) -> dict[str, torch.Tensor]:
        gen, d = self.train_net("generator"), self.train_net("d_logit")
        b = x.shape[0]
        z = torch.randn((b, self.params.latent), generator=g, device=x.device)
        real = torch.ones(b, device=x.device)
        fake_t = torch.zeros(b, device=x.device)
        # Discriminator: real and fake batches in separate passes (batch-norm statistics per source).
        self.opt_d.zero_grad(set_to_none=True)
        with self.amp():
            out_real = d(x)
        loss_real = F.binary_cross_entropy_with_logits(out_real.float(), real)
        loss_real.backward()
        with self.amp():
            fake = gen(z)
            out_fake = d(fake.detach())
        loss_fake = F.binary_cross_entropy_with_logits(out_fake.float(), fake_t)
        loss_fake.backward()
        self.opt_d.step()
        # Generator: make D call its images real.
        self.opt_g.zero_grad(set_to_none=True)
        with self.amp():
            out = d(fake)
        loss_g = F.binary_cross_entropy_with_logits(out.float(), real)
        loss_g.backward()
        self.opt_g.step()
        return {"loss_d": (loss_real + loss_fake).detach(), "loss_g": loss_g.detach()}

    @torch.no_grad()
    def val_loss(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        with eval_mode([self.discriminator]), self.amp():
            out = self.discriminator.logit(x)
        return F.binary_cross_entropy_with_logits(out.float(), torch.ones(x.shape[0], device=x.device))

    def _sample(self, n: int, sampler: str, steps: int) -> torch.Tensor:
        z = torch.randn((n, self.params.latent), device=self.device)
        with self.amp():
            x = self.sample_net("generator")(z)
        return (x.float() + 1.0) / 2.0  # Tanh range -> [0, 1]
