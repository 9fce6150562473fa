"""Generator kinds by name: `generator.kind` in params.yaml picks one.

Per-class kinds (ddpm, dcgan) train one model per class in `train_generator@<class>`; class-conditional
kinds (sd_turbo) train one model for every class in `train_generator_shared` (dvc.yaml explains the split).
"""

from __future__ import annotations

import importlib

from synthmri.generative.base import GeneratorModel

# name -> (module, class); imported on use, so reading params imports neither MONAI nor diffusers
_KINDS = {
    "ddpm": ("synthmri.generative.ddpm", "DDPM"),
    "dcgan": ("synthmri.generative.dcgan", "DCGAN"),
    "sd_turbo": ("synthmri.generative.sd_turbo", "SDTurbo"),
}
CONDITIONAL = frozenset({"sd_turbo"})  # one model for all classes, prompted by class


def kinds() -> dict[str, type[GeneratorModel]]:
    return {name: get_kind(name) for name in _KINDS}


def get_kind(name: str) -> type[GeneratorModel]:
    if name not in _KINDS:
        raise ValueError(f"unknown generator kind {name!r}; known: {', '.join(sorted(_KINDS))}")
    module, cls = _KINDS[name]
    return getattr(importlib.import_module(module), cls)


def is_conditional(name: str) -> bool:
    return name in CONDITIONAL
