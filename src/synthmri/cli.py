"""The `synthmri` command: one subcommand per DVC stage. Each parses, loads its params section,
calls one function, and writes its metrics; the work lives in the modules it calls."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from synthmri import params as P
from synthmri.io import write_json

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
err = Console(stderr=True)

ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to read")]
MetricsOpt = Annotated[Path | None, typer.Option("--metrics", help="where to write this stage's metrics JSON")]


class StageError(Exception):
    """An error a user can fix (bad input, bad params); printed without a traceback."""


# OSErrors a user fixes outside the code (permissions, a read-only or full disk): a message, not a traceback
_DISK_ERRORS = {
    errno.EACCES: "check that the inputs are readable and the output folder is writable by this user",
    errno.EPERM: "check that the inputs are readable and the output folder is writable by this user",
    errno.EROFS: "the output folder is on a read-only file system: choose another output path",
    errno.ENOSPC: "the disk is full: free space or put the outputs on a larger disk, then rerun",
    errno.EDQUOT: "the disk quota is used up: free space or put the outputs elsewhere, then rerun",
    errno.EFBIG: "a file hit the size limit of this file system or process (ulimit -f)",
}


def _error(message: str) -> None:
    """One `error:` line: never wrapped at the terminal's width, brackets in it printed as they are."""
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _run(fn, *args, metrics: Path | None = None, params: Path | None = None, **kwargs):
    """`fn(*args, **kwargs)`, its result written to `metrics` with the provenance read from `params`
    (the profile and raw data it ran on); an error a user can fix becomes one line and exit status 2."""
    try:
        result = fn(*args, **kwargs)
        if metrics is not None and result is not None:
            if params is not None:
                result = {**result, P.PROVENANCE: P.provenance(P.read_params(params))}
            write_json(metrics, result)
    except (StageError, FileNotFoundError, NotADirectoryError, ValueError) as e:  # ParamsError, ImageError: ValueErrors
        _error(str(e))
        raise typer.Exit(2) from None
    except OSError as e:
        if e.errno not in _DISK_ERRORS:
            raise
        where = f": {e.filename}" if e.filename else ""  # atomic writes name their temporary beside the target
        _error(f"{e.strerror}{where} ({_DISK_ERRORS[e.errno]})")
        raise typer.Exit(2) from None
    return result


def _load(section: str, path: Path):
    """One params.yaml section, or a clean error naming the key (never a traceback)."""
    return _run(P.load, section, path)


@app.command("demo-data")
def demo_data(
    out_dir: Annotated[Path, typer.Argument(help="folder to write the demo dataset into")],
    fmt: Annotated[str | None, typer.Option(
        "--format", help="kaggle (Training/<class>/, Testing/<class>/), figshare (.mat v7.3 files packaged like "
                         "the figshare release) or kaggle-from-figshare (OUT/figshare and its Kaggle-layout export "
                         "OUT/kaggle, with the link truth); default: demo.format")] = None,
    params: ParamsOpt = Path("params.yaml"),
):
    """Generate the demo dataset: MNI152 slices with class-specific lesions and planted nuisances."""
    cfg = _load("demo", params)
    fmt = fmt or cfg.format
    if fmt == "figshare":  # its labels fix the classes: meningioma, glioma, pituitary
        from synthmri.data.demo_figshare import make_figshare_demo

        summary = _run(make_figshare_demo, out_dir, cfg)
    elif fmt == "kaggle-from-figshare":  # OUT/figshare and its Kaggle-layout export OUT/kaggle (the link stage)
        from synthmri.data.demo_link import make_kaggle_from_figshare

        summary = _run(make_kaggle_from_figshare, out_dir, cfg)
    elif fmt == "kaggle":
        from synthmri.data.demo import make_demo_dataset

        summary = _run(make_demo_dataset, out_dir, cfg, _load("data", params).classes)
    else:
        _error(f"--format: expected kaggle or figshare (or kaggle-from-figshare, for the link stage), got {fmt!r}")
        raise typer.Exit(2)
    err.print(f"demo dataset written to {out_dir}: {summary}")


