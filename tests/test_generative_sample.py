"""Sampling: a tiny DDPM learns an asymmetric image; `generate` writes seeded, correctly oriented PNGs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from synthmri.fidelity.evaluate import Resample
from synthmri.images import write_png
from synthmri.generative.config import load_generate, load_generator
from synthmri.generative.sample import generate
from synthmri.generative.train import train_generator
from synthmri.io import write_table
from tests.test_generative_data import asymmetric
from tests.test_generative_train import tiny

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny DDPM trained 300 steps on one asymmetric 16-px image (bright block left)."""
    root = tmp_path_factory.mktemp("ddpm")
    rows = []
    for i in range(16):
        path = root / "train" / f"{i:02d}.png"
        write_png(path, asymmetric(16))
        rows.append({"split": "train", "class": "glioma", "plane": "axial", "status": "kept", "out_path": path.as_posix()})
    write_table(pd.DataFrame(rows), root / "manifest.csv")
    cfg = load_generator(tiny("ddpm", ddpm={"epochs": 150, "lr": 2e-3}, val_fraction=0.0,
                              train={"log_every": 10, "checkpoint_every": 1000, "sample_grid": 0}))
    train_generator(root / "manifest.csv", "glioma", root / "model", cfg, live_dir=root / "live")
    return root / "model"


def _gray(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), float)


def test_ddpm_loss_goes_down(model_dir):
    loss = pd.read_csv(model_dir.parent / "live" / "plots" / "metrics" / "train" / "loss.tsv", sep="\t")
    assert loss["step"].tolist() == list(range(10, 151, 10))
    assert loss["loss"].iloc[-3:].mean() < 0.25 * loss["loss"].iloc[0]  # 300 steps of batch 8


def test_generate_writes_counts_sizes_and_a_manifest(model_dir, tmp_path):
    cfg = load_generate({"n_per_class": 5, "batch_size": 2, "out_size": 32, "sampler": "ddim", "ddim_steps": 5})
    out = tmp_path / "synthetic" / "glioma"
    summary = generate(model_dir, "glioma", out, cfg)
    files = sorted(p.name for p in out.glob("*.png"))
    assert files == [f"glioma_{i:04d}.png" for i in range(5)]
    for name in files:
        with Image.open(out / name) as im:
            assert (im.format, im.mode, im.size) == ("PNG", "L", (32, 32))  # single-channel, resized
        a = _gray(out / name)
        assert 0 <= a.min() and a.max() <= 255 and a.std() > 0
    table = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert table["path"].tolist() == [(out / f).as_posix() for f in files]
    assert table["index"].tolist() == list(range(5)) and set(table["class"]) == {"glioma"}
    assert set(table["sampler"]) == {"ddim"} and set(table["steps"]) == {5} and set(table["seed"]) == {0}
    assert summary["images"] == 5 and summary["size"] == 32 and summary["trained_size"] == 16
    assert set(table["trained_size"]) == {16} and set(table["size"]) == {32}
    assert Resample.from_manifests(out.parent, ["glioma"]) == Resample(16, 32)  # fidelity's resampled floor reads them

    # A rerun asking for fewer images leaves no image of the larger run behind.
    again = generate(model_dir, "glioma", out, replace(cfg, n_per_class=3))
    assert again["stale_removed"] == 2 and len(list(out.glob("*.png"))) == 3


def test_same_seed_same_bytes_other_seed_other_images(model_dir, tmp_path):
    raw = {"n_per_class": 3, "batch_size": 2, "out_size": 16, "sampler": "ddim", "ddim_steps": 4}
    generate(model_dir, "glioma", tmp_path / "a", load_generate(raw))
    generate(model_dir, "glioma", tmp_path / "b", load_generate(raw))
    generate(model_dir, "glioma", tmp_path / "c", load_generate({**raw, "seed": 1}))
    for i in range(3):
        name = f"glioma_{i:04d}.png"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes()
    assert (tmp_path / "a" / "glioma_0000.png").read_bytes() != (tmp_path / "a" / "glioma_0001.png").read_bytes()


def test_samples_keep_the_training_orientation_unless_paper_as_coded(model_dir, tmp_path):
    raw = {"n_per_class": 8, "batch_size": 8, "out_size": 32, "sampler": "ddim", "ddim_steps": 20}
    generate(model_dir, "glioma", tmp_path / "png", load_generate(raw))
    generate(model_dir, "glioma", tmp_path / "jpg", load_generate({**raw, "paper_as_coded": True}))
    png = np.stack([_gray(p) for p in sorted((tmp_path / "png").glob("*.png"))])
    assert png[:, :, :16].mean() > png[:, :, 16:].mean() + 25  # learned: bright block on the left, as trained
    jpgs = sorted((tmp_path / "jpg").glob("*.jpg"))
    assert len(jpgs) == 8 and not list((tmp_path / "jpg").glob("*.png"))
    with Image.open(jpgs[0]) as im:
        assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (32, 32))  # the paper's 3-channel lossy JPEG
    jpg = np.stack([_gray(p) for p in jpgs])
    assert jpg[:, :, 16:].mean() > jpg[:, :, :16].mean() + 25  # left-right mirrored
    assert np.abs(jpg - png[:, :, ::-1]).mean() < 6  # the same images, mirrored, up to JPEG loss


def test_full_ddpm_chain_is_the_default_sampler(model_dir, tmp_path):
    summary = generate(model_dir, "glioma", tmp_path, load_generate({"n_per_class": 1, "out_size": 16}))
    assert (summary["sampler"], summary["steps"]) == ("ddpm", 1000)
    assert pd.read_csv(tmp_path / "manifest.csv")["steps"].tolist() == [1000]


def test_dcgan_generates_through_the_same_function(tmp_path):
    from tests.test_generative_data import make_manifest

    manifest = make_manifest(tmp_path, {"axial": 8})
    cfg = load_generator(tiny("dcgan", dcgan={"epochs": 1}, val_fraction=0.0, train={"sample_grid": 0}))
    train_generator(manifest, "glioma", tmp_path / "model", cfg)
    summary = generate(tmp_path / "model", "glioma", tmp_path / "out", load_generate({"n_per_class": 3, "out_size": 64}))
    assert summary["kind"] == "dcgan" and summary["sampler"] is None
    for p in sorted((tmp_path / "out").glob("*.png")):
        with Image.open(p) as im:
            assert (im.mode, im.size) == ("L", (64, 64))


def test_wrong_class_or_missing_model_is_a_clear_error(model_dir, tmp_path):
    cfg = load_generate({"n_per_class": 1})
    with pytest.raises(ValueError, match="holds the 'glioma' generator, not 'pituitary'"):
        generate(model_dir, "pituitary", tmp_path / "out", cfg)
    with pytest.raises(FileNotFoundError, match="config.json not found: run the train_generator stage"):
        generate(tmp_path / "nowhere", "glioma", tmp_path / "out", cfg)
