"""The 64x64 DCGAN study's demo profile runs end to end through `dvc exp run` with its generator as coded."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from tests.conftest import copy_project, sh

# every stage on few images and steps: the point is the study's generator through the whole pipeline
TINY = ["demo.train_per_class=24", "demo.test_per_class=6", "preprocess.balance.min=16", "preprocess.balance.max=20",
        "generator.dcgan.epochs=2", "generator.dcgan.batch_size=8", "generator.train.checkpoint_every=1", "generator.train.log_every=1",
        "generate.n_per_class=60", "classify.train.epochs=1", "classify.bootstrap=10", "ratio=0"]


@pytest.mark.slow
def test_dcgan_64_demo_runs_end_to_end_with_the_studys_generator(root, tmp_path, venv_env):
    repo = copy_project(root, tmp_path / "repo", venv_env)
    sh(["dvc", "exp", "run", "-S", "profile=dcgan_64_demo", *[a for o in TINY for a in ("-S", o)]], repo, venv_env)
    classes = ("glioma", "meningioma", "notumor", "pituitary")
    for c in classes:
        cfg = json.loads((repo / "models/generators" / c / "config.json").read_text())
        text = json.dumps(cfg)
        assert '"kind": "dcgan"' in text and '"image_size": 64' in text
        assert '"d_first_batchnorm": true' in text and '"init": "torch"' in text  # the study's code, not DCGAN's paper
        pngs = sorted((repo / "data/synthetic" / c).glob("*.png"))
        assert len(pngs) == 60  # S4 adds 60 a class
        assert Image.open(pngs[0]).size == (64, 64) and Image.open(pngs[0]).mode == "L"
    scenarios = {p.stem for p in (repo / "metrics/scenarios").glob("*.json")}
    assert {"baseline", "s6_synthetic"} <= scenarios
    assert json.loads((repo / "metrics/scenarios/s6_synthetic.json").read_text())["train_counts"]["glioma"]["real"] == 0
    assert (repo / "reports/report.html").is_file()
