"""Typed params of the generator stages: sections `generator` (training) and `generate` (sampling).

Defaults are the paper's settings (paper §5.1; docs/paper_as_coded.md, "DDPM") and, for DCGAN, the
DCGAN 64x64 study's (docs/studies.md). Built with `synthmri.params.build`, which refuses unknown keys and wrong types;
the range checks here name the key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from synthmri.params import ParamsError, build


def _check(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ParamsError(f"{key}: {msg}")


@dataclass(frozen=True)
class LoopParams:
    """How a training run is driven; none of these change the trained weights on CPU."""

    checkpoint_every: int = 10  # epochs between resumable checkpoints (the last epoch always checkpoints)
    log_every: int = 10  # epochs between dvclive logs of losses, validation loss and a sample grid (paper's code: 10)
    sample_grid: int = 16  # images in the logged sample grid; 0 = no grid
    grid_steps: int = 50  # DDIM steps for the DDPM grid (a cheap preview, not the final sampler)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    compile: bool = False  # torch.compile the networks (CUDA)
    device: str = "auto"  # auto | cpu | cuda | cuda:N; under torchrun each process takes its LOCAL_RANK GPU
    threads: int = 0  # CPU threads of torch (intra-op); 0 = torch's default (all cores)
    # dvc.yaml puts this before `synthmri train-generator`: "" = one process; several GPUs:
    # "torchrun --standalone --nproc_per_node 4 --no-python" (DDP). Part of the cmd, so a change reruns training.
    launch: str = ""

    def __post_init__(self):
        _check(self.launch == "" or (self.launch.split()[0] == "torchrun" and "--no-python" in self.launch.split()
                                     and not set(self.launch) & set(";|&`$<>\\\n")),
               "generator.train.launch", f"must be empty or a torchrun prefix with --no-python, e.g. "
               f"'torchrun --standalone --nproc_per_node 4 --no-python'; got {self.launch!r}")
        _check(self.checkpoint_every >= 1, "generator.train.checkpoint_every", "must be >= 1")
        _check(self.log_every >= 1, "generator.train.log_every", "must be >= 1")
        _check(0 <= self.sample_grid <= 256, "generator.train.sample_grid", "must be in [0, 256]")
        _check(1 <= self.grid_steps <= 1000, "generator.train.grid_steps", "must be in [1, 1000]")
        _check_device(self.device, "generator.train.device")
        _check(self.threads >= 0, "generator.train.threads", "must be >= 0")


@dataclass(frozen=True)
class DDPMParams:
    """MONAI DiffusionModelUNet + DDPMScheduler, as the paper's code built them (paper §5.1.2)."""

    image_size: int = 128  # training side in pixels: the 256-px preprocessed images are resized (paper §5.1.1)
    epochs: int = 750
    batch_size: int = 16  # global batch, split over DDP processes
    lr: float = 2.5e-5  # Adam
    channels: tuple[int, ...] = (128, 256, 256)
    attention_levels: tuple[bool, ...] = (False, True, True)
    num_res_blocks: int = 1
    num_head_channels: int = 128
    norm_num_groups: int = 32  # GroupNorm groups (MONAI default); every width must be a multiple
    timesteps: int = 1000  # DDPMScheduler num_train_timesteps, linear betas

    def check(self, key: str) -> None:
        _check(len(self.channels) >= 1, f"{key}.channels", "must list at least one width")
        _check(all(c >= 1 for c in self.channels), f"{key}.channels", "widths must be >= 1")
        _check(
            len(self.attention_levels) == len(self.channels),
            f"{key}.attention_levels",
            f"needs one entry per width ({len(self.channels)}), got {len(self.attention_levels)}",
        )
        _check(self.norm_num_groups >= 1, f"{key}.norm_num_groups", "must be >= 1")
        _check(
            all(c % self.norm_num_groups == 0 for c in self.channels),
            f"{key}.channels",
            f"every width must be a multiple of norm_num_groups={self.norm_num_groups}, got {list(self.channels)}",
        )
        _check(self.num_head_channels >= 1, f"{key}.num_head_channels", "must be >= 1")
        for c, att in zip(self.channels, self.attention_levels):
            _check(
                not att or c % self.num_head_channels == 0,
                f"{key}.num_head_channels",
                f"width {c} with attention must be a multiple of num_head_channels={self.num_head_channels}",
            )
        _check(self.num_res_blocks >= 1, f"{key}.num_res_blocks", "must be >= 1")
        _check(2 <= self.timesteps <= 10_000, f"{key}.timesteps", "must be in [2, 10000]")
        down = 2 ** (len(self.channels) - 1)
        _check(
            8 <= self.image_size <= 1024 and self.image_size % down == 0,
            f"{key}.image_size",
            f"must be in [8, 1024] and a multiple of {down} ({len(self.channels)} levels halve it)",
        )
        _check_schedule(self, key)


