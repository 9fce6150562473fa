"""Pretrained weights: the registry matches the libraries, fetch checks sha256 (no network: file://),
loading refuses pickled code, and a missing file stops with the file and the command."""

from __future__ import annotations

import hashlib
import pickle

import pytest
import torch

from synthmri.fidelity import weights as W


def test_registry_matches_torchvision_and_torch_fidelity():
    import torchvision.models as tvm
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    expected = {
        "inception": URL_INCEPTION_V3,
        "vgg19": tvm.VGG19_Weights.IMAGENET1K_V1.url,
        "resnet50": tvm.ResNet50_Weights.IMAGENET1K_V1.url,
        "resnet152": tvm.ResNet152_Weights.IMAGENET1K_V1.url,
        "mobilenet_v2": tvm.MobileNet_V2_Weights.IMAGENET1K_V1.url,
    }
    assert {n: w.url for n, w in W.REGISTRY.items()} == expected
    for w in W.REGISTRY.values():
        assert w.url.rsplit("/", 1)[1] == w.file  # torch.hub's file name ...
        assert w.file.endswith(f"-{w.sha256_prefix}.pth") and len(w.sha256_prefix) == 8  # ... carries the prefix
    with pytest.raises(ValueError, match="unknown weights 'vgg16'; known: inception, vgg19"):
        W.get("vgg16")


def _local_entry(tmp_path, payload: bytes, prefix: str | None = None) -> W.WeightsFile:
    src = tmp_path / "server" / "net.pth"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    return W.WeightsFile("net", f"net-{digest[:8]}.pth", src.as_uri(), prefix or digest[:8], "tests")


def test_fetch_downloads_checks_sha256_and_keeps_a_good_file(tmp_path):
    payload = b"weights" * 1000
    entry = _local_entry(tmp_path, payload)
    dest = tmp_path / "models/pretrained"
    got = W.fetch_one(entry, dest)
    assert got["status"] == "downloaded" and got["sha256"] == hashlib.sha256(payload).hexdigest()
    assert (dest / entry.file).read_bytes() == payload and got["bytes"] == len(payload)
    assert W.fetch_one(entry, dest)["status"] == "present"
    (dest / entry.file).write_bytes(b"truncated")  # a corrupt copy is an error, never silently used
    with pytest.raises(ValueError, match="corrupt or not the published one"):
        W.fetch_one(entry, dest)


def test_fetch_refuses_a_wrong_sha256_and_leaves_nothing(tmp_path):
    entry = _local_entry(tmp_path, b"something else", prefix="00000000")
    dest = tmp_path / "models/pretrained"
    with pytest.raises(ValueError, match="does not start with 00000000"):
        W.fetch_one(entry, dest)
    assert list(dest.iterdir()) == []  # no file, no temporary left behind


def test_fetch_of_an_unreachable_url_says_which(tmp_path):
    entry = W.WeightsFile("net", "net-00000000.pth", (tmp_path / "nowhere.pth").as_uri(), "00000000", "tests")
    with pytest.raises(OSError, match="downloading net from file://"):
        W.fetch_one(entry, tmp_path / "dest")


def test_missing_weights_error_names_the_file_and_the_command(tmp_path):
    with pytest.raises(W.MissingWeightsError) as e:
        W.weights_path("vgg19", tmp_path / "models/pretrained")
    msg = str(e.value)
    assert "vgg19-dcbb9e9d.pth" in msg and "synthmri weights fetch vgg19" in msg and "Nothing is downloaded" in msg
    assert isinstance(e.value, FileNotFoundError)  # cli.py prints it without a traceback
    with pytest.raises(W.MissingWeightsError, match="weights-inception-2015-12-05-6726825d.pth"):
        W.load_state_dict(W.DEFAULT_DIR / "weights-inception-2015-12-05-6726825d.pth")


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled code ran",))


def test_load_state_dict_refuses_pickled_code_and_checks_registry_files(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"w": torch.ones(2)}, good)
    assert torch.equal(W.load_state_dict(good)["w"], torch.ones(2))
    evil = tmp_path / "evil.pth"
    torch.save({"w": _Evil()}, evil, pickle_module=pickle)
    with pytest.raises(ValueError, match="not a plain state dict"):
        W.load_state_dict(evil)
    fake = tmp_path / "resnet50-0676ba61.pth"  # a registry name with other bytes
    torch.save({"w": torch.zeros(1)}, fake)
    with pytest.raises(ValueError, match="does not start with 0676ba61"):
        W.load_state_dict(fake)


def test_random_inception_weights_are_seeded():
    a, b = W.random_inception_state_dict(0), W.random_inception_state_dict(0)
    c = W.random_inception_state_dict(1)
    key = "Conv2d_1a_3x3.conv.weight"
    assert torch.equal(a[key], b[key]) and not torch.equal(a[key], c[key])
    assert a[key].std() > 0.2  # Kaiming-normal: sqrt(2 / 27) = 0.27; PyTorch's (degenerate) default: 0.11
    assert a["fc.weight"].shape == (1008, 2048) and len(a) == len(c)
