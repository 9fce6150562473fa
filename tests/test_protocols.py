"""Protocols as scenarios: train-on-synthetic (real: 0) and train-on-real / test-on-synthetic (test: synthetic)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from synthmri.classify.config import load_classify
from synthmri.classify.mixtures import Pools, plan_mixture
from synthmri.classify.run import _test_set
from synthmri.params import ParamsError

CLASSES = ("normal", "tumor")
POOLS = Pools(real={"normal": [f"r/n{i}.png" for i in range(5)], "tumor": [f"r/t{i}.png" for i in range(7)]},
              synthetic={"normal": [f"s/n{i}.png" for i in range(3)], "tumor": [f"s/t{i}.png" for i in range(4)]},
              test=[("t/n0.png", "normal"), ("t/t0.png", "tumor"), ("t/t1.png", "tumor")])
SCENARIOS = {"tsvr": {"real": 0, "synthetic": "all"}, "trts": {"test": "synthetic"}, "base": {}}


def _scen(name):
    return load_classify({"scenarios": SCENARIOS}).scenarios[name]


def test_train_on_synthetic_trains_on_synthetic_only_and_tests_on_real():
    scen = _scen("tsvr")
    plan = plan_mixture(POOLS, scen, CLASSES, seed=0)
    assert {src for _, _, src in plan.rows} == {"synthetic"}
    assert plan.counts == {"normal": {"real": 0, "synthetic": 3}, "tumor": {"real": 0, "synthetic": 4}}
    assert _test_set("tsvr", scen, SimpleNamespace(pools=POOLS), CLASSES) == list(POOLS.test)


def test_train_on_real_test_on_synthetic():
    scen = _scen("trts")
    assert scen.test == "synthetic" and _scen("base").test == "real"
    plan = plan_mixture(POOLS, scen, CLASSES, seed=0)
    assert plan.counts == {"normal": {"real": 5, "synthetic": 0}, "tumor": {"real": 7, "synthetic": 0}}
    test = _test_set("trts", scen, SimpleNamespace(pools=POOLS), CLASSES)
    assert len(test) == 7 and test[:3] == [(f"s/n{i}.png", "normal") for i in range(3)]
    assert not {p for p, _ in test} & {p for p, _, _ in plan.rows}  # nothing tested on trained
    empty = Pools(real=POOLS.real, synthetic={"normal": [], "tumor": ["s/t0.png"]}, test=POOLS.test)
    with pytest.raises(ValueError, match=r"test: synthetic, but no generated images of class\(es\) \['normal'\]"):
        _test_set("trts", scen, SimpleNamespace(pools=empty), CLASSES)


@pytest.mark.parametrize("entry, key", [
    ({"test": "synthetic", "synthetic": 10}, "classify.scenarios.x.synthetic"),
    ({"test": "synthetic", "synthetic": {"tumor": "all"}}, "classify.scenarios.x.synthetic"),
    ({"test": "synthetic", "finetune": {"synthetic": "all"}}, "classify.scenarios.x.finetune.synthetic"),
    ({"test": "val"}, "classify.scenarios.x.test"),
])
def test_testing_on_images_that_train_is_refused(entry, key):
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        load_classify({"scenarios": {"x": entry}})
