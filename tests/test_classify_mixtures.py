"""classify.mixtures + classify.config: exact counts per class for every scenario of the paper, seeded
determinism, no leakage, clear errors for impossible requests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from synthmri import CLASSES
from synthmri.classify.config import ScenarioParams, load_classify, load_ratio, ratio_scenario
from synthmri.classify.mixtures import Pools, plan_mixture
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


def expected_paper() -> dict[str, tuple[dict, dict]]:
    """(real, synthetic) per class for each scenario, computed by hand from the paper's text."""
    R = dict(REAL)
    zero = {c: 0 for c in CLASSES}
    share = lambda n, p: round(n * p / (100 - p))  # noqa: E731  synthetic is p% of the class
    out = {
        "baseline": (R, zero),
        "s1_balance": (R, {"glioma": 0, "meningioma": 65, "notumor": 50, "pituitary": 146}),  # all to 867
        "s6_synthetic": (zero, {c: 600 for c in CLASSES}),
    }
    for p in (10, 20, 33):
        out[f"s2_m{p}"] = (R, zero | {"meningioma": share(802, p)})
        out[f"s3_mg{p}"] = (R, zero | {"meningioma": share(802, p), "glioma": share(867, p)})
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
    s2 = plan_mixture(pools, cfg.scenarios["s2_m10"], CLASSES, 33)
    men = s2.counts["meningioma"]
    assert men["synthetic"] / (men["real"] + men["synthetic"]) == pytest.approx(0.10, abs=0.001)  # R:90 S:10
    ft = plan_mixture(pools, cfg.scenarios["s5_finetune"].finetune, CLASSES, 33)
    assert counts(ft, "real") == {"glioma": 867, "meningioma": 802, "notumor": 0, "pituitary": 0}
    assert counts(ft, "synthetic") == {c: 600 for c in CLASSES}  # all 2,400


def test_paper_as_coded_scenarios_follow_the_notebooks():
    raw = composed("paper_as_coded")
    cfg = load_classify(raw["classify"])
    assert cfg.paper_as_coded and cfg.draw_seed == 42
    pools = paper_pools()
    for p, f in ((10, 0.113), (20, 0.25), (33, 0.5)):  # int(n * 0.113 / 0.25 / 0.5)
        plan = plan_mixture(pools, cfg.scenarios[f"s3_mg{p}"], CLASSES, 42)
        assert plan.counts["meningioma"]["synthetic"] == int(802 * f)
        assert plan.counts["glioma"]["synthetic"] == int(867 * f)
    ft = plan_mixture(pools, cfg.scenarios["s5_finetune"].finetune, CLASSES, 42)
    assert counts(ft, "real") == {c: REAL[c] // 2 for c in CLASSES}
    first = [p for p, c, s in ft.rows if c == "glioma" and s == "real"]
    assert first == pools.real["glioma"][: 867 // 2]  # the first half, not a random half


def test_demo_override_fits_the_vocabulary():
    raw = composed("demo")
    cfg = load_classify(raw["classify"])
    assert load_ratio(raw["ratio"]) == 1.0
    pools = paper_pools({c: 30 for c in CLASSES}, 36)
    for name, scen in cfg.scenarios.items():
        if name != "s4_600" and not name.startswith("s6"):
            plan_mixture(pools, scen, CLASSES, 33, where=name)


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


@pytest.mark.parametrize("entry, match", [
    ({"synthetic": -3}, r"scenarios.x.synthetic: must be >= 0"),
    ({"synthetic": "lots"}, r"scenarios.x.synthetic: 'lots' is not an amount"),
    ({"real": "fill"}, r"scenarios.x.real: 'fill' applies to synthetic images only"),
    ({"synthetic": {"glioma": "150%"}}, r"scenarios.x.synthetic.glioma: share must be in \[0, 100\)"),
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
