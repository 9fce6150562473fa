"""The data half at Kaggle scale (issue 13 §4): ingest to preprocess (every stage between the two in dvc.yaml;
today ingest, audit, dedup, link, split, preprocess), each stage's wall time and peak memory, on a Kaggle-sized
demo set; then the same at --scale times the size; then fidelity's feature extraction and the classifier's
loader on what preprocess wrote.

    python bench/pipeline.py                                   # 7,023 images (Kaggle's counts)
    python bench/pipeline.py --images 700 --scale 10           # 700, then 7,000: the scaling check
    python bench/pipeline.py --images 200 --pool 2 --features 2 --out /tmp/x.json   # about the test's dry run

The set (bench/kaggle_set.py) is built once per (images, seed, pool) and cached under --cache-dir. Each stage
runs as DVC runs it: dvc.yaml's `synthmri <stage>` command line, in its own process, in a scratch folder, with
the paper profile's params.yaml (composed from conf/ with `profile=paper`, plus any --set overrides). There is
no data/raw/figshare there: the link stage runs and matches nothing, as in a checkout without the figshare
release. Per stage: wall time, CPU time, and peak memory (benchutil.run_measured: the kernel's high-water mark
of the largest process, and the sampled sum over the process and its workers). The data half's peak is the
highest stage peak (the stages run one after another).

Features: `--features N` Training PNGs through fidelity's decoding (features.load_images) and the
random-weights Inception (features.build_extractor, extract) on the CPU. Loader: the classifier's
`classify.data.load_images` over every kept image. Both in their own process, with the same memory figures.

Writes the figures, the command and the machine to bench/results/pipeline-<images>[-x<scale>]-cpu.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import kaggle_set  # noqa: E402
from benchutil import finite, machine, run_measured, write_result  # noqa: E402

FIRST, LAST = "ingest", "preprocess"  # the data half: these two and every stage between them in dvc.yaml


def data_stages() -> dict[str, list[str]]:
    """dvc.yaml's commands of the data half, in its order, as argument lists (after `synthmri`).

    Read from dvc.yaml, so the bench runs what `dvc repro` runs; only ${data.raw} is filled in (run_data_half)."""
    import shlex

    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    names = list(stages)
    out = {}
    for name in names[names.index(FIRST):names.index(LAST) + 1]:
        argv = shlex.split(stages[name]["cmd"])
        if argv[0] != "synthmri" or any("${" in a for a in argv if a != "${data.raw}"):
            raise ValueError(f"dvc.yaml stage {name}: {stages[name]['cmd']!r} is not a plain synthmri command")
        out[name] = argv[1:]
    return out


STAGES = tuple(data_stages())
TARGET_S, TARGET_GB, TARGET_GROWTH = 180.0, 4.0, 12.0  # issue 13 §4, at 7,023 images on 2 cores


def synthmri() -> list[str]:
    exe = Path(sys.executable).parent / "synthmri"
    return [str(exe)] if exe.is_file() else [sys.executable, "-c", "from synthmri.cli import app; app()"]


def paper_params(out: Path, overrides: list[str]) -> Path:
    from synthmri.profiles import write_params

    return write_params(["profile=paper", *overrides], out, conf_dir=ROOT / "conf")


def run_data_half(raw: Path, work: Path, params: Path) -> dict:
    """The four stages on `raw`, in `work` (emptied first); per stage its figures and metrics."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    env = {**os.environ, "COLUMNS": "100"}
    out: dict = {}
    for stage in STAGES:
        args = [str(raw) if a == "${data.raw}" else a for a in data_stages()[stage]]
        fig = run_measured([*synthmri(), *args, "--params", str(params)], cwd=work, env=env)
        fig["metrics"] = json.loads((work / "metrics" / f"{stage}.json").read_text())
        out[stage] = fig
    return out


