"""classify.models/train/run/commands: a tiny model learns the tiny data, same seed same bytes on CPU,
fine-tuning reports before and after, pretrained weights only from files, the stage commands' outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from synthmri import CLASSES
from synthmri.classify.commands import classify_cmd, ratio_cmd
from synthmri.classify.config import ModelParams, ScenarioParams, load_classify
from synthmri.classify.data import load_images
from synthmri.classify.models import build_model, weights_path
from synthmri.classify.run import plan_all, run_scenario
from synthmri.classify.train import label_order
from synthmri.params import ParamsError
from tests.test_classify_data import make_dataset

torch.set_num_threads(1)  # the CPU is shared


def cfg_for(arch="mobilenet_v2", epochs=1, lr=1e-3, seeds=(1,), batch_size=16, **extra):
    raw = {"model": {"arch": arch, "pretrained": False, "trainable": "all"},
           "train": {"image_size": 32, "epochs": epochs, "batch_size": batch_size, "lr": lr, "seeds": list(seeds), "threads": 1},
           "bootstrap": 50} | extra
    return load_classify(raw)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("cls")
    cwd = Path.cwd()
    import os
    os.chdir(root)
    try:
        make_dataset(root, train=12, test=8, synthetic=6, size=32)
        yield load_images("processed/manifest.csv", "synthetic", CLASSES, 32, workers=1), root
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def leaky(tmp_path_factory):
    """6 real Training images per class plus one byte copy of a Testing image (as the paper's data had)."""
    root = tmp_path_factory.mktemp("leak")
    cwd = Path.cwd()
    import os
    os.chdir(root)
    try:
        make_dataset(root, train=6, test=3, synthetic=4, size=32, leak=True)
        yield load_images("processed/manifest.csv", "synthetic", CLASSES, 32, workers=1), root
    finally:
        os.chdir(cwd)


def test_test_copies_are_dropped_or_kept_and_counted(leaky, monkeypatch):
    imgs, root = leaky
    monkeypatch.chdir(root)
    kept_cfg = cfg_for(seeds=(1, 2), drop_test_copies=False)  # the paper as coded
    s5 = load_classify({"scenarios": {"s5": {"finetune": {"real": "x0.5", "draw": "pooled", "synthetic": "all"},
                                             "draw_seed": "train", "finetune_epochs": 1}}}).scenarios["s5"]
    plans, copies = plan_all("s5", s5, kept_cfg, imgs, CLASSES)
    for seed, (first, second) in plans.items():
        assert first.counts["glioma"] == {"real": 7, "synthetic": 0}
        leaks_in_half = sum(p.endswith("_leak.png") for p, _, _ in second.rows)  # by name, independently
        assert copies[seed] == (4, leaks_in_half)
        assert sum(second.counts[c]["real"] for c in CLASSES) == 14  # half of 4 * 7, pooled
    assert plans[1][1].rows != plans[2][1].rows  # each training seed shuffles its own half
    _, dropped = plan_all("s5", s5, cfg_for(seeds=(1, 2)), imgs, CLASSES)
    assert dropped == {1: (0, 0), 2: (0, 0)}

    metrics, _ = run_scenario("baseline", ScenarioParams(), kept_cfg, imgs, CLASSES)
    assert metrics["test_copies"] == {"drop": False, "found": 4, "dropped": 0, "trained": {"1": 4, "2": 4}}
    assert metrics["train_counts"]["glioma"] == {"real": 7, "synthetic": 0}
    assert metrics["excluded_from_pools"] == {}
    metrics, _ = run_scenario("baseline", ScenarioParams(), cfg_for(seeds=(1,)), imgs, CLASSES)
    assert metrics["test_copies"] == {"drop": True, "found": 4, "dropped": 4, "trained": {"1": 0}}
    assert metrics["train_counts"]["glioma"] == {"real": 6, "synthetic": 0}
    assert metrics["excluded_from_pools"] == {"duplicates a test image (source file)": 4}


def test_a_tiny_model_beats_chance_clearly(images, monkeypatch):
    imgs, root = images
    monkeypatch.chdir(root)
    cfg = cfg_for("mobilenet_v2", epochs=4, lr=3e-3, batch_size=8, seeds=(1, 2))  # 36 steps from random weights
    metrics, preds = run_scenario("t", ScenarioParams(synthetic=6), cfg, imgs, CLASSES)
    # 32 test images, chance 0.25: P(>= 0.6 by chance) < 1e-4
    assert metrics["accuracy"]["mean"] >= 0.6, metrics["accuracy"]
    assert metrics["train_counts"]["glioma"] == {"real": 12, "synthetic": 6}
    assert len(preds) == 2 * 32 and set(preds["phase"]) == {""}
    lo, hi = metrics["accuracy"]["ci95_low"], metrics["accuracy"]["ci95_high"]
    assert lo <= metrics["accuracy"]["mean"] <= hi


def test_same_seed_same_result_bit_for_bit_on_cpu(images, monkeypatch):
    imgs, root = images
    monkeypatch.chdir(root)
    cfg = cfg_for(seeds=(5,))
    outs = [run_scenario("t", ScenarioParams(real=6, synthetic=2), cfg, imgs, CLASSES) for _ in range(2)]
    assert outs[0][1].equals(outs[1][1])
    assert outs[0][0]["macro_f1"] == outs[1][0]["macro_f1"]
    h = [o[0]["per_seed"]["5"] for o in outs]
    assert h[0] == h[1]


def test_finetune_reports_before_and_after(images, monkeypatch, tmp_path):
    imgs, root = images
    monkeypatch.chdir(root)
    cfg = cfg_for(seeds=(1, 2))
    scen = load_classify({"scenarios": {"s5": {"finetune": {"real": {"glioma": "all", "meningioma": "all"}, "synthetic": "all"},
                                               "finetune_epochs": 1}}}).scenarios["s5"]
    metrics, preds = run_scenario("s5", scen, cfg, imgs, CLASSES, live_dir=tmp_path / "live")
    assert set(preds["phase"]) == {"before", "after"}
    assert metrics["finetune_counts"]["notumor"] == {"real": 0, "synthetic": 6}
    assert metrics["finetune_counts"]["glioma"] == {"real": 12, "synthetic": 6}
    assert metrics["accuracy"] == metrics["after"]["accuracy"]
    assert set(metrics["before"]["per_seed"]) == {"1", "2"}
    # dvclive per-epoch curves: one training epoch, then one fine-tuning epoch, per seed
    tsv = tmp_path / "live" / "s5" / "seed_1" / "plots" / "metrics" / "finetune" / "loss.tsv"
    assert len(tsv.read_text().strip().splitlines()) == 2
    assert (tmp_path / "live" / "s5" / "seed_2" / "plots" / "metrics" / "train_accuracy.tsv").is_file()


def test_label_order_as_coded_does_not_change_what_is_reported(images, monkeypatch):
    imgs, root = images
    monkeypatch.chdir(root)
    assert label_order(CLASSES, 1, False) == sorted(CLASSES)
    orders = {tuple(label_order(CLASSES, s, True)) for s in range(10)}
    assert len(orders) > 1 and all(sorted(o) == sorted(CLASSES) for o in orders)
    metrics, preds = run_scenario("t", ScenarioParams(real=4), cfg_for(paper_as_coded=True), imgs, CLASSES)
    assert set(preds["pred"]) <= set(CLASSES)
    assert metrics["paper_as_coded"] is True


def test_pretrained_weights_come_only_from_checked_files(tmp_path, monkeypatch):
    from synthmri import pretrained

    cfg = ModelParams(arch="mobilenet_v2", pretrained=True, weights_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"mobilenet_v2-b0353104\.pth.*synthmri weights fetch"):
        build_model(cfg, 4, 32)
    import torchvision
    torch.manual_seed(0)
    ref = torchvision.models.mobilenet_v2(weights=None)
    torch.save(ref.state_dict(), weights_path(cfg))  # other bytes under the registered name: refused
    with pytest.raises(pretrained.WeightsError, match=r"mobilenet_v2-b0353104\.pth: sha256 [0-9a-f]{64} is not b0353104"):
        build_model(cfg, 4, 32)
    # a file whose registered full digest matches loads into the backbone (entry swapped for this test only)
    entry = pretrained.get("mobilenet_v2")
    (tmp_path / "mobilenet_v2-own.pth").write_bytes(weights_path(cfg).read_bytes())
    monkeypatch.setitem(pretrained.REGISTRY, "mobilenet_v2", pretrained.WeightsFile(
        entry.name, "mobilenet_v2-own.pth", entry.url, pretrained.sha256_of(tmp_path / "mobilenet_v2-own.pth"), entry.used_by))
    net = build_model(cfg, 4, 32)
    assert torch.equal(net.features[0][0].weight, ref.features[0][0].weight)
    assert net.classifier[1].out_features == 4


def test_scenario_metrics_record_the_weights_they_loaded(tmp_path, monkeypatch, images):
    """The stage's metrics name the file, its full digest and how far it was verified (issue 9 §3)."""
    from synthmri import pretrained
    import torchvision

    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), tmp_path / "mobilenet_v2-own.pth")
    digest = pretrained.sha256_of(tmp_path / "mobilenet_v2-own.pth")
    entry = pretrained.get("mobilenet_v2")
    monkeypatch.setitem(pretrained.REGISTRY, "mobilenet_v2",
                        pretrained.WeightsFile(entry.name, "mobilenet_v2-own.pth", entry.url, digest, entry.used_by))
    cfg = cfg_for(model={"arch": "mobilenet_v2", "pretrained": True, "trainable": "all", "weights_dir": str(tmp_path)})
    metrics, _ = run_scenario("t", ScenarioParams(real=2), cfg, images[0], CLASSES)
    assert metrics["weights"] == {"path": (tmp_path / "mobilenet_v2-own.pth").as_posix(), "sha256": digest,
                                  "bytes": (tmp_path / "mobilenet_v2-own.pth").stat().st_size,
                                  "verified": "sha256", "registry": "mobilenet_v2"}
    metrics, _ = run_scenario("t", ScenarioParams(real=2), cfg_for(), images[0], CLASSES)
    assert metrics["weights"] is None  # random weights: nothing loaded, and `pretrained: false` says so