@app.command("check-raw")
def check_raw(
    raw: Annotated[Path, typer.Argument(help="the raw dataset (data.raw): a folder or a .zip")],
    out_json: Annotated[Path, typer.Argument(help="a record of what was found (the ingest stage depends on it)")],
    params: ParamsOpt = Path("params.yaml"),
):
    """Stop with one line saying how to get the raw data when data.raw is missing (before DVC's bare error)."""
    found = _run(P.check_raw, raw, _run(P.read_params, params))
    _run(write_json, out_json, found)


@app.command()
def ingest(
    source: Annotated[Path, typer.Argument(
        help="data.format kaggle: a folder or .zip with Training/, Testing/ class folders; figshare: the release's "
             "zip, its inner zips in a folder, or a folder of .mat files")],
    out_dir: Annotated[Path, typer.Argument(help="folder for manifest.csv and quarantine.csv")],
    params: ParamsOpt = Path("params.yaml"),
    metrics: MetricsOpt = None,
):
    """Inventory every file: usable images go to manifest.csv, everything else to quarantine.csv with a reason."""
    from synthmri.data.ingest import ingest as run

    data = _load("data", params)
    _run(run, source, out_dir, _load("ingest", params), data.classes, data.format, data.class_names,
         metrics=metrics, params=params)


@app.command()
def audit(
    manifest: Annotated[Path, typer.Argument(help="ingest's manifest.csv")],
    out_csv: Annotated[Path, typer.Argument(help="manifest with audit columns (blur, plane, intensity)")],
    plots_dir: Annotated[Path, typer.Option("--plots", help="folder for the audit PNG plots")] = Path("plots/audit"),
    params: ParamsOpt = Path("params.yaml"),
    metrics: MetricsOpt = None,
):
    """Paper §3: colour modes, dimensions, blur, imaging plane and intensity histograms."""
    from synthmri.data.audit import audit as run

    _run(run, manifest, out_csv, plots_dir, _load("audit", params), _load("data", params).classes,
         metrics=metrics, params=params)


@app.command()
def dedup(
    manifest: Annotated[Path, typer.Argument(help="audit's manifest")],
    out_csv: Annotated[Path, typer.Argument(help="manifest with duplicate groups and the kept member")],
    params: ParamsOpt = Path("params.yaml"),
    metrics: MetricsOpt = None,
):
    """Paper §4.1: duplicate groups within Training, within Testing and across them (difPy's criterion)."""
    from synthmri.data.dedup import dedup as run

    _run(run, manifest, out_csv, _load("dedup", params), metrics=metrics, params=params)


@app.command()
def split(
    manifest: Annotated[Path, typer.Argument(help="dedup's manifest")],
    out_csv: Annotated[Path, typer.Argument(help="the manifest with split assigned (train, val, test)")],
    params: ParamsOpt = Path("params.yaml"),
    metrics: MetricsOpt = None,
):
    """Assign train / val / test (`split.method`: folders, image, patient, cvind); report patients per split."""
    from synthmri.data.split import split as run

    _run(run, manifest, out_csv, _load("split", params), _load("data", params).classes,
         cross_split=_load("dedup", params).cross_split, metrics=metrics, params=params)


@app.command()
def link(
    manifest: Annotated[Path, typer.Argument(help="dedup's manifest (the Kaggle images)")],
    out_dir: Annotated[Path, typer.Argument(
        help="folder for manifest.csv (the input rows, patient filled where matched, link_* columns) and the "
             "ingested figshare slices")],
    params: ParamsOpt = Path("params.yaml"),
    metrics: MetricsOpt = None,
):
    """Match each Kaggle image to the figshare slice it was exported from (link.figshare): patient IDs, and the
    patients shared by Training and Testing."""
    from synthmri.data.link import link as run

    _run(run, manifest, out_dir, _load("link", params), _load("ingest", params), metrics=metrics, params=params)


