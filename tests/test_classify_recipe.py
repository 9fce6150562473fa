"""The SD-Turbo study's training recipe as params: early stopping and the LR plateau on the validation loss (Keras'
rules), the val split that drives them and never trains, and the recipe itself expressed in classify params."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from synthmri import CLASSES
from synthmri.classify import train as T
from synthmri.classify.config import EarlyStoppingParams, PlateauParams, ScenarioParams, load_classify
from synthmri.classify.data import DeviceData, check_plan, load_images
from synthmri.classify.mixtures import LeakageError, Plan, plan_mixture
from synthmri.classify.models import build_model
from synthmri.classify.run import run_scenario
from synthmri.classify.schedule import EarlyStopping, Plateau
from synthmri.params import ParamsError
from tests.test_classify_data import make_dataset

torch.set_num_threads(1)  # the CPU is shared

# the SD-Turbo study's ResNet50 recipe (issue 10 §3), in params
SD_TURBO_RECIPE = {
    "model": {"arch": "resnet50", "pretrained": False, "trainable": "all"},
    "train": {"image_size": 224, "batch_size": 16, "lr": 1e-3, "epochs": 100,
              "early_stopping": {"patience": 5, "restore_best": True},
              "plateau": {"factor": 0.5, "patience": 3, "min_lr": 1e-7},
              "augment": {"flip": "horizontal", "rotation": 15, "shift": 0.1, "shear": 10, "zoom": 0.2,
                          "brightness": [0.8, 1.2]}},
}


def cfg_for(epochs=3, seeds=(1,), **train):
    return load_classify({"model": {"arch": "small_cnn", "pretrained": False, "trainable": "all"},
                          "train": {"image_size": 32, "epochs": epochs, "batch_size": 8, "lr": 3e-3, "seeds": list(seeds),
                                    "threads": 1} | train, "bootstrap": 20})


@pytest.fixture(scope="module")
def with_val(tmp_path_factory):
    root = tmp_path_factory.mktemp("val")
    make_dataset(root, train=8, test=4, synthetic=2, size=32, val=3)
    cwd = Path.cwd()
    import os
    os.chdir(root)
    try:
        yield load_images("processed/manifest.csv", "synthetic", CLASSES, 32, workers=1), root
    finally:
        os.chdir(cwd)


# ---- the rules, on loss sequences -------------------------------------------------------------------------------


def _numbered(model: nn.Module, epoch: int) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(epoch)


def test_early_stopping_stops_after_patience_and_restores_the_best_epoch_bit_for_bit():
    model = nn.Linear(3, 2)
    stopper = EarlyStopping(EarlyStoppingParams(patience=3))
    losses = [1.0, 0.8, 0.9, 0.85, 0.79, 0.81, 0.80, 0.795, 0.5]  # best at 5, then 3 epochs without a gain
    stops = []
    for epoch, loss in enumerate(losses, 1):
        _numbered(model, epoch)
        stops.append(stopper.step(loss, epoch, model))
        if stops[-1]:
            break
    assert stops == [False] * 7 + [True] and stopper.stopped_epoch == 8 and stopper.best_epoch == 5
    assert stopper.restore(model)
    assert all(torch.equal(p, torch.full_like(p, 5)) for p in model.parameters())
    # min_delta: 0.79 is not 0.05 below 0.8, so epoch 2 stays the best and the wait runs out at epoch 5
    strict = EarlyStopping(EarlyStoppingParams(patience=3, min_delta=0.05))
    assert [strict.step(v, e, model) for e, v in enumerate(losses[:5], 1)] == [False, False, False, False, True]
    assert strict.best_epoch == 2
    no_restore = EarlyStopping(EarlyStoppingParams(patience=1, restore_best=False))
    no_restore.step(1.0, 1, model)
    assert not no_restore.restore(model)
    assert no_restore.step(float("nan"), 2, model)  # NaN is never an improvement


def test_plateau_halves_the_rate_after_patience_epochs_as_keras_does():
    plateau = Plateau(PlateauParams(factor=0.5, patience=2, min_lr=0.1), lr=1.0)
    losses = [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    lrs = [plateau.step(v) for v in losses]
    # cut at the 2nd epoch without a gain (torch's ReduceLROnPlateau would wait a 3rd), the wait restarts,
    # and the floor holds: 0.125 -> 0.1, never below
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125, 0.1, 0.1, 0.1, 0.1]
    tiny_gain = Plateau(PlateauParams(factor=0.5, patience=1), lr=1e-3)
    assert [tiny_gain.step(v) for v in (1.0, 1.0 - 5e-5)] == [1e-3, 5e-4]  # below min_delta 1e-4: no gain


# ---- inside fit: the stopping epoch, the restored weights, the rate each epoch trained at -------------------------


def _fit_with_scripted_val(images, losses, monkeypatch, **train):
    cfg = cfg_for(epochs=len(losses), **train)
    seen = []

    def scripted(model, data, idx, y, *, cfg, device):
        seen.append(copy.deepcopy(model.state_dict()))
        return losses[len(seen) - 1], 0.5

    monkeypatch.setattr(T, "val_loss", scripted)
    pools = images.pools
    idx = images.index([p for c in CLASSES for p in pools.real[c]])
    y = torch.tensor([CLASSES.index(c) for c in CLASSES for _ in pools.real[c]])
    val = (images.index([p for p, _ in pools.val]), torch.tensor([CLASSES.index(c) for _, c in pools.val]))
    model = T.new_model(cfg, 4, torch.device("cpu"), 1)
    data = DeviceData.create(images, torch.device("cpu"), normalize="imagenet", augment="none")
    out = T.fit(model, data, idx, y, epochs=len(losses), cfg=cfg, seed=1, device=torch.device("cpu"), val=val)
    return out, model, seen


def test_fit_stops_and_ends_with_the_best_epochs_weights(with_val, monkeypatch):
    imgs, _ = with_val
    out, model, seen = _fit_with_scripted_val(imgs, [1.0, 0.7, 0.9, 0.8, 0.75, 0.6, 0.65], monkeypatch,
                                              early_stopping={"patience": 3})
    assert (out.stopped_epoch, out.best_epoch, out.epochs) == (5, 2, 5)  # 3 epochs without beating 0.7
    assert len(seen) == 5 and out.images == 5 * 32
    state = model.state_dict()
    assert all(torch.equal(state[k], seen[1][k]) for k in state)  # epoch 2's weights and BN statistics, bit for bit
    assert not all(torch.equal(state[k], seen[4][k]) for k in state)  # not the last epoch's
    assert [round(r["val_loss"], 6) for r in out.history] == [1.0, 0.7, 0.9, 0.8, 0.75]


def test_fit_trains_each_epoch_at_the_plateau_rate(with_val, monkeypatch):
    imgs, _ = with_val
    out, _, _ = _fit_with_scripted_val(imgs, [1.0, 1.0, 1.0, 1.0, 0.5], monkeypatch,
                                       plateau={"factor": 0.5, "patience": 1, "min_lr": 1e-3})
    assert [r["lr"] for r in out.history] == [3e-3, 3e-3, 1.5e-3, 1e-3, 1e-3]
    assert out.stopped_epoch is None and out.best_epoch is None and out.epochs == 5


# ---- the val split -----------------------------------------------------------------------------------------------


def test_val_images_are_decoded_and_never_train(with_val):
    imgs, _ = with_val
    val = {p for p, _ in imgs.pools.val}
    assert len(val) == 12 and all(p.startswith("processed/val/") for p in val)
    real = {p for c in CLASSES for p in imgs.pools.real[c]}
    assert len(real) == 32 and not real & val
    plan = plan_mixture(imgs.pools, ScenarioParams(real="all", synthetic="all"), CLASSES, 0)
    assert not {p for p, _, _ in plan.rows} & val
    bad = Plan(plan.rows + ((sorted(val)[0], "glioma", "real"),), plan.counts)
    with pytest.raises(LeakageError, match=r"validation image processed/val/.* in the training set"):
        check_plan(imgs, bad)


@pytest.mark.parametrize("train, key", [({"early_stopping": {}}, "classify.train.early_stopping"),
                                        ({"plateau": {}}, "classify.train.plateau")])
def test_early_stopping_without_val_rows_is_one_clear_error(tmp_path, monkeypatch, train, key):
    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path, train=3, test=2, synthetic=1, size=32)
    imgs = load_images("processed/manifest.csv", None, CLASSES, 32, workers=1)
    with pytest.raises(ValueError, match=rf"^{key} need\(s\) validation images: the processed manifest has no kept "
                                         r"rows with split == 'val'"):
        run_scenario("t", ScenarioParams(), cfg_for(**train), imgs, CLASSES)


def test_restored_model_is_the_model_trained_for_the_best_epochs(with_val, monkeypatch):
    """Early stopping on the real val loss ends with exactly the weights a plain run of best_epoch epochs
    reaches: the same test predictions and probabilities, bit for bit (CPU)."""
    imgs, root = with_val
    monkeypatch.chdir(root)
    aug = {"flip": "horizontal", "rotation": 15, "shift": 0.1, "shear": 10, "zoom": 0.2, "brightness": [0.8, 1.2]}
    stopped, preds = run_scenario("t", ScenarioParams(), cfg_for(epochs=10, early_stopping={"patience": 2}, augment=aug),
                                  imgs, CLASSES)
    info = stopped["training"]["train"]["1"]
    assert stopped["val_images"] == 12
    assert info["best_epoch"] < info["epochs"] <= 10  # deterministic on CPU: it did stop past its best epoch
    plain, plain_preds = run_scenario("t", ScenarioParams(), cfg_for(epochs=info["best_epoch"], augment=aug), imgs, CLASSES)
    assert plain["val_images"] == 0 and plain["training"]["train"]["1"]["best_epoch"] is None
    assert preds.equals(plain_preds)


# ---- the recipe as params ----------------------------------------------------------------------------------------


def test_the_sd_turbo_recipe_is_params_and_the_defaults_are_the_papers():
    cfg = load_classify(SD_TURBO_RECIPE)
    t = cfg.train
    assert (t.image_size, t.batch_size, t.lr, t.epochs) == (224, 16, 1e-3, 100)
    assert t.early_stopping == EarlyStoppingParams(patience=5, min_delta=0.0, restore_best=True)
    assert t.plateau == PlateauParams(factor=0.5, patience=3, min_lr=1e-7)
    a = t.augmentation
    assert (a.flip, a.rotation, a.shift, a.shear, a.zoom, a.brightness) == ("horizontal", 15, 0.1, 10, 0.2, (0.8, 1.2))
    assert t.needs_val == ["classify.train.early_stopping", "classify.train.plateau"]
    net = build_model(cfg.model, 3, t.image_size)
    assert type(net).__name__ == "ResNet" and net.conv1.in_channels == 3 and net.fc.out_features == 3
    assert all(p.requires_grad for p in net.parameters())
    paper = load_classify({}).train  # the paper: no validation, no stopping, no schedule, no augmentation
    assert (paper.early_stopping, paper.plateau, paper.augment, paper.needs_val) == (None, None, "none", [])
    assert not paper.augmentation.active


@pytest.mark.parametrize("train, match", [
    ({"early_stopping": {"patience": 0}}, r"classify.train.early_stopping.patience: must be >= 1"),
    ({"early_stopping": 5}, r"classify.train.early_stopping: expected a mapping of patience, min_delta, restore_best"),
    ({"early_stopping": {"patiense": 5}}, r"did you mean classify.train.early_stopping.patience"),
    ({"plateau": {"factor": 1.5}}, r"classify.train.plateau.factor: must be in \(0, 1\)"),
    ({"augment": {"rotate": 15}}, r"did you mean classify.train.augment.rotation"),
    ({"augment": {"brightness": [1.2, 0.8]}}, r"classify.train.augment.brightness: expected \[low, high\]"),
    ({"augment": "affine"}, r"classify.train.augment: 'affine' does not fit"),
])
def test_bad_recipe_params_name_the_key(train, match):
    with pytest.raises(ParamsError, match=match):
        load_classify({"train": train})


def test_the_readme_shows_the_recipe_this_file_tests():
    import re

    import yaml

    text = (Path(__file__).parents[1] / "README.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if b.startswith("classify:"))
    assert load_classify(yaml.safe_load(block)["classify"]) == load_classify(SD_TURBO_RECIPE)
