"""Generator throughput: training images/s and sampling images/s of synthmri's DDPM loop, each
against a plain fp32 eager loop of the same MONAI model measured in the same run.

- train, synthmri: uint8 images held on the device, batch gathered by index on the device, losses
  kept on the device (no per-step host sync); on CUDA bf16 autocast, channels_last, optional
  torch.compile.
- train, plain: fp32 eager, float images on the host copied per step, `loss.item()` every step (the
  MONAI tutorial / paper's-code loop).
- sample: synthmri batched DDPM (the full chain) and DDIM (`--ddim-steps`), synthmri's full DDPM chain
  one image at a time, and the paper's code: one image at a time, fp32 eager, the full DDPM chain. The
  speed-ups are reported as separate effects: fewer steps (DDIM vs DDPM, same batch), batching (DDPM
  batched vs one at a time, both ours) and precision/layout (ours vs the paper's loop, both one at a
  time); their product is our batched DDIM against the paper's loop.

On CUDA it also prints model FLOPs utilisation (FLOPs from torch.utils.flop_counter.FlopCounterMode,
peak from `--peak-tflops` or a table of known GPUs). Examples:

    python bench/generator.py                                  # CPU, reduced size (16,32,32) at 32 px
    python bench/generator.py --channels 128 256 256 --size 128 --batch 16 --compile   # paper config, GPU

Writes its figures, the command and the machine to bench/results/generator-<config>-<device>.json (or --out).
For the whole GPU run of the paper's configurations, see bench/gpu.py.

`--sd-turbo` measures the SD-Turbo generator instead (generator.kind sd_turbo), as ratios in one run:
training images/s of LoRA vs the full UNet, and generation images/s of txt2img at 1-4 steps vs img2img at
the SD-Turbo study's 50 steps (strength 0.75, guidance 7.5). Tiny random-initialised parts by default (CPU);
`--sd-turbo-weights models/pretrained/sd-turbo --size 256` runs the real model (bf16 on CUDA):

    python bench/generator.py --sd-turbo                                  # CPU, tiny parts at 32 px
    python bench/generator.py --sd-turbo --sd-turbo-weights models/pretrained/sd-turbo --size 256 --batch 8
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.inferers import DiffusionInferer
from monai.networks.schedulers import DDPMScheduler
from torch.utils.flop_counter import FlopCounterMode

from synthmri.generative.config import load_generator
from synthmri.generative.ddpm import DDPM, build_unet
from synthmri.runtime import Dist, generator, resolve_device

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchutil import cpu_name, machine, write_result  # noqa: E402

# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' datasheets; pass --peak-tflops for others.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0,
                    "H100": 756.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channels", type=int, nargs="+", default=[16, 32, 32])
    ap.add_argument("--attention", type=int, nargs="+", default=None, help="1/0 per level (default: all but the first)")
    ap.add_argument("--head-channels", type=int, default=None, help="default: the last width")
    ap.add_argument("--norm-groups", type=int, default=None, help="default: min(32, the first width)")
    ap.add_argument("--size", type=int, default=32, help="image side in pixels")
    ap.add_argument("--batch", type=int, default=8, help="training batch")
    ap.add_argument("--train-steps", type=int, default=10, help="timed training steps per loop")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation, allocator)")
    ap.add_argument("--sample-batch", type=int, default=4, help="images per batched sampling call")
    ap.add_argument("--plain-sample-images", type=int, default=1, help="images the one-at-a-time loop samples")
    ap.add_argument("--ddim-steps", type=int, default=50)
    ap.add_argument("--skip-ddpm-sampling", action="store_true", help="skip the 1,000-step chains (CPU at large sizes)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (the CPU is shared)")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--sd-turbo", action="store_true", help="measure the sd_turbo generator (see above)")
    ap.add_argument("--sd-turbo-weights", default=None, help="diffusers folder of SD-Turbo (default: tiny random parts)")
    ap.add_argument("--out", "--json", dest="out", type=Path, default=None,
                    help="results JSON (default bench/results/generator-<config>-<device>.json)")
    return ap.parse_args()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, warmup: int, reps: int) -> float:
    """Seconds per call of `fn` after `warmup` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / reps


