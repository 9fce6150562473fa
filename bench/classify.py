"""Training images/s: our in-memory uint8 set + on-device batches vs a plain torchvision ImageFolder +
DataLoader pipeline, same model, same optimiser, same training set (a `ratio` mix), same epochs.

    python bench/classify.py                       # a generated set at 64 px, mobilenet_v2, CPU
    python bench/classify.py --processed data/processed/manifest.csv --synthetic data/synthetic --size 256 --arch vgg19

Prints one JSON line per pipeline and a markdown row for BENCHMARKS.md, and writes both pipelines' figures,
the command and the machine to bench/results/classify-<arch>-<size>px-<device>.json (or --out).
`--threads 1` on a shared CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchutil import machine as machine_info, write_result  # noqa: E402


def _pattern(ci: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A learnable class signal under noise (as in tests/test_classify_data.py)."""
    img = rng.normal(70, 25, (size, size))
    q = size // 2
    region = [(slice(None, None, 4), slice(None)), (slice(None), slice(None, None, 4)),
              (slice(None, q), slice(None, q)), (slice(q, None), slice(q, None))][ci]
    img[region] += 120
    return np.clip(img, 0, 255).astype(np.uint8)


def make_set(root: Path, classes, train: int, test: int, synthetic: int, size: int) -> tuple[Path, Path]:
    """A processed-layout set (manifest + PNGs) and a synthetic folder, like the pipeline's."""
    from synthmri.images import write_png

    rng = np.random.default_rng(0)
    rows = []
    for ci, c in enumerate(classes):
        for split, n in (("train", train), ("test", test)):
            for i in range(n):
                out = root / "processed" / split / c / f"{c}_{i:04d}.png"
                write_png(out, _pattern(ci, size, rng))
                rows.append({"split": split, "class": c, "status": "kept", "sha256": f"{split}{c}{i}", "out_path": out.as_posix()})
        syn = []
        for i in range(synthetic):
            out = root / "synthetic" / c / f"{c}_{i:04d}.png"
            write_png(out, _pattern(ci, size, rng))
            syn.append({"path": out.as_posix(), "class": c, "index": i, "seed": 0})
        (root / "synthetic" / c).mkdir(parents=True, exist_ok=True)
        pd.DataFrame(syn, columns=["path", "class", "index", "seed"]).to_csv(root / "synthetic" / c / "manifest.csv", index=False)
    pd.DataFrame(rows).to_csv(root / "processed" / "manifest.csv", index=False)
    return root / "processed" / "manifest.csv", root / "synthetic"


def ours(args, cfg, classes, manifest, synthetic, device):
    from synthmri.classify.config import ratio_scenario
    from synthmri.classify.data import DeviceData, load_images
    from synthmri.classify.mixtures import plan_mixture
    from synthmri.classify.train import fit, new_model

    t0 = time.perf_counter()
    images = load_images(manifest, synthetic, classes, args.size, workers=args.workers or 1)
    decode_s = time.perf_counter() - t0
    plan = plan_mixture(images.pools, ratio_scenario(args.ratio), classes, 0)
    data = DeviceData.create(images, device, normalize="imagenet", augment="none")
    idx = images.index([p for p, _, _ in plan.rows])
    y = torch.tensor([sorted(classes).index(c) for _, c, _ in plan.rows])
    model = new_model(cfg, len(classes), device, 0)
    result = fit(model, data, idx, y, epochs=args.epochs, cfg=cfg, seed=0, device=device)
    return plan, {"pipeline": "ours (uint8 in memory, batches on device)", "images": result.images,
                  "train_s": round(result.seconds, 2), "decode_once_s": round(decode_s, 2),
                  "images_per_s": round(result.images / result.seconds, 1),
                  "images_per_s_incl_decode": round(result.images / (result.seconds + decode_s), 1)}


