"""bench/gpu.py's dry run (--tiny, CPU) so the GPU script cannot rot: every part runs through our own
modules, every measured figure is a positive finite number, the workload is the paper profile's, and the
projection is the arithmetic of the rates in the same JSON."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SETTINGS = {"loader_workers"}  # numbers that are settings, not measurements, and may be 0

pytestmark = pytest.mark.slow  # ~1 minute on 2 shared cores (torch.compile tracing, VGG-19, Inception)


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu") / "gpu-tiny.json"
    cmd = [sys.executable, "bench/gpu.py", "--tiny", "--peak-tflops", "1", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "projected GPU stages of the whole paper" in proc.stdout
    return json.loads(out.read_text())


def _numbers(obj, path=()):
    """Every numeric leaf (bools aside) with its path."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, (*path, i))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


def _at(obj, path):
    for k in path:
        obj = obj[k]
    return obj


def test_keys_and_switches(result):
    for key in ("command", "utc", "machine", "mode", "device", "peak_bf16_tflops", "ddpm_train", "ddpm_sample",
                "vgg19", "inception", "workload", "projection", "wall_s"):
        assert key in result, key
    assert result["mode"] == "tiny"
    assert result["command"].startswith("python bench/gpu.py --tiny")
    assert {"cpu", "cores", "torch"} <= set(result["machine"])
    v = result["ddpm_train"]["variants"]
    # each switch on and off, and the configured variant (bf16, channels_last, eager) measured
    for switch, values in (("precision", {"fp32", "bf16"}), ("channels_last", {False, True}), ("compile", {False, True})):
        assert {r[switch] for r in v.values()} == values, switch
    assert result["ddpm_train"]["configured"] == "bf16+cl"
    for r in v.values():
        assert {"images_per_s", "step_ms", "mfu", "achieved_tflops", "peak_memory_bytes", "first_step_s"} <= set(r)
    assert all("error" not in r for r in v.values())
    assert result["partial"] is False
    s = result["ddpm_sample"]
    T, B, k = s["timesteps"], s["batch"], s["ddim_steps"]
    assert s["ddpm_batch"] == B  # tiny: the full chain fits the time limit at the searched batch
    assert set(s["images_per_s"]) == {f"ddim{k}_batch{B}", f"ddpm{T}_batch{B}", f"ddpm{T}_batch1",
                                      f"paper_fp32_ddpm{T}_batch1"}
    assert {"ours_images_per_s", "imagefolder_images_per_s", "eval_images_per_s", "decode_images_per_s"} <= set(result["vgg19"])
    assert result["vgg19"]["arch"] == "vgg19" and result["vgg19"]["trainable"] == "paper"


def test_every_measured_figure_is_positive_and_finite(result):
    checked = 0
    for section in ("ddpm_train", "ddpm_sample", "vgg19", "inception"):
        for path, x in _numbers(result[section]):
            if path[-1] in SETTINGS:
                continue
            assert math.isfinite(x) and x > 0, (section, *path, x)
            checked += 1
    assert checked > 60


def test_sampling_effects_are_reported_apart(result):
    s = result["ddpm_sample"]
    ips, e = s["images_per_s"], s["effects"]
    T, B, k = s["timesteps"], s["ddpm_batch"], s["ddim_steps"]
    assert e["fewer_steps"]["ratio"] == pytest.approx(ips[f"ddim{k}_batch{B}"] / ips[f"ddpm{T}_batch{B}"])
    assert e["batching"]["ratio"] == pytest.approx(ips[f"ddpm{T}_batch{B}"] / ips[f"ddpm{T}_batch1"])
    product = e["fewer_steps"]["ratio"] * e["batching"]["ratio"] * e["precision_layout"]["ratio"]
    assert e["total_ddim_batched_vs_paper"]["ratio"] == pytest.approx(product)