def test_vgg19_trains_only_block5_conv2_to_4_and_the_head():
    net = build_model(ModelParams(arch="vgg19", pretrained=False, trainable="paper"), 4, 64)
    trainable = {n.split(".")[1] for n, p in net.named_parameters() if p.requires_grad and n.startswith("features.")}
    assert trainable == {"30", "32", "34"}
    assert all(p.requires_grad for p in net.head.parameters())
    assert net.head[2].in_features == 512 * 2 * 2 and net.head[-1].out_features == 4
    assert [type(m).__name__ for m in net.head] == ["Flatten", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    with pytest.raises(ValueError, match="unknown classifier 'alexnet'"):
        build_model(ModelParams(arch="alexnet", pretrained=False), 4, 64)  # type: ignore[arg-type]


def _write_params(path: Path, **classify) -> None:
    raw = {"data": {"classes": list(CLASSES)}, "ratio": 1,
           "classify": {"model": {"arch": "mobilenet_v2", "pretrained": False, "trainable": "all"},
                        "train": {"image_size": 32, "epochs": 1, "batch_size": 16, "seeds": [1, 2], "threads": 1},
                        "bootstrap": 50,
                        "scenarios": {"baseline": {}, "s4": {"synthetic": 3}, "too_many": {"synthetic": 99}}} | classify}
    path.write_text(yaml.safe_dump(raw))


def test_commands_write_metrics_predictions_and_paired_tests(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path, train=6, test=4, synthetic=6, size=32)
    _write_params(tmp_path / "params.yaml")
    m = classify_cmd("baseline", Path("processed/manifest.csv"), Path("synthetic"), Path("out/baseline"))
    preds = pd.read_csv("out/baseline/predictions.csv")
    assert list(preds.columns) == ["seed", "phase", "path", "class", "pred"] + [f"p_{c}" for c in sorted(CLASSES)]
    assert len(preds) == 2 * 16 and np.allclose(preds[[f"p_{c}" for c in CLASSES]].sum(axis=1), 1)
    assert json.loads(Path("out/baseline/params.json").read_text())["classify"]["train"]["epochs"] == 1
    assert m["train_counts"]["pituitary"] == {"real": 6, "synthetic": 0}
    for key in ("accuracy", "macro_precision", "macro_recall", "macro_f1"):
        assert set(m[key]) >= {"mean", "std"}
    for key in ("weighted_precision", "weighted_recall", "weighted_f1", "mcc", "roc_auc_ovr", "accuracy"):
        assert m[key]["ci95_low"] <= m[key]["ci95_high"], key  # every scalar with its bootstrap CI
    assert "sensitivity" not in m and m["val_images"] == 0  # 4 classes; the paper's recipe validates nothing
    assert m["training"] == {"train": {s: {"epochs": 1, "stopped_epoch": None, "best_epoch": None, "final_lr": 1e-4}
                                       for s in ("1", "2")}}
    assert set(m["per_class"]["glioma"]) == {"precision", "recall", "f1"}
    json.dumps(m)  # serialisable as the stage's metrics file

    r = ratio_cmd(Path("processed/manifest.csv"), Path("synthetic"), Path("out/ratio"),
                  baseline_dir=Path("out/baseline"), plot_csv=Path("plots/ratio.csv"))
    assert r["ratio"] == 1.0 and r["train_counts"]["glioma"] == {"real": 6, "synthetic": 6}
    assert set(r["vs_baseline"]["per_seed"]) == {"1", "2"}
    assert 0 <= r["vs_baseline"]["per_seed"]["1"]["p_value"] <= 1
    assert len(pd.read_csv("plots/ratio.csv")) == 2

    with pytest.raises(ValueError, match="too_many: 99 synthetic glioma images requested, only 6 were generated"):
        classify_cmd("too_many", Path("processed/manifest.csv"), Path("synthetic"), Path("out/x"))
    assert not Path("out/x").exists()  # stopped before training
    with pytest.raises(ValueError, match="unknown scenario 'nope'; known: baseline, s4, too_many"):
        classify_cmd("nope", Path("processed/manifest.csv"), Path("synthetic"), Path("out/x"))
    raw = yaml.safe_load(Path("params.yaml").read_text())
    raw["ratio"] = -0.5
    Path("params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match="ratio: must be >= 0"):
        ratio_cmd(Path("processed/manifest.csv"), Path("synthetic"), Path("out/ratio"))
