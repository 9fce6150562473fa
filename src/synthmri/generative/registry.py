"""Generator kinds by name: `generator.kind` in params.yaml picks one."""

from __future__ import annotations

from synthmri.generative.base import GeneratorModel


def kinds() -> dict[str, type[GeneratorModel]]:
    # Imported here so that reading params does not import MONAI.
    from synthmri.generative.dcgan import DCGAN
    from synthmri.generative.ddpm import DDPM

    return {"ddpm": DDPM, "dcgan": DCGAN}


def get_kind(name: str) -> type[GeneratorModel]:
    known = kinds()
    if name not in known:
        raise ValueError(f"unknown generator kind {name!r}; known: {', '.join(sorted(known))}")
    return known[name]
