"""SD-Turbo as one class-conditional generator, as the SD-Turbo study's code fine-tuned it (docs/studies.md).

The study's code: the whole UNet of stabilityai/sd-turbo fine-tuned, text encoder and VAE frozen,
AdamW 1e-5, batch 8, gradient checkpointing, a DDPMScheduler (the model's own config) adding the
training noise, MSE on the noise, latents x the VAE's scaling factor (0.18215), 256-px RGB in [-1, 1],
one prompt per class. Here `mode: lora` trains low-rank adapters on the UNet's attention instead, and
autocast is bf16 on CUDA (the study used fp16 + GradScaler).

Grey MRI becomes 3-channel exactly once, in `to_input`; generated RGB becomes grey (channel mean) in
`_gray`. Base components come from a diffusers folder read with `local_files_only` (nothing downloads
at run time), or, for the demo and tests, are tiny random-initialised ones built from configs.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from synthmri import __version__
from synthmri.generative.base import GeneratorModel
from synthmri.generative.config import GeneratorParams, SDTurboParams, load_generator
from synthmri.images import sha256_file
from synthmri.io import read_json, write_json

FETCH_COMMAND = "synthmri weights fetch sd-turbo"
PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")  # the diffusers subfolders a model reads
CONFIG_FILE = "config.json"
SOURCES_FILE = "sources.csv"  # per class, the Training-split images img2img may start from (with sha256)
LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' LoRA file name
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]  # the UNet's attention projections
TINY_BASE = "base"  # tiny components are saved inside the model folder (they have no published source)
FORMAT = 1


def _quiet() -> None:
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()


# ---- base components ----------------------------------------------------------------------------


def tiny_components(seed: int, image_size: int) -> dict[str, Any]:
    """Tiny random-initialised SD parts (demo/tests): UNet widths (32, 64), cross-attention 32, VAE
    widths (32, 64) with 4 latent channels, CLIP text hidden 32, a character-level CLIP tokenizer."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    _quiet()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=image_size // 2, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=8)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, block_out_channels=(32, 64), latent_channels=4, sample_size=image_size,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
        # In-memory vocab (FACTS: vocab_file/merges_file can map every token to end-of-text): one token per
        # character, plus its end-of-word form, so different prompts give different ids.
        chars = string.ascii_lowercase + string.digits
        vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
        vocab |= {c: i + 2 for i, c in enumerate(chars)}
        vocab |= {c + "</w>": i + 2 + len(chars) for i, c in enumerate(chars)}
        tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=32)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
            max_position_embeddings=32, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    # SD-Turbo's scheduler (its model card: EulerDiscrete, epsilon, trailing spacing; SD 2.1's betas)
    scheduler = EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                       beta_schedule="scaled_linear", prediction_type="epsilon",
                                       timestep_spacing="trailing", steps_offset=1)
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}


def missing_weights(folder: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"SD-Turbo weights not found: {folder.as_posix()} (needs {', '.join(PARTS)}); run `{FETCH_COMMAND}` on a "
        f"machine with internet, or `dvc pull` where the team has pushed it. Nothing is downloaded at run time.")


def load_components(folder: Path, *, unet_from: Path | None = None) -> dict[str, Any]:
    """The diffusers parts of `folder` (local files only); the UNet from `unet_from` when given."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    _quiet()
    folder = Path(folder)
    if not all((folder / p).is_dir() for p in PARTS):
        raise missing_weights(folder)
    local = {"local_files_only": True}
    st = {**local, "use_safetensors": True}  # never a pickled .bin
    return {
        "unet": (UNet2DConditionModel.from_pretrained(unet_from, **st) if unet_from
                 else UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **st)),
        "vae": AutoencoderKL.from_pretrained(folder, subfolder="vae", **st),
        "text_encoder": CLIPTextModel.from_pretrained(folder / "text_encoder", **st),
        "tokenizer": CLIPTokenizer.from_pretrained(folder / "tokenizer", **local),
        "scheduler": EulerDiscreteScheduler.from_pretrained(folder, subfolder="scheduler", **local),
    }


def save_components(comps: dict[str, Any], folder: Path) -> None:
    for part in PARTS:
        comps[part].save_pretrained(folder / part)


def folder_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`'s model parts, by relative path."""
    return {p.relative_to(folder).as_posix(): sha256_file(p)
            for part in PARTS for p in sorted((folder / part).rglob("*")) if p.is_file()}