@dataclass(frozen=True)
class DCGANParams:
    """DCGAN of the DCGAN 64x64 study: 4 transposed convs (BN, ReLU, Tanh) vs 4 convs (LeakyReLU, sigmoid)."""

    image_size: int = 64  # a multiple of 16: four stride-2 layers
    epochs: int = 25
    batch_size: int = 128  # global batch, split over DDP processes
    lr: float = 2e-4  # Adam, both networks
    beta1: float = 0.5  # Adam beta1 (beta2 0.999)
    latent: int = 128  # noise vector length (the DCGAN 64x64 study's code)
    g_features: int = 64  # generator width at the last layer before the image
    d_features: int = 64  # discriminator width at its first layer
    # the DCGAN studies' differences (docs/studies.md), each a param; the defaults are Radford et al.'s DCGAN
    g_activation: Literal["relu", "leaky_relu"] = "relu"  # hidden generator layers; tumour-vs-normal study: leaky_relu (0.2)
    d_dropout: float = 0.0  # dropout after each discriminator LeakyReLU (tumour-vs-normal study: dropout in D)
    d_first_batchnorm: bool = False  # batch norm after D's first convolution too (the 64x64 study's code)
    init: Literal["dcgan", "torch"] = "dcgan"  # dcgan: N(0, 0.02) weights; torch: PyTorch's defaults (the 64x64 study's code)

    def check(self, key: str) -> None:
        _check(
            16 <= self.image_size <= 1024 and self.image_size % 16 == 0,
            f"{key}.image_size",
            "must be in [16, 1024] and a multiple of 16",
        )
        _check(0 <= self.beta1 < 1, f"{key}.beta1", "must be in [0, 1)")
        for name in ("latent", "g_features", "d_features"):
            _check(getattr(self, name) >= 1, f"{key}.{name}", "must be >= 1")
        _check(0 <= self.d_dropout < 1, f"{key}.d_dropout", "must be in [0, 1)")
        _check_schedule(self, key)


# The SD-Turbo study's class prompts (its code); a class without one cannot be trained or sampled.
SD_TURBO_PROMPTS = {"glioma": "Glioma tumor MRI", "meningioma": "Meningioma tumor MRI",
                    "notumor": "No tumor MRI", "pituitary": "Pituitary tumor MRI"}


@dataclass(frozen=True)
class SDTurboParams:
    """SD-Turbo fine-tuned as the SD-Turbo study's code did (docs/studies.md): one class-conditional model."""

    weights: str = "models/pretrained/sd-turbo"  # diffusers folders, `synthmri weights fetch sd-turbo`
    tiny: bool = False  # demo/tests: tiny random-initialised components instead of the weights; numbers compare with nothing
    mode: Literal["full", "lora"] = "full"  # full: the whole UNet (study's code); lora: low-rank adapters on its attention
    lora_rank: int = 16
    lora_alpha: int = 16  # LoRA scale alpha / rank
    image_size: int = 256  # study's code: 256 px RGB in [-1, 1]
    epochs: int = 10  # the study's code left this a placeholder
    batch_size: int = 8  # global batch over all classes
    lr: float = 1e-5  # AdamW (study's code); LoRA usually wants ~1e-4
    gradient_checkpointing: bool = True  # study's code: on (memory for compute)
    prompts: dict[str, str] = field(default_factory=lambda: dict(SD_TURBO_PROMPTS))  # class -> prompt

    def check(self, key: str) -> None:
        _check(self.lora_rank >= 1, f"{key}.lora_rank", "must be >= 1")
        _check(self.lora_alpha >= 1, f"{key}.lora_alpha", "must be >= 1")
        _check(16 <= self.image_size <= 1024 and self.image_size % 16 == 0, f"{key}.image_size",
               "must be in [16, 1024] and a multiple of 16")
        _check(isinstance(self.prompts, dict) and bool(self.prompts), f"{key}.prompts", "must map class -> prompt")
        for cls, prompt in self.prompts.items():
            _check(isinstance(prompt, str) and prompt.strip() != "", f"{key}.prompts.{cls}", "must be a non-empty string")
        _check(len(set(self.prompts.values())) == len(self.prompts), f"{key}.prompts",
               "every class needs its own prompt (one model tells the classes apart by it)")
        _check_schedule(self, key)


def _check_schedule(p: DDPMParams | DCGANParams | SDTurboParams, key: str) -> None:
    _check(p.epochs >= 1, f"{key}.epochs", "must be >= 1")
    _check(p.batch_size >= 1, f"{key}.batch_size", "must be >= 1")
    _check(0 < p.lr <= 1, f"{key}.lr", "must be in (0, 1]")


def _check_device(device: str, key: str) -> None:
    ok = device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())
    _check(ok, key, f"expected auto, cpu, cuda or cuda:N, got {device!r}")


