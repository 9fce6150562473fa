"""A team remote on real S3-compatible storage: push from one clone, pull into a fresh one, nothing to rerun.

moto's server mode serves the S3 API over HTTP on loopback; `dvc` (with the dvc-s3 plugin) talks to it
exactly as to any S3-compatible store (`endpointurl`), with the credentials in `.dvc/config.local`, where
they stay out of git. The origin is a copy of the demo baseline (its data pipeline run and committed); the
clone gets every output from the bucket alone (its cache starts empty, the local `team` remote is never written).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import boto3  # boto3 and moto come with the `test` extra (dvc-s3, moto[server])
import pytest
import yaml
from moto.server import ThreadedMotoServer

from tests.conftest import DATA_END, private_copy, ran, sh

pytestmark = pytest.mark.slow

BUCKET = "synthmri-team"
KEY, SECRET = "synthmri-test-key", "synthmri-test-secret"  # moto accepts any pair
REGION = "us-east-1"
TARGET = DATA_END  # targets keep this test to the data stages as the pipeline grows (the end-to-end test runs all)


@pytest.fixture(scope="module")
def s3():
    """A real S3-compatible HTTP server on 127.0.0.1 (an OS-chosen port) with one empty bucket."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=url, region_name=REGION,
                          aws_access_key_id=KEY, aws_secret_access_key=SECRET)
    client.create_bucket(Bucket=BUCKET)
    yield url, client
    server.stop()


@pytest.fixture(scope="module")
def env(venv_env, tmp_path_factory) -> dict[str, str]:
    """No AWS settings from this machine leak in, and nothing asks a cloud metadata service."""
    env = {k: v for k, v in venv_env.items() if not k.startswith("AWS_")}
    nowhere = tmp_path_factory.mktemp("aws") / "none"
    env.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=str(nowhere), AWS_SHARED_CREDENTIALS_FILE=str(nowhere))
    return env


def add_credentials(repo: Path, env: dict[str, str]) -> None:
    sh(["dvc", "remote", "modify", "--local", "store", "access_key_id", KEY], repo, env)
    sh(["dvc", "remote", "modify", "--local", "store", "secret_access_key", SECRET], repo, env)


@pytest.fixture(scope="module")
def origin(tmp_path_factory, demo_baseline, env, s3) -> Path:
    """The project with the demo data pipeline run, an S3 default remote committed, everything pushed."""
    url, _ = s3
    repo = private_copy(demo_baseline, tmp_path_factory.mktemp("remote") / "origin")
    sh(["dvc", "remote", "add", "-d", "store", f"s3://{BUCKET}/synthmri"], repo, env)
    sh(["dvc", "remote", "modify", "store", "endpointurl", url], repo, env)
    sh(["dvc", "remote", "modify", "store", "region", REGION], repo, env)
    add_credentials(repo, env)
    sh(["git", "commit", "-qam", "team remote on S3"], repo, env)
    sh(["dvc", "push", "--with-deps", TARGET], repo, env)
    return repo


@pytest.fixture(scope="module")
def clone(origin, env) -> Path:
    """A fresh `git clone` of the origin, as a colleague gets it: code and dvc.lock, no data."""
    dst = origin.parent / "clone"
    sh(["git", "clone", "-q", str(origin), str(dst)], origin.parent, env)
    return dst


def files_sha(path: Path) -> dict[str, str]:
    """sha256 of a file, or of every file under a folder, by relative path."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    assert files, f"nothing at {path}"
    return {p.relative_to(path.parent).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_credentials_stay_out_of_git(origin, env):
    committed = sh(["git", "show", "HEAD:.dvc/config"], origin, env, stdout_only=True)
    assert "endpointurl" in committed and "s3://" in committed  # the remote itself is shared
    assert SECRET not in committed and KEY not in committed
    assert SECRET in (origin / ".dvc/config.local").read_text()
    assert ".dvc/config.local" not in sh(["git", "ls-files"], origin, env, stdout_only=True)


def cached_objects(repo: Path, env: dict[str, str]) -> set[str]:
    """Cache keys (files/md5/xx/...) of every output dvc.lock records that is not kept in git, with
    each directory's listing and members: what a colleague needs from the remote."""
    in_git = set(sh(["git", "ls-files"], repo, env, stdout_only=True).split())
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    keys: set[str] = set()
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            if any(p == out["path"] or p.startswith(out["path"] + "/") for p in in_git):
                continue  # metrics and plots (cache: false) travel with git
            md5 = out["md5"]
            keys.add(f"files/md5/{md5[:2]}/{md5[2:]}")
            if md5.endswith(".dir"):
                listing = json.loads((repo / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).read_text())
                keys |= {f"files/md5/{e['md5'][:2]}/{e['md5'][2:]}" for e in listing}
    return keys


def test_push_puts_every_output_in_the_bucket(origin, s3, env):
    _, client = s3
    wanted = cached_objects(origin, env)
    keys: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="synthmri/"):
        keys |= {o["Key"].removeprefix("synthmri/") for o in page.get("Contents", [])}
    assert len(wanted) > 100  # the demo's raw, interim and processed images
    assert wanted <= keys, sorted(wanted - keys)[:5]
    assert "in sync" in sh(["dvc", "status", "--cloud", "--with-deps", TARGET], origin, env)
    team = Path(sh(["dvc", "config", "remote.team.url"], origin, env, stdout_only=True).strip())
    assert not (origin / ".dvc" / team).exists()  # the default remote is S3, not the local folder


def test_fresh_clone_pulls_everything_and_reruns_nothing(origin, clone, env):
    outs = ("data/raw/demo", "data/interim/ingest", "data/interim/audit.csv", "data/interim/dedup.csv", "data/processed")
    assert not any((clone / o).exists() for o in outs) and not (clone / ".dvc/cache").exists()
    with pytest.raises(AssertionError, match="Unable to locate credentials"):
        sh(["dvc", "pull", "--with-deps", TARGET], clone, env)  # no credentials yet: a clear refusal
    add_credentials(clone, env)
    sh(["dvc", "pull", "--with-deps", TARGET], clone, env)

    for out in outs:
        assert files_sha(clone / out) == files_sha(origin / out), out
    assert "up to date" in sh(["dvc", "status", "--with-deps", TARGET], clone, env)
    out = sh(["dvc", "repro", TARGET], clone, env)
    assert ran(out) == set(), out
