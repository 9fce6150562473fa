"""A missing raw dataset, in any profile, stops the pipeline with one line saying what to do.

DVC checks a stage's dependencies before running its command, and for a missing one prints only
"No such file or directory: data/raw/kaggle". So the `raw_check` stage, upstream of ingest, looks first
(issue 13 §2: after the demo, `dvc exp run -S ratio=2` recomposes params.yaml on the paper profile).
"""

from __future__ import annotations

import shutil

import pytest
import yaml
from typer.testing import CliRunner

from synthmri import params as P
from synthmri.cli import app
from tests.conftest import ROOT, sh

SOURCE = "the Kaggle set: download it"
DEMO_HINT = "; or run on the bundled demo data: dvc exp run -S profile=demo"


def _data(raw, profile="paper", source=SOURCE) -> dict:
    return {"profile_name": profile, "data": {"raw": str(raw), "source": source}}


def test_a_present_dataset_passes_and_is_recorded(tmp_path):
    (tmp_path / "kaggle" / "Training").mkdir(parents=True)
    assert P.check_raw(tmp_path / "kaggle", _data(tmp_path / "kaggle")) == \
        {"raw": (tmp_path / "kaggle").as_posix(), "format": "folder"}
    (tmp_path / "kaggle.zip").write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip: ingest judges its contents
    assert P.check_raw(tmp_path / "kaggle.zip", _data(tmp_path / "kaggle.zip"))["format"] == "file"


@pytest.mark.parametrize(
    "setup, profile, source, expected",
    [
        (None, "paper", SOURCE, "raw data not found: {raw} (data.raw of profile paper); get it: " + SOURCE + DEMO_HINT),
        ("empty", "paper_as_coded", SOURCE,
         "raw data is an empty folder: {raw} (data.raw of profile paper_as_coded); get it: " + SOURCE + DEMO_HINT),
        ("dvc", "paper", SOURCE,
         "raw data not found: {raw} (data.raw of profile paper); DVC tracks it ({raw}.dvc): `dvc pull {raw}.dvc` "
         "fetches it from the remote" + DEMO_HINT),
        (None, "mine", "", "raw data not found: {raw} (data.raw of profile mine); put the dataset there or point "
         "data.raw at it (-S data.raw=<path>)" + DEMO_HINT),
        (None, "demo", "the bundled demo set (dvc repro demo_data)",
         "raw data not found: {raw} (data.raw of profile demo); get it: the bundled demo set (dvc repro demo_data)"),
    ],
)
def test_a_missing_dataset_says_what_to_do(tmp_path, setup, profile, source, expected):
    raw = tmp_path / "kaggle"
    if setup == "empty":
        raw.mkdir()
    elif setup == "dvc":
        (tmp_path / "kaggle.dvc").write_text("outs:\n- path: kaggle\n")
    with pytest.raises(FileNotFoundError) as e:
        P.check_raw(raw, _data(raw, profile, source))
    assert str(e.value) == expected.format(raw=raw.as_posix())


def test_the_command_prints_one_line_and_writes_nothing(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(_data("data/raw/kaggle")))
    out = tmp_path / "raw.json"
    result = CliRunner().invoke(app, ["check-raw", str(tmp_path / "nothing"), str(out), "--params", str(params)],
                                env={"COLUMNS": "60"})
    assert result.exit_code == 2
    assert result.output == (f"error: raw data not found: {(tmp_path / 'nothing').as_posix()} (data.raw of profile "
                             f"paper); get it: {SOURCE}{DEMO_HINT}\n")
    assert not out.exists()


def test_every_profile_says_how_to_get_its_data(tmp_path):
    from synthmri.profiles import compose, profiles

    for name in profiles(ROOT / "conf"):
        data = P.read_params(compose([f"profile={name}"], tmp_path / f"{name}.yaml", ROOT / "conf"))
        source = P.load("data", data=data).source
        assert source and "${" not in source, name  # interpolations resolved: the profile's own path
        assert data["data"]["raw"] in source or (data["data"]["raw"] == "data/raw/demo" and "demo_data stage" in source), name


def test_ingest_runs_after_raw_check():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    check = stages["raw_check"]
    out = check["outs"][0] if isinstance(check["outs"][0], str) else next(iter(check["outs"][0]))
    assert check["cmd"].split()[:3] == ["synthmri", "check-raw", "${data.raw}"] and out in check["cmd"]
    assert out in stages["ingest"]["deps"] and "${data.raw}" in stages["ingest"]["deps"]  # still tracked
    assert "data/raw" in check["deps"] and check["params"] == ["data.raw"]


@pytest.mark.slow
def test_dvc_exp_run_after_the_demo_stops_at_raw_check_with_the_line(tmp_path, venv_env):
    """The issue's sequence with the real dvc CLI, in a tiny project holding only the raw_check stage of
    dvc.yaml: on the demo profile it passes; `dvc exp run -S ratio=2` recomposes the paper profile, whose
    data/raw/kaggle is absent, and stops with our line, not DVC's "No such file or directory"."""
    repo = tmp_path / "repo"
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    (repo / "src/synthmri").mkdir(parents=True)
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"raw_check": spec["stages"]["raw_check"]}}))
    for dep in spec["stages"]["raw_check"]["deps"]:
        if dep.startswith("src/"):
            shutil.copy2(ROOT / dep, repo / dep)
    shutil.copytree(ROOT / "conf", repo / "conf")
    (repo / "data/raw/demo").mkdir(parents=True)
    (repo / "data/raw/demo/demo_truth.csv").write_text("relpath\n")
    sh(["git", "init", "-q", "-b", "main"], repo, venv_env)
    sh(["dvc", "init", "-q"], repo, venv_env)
    sh(["dvc", "config", "hydra.enabled", "true"], repo, venv_env)
    sh(["synthmri", "params", "profile=demo"], repo, venv_env)
    sh(["dvc", "repro"], repo, venv_env)
    sh(["git", "add", "-A"], repo, venv_env)
    sh(["git", "commit", "-qm", "demo"], repo, venv_env)

    import subprocess

    proc = subprocess.run(["dvc", "exp", "run", "-S", "ratio=2"], cwd=repo, env={**venv_env, "COLUMNS": "60"},
                          capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    source = P.load("data", data=P.read_params(repo / "params.yaml")).source  # the paper profile's, now
    assert (f"error: raw data not found: data/raw/kaggle (data.raw of profile paper); get it: {source}{DEMO_HINT}\n"
            in out), out
    assert "ERROR: failed to reproduce 'raw_check'" in out and "No such file or directory" not in out, out
    assert "Traceback" not in out

    # the data there and checked, then deleted: anything changing under data/raw reruns the check
    (repo / "data/raw/kaggle/Training").mkdir(parents=True)
    (repo / "data/raw/kaggle/Training/a.jpg").write_bytes(b"\xff\xd8")  # DVC's hashes skip empty folders
    sh(["dvc", "repro"], repo, venv_env)
    shutil.rmtree(repo / "data/raw/kaggle")
    proc = subprocess.run(["dvc", "repro"], cwd=repo, env=venv_env, capture_output=True, text=True)
    assert proc.returncode != 0 and "error: raw data not found: data/raw/kaggle" in proc.stdout + proc.stderr
