"""params.yaml: typed sections refuse nonsense before compute; params.yaml is conf/ composed.

None of these tests reads the workspace's params.yaml: `make demo` (any `dvc exp run -S ...`) leaves it on
another profile. They compose from conf/ into a temporary file, or read the committed file from git.
"""

from __future__ import annotations

import subprocess
import tarfile
from io import BytesIO
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from synthmri import params as P
from synthmri.cli import app
from synthmri.profiles import compose as hydra_compose


def compose(profile: str, out: Path) -> Path:
    """params.yaml for `profile`, composed from the working tree's conf/ as `dvc exp run -S` does, and checked."""
    result = CliRunner().invoke(app, ["params", f"profile={profile}", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def committed(root: Path, paths: list[str], dst: Path) -> Path:
    """`paths` as the last commit has them, extracted under `dst`."""
    proc = subprocess.run(["git", "archive", "--format=tar", "HEAD", *paths], cwd=root, capture_output=True)
    if proc.returncode != 0:
        raise AssertionError(f"these tests read the committed {paths} from git: {proc.stderr.decode().strip()}")
    with tarfile.open(fileobj=BytesIO(proc.stdout)) as tar:
        tar.extractall(dst, filter="data")
    return dst


def test_paper_profile_loads_every_section(root, tmp_path, monkeypatch):
    monkeypatch.chdir(root)
    data = P.read_params(compose("paper", tmp_path / "params.yaml"))
    for section in P.SECTIONS:
        P.load(section, data=data)
    assert data["profile_name"] == "paper"


@pytest.mark.parametrize(
    "section, raw, message",
    [
        ("dedup", {"enigne": "fast"}, "dedup: unknown key(s) ['enigne']"),
        ("dedup", {"engine": "magic"}, "dedup.engine: expected one of ['fast', 'difpy']"),
        ("dedup", {"similarity": "close"}, "dedup.similarity"),
        ("audit", {"blur_threshold": "fifty"}, "audit.blur_threshold: expected a number"),
        ("preprocess", {"balance": {"min": 900, "max": 700}}, "preprocess.balance: need 0 < min <= max"),
        ("preprocess", {"rotate": {"test": "yes"}}, "preprocess.rotate.test: expected true or false"),
        ("preprocess", {"histmatch": {"reference_splits": ["val"]}}, "preprocess.histmatch.reference_splits[0]"),
        ("demo", {"train_per_class": 1.5}, "demo.train_per_class: expected an integer"),
        ("data", {"classes": ["a", "a"]}, "data.classes must be distinct"),
    ],
)
def test_bad_values_name_the_key(section, raw, message):
    with pytest.raises(P.ParamsError) as e:
        P.load(section, data={section: raw})
    assert message in str(e.value)


def test_similarity_names_map_to_difpy_thresholds():
    assert P.load("dedup", data={"dedup": {"similarity": "duplicates"}}).mse_threshold == 0.0
    assert P.load("dedup", data={"dedup": {"similarity": "similar"}}).mse_threshold == 5.0
    assert P.load("dedup", data={"dedup": {"similarity": 2.5}}).mse_threshold == 2.5


def test_params_yaml_is_the_composition_of_conf(root, tmp_path):
    """No drift: the committed params.yaml is exactly what `dvc exp run -S profile=paper` writes from the
    committed conf/, so a plain `dvc repro` on a fresh clone runs the paper's settings."""
    snapshot = committed(root, ["params.yaml", "conf"], tmp_path / "head")
    # DVC's Hydra composition alone: whether today's code accepts the committed values is not this test's
    # question (test_paper_profile_loads_every_section checks the working tree's).
    out = hydra_compose(["profile=paper"], tmp_path / "composed.yaml", conf_dir=snapshot / "conf")
    assert yaml.safe_load(out.read_text()) == yaml.safe_load((snapshot / "params.yaml").read_text())


@pytest.mark.parametrize("profile", ["demo", "paper_as_coded"])
def test_profiles_compose_and_differ_only_where_they_say(root, tmp_path, monkeypatch, profile):
    monkeypatch.chdir(root)
    composed = yaml.safe_load(compose(profile, tmp_path / "params.yaml").read_text())
    overlay = yaml.safe_load((root / "conf" / "profile" / f"{profile}.yaml").read_text())
    groups = overlay.pop("defaults", [])  # Hydra's defaults list picks config group options; it is not a param
    base = yaml.safe_load(compose("paper", tmp_path / "paper.yaml").read_text())  # the default profile
    assert composed["profile_name"] == profile
    if {"override /scenarios": "none"} in groups:  # the profile's scenarios replace the paper's, not add to them
        assert list(composed["classify"]["scenarios"]) == list(overlay["classify"]["scenarios"])

    def leaves(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    changed = {k for k, v in leaves(composed) if dict(leaves(base)).get(k) != v}
    assert changed == {k for k, _ in leaves(overlay)} - {k for k, v in leaves(overlay) if dict(leaves(base)).get(k) == v}


def test_paper_as_coded_reverses_each_slip(root, tmp_path, monkeypatch):
    monkeypatch.chdir(root)
    out = tmp_path / "params.yaml"
    CliRunner().invoke(app, ["params", "profile=paper_as_coded", "--out", str(out)])
    data = P.read_params(out)
    pre, dd = P.load("preprocess", data=data), P.load("dedup", data=data)
    assert dd.cross_split is False
    assert pre.rotate.test is True
    assert pre.histmatch.apply is False
    assert set(pre.histmatch.reference_splits) == {"train", "test"}


def test_params_command_refuses_a_bad_override(root, tmp_path, monkeypatch):
    monkeypatch.chdir(root)
    result = CliRunner().invoke(app, ["params", "profile=demo", "dedup.engine=magic", "--out", str(tmp_path / "p.yaml")])
    assert result.exit_code == 2
    assert "dedup.engine" in result.output