def sd_turbo(a: argparse.Namespace, device: torch.device) -> None:
    """Training full vs LoRA, generation txt2img 1-4 steps vs img2img 50 steps, same model, one run."""
    from synthmri.generative.sd_turbo import SDTurbo

    sd = {"tiny": a.sd_turbo_weights is None, "image_size": a.size, "batch_size": a.batch}
    if a.sd_turbo_weights:
        sd["weights"] = a.sd_turbo_weights
    images = torch.randint(0, 256, (a.batch, 1, a.size, a.size), dtype=torch.uint8, device=device)
    labels = ["glioma", "meningioma"] * (a.batch // 2) + ["glioma"] * (a.batch % 2)
    train = {}
    for mode in ("full", "lora"):
        cfg = load_generator({"kind": "sd_turbo", "sd_turbo": {**sd, "mode": mode}, "train": {"precision": a.precision}})
        model = SDTurbo(cfg, device, a.precision)
        g = generator(device, 0)
        s = timed(lambda: model.train_step(model.to_input(images), labels, g), device, a.warmup, a.train_steps)
        train[mode] = {"images_per_s": a.batch / s, "trainable_M": sum(t.numel() for t in model.trainable().values()) / 1e6}
        if mode == "full":
            full_model = model
    del model
    n = a.sample_batch
    sample = {}
    for steps in (1, 2, 4):
        s = timed(lambda: full_model.txt2img("glioma", n, 0, steps=steps, guidance_scale=0.0), device, 1, 1)
        sample[f"txt2img_{steps}"] = n / s
    src = images[:n].cpu() if n <= a.batch else images.cpu().repeat(n // a.batch + 1, 1, 1, 1)[:n]
    s = timed(lambda: full_model.img2img("glioma", src, 0, strength=0.75, guidance_scale=7.5, steps=50,
                                         scheduler="ddpm"), device, 1, 1)
    sample["img2img_50_strength0.75_guidance7.5"] = n / s
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    result = {
        "device": f"{device.type}: {name}", "machine": machine(device), "torch": torch.__version__,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "config": {"model": "tiny random (UNet 32/64, VAE 32/64, CLIP 32)" if sd["tiny"] else a.sd_turbo_weights,
                   "size": a.size, "batch": a.batch, "sample_batch": n, "precision": str(full_model.amp_dtype or "fp32")},
        "train": train,
        "train_ratio_lora_vs_full": train["lora"]["images_per_s"] / train["full"]["images_per_s"],
        "sample_images_per_s": sample,
        "sample_ratio_vs_img2img_50": {k: v / sample["img2img_50_strength0.75_guidance7.5"]
                                       for k, v in sample.items() if k.startswith("txt2img")},
    }
    print(json.dumps(result, indent=2, default=float))
    tag = f"sd_turbo-{'tiny' if sd['tiny'] else 'real'}-{a.size}px-b{a.batch}"
    print(f"results: {write_result(a.out, f'generator-{tag}-{device.type}', result)}")


def main() -> None:
    a = parse()
    torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    if a.sd_turbo:
        return sd_turbo(a, device)
    levels = len(a.channels)
    attention = [bool(x) for x in a.attention] if a.attention else [False] + [True] * (levels - 1)
    ddpm = {"image_size": a.size, "batch_size": a.batch, "channels": a.channels, "attention_levels": attention,
            "num_head_channels": a.head_channels or a.channels[-1], "norm_num_groups": a.norm_groups or min(32, a.channels[0])}
    cfg = load_generator({"ddpm": ddpm, "train": {"precision": a.precision, "compile": a.compile}})
    T = cfg.ddpm.timesteps

    n_images = max(8 * a.batch, 64)
    images = torch.randint(0, 256, (n_images, 1, a.size, a.size), dtype=torch.uint8, device=device)
    g = generator(device, 0)

    # ---- synthmri's loop ------------------------------------------------------------------------
    fast = DDPM(cfg, device, a.precision)
    fast.prepare_training(Dist(), a.compile)

    def fast_step():
        idx = torch.randint(0, n_images, (a.batch,), device=device, generator=g)
        fast.train_step(fast.to_input(images[idx]), g)

    t_compile = time.perf_counter()
    fast_step()
    sync(device)
    first_step_s = time.perf_counter() - t_compile
    fast_s = timed(fast_step, device, a.warmup, a.train_steps)

    # ---- plain fp32 eager loop of the same model --------------------------------------------------
    torch.manual_seed(0)
    unet = build_unet(cfg.ddpm).to(device)
    unet.load_state_dict(fast.unet.state_dict())
    opt = torch.optim.Adam(unet.parameters(), lr=cfg.ddpm.lr)
    inferer = DiffusionInferer(DDPMScheduler(num_train_timesteps=T))
    host = images.float().cpu() / 255.0
    epoch_loss = [0.0]

    def plain_step():
        idx = torch.randint(0, n_images, (a.batch,))
        x = host[idx].to(device)
        noise = torch.randn_like(x)
        t = torch.randint(0, T, (a.batch,), device=device)
        loss = F.mse_loss(inferer(inputs=x, diffusion_model=unet, noise=noise, timesteps=t).float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        epoch_loss[0] += loss.item()  # the per-step host sync of the tutorial loop

    plain_s = timed(plain_step, device, a.warmup, a.train_steps)

    # FLOPs of one training step (forward + backward) and of one sampling forward.
    x = host[: a.batch].to(device)
    with FlopCounterMode(display=False) as fc:
        t = torch.randint(0, T, (a.batch,), device=device)
        F.mse_loss(inferer(inputs=x, diffusion_model=unet, noise=torch.randn_like(x), timesteps=t), x).backward()
    train_flops = fc.get_total_flops()
    opt.zero_grad(set_to_none=True)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        unet(torch.randn(a.sample_batch, 1, a.size, a.size, device=device), timesteps=torch.zeros(1, device=device))
    sample_forward_flops = fc.get_total_flops()

    # ---- sampling ----------------------------------------------------------------------------------
    if a.compile:
        fast.compile_for_sampling()
    res_sample = {}
    fast.sample(a.sample_batch, 0, sampler="ddim", steps=2)  # warm-up (and compile)
    s = timed(lambda: fast.sample(a.sample_batch, 0, sampler="ddim", steps=a.ddim_steps), device, 0, 1)
    res_sample[f"synthmri_ddim{a.ddim_steps}_batched"] = a.sample_batch / s
    ddim_s = s
    if not a.skip_ddpm_sampling:
        s = timed(lambda: fast.sample(a.sample_batch, 0, sampler="ddpm"), device, 0, 1)
        res_sample[f"synthmri_ddpm{T}_batched"] = a.sample_batch / s
        ddpm_s = s
        unet.eval()

        def plain_sample():
            for _ in range(a.plain_sample_images):
                sched = DDPMScheduler(num_train_timesteps=T)
                noise = torch.randn(1, 1, a.size, a.size, device=device)
                with torch.no_grad():
                    inferer.sample(input_noise=noise, diffusion_model=unet, scheduler=sched, verbose=False)

        s = timed(plain_sample, device, 0, 1)
        res_sample[f"plain_ddpm{T}_one_at_a_time"] = a.plain_sample_images / s

        def ours_one_at_a_time():
            for i in range(a.plain_sample_images):
                fast.sample(1, i, sampler="ddpm")

        s = timed(ours_one_at_a_time, device, 0, 1)
        res_sample[f"synthmri_ddpm{T}_one_at_a_time"] = a.plain_sample_images / s

    # ---- report ------------------------------------------------------------------------------------
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    result_machine = machine(device)
    peak = a.peak_tflops
    if peak is None and device.type == "cuda":
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    params = sum(p.numel() for p in unet.parameters())
    result = {
        "device": f"{device.type}: {name}",
        "machine": result_machine,
        "torch": torch.__version__,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "config": {"channels": a.channels, "attention": attention, "size": a.size, "batch": a.batch,
                   "params_M": round(params / 1e6, 2), "precision": str(fast.amp_dtype or "fp32"),
                   "channels_last": fast.channels_last, "compile": a.compile},
        "train_images_per_s": {"synthmri": a.batch / fast_s, "plain_fp32_eager": a.batch / plain_s},
        "train_speedup": plain_s / fast_s,
        "first_step_s": first_step_s,
        "train_gflop_per_step": train_flops / 1e9,
        "sample_images_per_s": res_sample,
    }
    plain_key = f"plain_ddpm{T}_one_at_a_time"
    ddim_key, ddpm_key = f"synthmri_ddim{a.ddim_steps}_batched", f"synthmri_ddpm{T}_batched"
    one_key = f"synthmri_ddpm{T}_one_at_a_time"
    if plain_key in res_sample:
        # Separate effects, each a ratio of two runs that differ in one thing; their product is the total.
        r = res_sample
        result["sample_effects"] = {
            "fewer_steps": {"what": f"DDIM-{a.ddim_steps} vs DDPM-{T}, both ours at batch {a.sample_batch}",
                            "ratio": r[ddim_key] / r[ddpm_key]},
            "batching": {"what": f"DDPM-{T} at batch {a.sample_batch} vs one at a time, both ours",
                         "ratio": r[ddpm_key] / r[one_key]},
            "precision_layout": {"what": f"ours ({result['config']['precision']}, channels_last "
                                         f"{result['config']['channels_last']}) vs the paper's fp32 eager loop, "
                                         f"DDPM-{T} one at a time", "ratio": r[one_key] / r[plain_key]},
            "total_ddim_batched_vs_paper": {"what": "product of the three: our batched DDIM vs the paper's loop",
                                            "ratio": r[ddim_key] / r[plain_key]},
        }
    achieved = {"train": train_flops / fast_s,
                "sample_ddim": sample_forward_flops * a.ddim_steps / ddim_s}
    if not a.skip_ddpm_sampling:
        achieved["sample_ddpm"] = sample_forward_flops * T / ddpm_s
    result["achieved_tflops"] = {k: v / 1e12 for k, v in achieved.items()}
    if peak:
        result["peak_bf16_tflops"] = peak
        result["mfu"] = {k: v / 1e12 / peak for k, v in achieved.items()}

    print(json.dumps(result, indent=2, default=float))
    print(f"\ntraining: synthmri {a.batch / fast_s:.2f} img/s vs plain fp32 eager {a.batch / plain_s:.2f} img/s "
          f"-> x{plain_s / fast_s:.2f}")
    for k, v in res_sample.items():
        print(f"sampling {k}: {v:.3f} img/s")
    for k, v in result.get("sample_effects", {}).items():
        print(f"sampling effect {k}: x{v['ratio']:.2f} ({v['what']})")
    if "mfu" in result:
        print("MFU: " + ", ".join(f"{k} {v:.1%}" for k, v in result["mfu"].items()))
    tag = f"{'-'.join(map(str, a.channels))}-{a.size}px-b{a.batch}" + ("-compile" if a.compile else "")
    path = write_result(a.out, f"generator-{tag}-{device.type}", result)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
