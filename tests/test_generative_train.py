"""Training: tiny DDPM/DCGAN on tiny CPU images learn; checkpoints resume bit-identically; files load without pickle."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors import safe_open

from synthmri.generative import checkpoint as ckpt
from synthmri.generative.config import load_generator
from synthmri.runtime import tensors_sha256
from synthmri.generative.sample import load_generator_model
from synthmri.generative.train import train_generator
from tests.test_generative_data import make_manifest

torch.set_num_threads(1)

TINY_DDPM = {"image_size": 16, "channels": [8, 16], "attention_levels": [False, True], "num_head_channels": 16,
             "norm_num_groups": 8, "batch_size": 8, "lr": 1e-3, "epochs": 4}
TINY_DCGAN = {"image_size": 16, "g_features": 8, "d_features": 8, "latent": 16, "batch_size": 8, "epochs": 4}
QUIET = {"checkpoint_every": 3, "log_every": 2, "sample_grid": 4, "grid_steps": 2}


def tiny(kind: str, **over) -> dict:
    train = {**QUIET, **over.pop("train", {})}
    return {"kind": kind, "train": train, "ddpm": {**TINY_DDPM, **over.pop("ddpm", {})},
            "dcgan": {**TINY_DCGAN, **over.pop("dcgan", {})}, **over}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """26 images over three planes: 8 per plane after balancing (2 cut), 18 train + 6 val: 2 steps of 8."""
    return make_manifest(tmp_path_factory.mktemp("small"), {"axial": 8, "coronal": 8, "sagittal": 10})


def test_dcgan_discriminator_loss_goes_down_and_dvclive_logs_it(tmp_path):
    manifest = make_manifest(tmp_path, {"axial": 32}, size=32)
    cfg = load_generator(tiny("dcgan", dcgan={"image_size": 32, "epochs": 30}, val_fraction=0.0,
                              train={"log_every": 1, "sample_grid": 4, "checkpoint_every": 100}))
    live = tmp_path / "live"
    m = train_generator(manifest, "glioma", tmp_path / "model", cfg, live_dir=live)
    assert (m["steps_per_epoch"], m["train_images"], m["val_images"]) == (4, 32, 0)  # 120 steps
    metrics = live / "plots" / "metrics" / "train"
    d = pd.read_csv(metrics / "loss_d.tsv", sep="\t")
    g = pd.read_csv(metrics / "loss_g.tsv", sep="\t")
    assert d["step"].tolist() == g["step"].tolist() == list(range(1, 31))
    assert d["loss_d"].iloc[-5:].mean() < 0.5 * d["loss_d"].iloc[:3].mean()  # D learns to tell real from fake
    assert g["loss_g"].iloc[-5:].mean() > g["loss_g"].iloc[:3].mean()  # ... so G's adversarial loss rises
    assert json.loads((live / "metrics.json").read_text())["step"] == 30
    assert (live / "plots" / "images" / "samples" / "00030.png").is_file()
    assert m["train/loss_d"] == pytest.approx(d["loss_d"].iloc[-1]) and "val/loss_d_real" not in m


@pytest.mark.parametrize("kind", ["ddpm", "dcgan"])
def test_resumed_run_ends_with_the_same_weights(small, tmp_path, kind):
    cfg = load_generator(tiny(kind))  # 4 epochs, checkpoint every 3 (and at the last)
    whole = train_generator(small, "glioma", tmp_path / "whole", cfg, live_dir=tmp_path / "live_whole")

    # A shorter budget, then the full one: continues from epoch 2.
    short = load_generator(tiny(kind, **{kind: {"epochs": 2}}))
    train_generator(small, "glioma", tmp_path / "budget", short)
    resumed = train_generator(small, "glioma", tmp_path / "budget", cfg)
    assert resumed["resumed_from_epoch"] == 2

    # A run killed during epoch 4 restarts from the checkpoint of epoch 3.
    def die(epoch):
        if epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_generator(small, "glioma", tmp_path / "killed", cfg, live_dir=tmp_path / "live_killed", on_epoch=die)
    assert not (tmp_path / "killed" / ckpt.MODEL_FILE).exists()
    again = train_generator(small, "glioma", tmp_path / "killed", cfg, live_dir=tmp_path / "live_killed")
    assert again["resumed_from_epoch"] == 3

    assert whole["weights_sha256"] == resumed["weights_sha256"] == again["weights_sha256"]
    w = (tmp_path / "whole" / ckpt.MODEL_FILE).read_bytes()
    assert w == (tmp_path / "budget" / ckpt.MODEL_FILE).read_bytes() == (tmp_path / "killed" / ckpt.MODEL_FILE).read_bytes()
    name = "loss" if kind == "ddpm" else "loss_d"
    steps = pd.read_csv(tmp_path / "live_killed" / "plots" / "metrics" / "train" / f"{name}.tsv", sep="\t")["step"]
    assert steps.tolist() == [2, 4]  # the resumed log continues, nothing doubled

    # A rerun of a finished run trains nothing and rewrites the same model.
    rerun = train_generator(small, "glioma", tmp_path / "whole", cfg)
    assert rerun["resumed_from_epoch"] == 4 and rerun["weights_sha256"] == whole["weights_sha256"]


def test_a_different_config_or_a_shorter_budget_starts_over(small, tmp_path):
    cfg = load_generator(tiny("ddpm", ddpm={"epochs": 2}))
    first = train_generator(small, "glioma", tmp_path / "m", cfg)
    lr = train_generator(small, "glioma", tmp_path / "m", load_generator(tiny("ddpm", ddpm={"epochs": 2, "lr": 5e-4})))
    assert lr["resumed_from_epoch"] == 0 and lr["weights_sha256"] != first["weights_sha256"]
    longer = load_generator(tiny("ddpm", ddpm={"epochs": 3, "lr": 5e-4}))
    assert train_generator(small, "glioma", tmp_path / "m", longer)["resumed_from_epoch"] == 2
    assert train_generator(small, "glioma", tmp_path / "m", cfg)["resumed_from_epoch"] == 0  # 3 > 2 epochs


def test_weights_are_safetensors_with_their_config_and_load_without_pickle(small, tmp_path):
    cfg = load_generator(tiny("dcgan", dcgan={"epochs": 1}))
    m = train_generator(small, "glioma", tmp_path / "m", cfg)
    out = tmp_path / "m"
    with safe_open(str(out / ckpt.MODEL_FILE), framework="pt") as f:
        keys = set(f.keys())
        assert json.loads(f.metadata()["synthmri"]) == {"class": "glioma", "format": ckpt.FORMAT, "kind": "dcgan"}
    assert any(k.startswith("generator.") for k in keys) and any(k.startswith("discriminator.") for k in keys)
    config = json.loads((out / ckpt.CONFIG_FILE).read_text())
    assert (config["kind"], config["class"], config["image_size"]) == ("dcgan", "glioma", 16)
    assert load_generator(config["generator"]) == cfg
    table = pd.read_csv(out / "images.csv", keep_default_na=False)
    assert len(table) == m["images"]["selected"] and set(table["role"]) <= {"train", "val", "cut"}

    (out / ckpt.CHECKPOINT_FILE).unlink()  # generation needs only the safetensors weights and config.json
    model, _ = load_generator_model(out, torch.device("cpu"))
    assert tensors_sha256(model.state_tensors()) == m["weights_sha256"]


class _Payload:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_checkpoint_loading_refuses_arbitrary_objects(tmp_path):
    path = tmp_path / ckpt.CHECKPOINT_FILE
    torch.save({"format": ckpt.FORMAT, "fingerprint": "x", "epoch": 1, "evil": _Payload()}, path)
    with pytest.raises(pickle.UnpicklingError):
        ckpt.load_checkpoint(path, "x")


def test_too_few_images_for_a_batch_is_an_error(small, tmp_path):
    cfg = load_generator(tiny("ddpm", ddpm={"batch_size": 32}))
    with pytest.raises(ValueError, match="18 training images, fewer than generator.ddpm.batch_size=32"):
        train_generator(small, "glioma", tmp_path / "m", cfg)
