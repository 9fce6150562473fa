"""Per-class DDPM from MONAI's own parts (paper §5.1): DiffusionModelUNet, DDPMScheduler, DiffusionInferer.

Images are scaled to [0, 1] as in the paper's code (uint8 / 255); the scheduler is MONAI's default
linear-beta, epsilon-prediction schedule. Sampling runs the full DDPM chain or MONAI's DDIMScheduler
(eta 0) with fewer steps over the same training schedule.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.inferers import DiffusionInferer
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
from torch import nn

from synthmri.generative.base import GeneratorModel, eval_mode
from synthmri.generative.config import DDPMParams, GeneratorParams


def build_unet(p: DDPMParams) -> DiffusionModelUNet:
    """The paper's UNet (docs/paper_as_coded.md, "DDPM"), every width a param."""
    return DiffusionModelUNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=p.channels,
        attention_levels=p.attention_levels,
        num_res_blocks=p.num_res_blocks,
        num_head_channels=p.num_head_channels,
        norm_num_groups=p.norm_num_groups,
    )


def build_scheduler(p: DDPMParams, sampler: str = "ddpm", steps: int | None = None):
    """A fresh scheduler (its timestep table is per-sampler state)."""
    if sampler == "ddim":
        sched = DDIMScheduler(num_train_timesteps=p.timesteps)
        sched.set_timesteps(steps or p.timesteps)
        return sched
    if sampler == "ddpm":
        return DDPMScheduler(num_train_timesteps=p.timesteps)  # paper §5.1.2: 1,000 timesteps
    raise ValueError(f"unknown sampler {sampler!r}; known: ddpm, ddim")


class DDPM(GeneratorModel):
    kind = "ddpm"
    losses = ("loss",)  # MSE between the true and the predicted noise
    val_loss_name = "loss"

    def __init__(self, cfg: GeneratorParams, device: torch.device, precision: str = "fp32"):
        super().__init__(cfg, device, precision)
        p: DDPMParams = cfg.ddpm
        self.unet = build_unet(p).to(device)
        if self.channels_last:
            self.unet = self.unet.to(memory_format=torch.channels_last)
        self.inferer = DiffusionInferer(build_scheduler(p))
        self.opt = torch.optim.Adam(self.unet.parameters(), lr=p.lr)  # paper §5.1.2: Adam 2.5e-5

    def nets(self) -> dict[str, nn.Module]:
        return {"unet": self.unet}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adam": self.opt}

    def to_input(self, images: torch.Tensor) -> torch.Tensor:
        return self.layout(images.float() / 255.0)  # paper's code: scaled 0-255 -> 0-1

    def _loss(self, net: nn.Module, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
        t = torch.randint(0, self.params.timesteps, (x.shape[0],), generator=g, device=x.device)
        with self.amp():
            pred = self.inferer(inputs=x, diffusion_model=net, noise=noise, timesteps=t)
        return F.mse_loss(pred.float(), noise.float())

    def train_step(self, x: torch.Tensor, g: torch.Generator) -> dict[str, torch.Tensor]:
        loss = self._loss(self.train_net("unet"), x, g)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach()}

    @torch.no_grad()
    def val_loss(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        with eval_mode([self.unet]):
            return self._loss(self.unet, x, g)

    def _sample(self, n: int, sampler: str, steps: int) -> torch.Tensor:
        sched = build_scheduler(self.params, sampler, steps)
        noise = self.layout(torch.randn((n, 1, self.size, self.size), device=self.device))
        with self.amp():
            return self.inferer.sample(input_noise=noise, diffusion_model=self.sample_net("unet"), scheduler=sched, verbose=False)