@dataclass(frozen=True)
class GeneratorParams:
    kind: Literal["ddpm", "dcgan", "sd_turbo"] = "ddpm"  # which generator to train (generative/registry.py)
    seed: int = 33  # paper's code: set_determinism(33)
    plane_balance: bool = True  # tumour classes cut to the least represented plane (paper §5.1.1)
    balance_exempt: tuple[str, ...] = ("notumor",)  # classes never plane-balanced (paper §5.1.1: mostly axial)
    val_fraction: float = 0.2  # per-plane stratified validation share (paper §5.1.1: 80/20)
    train: LoopParams = field(default_factory=LoopParams)
    ddpm: DDPMParams = field(default_factory=DDPMParams)
    dcgan: DCGANParams = field(default_factory=DCGANParams)
    sd_turbo: SDTurboParams = field(default_factory=SDTurboParams)

    def __post_init__(self):
        _check(0 <= self.val_fraction < 1, "generator.val_fraction", "must be in [0, 1)")
        self.ddpm.check("generator.ddpm")
        self.dcgan.check("generator.dcgan")
        self.sd_turbo.check("generator.sd_turbo")

    @property
    def model(self) -> DDPMParams | DCGANParams | SDTurboParams:
        """The section of the active kind: its image size, epochs, batch and learning rate apply."""
        return getattr(self, self.kind)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


@dataclass(frozen=True)
class Img2ImgParams:
    """The SD-Turbo study's generation: each image starts from a random Training image of its class."""

    strength: float = 0.75  # share of the schedule re-noised (0: the source, 1: pure noise)
    guidance_scale: float = 7.5  # classifier-free guidance
    steps: int = 50  # img2img runs int(steps * strength) of them
    scheduler: Literal["ddpm", "euler"] = "ddpm"  # ddpm: as coded (the training DDPMScheduler stayed on the pipeline); euler: SD-Turbo's own

    def check(self, key: str) -> None:
        _check(0 < self.strength <= 1, f"{key}.strength", "must be in (0, 1]")
        _check(0 <= self.guidance_scale <= 50, f"{key}.guidance_scale", "must be in [0, 50]")
        _check(1 <= self.steps <= 1000, f"{key}.steps", "must be in [1, 1000]")
        _check(int(self.steps * self.strength) >= 1, f"{key}.strength",
               f"strength x steps must leave at least one step, got {self.strength} x {self.steps}")


@dataclass(frozen=True)
class Txt2ImgParams:
    """SD-Turbo's own use (its model card): from noise in 1-4 steps, no guidance."""

    steps: int = 1
    guidance_scale: float = 0.0

    def check(self, key: str) -> None:
        _check(1 <= self.steps <= 4, f"{key}.steps", "must be in [1, 4] (SD-Turbo is distilled for 1-4 steps)")
        _check(0 <= self.guidance_scale <= 50, f"{key}.guidance_scale", "must be in [0, 50]")


@dataclass(frozen=True)
class SDTurboGenerateParams:
    mode: Literal["img2img", "txt2img"] = "img2img"  # img2img: the study's code; txt2img: Turbo-style
    img2img: Img2ImgParams = field(default_factory=Img2ImgParams)
    txt2img: Txt2ImgParams = field(default_factory=Txt2ImgParams)

    def __post_init__(self):
        self.img2img.check("generate.sd_turbo.img2img")
        self.txt2img.check("generate.sd_turbo.txt2img")


@dataclass(frozen=True)
class GenerateParams:
    n_per_class: int = 600  # paper §5.1.3
    out_size: int = 256  # samples are resized to the real images' side (paper §5.1.3)
    sampler: Literal["ddpm", "ddim"] = "ddpm"  # ddpm: the scheduler's full chain; ddim: `ddim_steps` steps, eta 0
    ddim_steps: int = 50
    batch_size: int = 32  # images sampled at once (paper's code: one at a time)
    seed: int = 0  # same seed -> same images (on CPU byte-identical files)
    paper_as_coded: bool = False  # true: left-right mirrored, 3-channel JPEG, as the paper's code saved them
    jpeg_quality: int = 75  # only with paper_as_coded (Pillow's default, which plt.imsave used)
    compile: bool = False  # torch.compile the sampling network (CUDA)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    device: str = "auto"
    threads: int = 0  # CPU threads of torch; 0 = torch's default
    sd_turbo: SDTurboGenerateParams = field(default_factory=SDTurboGenerateParams)  # generator.kind sd_turbo only

    def __post_init__(self):
        _check(self.threads >= 0, "generate.threads", "must be >= 0")
        _check(self.n_per_class >= 1, "generate.n_per_class", "must be >= 1")
        _check(8 <= self.out_size <= 4096, "generate.out_size", "must be in [8, 4096]")
        _check(1 <= self.ddim_steps <= 1000, "generate.ddim_steps", "must be in [1, 1000]")
        _check(self.batch_size >= 1, "generate.batch_size", "must be >= 1")
        _check(1 <= self.jpeg_quality <= 100, "generate.jpeg_quality", "must be in [1, 100]")
        _check_device(self.device, "generate.device")


def load_generator(raw: dict[str, Any] | None) -> GeneratorParams:
    """The `generator` section of params.yaml (missing -> defaults)."""
    return build(GeneratorParams, raw or {}, "generator")


def load_generate(raw: dict[str, Any] | None) -> GenerateParams:
    """The `generate` section of params.yaml (missing -> defaults)."""
    return build(GenerateParams, raw or {}, "generate")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj
