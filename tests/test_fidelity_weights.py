"""synthmri.pretrained: the registry matches the libraries and pins the published full sha256, the one
checked loader refuses other bytes and pickled code and says how far it verified a file, fetch checks
what it downloads (no network: file:// and a closed loopback port), a missing file names the command."""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from synthmri import pretrained as W
from synthmri.cli import app

# The published files' sha256 (issue 9 §3: several independent public sources).
PUBLISHED = {
    "inception": "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
    "vgg19": "dcbb9e9dad569fff7a846263a77324fc34978fea2bfb039c012d710e1776ae44",
    "resnet50": "0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a",
    "resnet152": "394f9c45966e3651a89bbb78a48410a6755854ce4a5ab64927cf1c7247f85e58",
    "mobilenet_v2": "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
}


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch):
    monkeypatch.setattr(W, "_CHECKED", {})


def test_registry_matches_the_libraries_and_pins_full_digests():
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
    assert {n: w.sha256 for n, w in W.REGISTRY.items()} == PUBLISHED
    for w in W.REGISTRY.values():
        assert w.pinned and w.url.rsplit("/", 1)[1] == w.file  # torch.hub's file name ...
        assert W.name_prefix(w.file) == w.sha256[:8]  # ... carries the digest's first 8 hex digits
    assert W.get("inception").size == 95_628_359 and W.get("vgg19").size == 574_673_361
    with pytest.raises(ValueError, match="unknown weights 'vgg16'; known: inception, vgg19"):
        W.get("vgg16")
    with pytest.raises(ValueError, match="file name net-00000000.pth says sha256 00000000"):
        W.WeightsFile("net", "net-00000000.pth", "file:///x", "1" * 64, "tests")


def _server_file(tmp_path, payload: bytes):
    src = tmp_path / "server" / "net.pth"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(payload)
    return src, hashlib.sha256(payload).hexdigest()


def _local_entry(tmp_path, payload: bytes, sha256: str | None = None) -> W.WeightsFile:
    src, digest = _server_file(tmp_path, payload)
    return W.WeightsFile("net", f"net-{digest[:8]}.pth", src.as_uri(), sha256 or digest, "tests")


def _state_bytes(tmp_path, state) -> bytes:
    torch.save(state, tmp_path / "s.pth")
    return (tmp_path / "s.pth").read_bytes()


# ---- check and load ------------------------------------------------------------------------------


def test_random_bytes_under_a_registered_name_are_refused(tmp_path):
    """Published name, other bytes: a rejection, by size before any hashing where the size is pinned."""
    fake = tmp_path / "resnet50-0676ba61.pth"
    torch.save({"w": torch.zeros(1)}, fake)  # a perfectly loadable state dict
    with pytest.raises(W.WeightsError, match="is not 0676ba61b6795bbe.*corrupt or not the published one.*"
                                             "synthmri weights fetch resnet50"):
        W.load(fake)
    with pytest.raises(W.WeightsError, match="is not 0676ba61"):
        W.load_registered("resnet50", tmp_path)
    vgg = tmp_path / "vgg19-dcbb9e9d.pth"
    vgg.write_bytes(b"\0" * 1000)
    with pytest.raises(W.WeightsError, match="1,000 bytes, the published vgg19 file has 574,673,361"):
        W.check(vgg)
    assert W._CHECKED == {}  # a refused file is never remembered as checked


def test_a_pinned_file_is_verified_by_its_full_digest_not_its_prefix(tmp_path):
    payload = _state_bytes(tmp_path, {"w": torch.arange(3.0)})
    entry = _local_entry(tmp_path, payload)
    path = tmp_path / "models" / entry.file
    path.parent.mkdir()
    path.write_bytes(payload)
    state, checked = W.load(path, entry)
    assert torch.equal(state["w"], torch.arange(3.0))
    assert checked.record() == {"path": path.as_posix(), "sha256": entry.sha256, "bytes": len(payload),
                                "verified": "sha256", "registry": "net"}
    # same 8-hex prefix, different full digest: the prefix alone would have passed it
    other = replace(entry, sha256=entry.sha256[:8] + ("0" * 56 if entry.sha256[8:] != "0" * 56 else "1" * 56))
    with pytest.raises(W.WeightsError, match=f"sha256 {entry.sha256} is not {other.sha256}"):
        W.check(path, other)


def test_an_unpinned_file_is_checked_by_its_name_prefix_and_reported_as_such(tmp_path):
    payload = _state_bytes(tmp_path, {"w": torch.ones(2)})
    digest = hashlib.sha256(payload).hexdigest()
    named = tmp_path / f"mynet-{digest[:8]}.pth"
    named.write_bytes(payload)
    with pytest.warns(W.UnpinnedWeightsWarning, match="checked only by the sha256 prefix"):
        _, checked = W.load(named)
    assert (checked.verified, checked.sha256, checked.registry) == ("prefix", digest, None)
    wrong = tmp_path / f"mynet-{'0' if digest[0] != '0' else '1'}{digest[1:8]}.pth"
    wrong.write_bytes(payload)
    with pytest.raises(W.WeightsError, match="does not start with .*torch.hub-style name"):
        W.load(wrong)
    # a registry entry that knows only the prefix is checked, and reported, the same way
    entry = _local_entry(tmp_path, payload, sha256=digest[:8])
    assert not entry.pinned and W.check(named, entry).verified == "prefix"


def test_a_user_supplied_file_is_loaded_with_its_digest_recorded_never_as_verified(tmp_path):
    payload = _state_bytes(tmp_path, {"w": torch.ones(2)})
    own = tmp_path / "my-finetuned-inception.pth"
    own.write_bytes(payload)
    with pytest.warns(W.UnpinnedWeightsWarning, match="a user-supplied file: its digest is recorded"):
        state, checked = W.load(own)
    assert torch.equal(state["w"], torch.ones(2))
    assert checked.record() == {"path": own.as_posix(), "sha256": hashlib.sha256(payload).hexdigest(),
                                "bytes": len(payload), "verified": "none", "registry": None}
    assert W.check(own).verified == "none"


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled code ran",))


def test_loading_never_unpickles_code(tmp_path, capsys):
    evil = tmp_path / "evil.pth"
    torch.save({"w": _Evil()}, evil, pickle_module=pickle)
    with pytest.warns(W.UnpinnedWeightsWarning), pytest.raises(W.WeightsError, match="not a plain state dict"):
        W.load(evil)
    assert "unpickled code ran" not in capsys.readouterr().out
    listed = tmp_path / "list.pth"
    torch.save([torch.ones(1)], listed)
    with pytest.warns(W.UnpinnedWeightsWarning), pytest.raises(W.WeightsError, match="expected a state dict, got list"):
        W.load(listed)


def test_a_check_is_done_once_per_path_size_and_mtime(tmp_path, monkeypatch):
    payload = _state_bytes(tmp_path, {"w": torch.ones(2)})
    entry = _local_entry(tmp_path, payload)
    path = tmp_path / entry.file
    path.write_bytes(payload)
    calls = []
    real = W.sha256_of
    monkeypatch.setattr(W, "sha256_of", lambda p: calls.append(p) or real(p))
    for _ in range(3):
        assert W.load(path, entry)[1].verified == "sha256"
    assert len(calls) == 1
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # touched: checked again
    W.check(path, entry)
    assert len(calls) == 2
    path.write_bytes(b"x" * len(payload))  # same size, new bytes, new mtime: refused
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    with pytest.raises(W.WeightsError, match="is not"):
        W.check(path, entry)


def test_missing_weights_error_names_the_file_and_the_command(tmp_path):
    with pytest.raises(W.MissingWeightsError) as e:
        W.weights_path("vgg19", tmp_path / "models/pretrained")
    msg = str(e.value)
    assert "vgg19-dcbb9e9d.pth" in msg and "synthmri weights fetch vgg19" in msg and "Nothing is downloaded" in msg
    assert isinstance(e.value, FileNotFoundError)  # cli.py prints it without a traceback
    with pytest.raises(W.MissingWeightsError, match="weights-inception-2015-12-05-6726825d.pth"):
        W.load(W.DEFAULT_DIR / "weights-inception-2015-12-05-6726825d.pth")


# ---- fetch ------------------------------------------------------------------------------------------


def test_fetch_downloads_checks_the_full_sha256_and_keeps_a_good_file(tmp_path):
    payload = b"weights" * 1000
    entry = _local_entry(tmp_path, payload)
    dest = tmp_path / "models/pretrained"
    got = W.fetch_one(entry, dest)
    assert (got["status"], got["sha256"], got["verified"]) == ("downloaded", entry.sha256, "sha256")
    assert (dest / entry.file).read_bytes() == payload and got["bytes"] == len(payload)
    assert W.fetch_one(entry, dest)["status"] == "present"
    (dest / entry.file).write_bytes(b"truncated")  # a corrupt copy is an error, never silently used
    with pytest.raises(W.WeightsError, match="corrupt or not the published one"):
        W.fetch_one(entry, dest)


def test_fetch_refuses_a_wrong_sha256_and_leaves_nothing(tmp_path):
    payload = b"something else"
    good = hashlib.sha256(payload).hexdigest()
    entry = replace(_local_entry(tmp_path, payload), sha256=good[:8] + ("0" * 56 if good[8:] != "0" * 56 else "1" * 56))
    dest = tmp_path / "models/pretrained"
    with pytest.raises(W.WeightsError, match=f"downloaded sha256 {good} is not {entry.sha256}"):
        W.fetch_one(entry, dest)
    assert list(dest.iterdir()) == []  # no file, no temporary left behind


def test_fetch_of_an_unreachable_url_is_a_fetch_error_naming_it(tmp_path):
    entry = W.WeightsFile("net", "net-00000000.pth", "http://127.0.0.1:9/net-00000000.pth", "00000000", "tests")
    with pytest.raises(W.FetchError, match=r"downloading net from http://127\.0\.0\.1:9/net-00000000\.pth failed"):
        W.fetch_one(entry, tmp_path / "dest", timeout=5)
    assert list((tmp_path / "dest").iterdir()) == []


def test_weights_fetch_command_prints_one_error_line_when_the_network_fails(tmp_path, monkeypatch):
    entry = W.get("inception")
    monkeypatch.setitem(W.REGISTRY, "inception", replace(entry, url=f"http://127.0.0.1:9/{entry.file}"))
    result = CliRunner().invoke(app, ["weights", "fetch", "inception", "--dest", str(tmp_path / "w")])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: downloading inception from http://127.0.0.1:9/"), lines
    assert "Traceback" not in result.output and not (tmp_path / "w" / entry.file).exists()


def test_weights_fetch_command_reports_what_it_verified(tmp_path, monkeypatch):
    payload = b"weights" * 10
    entry = _local_entry(tmp_path, payload)
    monkeypatch.setitem(W.REGISTRY, "net", entry)
    result = CliRunner().invoke(app, ["weights", "fetch", "net", "--dest", str(tmp_path / "w")])
    assert result.exit_code == 0, result.output
    assert "downloaded" in result.output and f"sha256 {entry.sha256[:16]}… (sha256)" in result.output


# ---- random Inception weights -------------------------------------------------------------------------


def test_random_inception_weights_are_seeded():
    a, b = W.random_inception_state_dict(0), W.random_inception_state_dict(0)
    c = W.random_inception_state_dict(1)
    key = "Conv2d_1a_3x3.conv.weight"
    assert torch.equal(a[key], b[key]) and not torch.equal(a[key], c[key])
    assert a[key].std() > 0.2  # Kaiming-normal: sqrt(2 / 27) = 0.27; PyTorch's (degenerate) default: 0.11
    assert a["fc.weight"].shape == (1008, 2048) and len(a) == len(c)
