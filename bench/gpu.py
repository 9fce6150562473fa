"""The GPU run, prepared to the minute (issue 13 §5): the paper's real configurations through our own code,
and the whole paper's wall time projected from the measured rates.

    python bench/gpu.py                          # one CUDA GPU, designed for <= 10 minutes; bench/results/gpu-<device>.json
    python bench/gpu.py --peak-tflops 989        # a GPU missing from the peak table (dense bf16 TFLOP/s)
    python bench/gpu.py --tiny                   # CPU, tiny sizes, about a minute: the test suite runs this

Measures, in one run:
- DDPM (generator.ddpm of the paper profile: channels (128, 256, 256) at 128 px, batch 16), our
  training step (`synthmri.generative.ddpm.DDPM.train_step`, uint8 images on the device): images/s,
  model FLOPs utilisation (FLOPs from torch.utils.flop_counter.FlopCounterMode, peak from the table
  below or --peak-tflops) and peak memory, with fp32/bf16, NCHW/channels_last and eager/torch.compile;
- DDPM sampling (`DDPM.sample`) at the batch that fills the device (searched): the full DDPM chain and
  DDIM-50, and the same chain one image at a time (ours, then the paper's fp32 eager loop), so the
  effect of fewer steps and the effect of batching are reported apart;
- VGG-19 (classify.model of the paper profile: 256 px, batch 32, only block5_conv2-4 and the head
  trainable): our loader + `synthmri.classify.train.fit` vs a torchvision ImageFolder + DataLoader
  loop of the same model, same images, same run; our `predict` (test evaluation) and our decoder;
- Inception features through `synthmri.fidelity.features.extract` (torch-fidelity's extractor, seeded
  random weights: the speed is the same as with the real ones).

Then projects the paper's GPU stages (every class, every scenario x seed of the paper profile) from
those rates, beside the paper's own ~22 GPU-hours for its generators, against the design target of
the whole paper in <= 45 minutes on one H100-class GPU, and says which stage misses it and why.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import resource
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchutil import finite, machine, slug, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# Dense bf16 tensor-core peaks, TFLOP/s, from the vendors' datasheets (no sparsity); the first
# substring found in torch.cuda.get_device_name wins, so the specific names come first.
PEAK_BF16_TFLOPS = [("GH200", 989.0), ("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0),
                    ("H100", 989.0), ("H800", 989.0), ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0),
                    ("L40S", 362.0), ("L4", 121.0), ("A10", 125.0)]

# The paper's workload where params.yaml cannot say it (docs/paper_as_coded.md, read from the paper's code):
GENERATOR_TRAIN_IMAGES = {"glioma": 555, "meningioma": 558, "notumor": 653, "pituitary": 534}  # plane-balanced, 80 %
NOTUMOR_REAL = 817  # Table 2: notumor is not balanced, all 817 kept (the tumour classes' counts are in params)
TEST_IMAGES = 1024  # preprocessed Testing images
PAPER_GENERATOR_GPU_HOURS = 22.0  # ~10,500-12,600 s training + ~2.6 h one-at-a-time sampling, per class, x 4
TARGET_S = 45 * 60  # design target: the whole paper on one H100-class GPU

CONFIGURED = "bf16+cl"  # what the paper profile runs on CUDA: precision auto (bf16), channels_last, compile false


# ---- helpers -------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", "--dry-run", dest="tiny", action="store_true",
                    help="CPU, tiny sizes, about a minute: checks that every part runs (figures mean nothing)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (--tiny: cpu)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the device (default: table)")
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default bench/results/gpu-<device>.json)")
    ap.add_argument("--train-steps", type=int, default=None, help="timed DDPM training steps per variant")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    ap.add_argument("--full-grid", action="store_true",
                    help="all 8 precision x layout x compile variants (default: the 4 eager ones + 2 compiled)")
    ap.add_argument("--max-sample-batch", type=int, default=None, help="largest sampling batch tried")
    ap.add_argument("--max-ddpm-seconds", type=float, default=120.0,
                    help="time the full DDPM chain at the largest searched batch whose chain fits this (estimated)")
    ap.add_argument("--skip-one-at-a-time", action="store_true", help="skip the batch-1 DDPM chains")
    ap.add_argument("--params", type=Path, default=None,
                    help="params.yaml to read the workload from (default: the paper profile composed from conf/)")
    ap.add_argument("--flops-only", action="store_true",
                    help="no timing: count the FLOPs of the paper's networks (any device, a CPU is fine) and print "
                         "each stage's floor at the peak (default 989, an H100 SXM's dense bf16)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads of torch (0: default; --tiny: 1)")
    a = ap.parse_args(argv)
    if a.tiny:
        a.device = "cpu"
        a.threads = a.threads or 1
    return a


def paper_params(path: Path | None) -> dict[str, Any]:
    """The paper profile's params: composed from conf/ as `dvc exp run -S profile=paper` does."""
    from synthmri.params import read_params

    if path is not None:
        return read_params(path)
    from synthmri.profiles import compose

    with tempfile.TemporaryDirectory() as tmp:
        out = compose(["profile=paper"], Path(tmp) / "params.yaml", ROOT / "conf")
        return read_params(out)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {"peak_memory_bytes": finite(torch.cuda.max_memory_allocated(device)),
                "peak_memory_kind": "torch.cuda.max_memory_allocated since this measurement began"}
    return {"peak_memory_bytes": finite(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024),
            "peak_memory_kind": "process max RSS so far (CPU: a high-water mark of the whole run)"}


