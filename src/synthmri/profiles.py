"""Compose params.yaml from conf/ exactly as `dvc exp run -S profile=...` does (DVC's Hydra support).

`synthmri params profile=demo` lets a user switch profile for a plain `dvc repro`, and lets tests
check that the committed params.yaml is the composition of conf/ (no drift between the two).
"""

from __future__ import annotations

from pathlib import Path


def compose(overrides: list[str], out: Path, conf_dir: Path = Path("conf")) -> Path:
    from dvc.utils.hydra import compose_and_dump

    if not (conf_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{conf_dir / 'config.yaml'} not found: run from the project root")
    compose_and_dump(out, str(conf_dir.resolve()), None, "config", str(conf_dir.resolve()), list(overrides))
    return out