@app.command()
def preprocess(
    manifest: Annotated[Path, typer.Argument(help="the split stage's manifest")],
    out_dir: Annotated[Path, typer.Argument(help="folder for {train,val,test}/<class>/*.png and manifest.csv")],
    params: ParamsOpt = Path("params.yaml"),
    metrics: MetricsOpt = None,
):
    """Paper §4.2–4.4: grayscale, aspect filter, resize, balance, rotate, CLAHE, histogram matching."""
    from synthmri.data.preprocess import preprocess as run
    from synthmri.tasks import load_task

    task = _run(load_task, P.read_params(params))  # the class mapping, applied once here (synthmri/tasks.py)
    _run(run, manifest, out_dir, _load("preprocess", params), _load("data", params).classes,
         task=task, metrics=metrics, params=params)


@app.command("params")
def params_cmd(
    overrides: Annotated[list[str] | None, typer.Argument(help="Hydra overrides, e.g. profile=demo preprocess.size=128")] = None,
    out: Annotated[Path, typer.Option("--out", help="file to write")] = Path("params.yaml"),
    conf_dir: Annotated[Path, typer.Option("--conf", help="Hydra config folder")] = Path("conf"),
):
    """Write params.yaml from conf/ and a profile, as `dvc exp run -S profile=...` would."""
    from synthmri.profiles import write_params

    _run(write_params, overrides or [], out, conf_dir)  # checked as every stage will, then written atomically
    err.print(f"wrote {out} ({' '.join(overrides or []) or 'profile=paper'})")


@app.command("train-generator")
def train_generator(
    manifest: Annotated[Path, typer.Argument(help="preprocess's manifest.csv")],
    cls: Annotated[str, typer.Argument(help="the class to train on (one generator per class, paper §5.1)")],
    out_dir: Annotated[Path, typer.Argument(help="folder for model.safetensors + config.json")],
    live_dir: Annotated[Path | None, typer.Option("--live", help="dvclive folder (losses, sample grids)")] = None,
    checkpoints: Annotated[Path | None, typer.Option("--checkpoints", help="folder for the resumable checkpoint")] = None,
    params: ParamsOpt = Path("params.yaml"),
    metrics: MetricsOpt = None,
):
    """Train one class's generator (DDPM or DCGAN: `generator.kind`); resumes from its last checkpoint.

    On N GPUs: `torchrun --standalone --nproc_per_node N --no-python synthmri train-generator ...` (the stage
    does this when `generator.train.launch` is set).
    """
    from synthmri.generative.commands import train_generator_cmd

    _run(train_generator_cmd, manifest, cls, out_dir, params, live_dir, checkpoints, metrics=metrics, params=params)


@app.command("train-generator-shared")
def train_generator_shared(
    manifest: Annotated[Path, typer.Argument(help="preprocess's manifest.csv")],
    out_dir: Annotated[Path, typer.Argument(help="folder for the class-conditional model (or a marker)")],
    live_dir: Annotated[Path | None, typer.Option("--live", help="dvclive folder (losses, sample grids)")] = None,
    checkpoints: Annotated[Path | None, typer.Option("--checkpoints", help="folder for the resumable checkpoint")] = None,
    params: ParamsOpt = Path("params.yaml"),
    metrics: MetricsOpt = None,
):
    """Train one class-conditional generator for every class (`generator.kind: sd_turbo`); for a per-class
    kind (ddpm, dcgan), write a small marker and return. Resumes from its last checkpoint."""
    from synthmri.generative.shared_command import train_shared_cmd

    _run(train_shared_cmd, manifest, out_dir, params, live_dir, checkpoints, metrics=metrics, params=params)


@app.command()
def generate(
    model_dir: Annotated[Path, typer.Argument(help="a trained generator's folder")],
    cls: Annotated[str, typer.Argument(help="its class")],
    out_dir: Annotated[Path, typer.Argument(help="folder for the synthetic PNGs and their manifest.csv")],
    shared: Annotated[Path | None, typer.Option(
        "--shared", help="the class-conditional model's folder (train_generator_shared), used when MODEL_DIR is a marker")] = None,
    params: ParamsOpt = Path("params.yaml"),
    metrics: MetricsOpt = None,
):
    """Sample `generate.n_per_class` synthetic images (DDPM 1,000 steps, or DDIM; sd_turbo img2img or txt2img),
    batched and seeded (paper §5.1.3)."""
    from synthmri.generative.commands import generate_cmd

    _run(generate_cmd, model_dir, cls, out_dir, params, shared, metrics=metrics, params=params)