def timed(fn: Callable[[], Any], device: torch.device, reps: int) -> float:
    """Seconds per call of `fn` over `reps` calls (the caller warms up)."""
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / reps


def peak_tflops(a: argparse.Namespace, name: str) -> float | None:
    if a.peak_tflops:
        return a.peak_tflops
    return next((v for k, v in PEAK_BF16_TFLOPS if k in name), None)


@contextmanager
def section(title: str, log: dict[str, float]):
    print(f"\n== {title}", flush=True)
    t0 = time.perf_counter()
    yield
    log[title] = round(time.perf_counter() - t0, 2)
    print(f"   ({log[title]:.1f} s)", flush=True)


@contextmanager
def tiny_compile(enabled: bool):
    """--tiny: torch.compile with the 'eager' backend (Dynamo traces, no Inductor code generation), so the
    compiled path runs on a CPU in seconds; its figures then measure tracing overhead, not kernels."""
    if not enabled:
        yield
        return
    real = torch.compile
    torch.compile = lambda model=None, **kw: real(model, **{**kw, "backend": "eager"})  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.compile = real  # type: ignore[assignment]


# ---- DDPM ----------------------------------------------------------------------------------------


def ddpm_settings(a: argparse.Namespace, params: dict[str, Any]) -> dict[str, Any]:
    g = dict(params.get("generator", {}))
    if a.tiny:  # same structure (3 levels, attention on the last two), a few thousand parameters
        g["ddpm"] = {**g.get("ddpm", {}), "image_size": 16, "batch_size": 2, "channels": [8, 16, 16],
                     "num_head_channels": 16, "norm_num_groups": 8, "timesteps": 20}
    g["train"] = {**g.get("train", {}), "device": str(a.device)}
    return g


def build_ddpm(cfg, device: torch.device, precision: str, channels_last: bool, compile: bool, sdpa: bool = False):
    """Our DDPM with the layout forced either way (the class picks channels_last on CUDA only).

    `sdpa`: a what-if, not the project's model today: the same UNet built with MONAI's
    `use_flash_attention=True` (torch's scaled_dot_product_attention instead of materialising the
    attention scores; 4,096 tokens at the 64-px level), same weights, a fresh Adam over them.
    """
    from monai.networks.nets import DiffusionModelUNet

    from synthmri.generative.ddpm import DDPM
    from synthmri.runtime import Dist, seed_everything

    seed_everything(cfg.seed)
    m = DDPM(cfg, device, precision)
    if sdpa:
        p = cfg.ddpm
        net = DiffusionModelUNet(spatial_dims=2, in_channels=1, out_channels=1, channels=p.channels,
                                 attention_levels=p.attention_levels, num_res_blocks=p.num_res_blocks,
                                 num_head_channels=p.num_head_channels, norm_num_groups=p.norm_num_groups,
                                 use_flash_attention=True).to(device)
        net.load_state_dict(m.unet.state_dict())
        m.unet = net.to(memory_format=torch.channels_last) if m.channels_last else net
        m.opt = torch.optim.Adam(m.unet.parameters(), lr=p.lr)
    if m.channels_last != channels_last:
        m.channels_last = channels_last
        m.unet.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    m.prepare_training(Dist(), compile)
    return m


def variants(a: argparse.Namespace) -> list[tuple[str, str, bool, bool, bool]]:
    """(name, precision, channels_last, compile, sdpa): each switch on and off, and the SDPA what-if."""
    grid = [(p, cl, c) for c in (False, True) for p in ("fp32", "bf16") for cl in (False, True)]
    if not a.full_grid:  # compiled: the plain fp32 baseline and the configured bf16 + channels_last
        grid = [v for v in grid if not v[2] or v[:2] in (("fp32", False), ("bf16", True))]
    if a.tiny:  # one compiled variant exercises the path; tracing costs seconds each on a CPU
        grid = [v for v in grid if not v[2] or v[:2] == ("bf16", True)]
    if a.no_compile:
        grid = [v for v in grid if not v[2]]
    out = [(f"{p}{'+cl' if cl else ''}{'+compile' if c else ''}", p, cl, c, False) for p, cl, c in grid]
    return out + [("bf16+cl+sdpa (what-if)", "bf16", True, False, True)]


