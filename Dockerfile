# synthmri on any NVIDIA GPU machine: the README's pinned dependency set (constraints.txt) on an official
# CUDA base. The project is bind-mounted at /workspace and run with its own code:
#   docker build --build-arg UID="$(id -u)" --build-arg GID="$(id -g)" -t synthmri .
#   docker run --gpus all --rm -v "$PWD":/workspace synthmri dvc repro
#
# Base: nvidia/cuda, not pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime. That image carries the same torch
# (2.14.1+cu130, cuBLAS 13.1.1.3, cuDNN 9.24.0.43) but on Python 3.12, and the project is pinned to
# Python 3.11 (pyproject's requires-python, the interpreter its constraints were resolved for). torch's
# wheels bring their own CUDA 13.0 user-space libraries (the nvidia-* pins in constraints.txt), so the
# `base` flavour suffices; the host needs an NVIDIA driver >= 580 and the NVIDIA Container Toolkit.
FROM nvidia/cuda:13.0.2-base-ubuntu22.04

ARG DEBIAN_FRONTEND=noninteractive
# Ubuntu's archive keeps only the newest build of each package, so exact apt pins would break the build
# later; the base tag fixes the release, and every Python package is pinned exactly below.
# git: DVC keeps experiments as git commits.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv git ca-certificates \
    && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    DVC_NO_ANALYTICS=1
RUN python3.11 -m venv /opt/venv \
    && pip install --no-cache-dir pip==26.3

# Dependencies in their own layer (torch and CUDA are GBs): resolved against a stub of the package, so
# that a code change does not reinstall them. Every version comes from constraints.txt (through
# PIP_CONSTRAINT, which also pins the build backend), hence no `==` here.
WORKDIR /opt/synthmri
COPY pyproject.toml constraints.txt README.md ./
# hadolint ignore=DL3013
RUN mkdir -p src/synthmri \
    && touch src/synthmri/__init__.py \
    && PIP_CONSTRAINT=/opt/synthmri/constraints.txt pip install --no-cache-dir '.[remote]'
COPY src/ src/
RUN PIP_CONSTRAINT=/opt/synthmri/constraints.txt pip install --no-cache-dir --no-deps . \
    && pip check

# Non-root; build with the host's UID/GID so that files written to the bind-mounted project are yours.
ARG UID=1000
ARG GID=1000
RUN groupadd --gid "$GID" synthmri \
    && useradd --uid "$UID" --gid "$GID" --create-home --shell /bin/bash synthmri \
    && git config --system --add safe.directory /workspace
USER ${UID}:${GID}
WORKDIR /workspace
# The mounted project's code runs, not the copy installed above: the code DVC hashes as a stage's
# dependency is the code that runs the stage (the installed copy serves when nothing is mounted).
ENV PYTHONPATH=/workspace/src
CMD ["dvc", "repro"]
