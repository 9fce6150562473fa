"""classify.mixtures + classify.config: exact counts per class for every scenario of the paper, seeded
determinism, no leakage (the paper's test copies only where a profile keeps them), clear errors for
impossible requests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from synthmri import CLASSES
from synthmri.classify.config import ScenarioParams, load_classify, load_ratio, ratio_scenario
from synthmri.classify.mixtures import LeakageError, Plan, Pools, assert_no_leakage, plan_mixture
from synthmri.classify.run import draw_seed
from synthmri.params import ParamsError

ROOT = Path(__file__).resolve().parents[1]
# the paper's training set after preprocessing (Table 5) and 600 generated images per class (§5.1.3)
REAL = {"glioma": 867, "meningioma": 802, "notumor": 817, "pituitary": 721}
GENERATED = 600


def composed(profile: str) -> dict:
    """params.yaml as `dvc exp run -S profile=<profile>` would write it."""
    import tempfile

    from synthmri.profiles import compose

    with tempfile.TemporaryDirectory() as tmp:
        return yaml.safe_load(compose([f"profile={profile}"], Path(tmp) / "params.yaml", ROOT / "conf").read_text())


def paper_pools(real=REAL, generated=GENERATED) -> Pools:
    return Pools(
        real={c: [f"processed/train/{c}/{i:04d}.png" for i in range(n)] for c, n in real.items()},
        synthetic={c: [f"synthetic/{c}/{c}_{i:04d}.png" for i in range(generated)] for c in real},
        test=[(f"processed/test/{c}/{i}.png", c) for c in real for i in range(3)],
    )


def counts(plan, kind):
    return {c: plan.counts[c][kind] for c in CLASSES}


# the text's pairs as written (R90:S10, R80:S20, R66:S33: s synthetic per r real), worked by hand:
# meningioma 802*10/90 = 89.1, 802*20/80 = 200.5, 802*33/66 = 401; glioma 867*10/90 = 96.3, 216.75, 433.5
TEXT_PAIRS = {10: {"meningioma": 89, "glioma": 96}, 20: {"meningioma": 200, "glioma": 216},
              33: {"meningioma": 401, "glioma": 433}}


def expected_paper() -> dict[str, tuple[dict, dict]]:
    """(real, synthetic) per class for each scenario, computed by hand from the paper's text."""
    R = dict(REAL)
    zero = {c: 0 for c in CLASSES}
    out = {
        "baseline": (R, zero),
        "s1_balance": (R, {"glioma": 0, "meningioma": 65, "notumor": 50, "pituitary": 146}),  # all to 867
        "s6_synthetic": (zero, {c: 600 for c in CLASSES}),
    }
    for p, n in TEXT_PAIRS.items():
        out[f"s2_m{p}"] = (R, zero | {"meningioma": n["meningioma"]})
        out[f"s3_mg{p}"] = (R, zero | n)
    for n in (200, 400, 600):
        out[f"s4_{n}"] = (R, {c: n for c in CLASSES})
    for total in (72, 144, 216, 360, 720):
        out[f"mini_r{total}"] = ({c: total // 4 for c in CLASSES}, zero)
    for total in (72, 144, 288, 648):
        out[f"mini_s{total}"] = ({c: 18 for c in CLASSES}, {c: total // 4 for c in CLASSES})
    out["s5_finetune"] = (R, zero)
    return out


def test_every_paper_scenario_has_exact_counts():
    cfg = load_classify(composed("paper")["classify"])
    expected = expected_paper()
    assert set(cfg.scenarios) == set(expected)
    pools = paper_pools()
    for name, scen in cfg.scenarios.items():
        plan = plan_mixture(pools, scen, CLASSES, seed=33, where=name)
        real, syn = expected[name]
        assert counts(plan, "real") == real, name
        assert counts(plan, "synthetic") == syn, name
        assert plan.size == sum(real.values()) + sum(syn.values())
        assert sum(1 for r in plan.rows if r[2] == "synthetic" and r[1] == "meningioma") == syn["meningioma"]
    s2 = plan_mixture(pools, cfg.scenarios["s2_m33"], CLASSES, 33)
    assert s2.counts["meningioma"] == {"real": 802, "synthetic": 401}  # R66:S33: S/R = 0.5, not 33% of 802 (395)
    ft = plan_mixture(pools, cfg.scenarios["s5_finetune"].finetune, CLASSES, 33)
    assert counts(ft, "real") == {"glioma": 867, "meningioma": 802, "notumor": 0, "pituitary": 0}
    assert counts(ft, "synthetic") == {c: 600 for c in CLASSES}  # all 2,400


def test_paper_as_coded_scenarios_follow_the_notebooks():
    raw = composed("paper_as_coded")
    cfg = load_classify(raw["classify"])
    assert cfg.paper_as_coded and cfg.draw_seed == 42
    pools = paper_pools()
    assert cfg.drop_test_copies is False  # the Training copies of Testing images trained
    code = {10: (90, 97), 20: (200, 216), 33: (401, 433)}  # int(n * 0.113 / 0.25 / 0.5), by hand
    for p, (men, gli) in code.items():
        plan = plan_mixture(pools, cfg.scenarios[f"s3_mg{p}"], CLASSES, 42)
        assert plan.counts["meningioma"]["synthetic"] == men
        assert plan.counts["glioma"]["synthetic"] == gli
    # S5: shuffle(all real images) with the notebook's seed, then the first half: a random half, pooled
    s5 = cfg.scenarios["s5_finetune"]
    assert [draw_seed(s5, cfg, s) for s in (33, 66, 99)] == [33, 66, 99]
    assert draw_seed(cfg.scenarios["s2_m10"], cfg, 33) == 42  # every other draw: random_state=42
    halves = {s: plan_mixture(pools, s5.finetune, CLASSES, s) for s in (33, 66)}
    total = sum(REAL.values())
    for seed, ft in halves.items():
        assert sum(counts(ft, "real").values()) == total // 2 == 1603
        assert counts(ft, "synthetic") == {c: 600 for c in CLASSES}
        assert counts(ft, "real") != {c: REAL[c] // 2 for c in CLASSES}  # per-class counts follow the draw
        for c in CLASSES:  # hypergeometric: sd about 12 images per class
            assert abs(ft.counts[c]["real"] - REAL[c] / 2) < 60, (seed, c, ft.counts[c])
            mine = [p for p, k, s in ft.rows if k == c and s == "real"]
            assert mine != pools.real[c][: len(mine)]  # not the path-order half
    assert halves[33].rows != halves[66].rows
    assert plan_mixture(pools, s5.finetune, CLASSES, 33).rows == halves[33].rows  # seeded


def test_demo_override_fits_the_vocabulary():
    raw = composed("demo")
    cfg = load_classify(raw["classify"])
    assert load_ratio(raw["ratio"]) == 0.5
    # the demo run's sizes (metrics/preprocess.json): 98-104 real per class; 60 generated per class
    pools = paper_pools({"glioma": 104, "meningioma": 98, "notumor": 98, "pituitary": 101}, 60)
    assert list(cfg.scenarios) == ["baseline", "s1_balance", "s2_m33", "s3_mg33", "s4_60", "s5_finetune", "s6_synthetic"]
    for name, scen in cfg.scenarios.items():  # every one fits, the ratio stage's too
        plan_mixture(pools, scen, CLASSES, 33, where=name)
    plan_mixture(pools, ratio_scenario(0.5), CLASSES, 33, where="ratio")


def test_draws_are_seeded_and_differ_between_seeds():
    pools = paper_pools()
    scen = ScenarioParams(real=100, synthetic=50)
    a, b, c = (plan_mixture(pools, scen, CLASSES, s) for s in (1, 1, 2))
    assert a.rows == b.rows
    assert a.rows != c.rows
    assert len(set(r[0] for r in a.rows)) == a.size  # no image twice


def test_ratio_scenario_counts_and_errors():
    pools = paper_pools(generated=2000)
    plan = plan_mixture(pools, ratio_scenario(2.0), CLASSES, 0)
    assert counts(plan, "synthetic") == {c: 2 * n for c, n in REAL.items()}
    assert counts(plan, "real") == REAL
    assert plan_mixture(pools, ratio_scenario(0.0), CLASSES, 0).counts["glioma"]["synthetic"] == 0
    with pytest.raises(ValueError, match="only 600 were generated"):
        plan_mixture(paper_pools(), ratio_scenario(1.0), CLASSES, 0, where="ratio")
    for bad in (-1, "two", True):
        with pytest.raises(ParamsError, match="ratio"):
            load_ratio(bad)


def test_impossible_requests_stop_with_clear_messages():
    pools = paper_pools()
    with pytest.raises(ValueError, match="s9: 700 synthetic glioma images requested, only 600 were generated"):
        plan_mixture(pools, ScenarioParams(synthetic=700), CLASSES, 0, where="s9")
    with pytest.raises(ValueError, match="5000 real meningioma images requested, only 802 available"):
        plan_mixture(pools, ScenarioParams(real={"meningioma": 5000}), CLASSES, 0)
    with pytest.raises(ValueError, match=r"unknown class\(es\) \['astrocytoma'\]"):
        plan_mixture(pools, ScenarioParams(synthetic={"astrocytoma": 3}), CLASSES, 0)
    with pytest.raises(ValueError, match="training set is empty"):
        plan_mixture(pools, ScenarioParams(real=0), CLASSES, 0)


def test_text_pairs_are_taken_as_written():
    """R<r>:S<s> adds int(real * s / r): exact at 802 real, and per class on the real images drawn."""
    pools = paper_pools()
    for amount, want in (("R66:S33", 401), ("R90:S10", 89), ("R80:S20", 200), ("R1:S2", 1604), ("R3:S1", 267)):
        scen = load_classify({"scenarios": {"x": {"synthetic": {"meningioma": amount}}}}).scenarios["x"]
        assert plan_mixture(paper_pools(generated=2000), scen, CLASSES, 0).counts["meningioma"]["synthetic"] == want, amount
    half = load_classify({"scenarios": {"x": {"real": 100, "synthetic": "R66:S33"}}}).scenarios["x"]
    assert counts(plan_mixture(pools, half, CLASSES, 0), "synthetic") == {c: 50 for c in CLASSES}


def test_pooled_draw_counts_all_classes_together():
    pools = paper_pools({"glioma": 30, "meningioma": 10, "notumor": 0, "pituitary": 20})
    plan = plan_mixture(pools, ScenarioParams(real=25, draw="pooled"), CLASSES, 7)
    assert plan.size == 25 and sum(counts(plan, "real").values()) == 25
    assert counts(plan, "real")["notumor"] == 0
    assert plan.rows == plan_mixture(pools, ScenarioParams(real=25, draw="pooled"), CLASSES, 7).rows
    everything = plan_mixture(pools, ScenarioParams(real="all", draw="pooled"), CLASSES, 7)
    assert counts(everything, "real") == {"glioma": 30, "meningioma": 10, "notumor": 0, "pituitary": 20}
    with pytest.raises(ValueError, match="61 real images requested, only 60 available in all classes together"):
        plan_mixture(pools, ScenarioParams(real=61, draw="pooled"), CLASSES, 7, where="x")


def test_leakage_check_lets_through_only_the_listed_test_copies():
    test = [("t/glioma/0.png", "glioma"), ("t/glioma/1.png", "glioma")]
    keys = {"t/glioma/0.png": {"sha:a"}, "t/glioma/1.png": {"sha:b"}, "r/copy0.png": {"sha:a", "px:1"},
            "r/copy1.png": {"px:9", "sha:b"}, "r/ok.png": {"sha:c"}, "s/syn.png": {"px:7", "sha:b"}}
    pools = Pools(real={"glioma": ["r/copy0.png", "r/copy1.png", "r/ok.png"]}, synthetic={"glioma": ["s/syn.png"]},
                  test=test, kept_test_copies=frozenset({"r/copy0.png", "r/copy1.png", "s/syn.png"}))
    check = lambda rows, p=pools: assert_no_leakage(Plan(tuple(rows), {}), p, train_keys=keys,  # noqa: E731
                                                    test_keys={t: keys[t] for t, _ in test})
    assert check([("r/copy0.png", "glioma", "real"), ("r/ok.png", "glioma", "real"),
                  ("r/copy1.png", "glioma", "real")]) == 2
    assert check([("r/ok.png", "glioma", "real")]) == 0
    with pytest.raises(LeakageError, match="synthetic training image s/syn.png"):  # never, whatever is listed
        check([("s/syn.png", "glioma", "synthetic")])
    with pytest.raises(LeakageError, match="test image t/glioma/0.png in the training set"):
        check([("t/glioma/0.png", "glioma", "real")])
    strict = Pools(real=pools.real, synthetic=pools.synthetic, test=test)  # drop_test_copies: true
    with pytest.raises(LeakageError, match="real training image r/copy1.png"):
        check([("r/copy1.png", "glioma", "real")], strict)


@pytest.mark.parametrize("entry, match", [
    ({"synthetic": -3}, r"scenarios.x.synthetic: must be >= 0"),
    ({"synthetic": "lots"}, r"scenarios.x.synthetic: 'lots' is not an amount"),
    ({"real": "fill"}, r"scenarios.x.real: 'fill' applies to synthetic images only"),
    ({"real": "R90:S10"}, r"scenarios.x.real: 'R90:S10' applies to synthetic images only"),
    ({"synthetic": {"glioma": "10%"}}, r"scenarios.x.synthetic.glioma: '10%' is not an amount"),
    ({"synthetic": {"glioma": "66:33"}}, r"scenarios.x.synthetic.glioma: '66:33' is not an amount.*'R66:S33'"),
    ({"synthetic": {"glioma": "R0:S10"}}, r"scenarios.x.synthetic.glioma: the real part of 'R0:S10' must be > 0"),
    ({"draw": "first"}, r"scenarios.x.draw: expected one of \['random', 'pooled'\]"),
    ({"draw": "pooled", "real": {"glioma": "all"}}, r"scenarios.x.real: draw: pooled takes one real amount"),
    ({"finetune": {"draw": "pooled", "real": {"glioma": 3}}}, r"scenarios.x.finetune.real: draw: pooled"),
    ({"draw_seed": "training"}, r"scenarios.x.draw_seed: expected an integer >= 0, train or null"),
    ({"draw": "middle"}, r"scenarios.x.draw: expected one of"),
    ({"colour": "red"}, r"scenarios.x: unknown key\(s\) \['colour'\]"),
    ({"draw_seed": "abc"}, r"scenarios.x.draw_seed"),
    ({"finetune": {"finetune": {}}}, r"scenarios.x.finetune.finetune: a fine-tuning phase cannot itself fine-tune"),
])
def test_bad_scenario_params_name_the_key(entry, match):
    with pytest.raises(ParamsError, match=match):
        load_classify({"scenarios": {"x": entry}})


def test_bad_train_params_name_the_key():
    with pytest.raises(ParamsError, match="classify.train.image_size"):
        load_classify({"train": {"image_size": 100}})
    with pytest.raises(ParamsError, match="classify.model.arch"):
        load_classify({"model": {"arch": "alexnet"}})
    with pytest.raises(ParamsError, match="classify.train.seeds"):
        load_classify({"train": {"seeds": [1, 1]}})
    with pytest.raises(ParamsError, match=r"classify: unknown key\(s\) \['epochs'\]"):
        load_classify({"epochs": 3})
    with pytest.raises(ParamsError, match="classify.drop_test_copies: expected true or false"):
        load_classify({"drop_test_copies": "no"})
    with pytest.raises(ParamsError, match="classify.draw_seed"):
        load_classify({"draw_seed": "train"})  # only a scenario may draw with each training seed