def test_workload_is_the_paper_profile(result):
    w = result["workload"]
    # 750 epochs of full batches of 16 over 555/558/653/534 images (544, 544, 640, 528 per epoch)
    assert w["generator_train_images"] == 750 * (544 + 544 + 640 + 528) == 1_692_000
    assert w["samples"] == 4 * 600
    assert w["classify_real_per_class"] == {"glioma": 867, "meningioma": 802, "notumor": 817, "pituitary": 721}
    # real Training (Table 2) + Testing twice (and its resampled copy) + every synthetic image
    assert w["inception_images"] == 3207 + 2 * 1024 + 2400
    sc = w["classify_scenarios"]
    assert sc["baseline"]["train_images"] == 3 * 5 * 3207  # 3 seeds x 5 epochs x all real
    assert sc["s6_synthetic"]["train_images"] == 3 * 5 * 2400
    assert sc["s5_finetune"]["train_images"] == 3 * (5 * 3207 + 3 * (867 + 802 + 2400))
    assert sc["baseline"]["eval_images"] == 3 * 1024 * (5 + 1)
    assert w["classify_train_images"] == sum(s["train_images"] for s in sc.values())
    assert len(sc) == 23  # the 22 scenarios of the paper profile + the ratio stage


def test_projection_is_the_arithmetic_of_the_rates(result):
    p, w = result["projection"], result["workload"]
    expected_images = {"train_generators": w["generator_train_images"], "sample": w["samples"],
                       "fidelity_features": w["inception_images"], "classify_train": w["classify_train_images"],
                       "classify_eval": w["classify_eval_images"], "classify_decode": w["classify_decode_images"]}
    assert set(p["stages"]) == set(expected_images)
    total = 0.0
    for name, stage in p["stages"].items():
        rate = _at(result, stage["rate"])  # the measured rate this stage is projected from
        assert stage["images"] == expected_images[name]
        assert stage["images_per_s"] == rate
        assert stage["seconds"] == pytest.approx(expected_images[name] / rate, rel=1e-12)
        total += expected_images[name] / rate
    assert p["stages"]["train_generators"]["rate"] == ["ddpm_train", "variants", "bf16+cl", "images_per_s"]
    assert p["total_s"] == pytest.approx(total, rel=1e-12)
    assert p["target_s"] == 45 * 60
    assert p["meets_target"] is (total <= 45 * 60)
    gen_h = (p["stages"]["train_generators"]["seconds"] + p["stages"]["sample"]["seconds"]) / 3600
    assert p["generators_gpu_hours"] == pytest.approx(gen_h)
    t = result["ddpm_train"]
    flop = w["generator_train_images"] / w["generator_batch"] * t["train_flop_per_step"]
    assert p["why"]["train_generators"]["pflop"] == pytest.approx(flop / 1e15)
    assert p["why"]["train_generators"]["seconds_at_peak"] == pytest.approx(flop / 1e12)  # --peak-tflops 1


def test_sdpa_what_if_is_measured_but_never_the_projection(result):
    v = result["ddpm_train"]["variants"]["bf16+cl+sdpa (what-if)"]
    assert v["sdpa"] is True and v["images_per_s"] > 0
    assert "what-if" not in result["ddpm_train"]["best"]


def test_flops_only_floors_are_flops_over_peak(tmp_path):
    out = tmp_path / "flops.json"
    cmd = [sys.executable, "bench/gpu.py", "--flops-only", "--tiny", "--peak-tflops", "2", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    f, w, fl = r["flop_per_image"], r["workload"], r["floors"]
    for x in f.values():
        assert math.isfinite(x) and x > 0
    train = w["generator_train_images"] * f["ddpm_train_per_image"]
    assert fl["stages"]["train_generators"]["pflop"] == pytest.approx(train / 1e15)
    assert fl["stages"]["train_generators"]["seconds_at_peak"] == pytest.approx(train / 2e12)
    sample = w["samples"] * 20 * f["ddpm_forward_per_image"]  # --tiny: 20 timesteps
    assert fl["stages"]["sample_ddpm20"]["seconds_at_peak"] == pytest.approx(sample / 2e12)
    counted = [v["seconds_at_peak"] for k, v in fl["stages"].items() if "alternative" not in k]
    assert fl["total_s_at_peak"] == pytest.approx(sum(counted))
    assert fl["min_mfu_for_target"] == pytest.approx(sum(counted) / (45 * 60))