@app.command()
def fidelity(
    manifest: Annotated[Path, typer.Argument(help="preprocess's manifest.csv (real reference: kept Training images)")],
    synthetic_dir: Annotated[Path, typer.Argument(help="data/synthetic (one folder per class)")],
    out_json: Annotated[Path, typer.Argument(help="metrics/fidelity.json")],
    plots_dir: Annotated[Path, typer.Option("--plots", help="folder for memorisation pairs and table")] = Path("plots/fidelity"),
    params: ParamsOpt = Path("params.yaml"),
):
    """Paper §5.1.3, §6.1: FID and IS per class (plus KID, precision/recall, real-vs-real floor, memorisation)."""
    from synthmri.fidelity.commands import fidelity_cmd

    _run(fidelity_cmd, manifest, synthetic_dir, out_json, plots_dir, params)


weights_app = typer.Typer(no_args_is_help=True, help="Pretrained weight files under models/pretrained/.")
app.add_typer(weights_app, name="weights")


@weights_app.command("fetch")
def weights_fetch(
    names: Annotated[list[str] | None, typer.Argument(
        help="inception, vgg19, resnet50, resnet152, mobilenet_v2 (default: these), sd-turbo (5 GB, only when named)")] = None,
    dest: Annotated[Path, typer.Option("--dest", help="folder to put them in")] = Path("models/pretrained"),
):
    """Download pretrained weights (needs internet) and check their sha256; then `dvc add models/pretrained/<file>`
    (sd-turbo: the diffusers folders at a pinned revision, `dvc add models/pretrained/sd-turbo`)."""
    from rich.markup import escape

    from synthmri.pretrained import HUB_FOLDERS, FetchError, fetch, fetch_folder

    def fetch_all(names: list[str], dest: Path) -> list[dict]:
        folders = [n for n in names if n in HUB_FOLDERS]
        files = [n for n in names if n not in HUB_FOLDERS]
        return (fetch(files, dest) if files or not names else []) + [r for n in folders for r in fetch_folder(n, dest)]

    try:
        rows = _run(fetch_all, names or [], dest)
    except FetchError as e:  # the network, not the code: one line, no traceback
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    for row in rows:
        err.print(f"{row['status']:>10}  {row['path']}  sha256 {row['sha256'][:16]}… ({row['verified']})")


@app.command()
def classify(
    scenario: Annotated[str, typer.Argument(help="a key of classify.scenarios in params.yaml")],
    manifest: Annotated[Path, typer.Argument(help="preprocess's manifest.csv (the test set is its kept Testing rows)")],
    synthetic_dir: Annotated[Path, typer.Argument(help="data/synthetic (one folder per class)")],
    out_dir: Annotated[Path, typer.Argument(help="folder for predictions.csv")],
    live_dir: Annotated[Path | None, typer.Option("--live", help="dvclive folder (per-epoch curves)")] = None,
    params: ParamsOpt = Path("params.yaml"),
    metrics: MetricsOpt = None,
):
    """Train and evaluate one scenario for every seed (paper §5.2.2): mean ± std, bootstrap CIs."""
    from synthmri.classify.commands import classify_cmd

    _run(classify_cmd, scenario, manifest, synthetic_dir, out_dir, params, live_dir, metrics=metrics, params=params)


@app.command()
def ratio(
    manifest: Annotated[Path, typer.Argument(help="preprocess's manifest.csv")],
    synthetic_dir: Annotated[Path, typer.Argument(help="data/synthetic")],
    out_dir: Annotated[Path, typer.Argument(help="folder for predictions.csv")],
    baseline_dir: Annotated[Path | None, typer.Option("--baseline", help="the baseline scenario's folder (McNemar)")] = None,
    plot_csv: Annotated[Path | None, typer.Option("--plot", help="CSV row per seed for the ratio curve")] = None,
    live_dir: Annotated[Path | None, typer.Option("--live", help="dvclive folder")] = None,
    params: ParamsOpt = Path("params.yaml"),
    metrics: MetricsOpt = None,
):
    """All real images plus `ratio` synthetic images per real image, every class (`dvc exp run -S ratio=2`)."""
    from synthmri.classify.commands import ratio_cmd

    _run(ratio_cmd, manifest, synthetic_dir, out_dir, params, live_dir, baseline_dir, plot_csv,
         metrics=metrics, params=params)