def prompt_ids(tokenizer, prompts: dict[str, str]) -> dict[str, torch.Tensor]:
    """Each class prompt's token ids; distinct prompts must give distinct ids (FACTS: a broken tokenizer
    maps everything to end-of-text, and the model would then not know the classes apart)."""
    ids = {c: tokenizer(p, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids for c, p in prompts.items()}
    seen: dict[tuple[int, ...], str] = {}
    for c, t in ids.items():
        key = tuple(t[0].tolist())
        if key in seen:
            raise ValueError(f"generator.sd_turbo.prompts: {c!r} and {seen[key]!r} tokenise to the same ids "
                             f"{list(key)[:8]}...: the tokenizer is broken or the prompts differ only past its "
                             f"{tokenizer.model_max_length} tokens")
        seen[key] = c
    return ids


def lora_config(p: SDTurboParams):
    from peft import LoraConfig

    return LoraConfig(r=p.lora_rank, lora_alpha=p.lora_alpha, init_lora_weights="gaussian", target_modules=LORA_TARGETS)


# ---- the model ----------------------------------------------------------------------------------


class SDTurbo(GeneratorModel):
    kind = "sd_turbo"
    losses = ("loss",)  # MSE between the true and the predicted noise (study's code)
    val_loss_name = "loss"
    conditional = True

    def __init__(self, cfg: GeneratorParams, device: torch.device, precision: str = "fp32", *,
                 components: dict[str, Any] | None = None, adapter: bool = True):
        from diffusers import DDPMScheduler

        super().__init__(cfg, device, precision)
        p: SDTurboParams = cfg.sd_turbo
        self.channels_last = False
        comps = components or (tiny_components(cfg.seed, p.image_size) if p.tiny else load_components(Path(p.weights)))
        self.unet: nn.Module = comps["unet"]
        self.vae: nn.Module = comps["vae"]
        self.text_encoder: nn.Module = comps["text_encoder"]
        self.tokenizer = comps["tokenizer"]
        self.scheduler_config = dict(comps["scheduler"].config)
        # study's code: DDPM for training (clip_sample off, as the pipelines set it)
        self.noise_scheduler = DDPMScheduler.from_config(self.scheduler_config, clip_sample=False)
        for frozen in (self.vae, self.text_encoder):
            frozen.requires_grad_(False).eval()
        if p.mode == "lora" and adapter:
            self.unet.requires_grad_(False)
            self.unet.add_adapter(lora_config(p))  # only the adapters train
        if p.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        for net in (self.unet, self.vae, self.text_encoder):
            net.to(device)
        self.classes = tuple(p.prompts)
        self.ids = prompt_ids(self.tokenizer, p.prompts)
        self.opt = torch.optim.AdamW([t for t in self.unet.parameters() if t.requires_grad], lr=p.lr)
        self._embeddings: dict[str, torch.Tensor] = {}

    def nets(self) -> dict[str, nn.Module]:
        return {"unet": self.unet}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adamw": self.opt}

    def trainable(self) -> dict[str, torch.Tensor]:
        """What training changes (the UNet, or its adapters): what checkpoints hold."""
        return {k: v for k, v in self.unet.named_parameters() if v.requires_grad}

    def to_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 1, S, S) -> float RGB in [-1, 1] (study's code), grey repeated to 3 channels here only."""
        return (images.float() / 127.5 - 1.0).repeat(1, 3, 1, 1)

    @torch.no_grad()
    def embed(self, classes: list[str]) -> torch.Tensor:
        """The frozen text encoder's states for each class's prompt (cached per class)."""
        for c in set(classes) - set(self._embeddings):
            if c not in self.ids:
                raise ValueError(f"class {c!r} has no prompt: add generator.sd_turbo.prompts.{c}")
            self._embeddings[c] = self.text_encoder(self.ids[c].to(self.device))[0]
        return torch.cat([self._embeddings[c] for c in classes])

    def _loss(self, x: torch.Tensor, classes: list[str], g: torch.Generator) -> torch.Tensor:
        with torch.no_grad(), self.amp():
            latents = self.vae.encode(x).latent_dist.sample(generator=g).float() * self.vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=g, device=self.device)
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (len(x),), generator=g, device=self.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, t)
        with self.amp():
            pred = self.unet(noisy, t, encoder_hidden_states=self.embed(classes)).sample
        return F.mse_loss(pred.float(), noise)

    def train_step(self, x: torch.Tensor, classes: list[str], g: torch.Generator) -> dict[str, torch.Tensor]:
        self.unet.train()
        loss = self._loss(x, classes, g)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach()}

    @torch.no_grad()
    def val_loss(self, x: torch.Tensor, classes: list[str], g: torch.Generator) -> torch.Tensor:
        self.unet.eval()
        return self._loss(x, classes, g)

    # ---- generation ------------------------------------------------------------------------------
    def _pipeline(self, img2img: bool, scheduler: str):
        from diffusers import (DDPMScheduler, EulerDiscreteScheduler, StableDiffusionImg2ImgPipeline,
                               StableDiffusionPipeline)

        sched = (DDPMScheduler.from_config(self.scheduler_config, clip_sample=False) if scheduler == "ddpm"
                 else EulerDiscreteScheduler.from_config(self.scheduler_config))  # fresh: set_timesteps mutates it
        cls = StableDiffusionImg2ImgPipeline if img2img else StableDiffusionPipeline
        pipe = cls(vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer, unet=self.unet,
                   scheduler=sched, safety_checker=None,
                   feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _prompts(self, cls: str, n: int) -> list[str]:
        if cls not in self.ids:
            raise ValueError(f"class {cls!r} has no prompt: add generator.sd_turbo.prompts.{cls}")
        return [self.cfg.sd_turbo.prompts[cls]] * n

    @torch.no_grad()
    def txt2img(self, cls: str, n: int, seed: int, *, steps: int, guidance_scale: float) -> torch.Tensor:
        """`n` images of `cls` from noise (Turbo-style: SD-Turbo's Euler scheduler, 1-4 steps), float (n, 1, S, S) in [0, 1]."""
        self.unet.eval()
        g = torch.Generator(self.device).manual_seed(seed)
        with self.amp():
            out = self._pipeline(False, "euler")(
                self._prompts(cls, n), height=self.size, width=self.size, num_inference_steps=steps,
                guidance_scale=guidance_scale, generator=g, output_type="pt").images
        return _gray(out)

    @torch.no_grad()
    def img2img(self, cls: str, sources: torch.Tensor, seed: int, *, strength: float, guidance_scale: float,
                steps: int, scheduler: str) -> torch.Tensor:
        """One image of `cls` from each uint8 (N, 1, S, S) source (study's code), float (N, 1, S, S) in [0, 1]."""
        self.unet.eval()
        g = torch.Generator(self.device).manual_seed(seed)
        image = (self.to_input(sources.to(self.device)) + 1) / 2  # the pipeline takes [0, 1] and normalises
        with self.amp():
            out = self._pipeline(True, scheduler)(
                self._prompts(cls, len(sources)), image=image, strength=strength, num_inference_steps=steps,
                guidance_scale=guidance_scale, generator=g, output_type="pt").images
        return _gray(out)

    def _sample(self, n: int, sampler: str, steps: int) -> torch.Tensor:
        raise NotImplementedError("sd_turbo is class-conditional: use txt2img or img2img")

    # ---- files -------------------------------------------------------------------------------------
    def save(self, out_dir: Path, extra: dict[str, Any] | None = None) -> None:
        """The trained model: the UNet (full) or diffusers' LoRA file (lora), config.json, and for tiny
        components the base itself. Safetensors throughout."""
        from diffusers import StableDiffusionPipeline
        from peft.utils import get_peft_model_state_dict

        out_dir = Path(out_dir)
        p = self.cfg.sd_turbo
        base = out_dir / TINY_BASE if p.tiny else Path(p.weights)
        if p.tiny:
            fresh = tiny_components(self.cfg.seed, p.image_size)  # the same seeded init as the trained one's start
            save_components(fresh, base)
        if p.mode == "lora":
            StableDiffusionPipeline.save_lora_weights(
                out_dir, unet_lora_layers=get_peft_model_state_dict(self.unet), weight_name=LORA_FILE,
                safe_serialization=True,  # the adapter's config (alpha: its scale) travels in the file's metadata
                unet_lora_adapter_metadata=self.unet.peft_config["default"].to_dict())
        else:
            self.unet.save_pretrained(out_dir / "unet", safe_serialization=True)
        write_json(out_dir / CONFIG_FILE, {
            "format": FORMAT, "synthmri": __version__, "kind": self.kind, "classes": list(self.classes),
            "image_size": self.size, "value_range": "uint8 / 127.5 - 1, grey repeated to RGB", "mode": p.mode,
            "base": {"folder": TINY_BASE if p.tiny else base.as_posix(), "tiny": p.tiny,
                     "sha256": folder_digests(base)},
            "generator": self.cfg.to_dict(), **(extra or {})})


def _gray(rgb: torch.Tensor) -> torch.Tensor:
    """The pipeline's (N, 3, S, S) in [0, 1] -> (N, 1, S, S): the channel mean (the inputs were grey)."""
    return rgb.float().mean(dim=1, keepdim=True).clamp(0, 1)


def read_config(model_dir: Path) -> tuple[dict[str, Any], GeneratorParams]:
    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the train_generator_shared stage first")
    config = read_json(path)
    if config.get("format") != FORMAT or config.get("kind") != SDTurbo.kind or "generator" not in config:
        raise ValueError(f"{path}: not an sd_turbo model (kind {config.get('kind')!r}, format {config.get('format')!r})")
    return config, load_generator(config["generator"])


def load_trained(model_dir: Path, device: torch.device, precision: str = "fp32") -> SDTurbo:
    """The model `save` wrote. Its base files must be the bytes it was trained on (sha256 in config.json):
    the generate stages depend on the model folder, and through it on the base weights."""
    model_dir = Path(model_dir)
    config, cfg = read_config(model_dir)
    base = model_dir / config["base"]["folder"] if config["base"]["tiny"] else Path(config["base"]["folder"])
    if not all((base / p).is_dir() for p in PARTS):
        raise missing_weights(base)
    found = folder_digests(base)
    changed = sorted(k for k, v in config["base"]["sha256"].items() if found.get(k) != v)
    if changed:
        raise ValueError(f"{base.as_posix()}: {len(changed)} file(s) differ from those {model_dir} was trained on "
                         f"({', '.join(changed[:3])}); rerun train_generator_shared (dvc repro)")
    lora = cfg.sd_turbo.mode == "lora"
    comps = load_components(base, unet_from=None if lora else model_dir / "unet")
    model = SDTurbo(cfg, device, precision, components=comps, adapter=False)
    if lora:
        pipe = model._pipeline(False, "euler")
        pipe.load_lora_weights(model_dir, weight_name=LORA_FILE)  # diffusers' own loader (FACTS pitfall)
    return model