def bench_ddpm_train(a, cfg, device, peak) -> dict[str, Any]:
    from synthmri.runtime import generator

    p = cfg.ddpm
    steps = a.train_steps or (2 if a.tiny else 20)
    warmup = 1 if a.tiny else 3
    images = torch.randint(0, 256, (max(8 * p.batch_size, 64), 1, p.image_size, p.image_size), dtype=torch.uint8,
                           device=device)
    out: dict[str, Any] = {"batch": p.batch_size, "size": p.image_size, "channels": list(p.channels),
                           "timed_steps": steps, "warmup_steps": warmup, "variants": {}}

    # FLOPs of one training step (forward + backward) of our step, and of one sampling forward per image.
    from torch.utils.flop_counter import FlopCounterMode

    m = build_ddpm(cfg, device, "fp32", False, False)
    g = generator(device, 0)
    x = m.to_input(images[: p.batch_size])
    with FlopCounterMode(display=False) as fc:
        m.train_step(x, g)
    out["train_flop_per_step"] = finite(fc.get_total_flops())
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        m.unet(x[:1], timesteps=torch.zeros(1, dtype=torch.long, device=device))
    out["forward_flop_per_image"] = finite(fc.get_total_flops())
    out["params_M"] = round(sum(t.numel() for t in m.unet.parameters()) / 1e6, 3)
    del m, x

    for name, precision, cl, comp, sdpa in variants(a):
        reset_peak(device)
        try:
            m = build_ddpm(cfg, device, precision, cl, comp, sdpa)
            g = generator(device, 0)

            def step():
                idx = torch.randint(0, len(images), (p.batch_size,), device=device, generator=g)
                m.train_step(m.to_input(images[idx]), g)

            t0 = time.perf_counter()
            step()
            sync(device)
            first = time.perf_counter() - t0
            for _ in range(warmup):
                step()
            s = timed(step, device, steps)
        except Exception as e:  # noqa: BLE001 - one variant failing (a compile error, OOM) must not lose the run
            out["variants"][name] = {"precision": precision, "channels_last": cl, "compile": comp, "sdpa": sdpa,
                                     "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
            print(f"   train {name:24s} FAILED: {out['variants'][name]['error']}", flush=True)
            m = None
            if comp:
                torch._dynamo.reset()
            continue
        r = {"precision": precision, "channels_last": cl, "compile": comp, "sdpa": sdpa, "step_ms": finite(s * 1e3),
             "images_per_s": finite(p.batch_size / s), "first_step_s": finite(first),
             "achieved_tflops": finite(out["train_flop_per_step"] / s / 1e12), **peak_memory(device)}
        if peak:
            r["mfu"] = finite(r["achieved_tflops"] / peak)
        out["variants"][name] = r
        print(f"   train {name:24s} {r['images_per_s']:9.2f} img/s  {r['step_ms']:8.1f} ms/step"
              + (f"  MFU {r['mfu']:.1%}" if peak else "") + f"  first step {first:.1f} s"
              + f"  peak {r['peak_memory_bytes'] / 2**30:.2f} GiB", flush=True)
        del m
        if comp:
            torch._dynamo.reset()
    out["mfu_basis"] = "the dense bf16 peak for every variant (fp32 runs on units with lower peaks)"
    ok = [k for k, v in out["variants"].items() if "what-if" not in k and "error" not in v]
    best = max(ok, key=lambda k: out["variants"][k]["images_per_s"])
    out["best"] = best
    out["configured"] = CONFIGURED if CONFIGURED in ok else best
    return out


def bench_ddpm_sample(a, cfg, device, peak, train: dict[str, Any]) -> dict[str, Any]:
    """Batch search on the sampling forward, then the full chain and DDIM at that batch, and at batch 1."""
    from synthmri.generative.ddpm import DDPM

    T = cfg.ddpm.timesteps
    ddim_steps = 4 if a.tiny else 50
    reset_peak(device)
    m = build_ddpm(cfg, device, "bf16" if device.type == "cuda" else "fp32", device.type == "cuda", False)
    size = cfg.ddpm.image_size
    max_b = a.max_sample_batch or (4 if a.tiny else 1024)
    search: dict[str, float] = {}
    b, best_b, best_rate = (2 if a.tiny else 16), None, 0.0
    m.unet.eval()
    with torch.no_grad():
        while b <= max_b:
            x = m.layout(torch.randn(b, 1, size, size, device=device))
            t = torch.full((b,), T // 2, dtype=torch.long, device=device)
            try:
                with m.amp():
                    m.unet(x, timesteps=t)  # warm-up (cuDNN picks its algorithms per shape)
                    s = timed(lambda: m.unet(x, timesteps=t), device, 2 if a.tiny else 5)
            except torch.cuda.OutOfMemoryError:
                del x
                torch.cuda.empty_cache()
                break
            rate = b / s
            search[str(b)] = finite(rate)
            print(f"   sample forward, batch {b:5d}: {rate:10.1f} image-steps/s", flush=True)
            if best_b is not None and rate < best_rate * 1.05:  # under 5 % more: the device is full
                break
            if rate > best_rate:
                best_b, best_rate = b, rate
            b *= 2
    B = best_b
    # The full chain at B can take minutes; time it at the largest searched batch whose chain fits --max-ddpm-seconds.
    fits = [int(k) for k, r in search.items() if int(k) <= B and T * int(k) / r <= a.max_ddpm_seconds]
    Bd = max(fits) if fits else min(int(k) for k in search)
    out: dict[str, Any] = {"batch_search_image_steps_per_s": search, "batch": B, "ddpm_batch": Bd, "timesteps": T,
                           "ddim_steps": ddim_steps, "precision": str(m.amp_dtype or "fp32"),
                           "channels_last": m.channels_last, "images_per_s": {}, "seconds": {}}

    def run(key: str, n: int, fn):
        s = timed(fn, device, 1)
        out["images_per_s"][key] = finite(n / s)
        out["seconds"][key] = finite(s)
        print(f"   {key:34s} {n / s:10.3f} img/s  ({s:.1f} s for {n})", flush=True)

    m.sample(B, 0, sampler="ddim", steps=2)  # warm-up
    run(f"ddim{ddim_steps}_batch{B}", B, lambda: m.sample(B, 0, sampler="ddim", steps=ddim_steps))
    if Bd != B:
        m.sample(Bd, 0, sampler="ddim", steps=2)
        run(f"ddim{ddim_steps}_batch{Bd}", Bd, lambda: m.sample(Bd, 0, sampler="ddim", steps=ddim_steps))
    run(f"ddpm{T}_batch{Bd}", Bd, lambda: m.sample(Bd, 0, sampler="ddpm"))
    out.update(peak_memory(device))
    if not a.skip_one_at_a_time:
        run(f"ddpm{T}_batch1", 1, lambda: m.sample(1, 0, sampler="ddpm"))
        del m
        reset_peak(device)
        paper = DDPM(cfg, device, "fp32")  # the paper's loop: fp32 eager, NCHW, one image at a time
        paper.channels_last = False
        paper.unet.to(memory_format=torch.contiguous_format)
        run(f"paper_fp32_ddpm{T}_batch1", 1, lambda: paper.sample(1, 0, sampler="ddpm"))
        del paper
    ips = out["images_per_s"]
    eff = {"fewer_steps": {"what": f"DDIM-{ddim_steps} vs DDPM-{T}, both at batch {Bd} (same settings)",
                           "ratio": ips[f"ddim{ddim_steps}_batch{Bd}"] / ips[f"ddpm{T}_batch{Bd}"]}}
    if f"ddpm{T}_batch1" in ips:
        eff["batching"] = {"what": f"DDPM-{T} at batch {Bd} vs batch 1 (same settings, same steps)",
                           "ratio": ips[f"ddpm{T}_batch{Bd}"] / ips[f"ddpm{T}_batch1"]}
        eff["precision_layout"] = {"what": f"ours ({out['precision']}, channels_last {out['channels_last']}) vs the "
                                           f"paper's fp32 NCHW loop, both DDPM-{T} at batch 1",
                                   "ratio": ips[f"ddpm{T}_batch1"] / ips[f"paper_fp32_ddpm{T}_batch1"]}
        eff["total_ddim_batched_vs_paper"] = {
            "what": f"the product of the three: our DDIM at batch {Bd} vs the paper's loop",
            "ratio": ips[f"ddim{ddim_steps}_batch{Bd}"] / ips[f"paper_fp32_ddpm{T}_batch1"]}
    if Bd != B:
        eff["fill_batch_ddim"] = {"what": f"DDIM-{ddim_steps} at batch {B} (fills the device) vs batch {Bd}",
                                  "ratio": ips[f"ddim{ddim_steps}_batch{B}"] / ips[f"ddim{ddim_steps}_batch{Bd}"]}
    out["effects"] = eff
    for k, v in eff.items():
        print(f"   {k:28s} x{v['ratio']:.2f}  ({v['what']})")
    achieved = train["forward_flop_per_image"] * T * ips[f"ddpm{T}_batch{Bd}"] / 1e12
    out["achieved_tflops_ddpm"] = finite(achieved)
    if peak:
        out["mfu_ddpm"] = finite(achieved / peak)
    return out


# ---- VGG-19 ----------------------------------------------------------------------------------------


def _bench_classify_module():
    spec = importlib.util.spec_from_file_location("bench_classify", Path(__file__).resolve().parent / "classify.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def bench_vgg(a, params, device) -> dict[str, Any]:
    import torch.nn as nn
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    from synthmri import CLASSES
    from synthmri.classify.config import load_classify
    from synthmri.classify.data import DeviceData, load_images
    from synthmri.classify.train import fit, new_model, predict
    from synthmri.runtime import autocast, autocast_dtype

    raw = params.get("classify", {})
    train = {**raw.get("train", {}), "device": str(device), "seeds": [0]}
    if a.tiny:
        train.update(image_size=32, batch_size=4)
    cfg = load_classify({"model": {**raw.get("model", {}), "pretrained": False},  # same speed as ImageNet weights
                         "train": train})
    size, bs = cfg.train.image_size, cfg.train.batch_size
    per_class = 4 if a.tiny else 128
    epochs = 1 if a.tiny else 3
    workers = 0 if a.tiny else min(8, (__import__("os").cpu_count() or 1))
    bc = _bench_classify_module()
    out: dict[str, Any] = {"arch": cfg.model.arch, "trainable": cfg.model.trainable, "size": size, "batch": bs,
                           "train_images": per_class * len(CLASSES), "timed_epochs": epochs, "warmup_epochs": 1,
                           "loader_workers": workers}
    with tempfile.TemporaryDirectory() as tmp:
        manifest, _ = bc.make_set(Path(tmp), CLASSES, per_class, per_class, 0, size)
        t0 = time.perf_counter()
        images = load_images(manifest, None, CLASSES, size, workers=workers or 1)
        decode_s = time.perf_counter() - t0
        out["decode_images_per_s"] = finite(len(images.paths) / decode_s)
        train_paths = [p for c in CLASSES for p in images.pools.real[c]]
        idx = images.index(train_paths)
        y = torch.tensor([CLASSES.index(c) for c in CLASSES for _ in images.pools.real[c]])
        data = DeviceData.create(images, device, normalize="imagenet", augment="none")

        # ours: the project's fit() on the in-memory uint8 set
        reset_peak(device)
        model = new_model(cfg, len(CLASSES), device, 0)
        out["trainable_params_M"] = round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 3)
        fit(model, data, idx, y, epochs=1, cfg=cfg, seed=0, device=device)  # warm-up
        res = fit(model, data, idx, y, epochs=epochs, cfg=cfg, seed=1, device=device)
        out["ours_images_per_s"] = finite(res.images / res.seconds)
        out.update({f"ours_{k}": v for k, v in peak_memory(device).items()})
        test_idx = images.index([p for p, _ in images.pools.test] + train_paths)
        predict(model, data, test_idx[: 2 * bs], cfg=cfg, device=device)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        predict(model, data, test_idx, cfg=cfg, device=device)
        sync(device)
        out["eval_images_per_s"] = finite(len(test_idx) / (time.perf_counter() - t0))
        del model, data

        # plain: torchvision ImageFolder + DataLoader over the same PNG files, same model and optimiser
        folder = Path(tmp) / "imagefolder"
        for p, c in zip(train_paths, [c for c in CLASSES for _ in images.pools.real[c]]):
            (folder / c).mkdir(parents=True, exist_ok=True)
            (folder / c / Path(p).name).symlink_to(Path(p).resolve())
        tf = T.Compose([T.Grayscale(3), T.Resize((size, size)), T.ToTensor(),
                        T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
        loader = torch.utils.data.DataLoader(ImageFolder(str(folder), transform=tf), batch_size=bs, shuffle=True,
                                             num_workers=workers, pin_memory=device.type == "cuda",
                                             persistent_workers=workers > 0,
                                             generator=torch.Generator().manual_seed(0))
        reset_peak(device)
        model = new_model(cfg, len(CLASSES), device, 0)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr)
        loss_fn = nn.CrossEntropyLoss()
        dtype = autocast_dtype(cfg.train.precision, device)
        seen, start = 0, None
        for epoch in range(1 + epochs):
            if epoch == 1:  # after one warm-up epoch, as ours
                sync(device)
                start, seen = time.perf_counter(), 0
            model.train()
            for xb, yb in loader:
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                if device.type == "cuda":
                    xb = xb.contiguous(memory_format=torch.channels_last)
                with autocast(device, dtype):
                    loss = loss_fn(model(xb).float(), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                seen += len(yb)
        sync(device)
        out["imagefolder_images_per_s"] = finite(seen / (time.perf_counter() - start))
        out.update({f"imagefolder_{k}": v for k, v in peak_memory(device).items()})
        del model, loader
    out["ours_vs_imagefolder"] = finite(out["ours_images_per_s"] / out["imagefolder_images_per_s"])
    print(f"   VGG-19 {size}px batch {bs} ({out['trainable_params_M']} M trainable): ours "
          f"{out['ours_images_per_s']:.1f} img/s, ImageFolder + DataLoader ({workers} workers) "
          f"{out['imagefolder_images_per_s']:.1f} img/s -> x{out['ours_vs_imagefolder']:.2f}; eval "
          f"{out['eval_images_per_s']:.1f} img/s; decode {out['decode_images_per_s']:.1f} img/s", flush=True)
    return out


# ---- Inception -------------------------------------------------------------------------------------


def bench_inception(a, params, device) -> dict[str, Any]:
    from synthmri.fidelity.features import build_extractor, extract

    fid = params.get("fidelity", {})
    bs = 2 if a.tiny else int(fid.get("batch_size", 32))
    n = 4 if a.tiny else 1024
    size = 32 if a.tiny else int(params.get("preprocess", {}).get("size", 256))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (size, size), dtype=np.uint8) for _ in range(n)]
    ext = build_extractor(device, random_seed=0)
    extract(ext, images[:bs], bs, "warm-up")
    reset_peak(device)
    sync(device)
    t0 = time.perf_counter()
    extract(ext, images, bs, "inception")
    sync(device)
    rate = finite(n / (time.perf_counter() - t0))
    print(f"   Inception features ({size}px -> 299, batch {bs}): {rate:.1f} img/s", flush=True)
    return {"images": n, "size": size, "batch": bs, "weights": "seeded random (same cost as the real ones)",
            "images_per_s": rate, **peak_memory(device)}


# ---- projection ------------------------------------------------------------------------------------


def workload(params: dict[str, Any]) -> dict[str, Any]:
    """Images each GPU stage of the paper profile pushes through its network (counts, no timing)."""
    from synthmri.classify.config import load_classify, load_ratio, ratio_scenario
    from synthmri.classify.mixtures import Pools, plan_mixture
    from synthmri.classify.run import draw_seed
    from synthmri.generative.config import load_generate, load_generator

    classes = tuple(sorted(params["data"]["classes"]))
    gen = load_generator(params.get("generator"))
    generate = load_generate(params.get("generate"))
    cls = load_classify(params.get("classify"))
    table2 = dict(params["preprocess"]["balance"]["counts"])
    real = {c: int(table2.get(c, NOTUMOR_REAL)) for c in classes}
    gen_train = {c: GENERATOR_TRAIN_IMAGES[c] for c in classes}
    per_epoch = {c: (n // gen.ddpm.batch_size) * gen.ddpm.batch_size for c, n in gen_train.items()}  # full batches
    synthetic = generate.n_per_class
    test = [(f"test/{i}", classes[i % len(classes)]) for i in range(TEST_IMAGES)]
    pools = Pools(real={c: [f"real/{c}/{i}" for i in range(n)] for c, n in real.items()},
                  synthetic={c: [f"syn/{c}/{i}" for i in range(synthetic)] for c in classes}, test=test)
    scenarios = dict(cls.scenarios)
    scenarios["ratio"] = ratio_scenario(load_ratio(params.get("ratio", 0)))  # the `ratio` stage
    train_images = eval_images = 0
    per_scenario = {}
    for name, scen in scenarios.items():
        seeds = scen.seeds or cls.train.seeds
        t = e = 0
        for seed in seeds:
            d = draw_seed(scen, cls, seed)
            phases = [(plan_mixture(pools, scen, classes, d, name).size, cls.train.epochs)]
            if scen.finetune is not None:
                phases.append((plan_mixture(pools, scen.finetune, classes, d, name).size, scen.finetune_epochs))
            for size, epochs in phases:
                t += size * epochs
                e += TEST_IMAGES * (epochs + 1)  # fit() scores the test set after every epoch, then the phase's evaluation
        per_scenario[name] = {"seeds": len(seeds), "train_images": t, "eval_images": e}
        train_images += t
        eval_images += e
    stages = len(scenarios)
    return {
        "classes": list(classes),
        "generator_epochs": gen.ddpm.epochs,
        "generator_train_images_per_class": gen_train,
        "generator_images_per_epoch_per_class": per_epoch,
        "generator_train_images": sum(per_epoch.values()) * gen.ddpm.epochs,
        "generator_batch": gen.ddpm.batch_size,
        "samples": synthetic * len(classes),
        "sampler": generate.sampler,
        "classify_real_per_class": real,
        "test_images": TEST_IMAGES,
        "classify_scenarios": per_scenario,
        "classify_train_images": train_images,
        "classify_eval_images": eval_images,
        # every classify/ratio stage decodes every real and synthetic image once
        "classify_decode_images": stages * (sum(real.values()) + TEST_IMAGES + synthetic * len(classes)),
        # fidelity: real Training, Testing (and its resampled copy) and the synthetic images of every class
        "inception_images": sum(real.values()) + 2 * TEST_IMAGES + synthetic * len(classes),
    }


def project(w: dict[str, Any], res: dict[str, Any], peak: float | None) -> dict[str, Any]:
    """Seconds per stage = images / measured images per second; `rate` is the path of that rate in the JSON."""
    train_key = res["ddpm_train"]["configured"]
    sample = res["ddpm_sample"]
    T, B, Bd = sample["timesteps"], sample["batch"], sample["ddpm_batch"]
    sample_key = f"ddim{sample['ddim_steps']}_batch{B}" if w["sampler"] == "ddim" else f"ddpm{T}_batch{Bd}"
    rows = [
        ("train_generators", w["generator_train_images"], ["ddpm_train", "variants", train_key, "images_per_s"]),
        ("sample", w["samples"], ["ddpm_sample", "images_per_s", sample_key]),
        ("fidelity_features", w["inception_images"], ["inception", "images_per_s"]),
        ("classify_train", w["classify_train_images"], ["vgg19", "ours_images_per_s"]),
        ("classify_eval", w["classify_eval_images"], ["vgg19", "eval_images_per_s"]),
        ("classify_decode", w["classify_decode_images"], ["vgg19", "decode_images_per_s"]),
    ]
    stages = {}
    for name, n, path in rows:
        rate = res
        for k in path:
            rate = rate[k]
        stages[name] = {"images": n, "rate": path, "images_per_s": rate, "seconds": n / rate}
    total = sum(s["seconds"] for s in stages.values())
    out: dict[str, Any] = {"stages": stages, "total_s": total, "target_s": TARGET_S, "meets_target": total <= TARGET_S,
                           "generators_gpu_hours": (stages["train_generators"]["seconds"] + stages["sample"]["seconds"]) / 3600,
                           "paper_generator_gpu_hours": PAPER_GENERATOR_GPU_HOURS,
                           "not_included": "the CPU data half (ingest, audit, dedup, preprocess), the report, process "
                                           "start-up and model loading between DVC stages"}
    # Why: the FLOP floor of the DDPM stages at the device's peak, and the cheaper sampler measured beside.
    tr, sm = res["ddpm_train"], res["ddpm_sample"]
    why = {}
    flop_train = w["generator_train_images"] / w["generator_batch"] * tr["train_flop_per_step"]
    flop_sample = w["samples"] * (T if w["sampler"] == "ddpm" else sm["ddim_steps"]) * tr["forward_flop_per_image"]
    why["train_generators"] = {"pflop": flop_train / 1e15,
                               "seconds_at_peak": flop_train / (peak * 1e12) if peak else None,
                               "mfu": tr["variants"][train_key].get("mfu")}
    why["sample"] = {"pflop": flop_sample / 1e15, "seconds_at_peak": flop_sample / (peak * 1e12) if peak else None,
                     "mfu": sm.get("mfu_ddpm")}
    ddim_key = f"ddim{sm['ddim_steps']}_batch{B}"
    why["sample"]["seconds_with_ddim"] = w["samples"] / sm["images_per_s"][ddim_key]
    out["why"] = why
    return out


def explain(p: dict[str, Any], w: dict[str, Any], res: dict[str, Any], device_name: str) -> list[str]:
    lines = []
    total, target = p["total_s"], p["target_s"]
    lines.append(f"projected GPU stages of the whole paper on {device_name}: {total / 60:.1f} min "
                 f"(target {target / 60:.0f} min on one H100-class GPU: {'met' if p['meets_target'] else 'MISSED'})")
    for name, s in sorted(p["stages"].items(), key=lambda kv: -kv[1]["seconds"]):
        lines.append(f"  {name:18s} {s['seconds'] / 60:8.1f} min  {s['images']:>12,} images at {s['images_per_s']:10.1f} "
                     f"img/s ({s['seconds'] / total:5.1%})")
    lines.append(f"  generators (train + sample): {p['generators_gpu_hours']:.2f} GPU-hours here vs the paper's "
                 f"~{p['paper_generator_gpu_hours']:.0f} GPU-hours (x{p['paper_generator_gpu_hours'] / p['generators_gpu_hours']:.1f})")
    lines.append(f"  not included: {p['not_included']}")
    if p["meets_target"]:
        return lines
    lines.append(f"where it misses ({(total - target) / 60:.1f} min over), every stage over a tenth of the target, and why:")
    for name, s in sorted(p["stages"].items(), key=lambda kv: -kv[1]["seconds"]):
        if s["seconds"] <= target / 10:
            continue
        why = p["why"].get(name)
        line = f"  {name}: {s['seconds'] / 60:.1f} min"
        if why:
            mfu = f"{why['mfu']:.0%} MFU" if why.get("mfu") else "MFU unknown (no peak)"
            line += f"; {why['pflop']:.1f} PFLOP at {mfu}"
            if why.get("seconds_at_peak"):
                floor = why["seconds_at_peak"]
                line += f"; even at 100% of peak {floor / 60:.1f} min: " + (
                    "the workload alone exceeds the target (fewer epochs or steps, or a smaller model)" if floor > target
                    else "the efficiency (MFU), not the workload, misses it")
            if name == "sample":
                line += f"; DDIM-{res['ddpm_sample']['ddim_steps']} would take {why['seconds_with_ddim'] / 60:.1f} min"
        else:
            line += f"; {s['images']:,} images at {s['images_per_s']:.0f} img/s (rate-bound: see its section)"
        lines.append(line)
    return lines


# ---- FLOP floors (no timing) ------------------------------------------------------------------------


def count_flops(a, params, cfg, device) -> dict[str, float]:
    """FLOPs per image of each network as our code runs it (torch.utils.flop_counter; matmuls and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    from synthmri import CLASSES
    from synthmri.classify.config import load_classify
    from synthmri.classify.train import new_model
    from synthmri.fidelity.features import build_extractor
    from synthmri.runtime import generator

    out: dict[str, float] = {}
    p = cfg.ddpm
    m = build_ddpm(cfg, device, "fp32", False, False)
    x = m.to_input(torch.randint(0, 256, (p.batch_size, 1, p.image_size, p.image_size), dtype=torch.uint8, device=device))
    with FlopCounterMode(display=False) as fc:
        m.train_step(x, generator(device, 0))
    out["ddpm_train_per_image"] = fc.get_total_flops() / p.batch_size
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        m.unet(x[:1], timesteps=torch.zeros(1, dtype=torch.long, device=device))
    out["ddpm_forward_per_image"] = fc.get_total_flops()
    del m, x

    raw = params.get("classify", {})
    train = {**raw.get("train", {}), "device": str(device), "seeds": [0]} | ({"image_size": 32} if a.tiny else {})
    ccfg = load_classify({"model": {**raw.get("model", {}), "pretrained": False}, "train": train})
    size, b = ccfg.train.image_size, 2  # FLOPs are linear in the batch
    model = new_model(ccfg, len(CLASSES), device, 0)
    xb = torch.randn(b, 3, size, size, device=device)
    with FlopCounterMode(display=False) as fc:  # frozen layers: no weight gradients, and none below the first trainable layer
        torch.nn.functional.cross_entropy(model(xb), torch.zeros(b, dtype=torch.long, device=device)).backward()
    out["vgg19_train_per_image"] = fc.get_total_flops() / b
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model.eval()(xb)
    out["vgg19_eval_per_image"] = fc.get_total_flops() / b
    del model

    ext = build_extractor(device, random_seed=0)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        ext.module(torch.zeros(1, 3, size, size, dtype=torch.uint8, device=device))
    out["inception_per_image"] = fc.get_total_flops()
    return {k: finite(v) for k, v in out.items()}


def floors(w: dict[str, Any], flops: dict[str, float], peak: float, timesteps: int, ddim_steps: int) -> dict[str, Any]:
    """Seconds each stage needs at 100 % of `peak` TFLOP/s: no GPU can do better."""
    work = {
        "train_generators": w["generator_train_images"] * flops["ddpm_train_per_image"],
        f"sample_ddpm{timesteps}": w["samples"] * timesteps * flops["ddpm_forward_per_image"],
        f"sample_ddim{ddim_steps} (alternative)": w["samples"] * ddim_steps * flops["ddpm_forward_per_image"],
        "fidelity_features": w["inception_images"] * flops["inception_per_image"],
        "classify_train": w["classify_train_images"] * flops["vgg19_train_per_image"],
        "classify_eval": w["classify_eval_images"] * flops["vgg19_eval_per_image"],
    }
    stages = {k: {"pflop": v / 1e15, "seconds_at_peak": v / (peak * 1e12)} for k, v in work.items()}
    total = sum(v["seconds_at_peak"] for k, v in stages.items() if "alternative" not in k)
    return {"peak_tflops": peak, "stages": stages, "total_s_at_peak": total, "target_s": TARGET_S,
            "min_mfu_for_target": total / TARGET_S}


def main_flops(a, params, cfg, device) -> dict[str, Any]:
    t0 = time.perf_counter()
    peak = a.peak_tflops or 989.0
    flops = count_flops(a, params, cfg, device)
    w = workload(params)
    f = floors(w, flops, peak, cfg.ddpm.timesteps, 50)
    res = {"mode": "flops-only" + ("-tiny" if a.tiny else ""), "device": str(device), "machine": machine(device),
           "flop_per_image": flops, "workload": w, "floors": f, "wall_s": round(time.perf_counter() - t0, 2)}
    print(f"FLOPs per image (our code, torch.utils.flop_counter): " +
          ", ".join(f"{k} {v / 1e9:.1f} G" for k, v in flops.items()))
    print(f"floor of each GPU stage at 100% of {peak:g} TFLOP/s (dense bf16):")
    for k, v in f["stages"].items():
        print(f"  {k:30s} {v['pflop']:10.2f} PFLOP  {v['seconds_at_peak'] / 60:8.1f} min")
    print(f"  total (DDPM sampler as configured) {f['total_s_at_peak'] / 60:.1f} min at 100% MFU; the 45-min target "
          f"needs >= {f['min_mfu_for_target']:.0%} MFU on average")
    path = write_result(a.out, "gpu-flops" + ("-tiny" if a.tiny else ""), res)
    print(f"\nresults: {path}")
    return res


# ---- main ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    a = parse(argv)
    from synthmri.generative.config import load_generator
    from synthmri.runtime import resolve_device, set_threads

    t_start = time.perf_counter()
    set_threads(a.threads)
    device = resolve_device(a.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    if device.type != "cuda" and not (a.tiny or a.flops_only):
        print("warning: no CUDA device; the paper's sizes on a CPU take hours. Use --tiny for a dry run.",
              file=sys.stderr)
    peak = peak_tflops(a, name)
    params = paper_params(a.params)
    cfg = load_generator(ddpm_settings(a, params))
    if a.flops_only:
        return main_flops(a, params, cfg, device)
    log: dict[str, float] = {}
    res: dict[str, Any] = {"mode": "tiny" if a.tiny else "full", "device": name, "peak_bf16_tflops": peak,
                           "peak_source": "--peak-tflops" if a.peak_tflops else ("table" if peak else None),
                           "machine": machine(device),
                           "settings": {"tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
                                        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
                                        "cudnn_benchmark": torch.backends.cudnn.benchmark}}
    out_name = f"gpu-{slug(name)}" + ("-tiny" if a.tiny else "")

    def save_partial() -> None:  # a crash in a later section keeps the figures measured so far
        write_result(a.out, out_name, {**res, "partial": True, "section_seconds": log})

    with tiny_compile(a.tiny):
        with section("DDPM training (paper config)", log):
            res["ddpm_train"] = bench_ddpm_train(a, cfg, device, peak)
    save_partial()
    with section("DDPM sampling", log):
        res["ddpm_sample"] = bench_ddpm_sample(a, cfg, device, peak, res["ddpm_train"])
    save_partial()
    with section("VGG-19 training (paper config)", log):
        res["vgg19"] = bench_vgg(a, params, device)
    save_partial()
    with section("Inception features", log):
        res["inception"] = bench_inception(a, params, device)
    w = workload(params)
    res["workload"] = w
    res["projection"] = project(w, res, peak)
    res["section_seconds"] = log
    res["wall_s"] = round(time.perf_counter() - t_start, 2)
    lines = explain(res["projection"], w, res, name)
    print("\n" + "\n".join(lines))
    res["projection"]["summary"] = lines
    path = write_result(a.out, out_name, {**res, "partial": False})
    print(f"\nresults: {path}  (wall {res['wall_s']:.0f} s)")
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
