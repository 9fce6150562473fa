"""One scenario, every seed: plan all mixtures (refusing impossible ones before any training), check for
leakage, train, evaluate on the real Testing split, summarise (paper §5.2.2, §6.2)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from synthmri.classify import stats as S
from synthmri.classify.config import ClassifyParams, ScenarioParams
from synthmri.classify.data import NORM_IMAGENET, NORM_NO_MEAN, DeviceData, ImageSet, check_plan
from synthmri.classify.mixtures import Plan, plan_mixture
from synthmri.classify.models import weights_path
from synthmri.classify.train import fit, label_order, new_model, open_live, predict
from synthmri import pretrained
from synthmri.runtime import resolve_device, set_threads

PHASE_MAIN, PHASE_BEFORE, PHASE_AFTER = "", "before", "after"
PRED_COLUMNS = ("seed", "phase", "path", "class", "pred")


def draw_seed(scen: ScenarioParams, cfg: ClassifyParams, seed: int) -> int:
    """The seed of a training seed's draws: the scenario's, else classify.draw_seed, else the training seed."""
    if scen.draw_seed == "train":  # e.g. S5 as coded: each notebook shuffled with its own seed
        return seed
    if scen.draw_seed is not None:
        return scen.draw_seed
    return cfg.draw_seed if cfg.draw_seed is not None else seed


def plan_all(name: str, scen: ScenarioParams, cfg: ClassifyParams, images: ImageSet,
             classes: Sequence[str]) -> tuple[dict[int, tuple[Plan, Plan | None]], dict[int, tuple[int, int | None]]]:
    """Every seed's training plan(s), checked for leakage; raises before anything is trained.

    Also returns, per seed, how many Training copies of test images each plan holds (nonzero only with
    classify.drop_test_copies: false, the paper as coded).
    """
    where = f"classify.scenarios.{name}"
    pools = images.pools_for(cfg.drop_test_copies)
    plans, copies = {}, {}
    for seed in scen.seeds or cfg.train.seeds:
        draw = draw_seed(scen, cfg, seed)
        first = plan_mixture(pools, scen, classes, draw, where)
        second = plan_mixture(pools, scen.finetune, classes, draw, f"{where}.finetune") if scen.finetune else None
        # the code-level no-leakage guarantee
        copies[seed] = (check_plan(images, first, pools), None if second is None else check_plan(images, second, pools))
        plans[seed] = (first, second)
    return plans, copies


def run_scenario(name: str, scen: ScenarioParams, cfg: ClassifyParams, images: ImageSet, classes: Sequence[str], *,
                 live_dir: str | Path | None = None) -> tuple[dict, pd.DataFrame]:
    """Train and evaluate `scen` for each seed; return (metrics, predictions)."""
    classes = tuple(sorted(classes))
    plans, copies = plan_all(name, scen, cfg, images, classes)
    set_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    data = DeviceData.create(images, device, normalize=NORM_NO_MEAN if cfg.paper_as_coded else NORM_IMAGENET,
                             augment=cfg.train.augment)
    test_set = _test_set(name, scen, images, classes)
    test_paths = [p for p, _ in test_set]
    test_cls = [c for _, c in test_set]
    test_idx = images.index(test_paths)

    runs: dict[str, list[dict]] = {}
    pred_rows: list[pd.DataFrame] = []
    seconds = images_seen = 0.0
    t0 = time.perf_counter()
    for seed, (first, second) in plans.items():
        order = label_order(classes, seed, cfg.paper_as_coded)
        to_i = {c: i for i, c in enumerate(order)}
        y_test = np.array([classes.index(c) for c in test_cls])

        def evaluate(model, phase: str) -> None:
            pred = predict(model, data, test_idx, cfg=cfg, device=device)
            pred_cls = [order[i] for i in pred]  # back to class names, whatever the label order
            y_pred = np.array([classes.index(c) for c in pred_cls])
            runs.setdefault(phase, []).append(S.report(y_test, y_pred, classes) | {"seed": seed})
            pred_rows.append(pd.DataFrame({"seed": seed, "phase": phase, "path": test_paths, "class": test_cls,
                                           "pred": pred_cls}))

        def acc_now(model) -> float:
            pred = predict(model, data, test_idx, cfg=cfg, device=device)
            return float(np.mean([order[i] == c for i, c in zip(pred, test_cls)]))

        live = open_live(live_dir, f"{name}/seed_{seed}")
        model = new_model(cfg, len(classes), device, seed)
        for phase_plan, epochs, phase, prefix in (
            (first, cfg.train.epochs, PHASE_BEFORE if second else PHASE_MAIN, ""),
            (second, scen.finetune_epochs, PHASE_AFTER, "finetune/"),
        ):
            if phase_plan is None:
                continue
            idx = images.index([p for p, _, _ in phase_plan.rows])
            y = torch.tensor([to_i[c] for _, c, _ in phase_plan.rows])
            result = fit(model, data, idx, y, epochs=epochs, cfg=cfg, seed=seed, device=device, live=live,
                         prefix=prefix, eval_fn=acc_now)
            seconds += result.seconds
            images_seen += result.images
            evaluate(model, phase)
        if live is not None:
            live.end()
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()

    first_plan = next(iter(plans.values()))[0]
    metrics: dict = {
        "scenario": name, "group": scen.group, "label": scen.label, "note": scen.note,
        "arch": cfg.model.arch, "pretrained": cfg.model.pretrained, "paper_as_coded": cfg.paper_as_coded,
        # what was loaded: path, full sha256, bytes, and how far it is verified (pretrained.Checked)
        "weights": pretrained.check(weights_path(cfg.model)).record() if cfg.model.pretrained else None,
        "device": str(device), "seeds": list(plans), "test_set": scen.test, "test_images": len(test_paths),
        "train_counts": first_plan.counts, "train_images": first_plan.size,
        "excluded_from_pools": dict(Counter(e["reason"] for e in images.pools_for(cfg.drop_test_copies).excluded)),
        "test_copies": leaked_copies_metrics(cfg, images, copies),
    }
    second_plan = next(iter(plans.values()))[1]
    if second_plan is not None:
        metrics["finetune_counts"] = second_plan.counts
        metrics["finetune_images"] = second_plan.size
    preds = pd.concat(pred_rows, ignore_index=True)
    for phase, phase_runs in runs.items():
        block = S.summarize(phase_runs, classes)
        p = preds[preds["phase"] == phase]
        y = np.array([classes.index(c) for c in test_cls])
        per_seed = [np.array([classes.index(c) for c in p[p["seed"] == s]["pred"]]) for s in plans]
        ci = S.bootstrap_ci(y, per_seed, len(classes), n_boot=cfg.bootstrap, seed=0)
        for key in (S.ACCURACY, S.MACRO_F1):  # scalars, so `dvc exp show` lists them
            block[key]["ci95_low"], block[key]["ci95_high"] = ci[key]
        block["per_seed"] = {str(r["seed"]): {S.ACCURACY: r[S.ACCURACY], S.MACRO_F1: r[S.MACRO_F1]} for r in phase_runs}
        if phase == PHASE_MAIN:
            metrics.update(block)
        else:
            metrics[phase] = block
    if PHASE_AFTER in runs:  # the headline numbers of a fine-tuning scenario are the fine-tuned model's
        metrics.update(metrics[PHASE_AFTER])
    metrics["train_seconds"] = round(seconds, 3)
    metrics["train_images_per_s"] = round(images_seen / seconds, 2) if seconds else 0.0
    metrics["wall_seconds"] = round(time.perf_counter() - t0, 3)
    return metrics, preds


def _test_set(name: str, scen: ScenarioParams, images: ImageSet, classes: Sequence[str]) -> list[tuple[str, str]]:
    """(path, class) tested on: the real Testing split, or with `test: synthetic` every generated image
    (config refuses synthetic training images then, so none of them trained)."""
    if scen.test == "real":
        return list(images.pools.test)
    rows = [(p, c) for c in classes for p in images.pools.synthetic.get(c, ())]
    empty = [c for c in classes if not images.pools.synthetic.get(c)]
    if empty:
        raise ValueError(f"classify.scenarios.{name}: test: synthetic, but no generated images of class(es) {empty}")
    return rows


def leaked_copies_metrics(cfg: ClassifyParams, images: ImageSet, copies: dict[int, tuple[int, int | None]]) -> dict:
    """Training copies of Testing images: found, dropped, and how many trained per seed (paper as coded: all kept)."""
    found = images.test_copies_found
    block: dict = {"drop": cfg.drop_test_copies, "found": found, "dropped": found if cfg.drop_test_copies else 0,
                   "trained": {str(s): n for s, (n, _) in copies.items()}}
    if any(m is not None for _, m in copies.values()):
        block["finetune_trained"] = {str(s): m for s, (_, m) in copies.items()}
    return block


def paired_vs_baseline(preds: pd.DataFrame, baseline: pd.DataFrame, phase: str | None = None) -> dict:
    """Exact McNemar per seed against the baseline's predictions on the same test images (beyond the paper)."""
    phase = (PHASE_AFTER if (preds["phase"] == PHASE_AFTER).any() else PHASE_MAIN) if phase is None else phase
    base = baseline[baseline["phase"] == PHASE_MAIN]
    mine = preds[preds["phase"] == phase]
    out: dict = {}
    for seed in sorted(set(mine["seed"]) & set(base["seed"])):
        a = base[base["seed"] == seed].set_index("path")
        b = mine[mine["seed"] == seed].set_index("path")
        if set(a.index) != set(b.index):
            raise ValueError(f"seed {seed}: baseline and scenario were tested on different images")
        b = b.loc[a.index]
        out[str(seed)] = S.mcnemar(a["class"].to_numpy(), a["pred"].to_numpy(), b["pred"].to_numpy())
    ps = [v["p_value"] for v in out.values()]
    return {"per_seed": out, "seeds_p_below_0_05": int(sum(p < 0.05 for p in ps)), "seeds": len(ps),
            "max_p": max(ps) if ps else None}