def plain(args, cfg, classes, plan, device):
    """torchvision ImageFolder over the same files (linked into class folders) + DataLoader."""
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    from synthmri.classify.train import new_model
    from synthmri.runtime import autocast, autocast_dtype

    with tempfile.TemporaryDirectory() as tmp:
        for i, (path, c, src) in enumerate(plan.rows):
            dst = Path(tmp) / c / f"{i:06d}_{src}{Path(path).suffix}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(Path(path).resolve(), dst)
        tf = T.Compose([T.Grayscale(3), T.Resize((args.size, args.size)), T.ToTensor(),
                        T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
        ds = ImageFolder(tmp, transform=tf)
        loader = torch.utils.data.DataLoader(ds, batch_size=cfg.train.batch_size, shuffle=True, num_workers=args.workers,
                                             pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(0),
                                             persistent_workers=args.workers > 0)
        model = new_model(cfg, len(classes), device, 0)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr)
        loss_fn = nn.CrossEntropyLoss()
        dtype = autocast_dtype(cfg.train.precision, device)
        seen, t0 = 0, time.perf_counter()
        for _ in range(args.epochs):
            model.train()
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if device.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast(device, dtype):
                    loss = loss_fn(model(x).float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                seen += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        secs = time.perf_counter() - t0
    return {"pipeline": f"torchvision ImageFolder + DataLoader (num_workers={args.workers})", "images": seen,
            "train_s": round(secs, 2), "images_per_s": round(seen / secs, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processed", type=Path, help="processed manifest.csv (default: generate a set)")
    ap.add_argument("--synthetic", type=Path, help="synthetic folder (with --processed)")
    ap.add_argument("--arch", default="mobilenet_v2")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--ratio", type=float, default=1.0)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--per-class", type=int, default=64, help="generated set: real training images per class")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers (and our decode processes)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default under bench/results/)")
    args = ap.parse_args()

    from synthmri import CLASSES
    from synthmri.classify.config import load_classify
    from synthmri.runtime import resolve_device

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cfg = load_classify({"model": {"arch": args.arch, "pretrained": False, "trainable": "all"},
                         "train": {"image_size": args.size, "epochs": args.epochs, "batch_size": args.batch_size,
                                   "seeds": [0], "threads": args.threads, "device": args.device,
                                   "precise_bn": False}})  # like for like: the plain loop has no extra BN pass
    with tempfile.TemporaryDirectory() as tmp:
        if args.processed:
            manifest, synthetic = args.processed, args.synthetic
        else:
            syn = int(np.ceil(args.per_class * args.ratio))
            manifest, synthetic = make_set(Path(tmp), CLASSES, args.per_class, 4, syn, args.size)
        plan, a = ours(args, cfg, CLASSES, manifest, synthetic, device)
        b = plain(args, cfg, CLASSES, plan, device)
    machine = (torch.cuda.get_device_name(device) if device.type == "cuda"
               else f"{platform.processor() or platform.machine()}, {args.threads} torch thread(s)")
    common = {"arch": args.arch, "size": args.size, "ratio": args.ratio, "train_images": plan.size,
              "epochs": args.epochs, "batch": args.batch_size, "device": str(device), "machine": machine}
    for r in (a, b):
        print(json.dumps(common | r))
    path = write_result(args.out, f"classify-{args.arch}-{args.size}px-{device.type}",
                        {**common, "machine": machine_info(device), "ours": a, "imagefolder": b,
                         "ratio_ours_vs_imagefolder": a["images_per_s"] / b["images_per_s"]})
    print(f"results: {path}")
    print(f"| {args.arch} {args.size}px ratio {args.ratio:g}, {plan.size} imgs x {args.epochs} ep, {machine} | "
          f"{a['images_per_s']} ({a['images_per_s_incl_decode']} incl. one decode) | {b['images_per_s']} | "
          f"{a['images_per_s'] / b['images_per_s']:.2f}x |")


if __name__ == "__main__":
    main()
