"""SD-Turbo generator on tiny random-initialised diffusers parts (CPU, seconds): training touches only the
UNet (or its adapters), resume is exact, generation is seeded and keeps orientation, img2img starts only
from Training images, LoRA reloads bit for bit, missing weights stop with one line, fetch checks digests."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from synthmri import pretrained as W
from synthmri.cli import app
from synthmri.generative.commands import generate_cmd, train_generator_cmd
from synthmri.generative.config import load_generate, load_generator
from synthmri.generative.sample import to_uint8
from synthmri.generative.sd_turbo import SDTurbo, _gray, load_trained
from synthmri.generative.sd_turbo_sample import generate_sd_turbo
from synthmri.generative.sd_turbo_train import train_sd_turbo
from synthmri.generative.shared_command import train_shared_cmd
from synthmri.images import read_gray, write_png
from synthmri.io import read_table, write_table
from synthmri.runtime import generator
from tests.conftest import DEMO_RUN_GROUP, private_copy, ran, sh
from tests.test_generative_data import asymmetric

torch.set_num_threads(1)
CLASSES = ["glioma", "meningioma"]
CPU = torch.device("cpu")


def cfg_of(**sd) -> dict:
    base = {"tiny": True, "image_size": 32, "epochs": 1, "batch_size": 4, "lr": 1e-3, "lora_rank": 4, "lora_alpha": 8}
    return {"kind": "sd_turbo", "plane_balance": False, "val_fraction": 0.0,
            "train": {"checkpoint_every": 1, "log_every": 1, "sample_grid": 0}, "sd_turbo": {**base, **sd}}


def make_manifest(root: Path, n: int = 6, size: int = 40) -> Path:
    """`n` kept Training images per class, plus val, test and removed rows of the same classes."""
    rng = np.random.default_rng(0)
    rows = []
    for cls in CLASSES:
        for split, k in (("train", n), ("val", 2), ("test", 2)):
            for i in range(k):
                path = root / "processed" / split / cls / f"{i:03d}.png"
                write_png(path, asymmetric(size, rng))
                rows.append({"split": split, "class": cls, "source_class": cls, "plane": "axial", "status": "kept",
                             "out_path": path.as_posix()})
        rows.append({"split": "train", "class": cls, "source_class": cls, "plane": "axial", "status": "removed",
                     "out_path": "gone.png"})
    manifest = root / "manifest.csv"
    write_table(pd.DataFrame(rows), manifest)
    return manifest


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return make_manifest(tmp_path_factory.mktemp("sdt"))


@pytest.fixture(scope="module")
def trained(manifest, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model")
    train_sd_turbo(manifest, CLASSES, out, load_generator(cfg_of()))
    return out


# ---- training ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_one_training_step_changes_the_unet_and_nothing_else(mode):
    model = SDTurbo(load_generator(cfg_of(mode=mode)), CPU)
    snap = {name: {k: v.clone() for k, v in net.state_dict().items()}
            for name, net in (("unet", model.unet), ("vae", model.vae), ("text_encoder", model.text_encoder))}
    x = model.to_input(torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8))
    model.train_step(x, ["glioma", "meningioma", "glioma", "meningioma"], generator(CPU, 0))
    changed = {name: {k for k, v in getattr(model, name).state_dict().items() if not torch.equal(v, before[k])}
               for name, before in snap.items()}
    assert changed["vae"] == changed["text_encoder"] == set()
    trainable = set(model.trainable())
    assert changed["unet"] and changed["unet"] <= trainable
    if mode == "lora":
        assert all(".lora_" in k for k in trainable) and len(trainable) < len(snap["unet"]) / 2
    else:
        assert trainable == {k for k, _ in model.unet.named_parameters()}  # the whole UNet


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_resumed_run_ends_with_the_same_weights(manifest, tmp_path, mode):
    cfg = load_generator(cfg_of(mode=mode, epochs=3))
    whole = train_sd_turbo(manifest, CLASSES, tmp_path / "whole", cfg)

    def die(epoch):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_sd_turbo(manifest, CLASSES, tmp_path / "killed", cfg, on_epoch=die)
    again = train_sd_turbo(manifest, CLASSES, tmp_path / "killed", cfg)
    assert again["resumed_from_epoch"] == 2
    assert again["weights_sha256"] == whole["weights_sha256"]
    assert (whole["train_images"], whole["steps_per_epoch"]) == (12, 3)  # 6 kept Training images per class


def test_training_logs_losses_and_a_sample_grid(manifest, tmp_path):
    cfg = load_generator({**cfg_of(), "train": {"log_every": 1, "sample_grid": 4, "checkpoint_every": 1}})
    train_sd_turbo(manifest, CLASSES, tmp_path / "m", cfg, live_dir=tmp_path / "live")
    loss = pd.read_csv(tmp_path / "live/plots/metrics/train/loss.tsv", sep="\t")
    assert loss["step"].tolist() == [1] and np.isfinite(loss["loss"]).all()
    assert (tmp_path / "live/plots/images/samples/00001.png").is_file()


def test_a_class_without_a_prompt_is_refused(manifest, tmp_path):
    cfg = load_generator(cfg_of(prompts={"glioma": "Glioma tumor MRI"}))
    with pytest.raises(ValueError, match=r"generator\.sd_turbo\.prompts\.meningioma"):
        train_sd_turbo(manifest, CLASSES, tmp_path, cfg)


def test_prompts_that_tokenise_alike_are_refused():
    same = "a" * 40  # the tiny tokenizer keeps 32 tokens: these differ only past them
    with pytest.raises(ValueError, match="tokenise to the same ids"):
        SDTurbo(load_generator(cfg_of(prompts={"glioma": same + "x", "meningioma": same + "y"})), CPU)


def test_the_class_prompts_tokenise_to_distinct_ids():
    model = SDTurbo(load_generator(cfg_of()), CPU)
    ids = {tuple(t[0].tolist()) for t in model.ids.values()}
    assert len(ids) == 4 and all(len(set(i)) > 3 for i in ids)  # not all end-of-text


# ---- generation ---------------------------------------------------------------------------------------


def gen_cfg(mode: str, **over):
    return load_generate({"n_per_class": 3, "batch_size": 2, "out_size": 48, "seed": 5,
                          "sd_turbo": {"mode": mode, "img2img": {"steps": 4}, "txt2img": {"steps": 2}}, **over})


@pytest.mark.parametrize("mode", ["txt2img", "img2img"])
def test_generation_is_seeded_one_channel_png_at_the_output_size(trained, tmp_path, mode):
    a = generate_sd_turbo(trained, "glioma", tmp_path / "a", gen_cfg(mode))
    b = generate_sd_turbo(trained, "glioma", tmp_path / "b", gen_cfg(mode))
    c = generate_sd_turbo(trained, "glioma", tmp_path / "c", gen_cfg(mode, seed=6))
    assert a["images"] == b["images"] == 3
    files = sorted((tmp_path / "a").glob("*.png"))
    assert [f.name for f in files] == ["glioma_0000.png", "glioma_0001.png", "glioma_0002.png"]
    from PIL import Image

    with Image.open(files[0]) as im:
        assert (im.mode, im.size, im.format) == ("L", (48, 48), "PNG")
    assert all(f.read_bytes() == (tmp_path / "b" / f.name).read_bytes() for f in files)  # same seed, same bytes
    assert any(f.read_bytes() != (tmp_path / "c" / f.name).read_bytes() for f in files)
    table = read_table(tmp_path / "a/manifest.csv")
    assert {"path", "class", "index", "seed", "kind", "sampler", "steps", "trained_size", "size", "source"} <= set(table.columns)
    assert (table["trained_size"] == 32).all() and (table["size"] == 48).all()
    assert c["steps"] == (4 if mode == "img2img" else 2)


def test_img2img_starts_only_from_training_images_and_records_each_source(trained, manifest, tmp_path):
    cfg = gen_cfg("img2img", n_per_class=40, batch_size=20)
    generate_sd_turbo(trained, "meningioma", tmp_path, cfg)
    table = read_table(tmp_path / "manifest.csv")
    real = read_table(manifest)
    train = set(real.loc[(real["split"] == "train") & (real["status"] == "kept") & (real["class"] == "meningioma"), "out_path"])
    assert set(table["source"]) == train  # 40 draws from 6 images reach every one, and nothing else
    sources = read_table(trained / "sources.csv")
    assert len(sources) == 12 and set(sources["class"]) == set(CLASSES)  # no val, test or removed row


def test_a_changed_source_image_stops_generation(trained, tmp_path):
    src = read_table(trained / "sources.csv")["path"].iloc[0]
    model_dir = tmp_path / "model"
    import shutil

    shutil.copytree(trained, model_dir)
    table = read_table(model_dir / "sources.csv")
    table.loc[0, "sha256"] = "0" * 64
    write_table(table, model_dir / "sources.csv")
    with pytest.raises(ValueError, match="changed since the model was trained"):
        generate_sd_turbo(model_dir, "glioma", tmp_path / "out", gen_cfg("img2img", n_per_class=30, batch_size=30))
    assert src


def test_the_model_boundary_keeps_orientation(tmp_path):
    """uint8 grey -> the RGB [-1, 1] the model sees -> back to grey PNG: the same pixels, nothing transposed."""
    img = asymmetric(32, np.random.default_rng(1))
    model = SDTurbo(load_generator(cfg_of()), CPU)
    x = model.to_input(torch.from_numpy(img)[None, None])
    assert x.shape == (1, 3, 32, 32) and torch.equal(x[:, 0], x[:, 2])
    back = to_uint8(_gray((x + 1) / 2), 32)[0]
    write_png(tmp_path / "x.png", back)
    assert np.array_equal(read_gray(tmp_path / "x.png"), img)


# ---- saving, LoRA, markers --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_a_reloaded_model_gives_the_same_images_bit_for_bit(manifest, tmp_path, mode):
    cfg = load_generator(cfg_of(mode=mode, lr=1e-2))  # lora_alpha 8 != rank 4: the scale must survive the reload
    train_sd_turbo(manifest, CLASSES, tmp_path, cfg)
    model = SDTurbo(cfg, CPU)  # what training started from
    reloaded = load_trained(tmp_path, CPU)
    fresh = model.txt2img("glioma", 2, 0, steps=1, guidance_scale=0.0)
    a = reloaded.txt2img("glioma", 2, 0, steps=1, guidance_scale=0.0)
    assert not torch.equal(a, fresh)  # the trained weights were loaded, not the initial ones
    # The same as the model in memory at the end of training (resumed from its final checkpoint).
    ended = SDTurbo(cfg, CPU)
    from synthmri.generative import checkpoint as ckpt
    from synthmri.generative.sd_turbo_train import _restore

    _restore(ended, torch.load(tmp_path / ckpt.CHECKPOINT_FILE, weights_only=True))
    assert torch.equal(a, ended.txt2img("glioma", 2, 0, steps=1, guidance_scale=0.0))
    if mode == "lora":
        assert (tmp_path / "pytorch_lora_weights.safetensors").is_file() and not (tmp_path / "unet").exists()


def test_conditional_and_per_class_stages_write_markers(manifest, tmp_path):
    params = tmp_path / "params.yaml"
    import yaml

    params.write_text(yaml.safe_dump({"generator": cfg_of(), "data": {"classes": CLASSES},
                                      "generate": {"n_per_class": 2, "sd_turbo": {"mode": "txt2img"}}}))
    m = train_generator_cmd(manifest, "glioma", tmp_path / "glioma", params, tmp_path / "live", tmp_path / "ck")
    assert m == {"class": "glioma", "kind": "sd_turbo", "trained": False, "trained_by": "train_generator_shared"}
    assert (tmp_path / "live").is_dir() and (tmp_path / "ck").is_dir()
    train_shared_cmd(manifest, tmp_path / "shared", params)
    out = generate_cmd(tmp_path / "glioma", "glioma", tmp_path / "syn", params, tmp_path / "shared")
    assert (out["kind"], out["images"], out["sampler"]) == ("sd_turbo", 2, "txt2img-euler")

    params.write_text(yaml.safe_dump({"generator": {"kind": "ddpm"}, "data": {"classes": CLASSES}}))
    before = (tmp_path / "glioma/config.json").read_bytes()
    m = train_shared_cmd(manifest, tmp_path / "marker", params)
    assert m["trained"] is False and json.loads((tmp_path / "marker/config.json").read_text())["kind"] == "ddpm"
    assert before == (tmp_path / "glioma/config.json").read_bytes()


# ---- weights ------------------------------------------------------------------------------------------


def test_missing_weights_stop_with_one_line_naming_the_fetch_command(manifest, tmp_path):
    cfg = load_generator(cfg_of(tiny=False, weights=str(tmp_path / "nowhere")))
    with pytest.raises(W.MissingWeightsError, match="synthmri weights fetch sd-turbo"):
        train_sd_turbo(manifest, CLASSES, tmp_path / "m", cfg)
    import yaml

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"generator": cfg_of(tiny=False, weights=str(tmp_path / "nowhere")),
                                      "data": {"classes": CLASSES}}))
    result = CliRunner().invoke(app, ["train-generator-shared", str(manifest), str(tmp_path / "m"), "--params", str(params)])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "synthmri weights fetch sd-turbo" in lines[0] and "Traceback" not in result.output


def _fake_hub(tmp_path: Path, monkeypatch) -> tuple[Path, W.HubFolder]:
    """A stand-in for the hub: a local folder of files, one of them pinned."""
    src = tmp_path / "hub"
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        (src / part).mkdir(parents=True)
        (src / part / "config.json").write_text(json.dumps({"part": part}))
    (src / "unet/diffusion_pytorch_model.safetensors").write_bytes(b"unet bytes")
    entry = replace(W.HUB_FOLDERS["sd-turbo"],
                    sha256={"unet/diffusion_pytorch_model.safetensors": W.hashlib.sha256(b"unet bytes").hexdigest()})
    monkeypatch.setitem(W.HUB_FOLDERS, "sd-turbo", entry)
    return src, entry


def test_fetch_records_every_digest_and_later_checks_against_them(tmp_path, monkeypatch):
    import shutil

    src, entry = _fake_hub(tmp_path, monkeypatch)
    rows = W.fetch_folder("sd-turbo", tmp_path / "w", download=lambda e, d: shutil.copytree(src, d, dirs_exist_ok=True))
    assert {r["status"] for r in rows} == {"downloaded"} and len(rows) == 6
    verified = {Path(r["path"]).relative_to(tmp_path / "w/sd-turbo").as_posix(): r["verified"] for r in rows}
    assert verified.pop("unet/diffusion_pytorch_model.safetensors") == "sha256" and set(verified.values()) == {"none"}
    recorded = json.loads((tmp_path / "w/sd-turbo/sha256.json").read_text())
    assert len(recorded) == 6
    assert {r["status"] for r in W.fetch_folder("sd-turbo", tmp_path / "w", download=None)} == {"present"}
    (tmp_path / "w/sd-turbo/vae/config.json").write_text("{}")  # a recorded file changed later
    with pytest.raises(W.WeightsError, match="recorded in sha256.json"):
        W.check_folder("sd-turbo", tmp_path / "w/sd-turbo")


def test_fetch_refuses_wrong_bytes_and_a_failed_download_leaves_nothing(tmp_path, monkeypatch):
    import shutil

    src, _ = _fake_hub(tmp_path, monkeypatch)
    (src / "unet/diffusion_pytorch_model.safetensors").write_bytes(b"other bytes")
    with pytest.raises(W.WeightsError, match="wrong sha256"):
        W.fetch_folder("sd-turbo", tmp_path / "w", download=lambda e, d: shutil.copytree(src, d, dirs_exist_ok=True))

    def offline(entry, dest):
        raise OSError("no network")

    with pytest.raises(W.FetchError, match="stabilityai/sd-turbo"):
        W.fetch_folder("sd-turbo", tmp_path / "w", download=offline)
    assert list((tmp_path / "w").iterdir()) == []


def test_the_pinned_revision_and_unet_digest():
    entry = W.HUB_FOLDERS["sd-turbo"]
    assert entry.revision == "b261bac6fd2cf515557d5d0707481eafa0485ec2"
    assert entry.sha256 == {"unet/diffusion_pytorch_model.safetensors":
                            "438da6db739c8651ec4152341b8133d6896db452ea27afdb6b9b0344f0c40532"}
    assert not any(p.endswith(".bin") or "fp16" in p for p in entry.patterns)  # safetensors, fp32 only


# ---- the real dvc CLI ---------------------------------------------------------------------------------


@pytest.mark.slow
@DEMO_RUN_GROUP
def test_dvc_runs_the_sd_turbo_demo_route_and_reruns_narrowly(demo_baseline, tmp_path, venv_env):
    repo = private_copy(demo_baseline, tmp_path / "repo")
    out = sh(["dvc", "exp", "run", "-S", "profile=demo", "-S", "generator.kind=sd_turbo", "generate"], repo, venv_env)
    classes = ["glioma", "meningioma", "notumor", "pituitary"]
    assert ran(out) == {"train_generator_shared"} | {f"train_generator@{c}" for c in classes} | {f"generate@{c}" for c in classes}
    trained = json.loads((repo / "metrics/generator/_conditional.json").read_text())
    assert trained["kind"] == "sd_turbo" and trained["tiny"] is True and trained["epochs"] == 2
    for c in classes:
        table = read_table(repo / f"data/synthetic/{c}/manifest.csv")
        assert len(table) == 60 and (table["kind"] == "sd_turbo").all() and table["source"].str.contains(f"/train/{c}/").all()
        assert json.loads((repo / f"models/generators/{c}/config.json").read_text())["marker"] is True
    # a generation param reruns only the generate stages
    out = sh(["dvc", "exp", "run", "-S", "profile=demo", "-S", "generator.kind=sd_turbo",
              "-S", "generate.sd_turbo.mode=txt2img", "generate"], repo, venv_env)
    assert ran(out) == {f"generate@{c}" for c in classes}


def test_the_registry_knows_which_kinds_train_one_model_for_all_classes():
    from synthmri.generative.registry import CONDITIONAL, kinds

    assert {name for name, cls in kinds().items() if cls.conditional} == set(CONDITIONAL) == {"sd_turbo"}


def test_memorisation_compares_each_img2img_image_with_its_own_source(tmp_path):
    from synthmri.fidelity.config import MemorisationParams
    from synthmri.fidelity.evaluate import synthetic_sources
    from synthmri.fidelity.features import load_images as load_set
    from synthmri.fidelity.memorisation import own_source

    rng = np.random.default_rng(2)
    real = [asymmetric(64, rng) for _ in range(3)]
    for i, img in enumerate(real):
        write_png(tmp_path / f"real/{i}.png", img)
    write_png(tmp_path / "syn/c_0000.png", real[0][:, ::-1])  # a mirrored copy of its own source
    write_png(tmp_path / "syn/c_0001.png", real[2])  # a copy of another image than its source
    write_table(pd.DataFrame({"path": ["c_0000.png", "c_0001.png"],
                              "source": [(tmp_path / "real/0.png").as_posix(), (tmp_path / "real/1.png").as_posix()]}),
                tmp_path / "syn/manifest.csv")
    train = load_set("real", [(tmp_path / f"real/{i}.png").as_posix() for i in range(3)], 50, 1)
    synth = load_set("syn", [(tmp_path / f"syn/c_{i:04d}.png").as_posix() for i in range(2)], 50, 1)
    own = own_source(synth, train, synthetic_sources(tmp_path / "syn", synth.paths), MemorisationParams())
    assert (own["images"], own["near_copies"], own["mse_min"]) == (2, 1, 0.0)
