"""`synthmri params`: every Hydra mistake is one line naming what was wrong and the valid choices, and a
refused composition leaves the old params.yaml byte for byte (validated first, written atomically).

Compositions read the working tree's conf/ into temporary files; the workspace's params.yaml is never read.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from synthmri.cli import app
from synthmri.profiles import profiles


def _params(root, out, *overrides):
    return CliRunner().invoke(app, ["params", *overrides, "--out", str(out), "--conf", str(root / "conf")],
                              env={"COLUMNS": "60"})  # narrower than every message: nothing may wrap


def _choices(root) -> str:
    return ", ".join(profiles(root / "conf"))


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["profile=nope"], "unknown profile 'nope': choose one of {choices} (profile=<name>)"),
        (["profile="], "unknown profile '': choose one of {choices} (profile=<name>)"),
        (["demo"], "'demo' is not an override: write key=value, e.g. profile=demo (profiles: {choices})"),
        (["profile=demo", "clasify.train.epochs=3"], "unknown key 'clasify.train.epochs'; did you mean classify.train.epochs?"),
        (["classify.train.epoch=3"], "unknown key 'classify.train.epoch'; did you mean classify.train.epochs?"),
        (["dedupe.engine=fast"], "unknown key 'dedupe.engine'; did you mean dedup.engine?"),
        (["preprocess.clahe.clip=3"],
         "unknown key 'preprocess.clahe.clip'; keys under preprocess.clahe: enabled, clip_limit, tile_grid"),
        (["+clasify.train.epochs=3"], "unknown top-level key(s) ['clasify']; did you mean classify? known: "
         "profile_name, data, demo, ingest, audit, dedup, link, split, preprocess, task, generator, generate, fidelity, ratio, classify"),
        (["a=b=c"], "cannot read override 'a=b=c' (mismatched input '=' expecting <EOF>): write key=value, "
         "quoting a value with spaces or commas"),
        (["ratio=1,2"], "'ratio=1,2' is a sweep (several values); params.yaml takes one value "
         "(a sweep of experiments: dvc exp run --queue -S ratio=1,2)"),
        (["data=[1,2]"], "cannot compose params.yaml: Error merging override data=[1,2]: "
         "Cannot merge DictConfig with ListConfig"),
        (["data.raw=${nope}"], "cannot compose params.yaml: Interpolation key 'nope' not found"),
        (["classify.train.epochs=abc"], "classify.train.epochs: expected an integer, got 'abc'"),
        (["preprocess.histmatch.reference_splits=[train,test]"],  # brackets printed, not taken as markup
         "preprocess.histmatch.reference_splits: must be [train] when preprocess.histmatch.apply is true: "
         "a reference built from Testing images would carry test information into every matched image"),
    ],
)
def test_each_mistake_is_one_line_with_the_choices(root, tmp_path, overrides, expected):
    result = _params(root, tmp_path / "params.yaml", *overrides)
    assert result.exit_code == 2
    assert result.output == f"error: {expected.format(choices=_choices(root))}\n"
    assert not (tmp_path / "params.yaml").exists()


def test_a_refused_composition_leaves_the_old_params_yaml(root, tmp_path):
    out = tmp_path / "params.yaml"
    assert _params(root, out, "profile=demo").exit_code == 0
    before = out.read_bytes()
    for bad in (["profile=paper", "preprocess.size=5"], ["profile=paper", "+foo=1"], ["profile=nope"]):
        result = _params(root, out, *bad)
        assert result.exit_code == 2, result.output
        assert out.read_bytes() == before, bad
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # no temporary left beside it
    assert _params(root, out, "profile=paper").exit_code == 0 and out.read_bytes() != before


def test_the_real_command_prints_no_traceback(root, tmp_path, venv_env):
    """The installed entry point, not CliRunner: stderr is exactly the one line, exit status 2."""
    proc = subprocess.run([sys.executable, "-m", "synthmri.cli", "params", "profile=nope", "--out",
                           str(tmp_path / "p.yaml")], cwd=root, env={**venv_env, "COLUMNS": "40"},
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr == f"error: unknown profile 'nope': choose one of {_choices(root)} (profile=<name>)\n"
    assert proc.stdout == ""