@app.command()
def sweep(
    profile: Annotated[str, typer.Option("--profile", help="the profile every experiment runs, e.g. sdturbo")],
    ratios: Annotated[str, typer.Option("--ratios", help="comma-separated synthetic:real ratios")] = "0,0.25,0.5,1,1.5,2,3,4",
    overrides: Annotated[list[str] | None, typer.Option("--set", "-S", help="more overrides for every experiment")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the dvc commands, run nothing")] = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="wait for the queue, then `dvc exp show`")] = True,
):
    """The ratio sweep (the SD-Turbo study's eight conditions) as queued DVC experiments, run one at a time."""
    from synthmri.sweep import sweep as run_sweep

    try:
        values = [float(r) for r in ratios.split(",") if r.strip()]
    except ValueError:
        _error(f"--ratios: expected comma-separated numbers, got {ratios!r}")
        raise typer.Exit(2) from None
    _run(run_sweep, profile, values, overrides or [], dry_run=dry_run, wait=wait, echo=typer.echo)


@app.command()
def report(
    metrics_dir: Annotated[Path, typer.Argument(help="metrics/scenarios")],
    predictions_dir: Annotated[Path, typer.Argument(help="data/classify")],
    out_dir: Annotated[Path, typer.Argument(help="reports/")],
    fidelity_json: Annotated[Path | None, typer.Option("--fidelity", help="metrics/fidelity.json, if computed")] = None,
    ratio_json: Annotated[Path | None, typer.Option("--ratio", help="metrics/ratio.json, if computed")] = None,
    data_metrics: Annotated[Path | None, typer.Option(
        "--data-metrics", help="folder of ingest/audit/dedup/preprocess .json (metrics/)")] = None,
    synthetic_dir: Annotated[Path | None, typer.Option("--synthetic", help="data/synthetic (sample images)")] = None,
    plots_dir: Annotated[Path | None, typer.Option("--plots", help="plots/ (audit/*.png, fidelity/memorisation_*.png)")] = None,
    headline: Annotated[Path | None, typer.Option("--headline", help="where to write the headline metrics JSON")] = None,
    params: ParamsOpt = Path("params.yaml"),
    metrics: MetricsOpt = None,
):
    """One report page in the paper's order: data, fidelity, classification (Tables 2-6, Figures 10-17), paired tests."""
    from synthmri.report_command import report_cmd

    _run(report_cmd, metrics_dir, predictions_dir, out_dir, params, fidelity_json, ratio_json=ratio_json,
         data_metrics=data_metrics, synthetic_dir=synthetic_dir, plots_dir=plots_dir, headline_json=headline,
         metrics=metrics, params=params)


@app.command()
def summary(
    metrics_dir: Annotated[Path, typer.Argument(help="folder of the stages' metrics JSON")] = Path("metrics"),
    params: ParamsOpt = Path("params.yaml"),
):
    """Print a table of what the pipeline produced (labelled DEMO when run on the demo profile)."""
    from synthmri.summary import print_summary

    _run(print_summary, metrics_dir, P.read_params(params))


@app.command()
def check(
    params: ParamsOpt = Path("params.yaml"),
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the checks to this JSON file")] = None,
):
    """Preflight, in seconds: params, raw data, pretrained weights, device, disk, projected wall time.
    Exits 1 when a check fails; run it before a long `dvc repro`."""
    from synthmri.preflight import report as render
    from synthmri.preflight import run_checks, to_json

    checks = run_checks(params)
    text, code = render(checks)
    print(text)
    if json_out is not None:
        json_out.write_text(json.dumps(to_json(checks), indent=2) + "\n")
    raise typer.Exit(code)


if __name__ == "__main__":
    app()