def summarise(stages: dict, built: dict) -> dict:
    """Totals, the slowest stage, and the counts of each stage beside what the set holds."""
    m = {s: stages[s]["metrics"] for s in STAGES}
    total = sum(stages[s]["wall_s"] for s in STAGES)
    peak = {k: max((stages[s][k] or 0) for s in STAGES) for k in ("maxrss_gb", "tree_rss_gb", "tree_pss_gb")}
    dedup = m["dedup"]
    counts = {
        "built": built["per_split_class"],
        "ingest": m["ingest"]["per_split_class"],
        "ingest_quarantined": m["ingest"]["quarantined"],
        "audit_images": sum(v["images"] for v in m["audit"]["blur"]["per_class"].values()),
        "planted": built["planted"],
        "dedup_removed": {"within_train": dedup["train"]["removed_within"], "within_test": dedup["test"]["removed_within"],
                          "cross": dedup["cross_split"]["removed"]},
        "preprocess": m["preprocess"]["reconcile"],
        "preprocess_removed": m["preprocess"]["removed"],
    }
    return {"total_s": round(total, 2), "total_cpu_s": round(sum(stages[s]["cpu_s"] for s in STAGES), 2), "peak": peak,
            "slowest": max(STAGES, key=lambda s: stages[s]["wall_s"]),
            "share_s": {s: round(stages[s]["wall_s"] / total, 3) for s in STAGES}, "counts": counts}


def check_counts(c: dict) -> None:
    """The stages saw exactly the set built: a mismatch is a bench or stage bug, not a figure."""
    problems = []
    if c["ingest"] != c["built"] or c["ingest_quarantined"]:
        problems.append(f"ingest {c['ingest']} (quarantined {c['ingest_quarantined']}) != built {c['built']}")
    n = sum(sum(v.values()) for v in c["built"].values())
    if c["audit_images"] != n:
        problems.append(f"audit saw {c['audit_images']} images, built {n}")
    p, d = c["planted"], c["dedup_removed"]
    if (d["within_train"], d["within_test"], d["cross"]) != (p["within_train"], p["within_test"], p["leaks"]):
        problems.append(f"dedup removed {d}, planted {p}")
    if c["preprocess"]["in"] != n:
        problems.append(f"preprocess read {c['preprocess']['in']} rows, built {n}")
    if problems:
        raise RuntimeError("counts do not reconcile: " + "; ".join(problems))


# ---- fidelity features and the classifier's loader, each in its own process -------------------------


def _cpu() -> float:
    """CPU seconds of this process (all threads) and of its finished worker processes."""
    import resource

    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + c.ru_utime + c.ru_stime


def child(kind: str, manifest: str, n: int, out: str) -> None:
    """Run in a child process (`--child`): time one part and write its figures to `out`."""
    import pandas as pd

    df = pd.read_csv(manifest, keep_default_na=False)
    kept = df[df["status"] == "kept"]
    classes = list(kaggle_set.CLASSES)
    if kind == "loader":
        from synthmri.classify.data import load_images

        t0, c0 = time.perf_counter(), _cpu()  # after the imports (torch): the figure is the loader's
        images = load_images(manifest, None, classes, 256)
        res = {"images": int(images.pixels.shape[0]), "decode_s": time.perf_counter() - t0, "decode_cpu_s": _cpu() - c0,
               "tensor_gb": images.pixels.numel() / 2**30}
    else:
        import torch

        from synthmri.fidelity.features import build_extractor, extract, load_images

        t0 = time.perf_counter()
        paths = list(kept[kept["split"] == "train"]["out_path"])[:n]
        s = load_images("bench", paths, 50, None)
        t1 = time.perf_counter()
        ex = build_extractor(torch.device("cpu"), random_seed=0)
        t2, c2 = time.perf_counter(), _cpu()
        feats = extract(ex, s.images, 32, "features")
        t3 = time.perf_counter()
        res = {"images": len(s), "decode_s": t1 - t0, "build_s": t2 - t1, "extract_s": t3 - t2,
               "extract_cpu_s_per_image": (_cpu() - c2) / max(1, len(s)),
               "threads": torch.get_num_threads(), "layers": sorted(feats)}
    res["kept_images"] = int(len(kept))
    Path(out).write_text(json.dumps(res))


def measure_child(kind: str, work: Path, n: int) -> dict:
    out = work / f"{kind}.json"
    fig = run_measured([sys.executable, str(Path(__file__).resolve()), "--child", kind,
                        str(work / "data/processed/manifest.csv"), str(n), str(out)], cwd=work)
    res = json.loads(out.read_text())
    fig.update(res)
    if kind == "loader":
        fig["images_per_s"] = round(finite(res["images"] / res["decode_s"]), 1)
    else:
        fig["images_per_s"] = round(finite(res["images"] / res["extract_s"]), 2)
        fig["projected_kept_s"] = round(res["kept_images"] / fig["images_per_s"], 1)  # every kept image once
    return fig


# ---- main -----------------------------------------------------------------------------------------


def one_size(n: int, args, params: Path) -> dict:
    raw, built = kaggle_set.build(n, args.cache_dir, seed=args.seed, pool=args.pool, workers=args.workers)
    work = args.workdir / f"n{n}"
    stages = run_data_half(raw, work, params)
    summary = summarise(stages, built)
    check_counts(summary["counts"])
    for s in STAGES:  # the stage metrics are in the scratch folder; keep only the figures here
        stages[s].pop("metrics")
    res = {"images": n, "set": built, "stages": stages, **summary}
    if args.loader:
        res["loader"] = measure_child("loader", work, 0)
    if args.features:
        res["features"] = measure_child("features", work, args.features)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=kaggle_set.KAGGLE_TOTAL, help="files in the set (7,023: Kaggle's)")
    ap.add_argument("--scale", type=int, default=1, help="also run at images x scale and report the growth (e.g. 10)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pool", type=int, default=48, help="rendered slices per class and split")
    ap.add_argument("--workers", type=int, default=0, help="processes building the set; 0 = all cores")
    ap.add_argument("--cache-dir", type=Path, default=Path("~/.cache/synthmri/bench").expanduser())
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/synthmri-bench-pipeline"), help="stage outputs (emptied)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="params override on top of profile=paper (as dvc exp run -S)")
    ap.add_argument("--features", type=int, default=64, help="Training images through fidelity's Inception; 0 = skip")
    ap.add_argument("--no-loader", dest="loader", action="store_false", help="skip the classifier's loader")
    ap.add_argument("--keep", action="store_true", help="keep the stage outputs in --workdir")
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default under bench/results/)")
    ap.add_argument("--child", nargs=4, metavar=("KIND", "MANIFEST", "N", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        kind, manifest, n, out = args.child
        child(kind, manifest, int(n), out)
        return {}

    args.workdir.mkdir(parents=True, exist_ok=True)
    params = paper_params(args.workdir / "params.yaml", args.overrides)
    sizes = [args.images] + ([args.images * args.scale] if args.scale > 1 else [])
    runs = {}
    for n in sizes:
        runs[str(n)] = r = one_size(n, args, params)
        print(f"{n} images: " + ", ".join(f"{s} {r['stages'][s]['wall_s']:.1f} s" for s in STAGES)
              + f"; total {r['total_s']:.1f} s ({r['total_cpu_s']:.0f} s CPU), peak {r['peak']['tree_pss_gb']} GB (PSS sum), "
              f"{r['peak']['maxrss_gb']} GB (largest process)", flush=True)
    report = {"sizes": sizes, "runs": runs, "overrides": args.overrides, "loadavg_after": os.getloadavg(),
              "targets": {"total_s": TARGET_S, "peak_gb": TARGET_GB, "growth": TARGET_GROWTH}}
    if len(sizes) == 2:
        a, b = runs[str(sizes[0])], runs[str(sizes[1])]
        report["growth"] = {
            "images": args.scale,
            "total": round(b["total_s"] / a["total_s"], 2),
            **{s: round(b["stages"][s]["wall_s"] / a["stages"][s]["wall_s"], 2) for s in STAGES},
            "total_cpu": round(b["total_cpu_s"] / a["total_cpu_s"], 2),
            "cpu": {s: round(b["stages"][s]["cpu_s"] / a["stages"][s]["cpu_s"], 2) for s in STAGES},
            "peak_pss": round(b["peak"]["tree_pss_gb"] / a["peak"]["tree_pss_gb"], 2) if a["peak"]["tree_pss_gb"] else None,
            "peak_maxrss": round(b["peak"]["maxrss_gb"] / a["peak"]["maxrss_gb"], 2),
        }
        print(f"growth at {args.scale}x the images: {report['growth']}")
    name = f"pipeline-{args.images}" + (f"-x{args.scale}" if args.scale > 1 else "") + "-cpu"
    report["machine"] = machine()
    path = write_result(args.out, name, report)
    print(f"wrote {path}")
    return report


if __name__ == "__main__":
    main()
