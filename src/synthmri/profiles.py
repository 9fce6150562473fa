"""Compose params.yaml from conf/ exactly as `dvc exp run -S profile=...` does (DVC's Hydra support).

`synthmri params profile=demo` lets a user switch profile for a plain `dvc repro`, and lets tests
check that the committed params.yaml is the composition of conf/ (no drift between the two).
Hydra's own errors are 200-line tracebacks (and a misleading `+key` hint for a misspelt key); here
each becomes one `ProfileError` line naming what was wrong and the valid choices.
"""

from __future__ import annotations

import difflib
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml

from synthmri import params as P


class ProfileError(ValueError):
    """A Hydra override or composition the user can fix, as one line."""


def profiles(conf_dir: Path = Path("conf")) -> list[str]:
    """The profile names conf/profile/ offers."""
    return sorted(p.stem for p in (conf_dir / "profile").glob("*.yaml"))


def compose(overrides: list[str], out: Path, conf_dir: Path = Path("conf")) -> Path:
    """Write DVC's composition of `conf_dir` with `overrides` to `out` (no check of the values)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from dvc.utils.hydra import compose_and_dump

    if not (conf_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{conf_dir / 'config.yaml'} not found: run from the project root")
    overrides = list(overrides)
    _check_overrides(overrides, conf_dir)  # the mistakes whose Hydra message misleads or sprawls
    try:
        compose_and_dump(out, str(conf_dir.resolve()), None, "config", str(conf_dir.resolve()), overrides)
    except (HydraException, OmegaConfBaseException) as e:
        raise ProfileError(_translate(e, overrides, conf_dir)) from None
    return out


def write_params(overrides: list[str], out: Path, conf_dir: Path = Path("conf")) -> Path:
    """Compose, check every section as the stages will, and only then replace `out` (atomically):
    a refused composition leaves the old params.yaml as it was."""
    from synthmri.io import atomic_path

    with tempfile.TemporaryDirectory() as tmp:
        composed = compose(overrides, Path(tmp) / Path(out).name, conf_dir)  # keeps the suffix DVC's dumper needs
        validate(P.read_params(composed))
        with atomic_path(out) as dst:
            dst.write_bytes(composed.read_bytes())
    return out


# every top-level key a params.yaml may hold; a stage's loader refuses unknown keys inside its section
TOP_LEVEL = ("profile_name", *P.SECTIONS, "task", "generator", "generate", "fidelity", "ratio", "classify")


def validate(data: dict[str, Any]) -> None:
    """Refuse what any stage would refuse (raises ParamsError), before a stage runs."""
    from synthmri.classify.config import load_classify, load_ratio
    from synthmri.fidelity.config import load_fidelity
    from synthmri.generative.config import load_generate, load_generator
    from synthmri.tasks import load_task

    unknown = sorted(set(data) - set(TOP_LEVEL))
    if unknown:
        close = difflib.get_close_matches(unknown[0], TOP_LEVEL, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        raise P.ParamsError(f"unknown top-level key(s) {unknown}; {hint}known: {', '.join(TOP_LEVEL)}")
    for section in P.SECTIONS:
        P.load(section, data=data)
    load_task(data)  # checked against data.classes
    load_generator(data.get("generator"))
    load_generate(data.get("generate"))
    load_classify(data.get("classify"))
    load_ratio(data.get("ratio", 0))
    load_fidelity(data.get("fidelity"))


# ---- Hydra's errors as one line ---------------------------------------------------------------------


def _choices(conf_dir: Path) -> str:
    return ", ".join(profiles(conf_dir))


def _check_overrides(overrides: list[str], conf_dir: Path) -> None:
    """Refuse a bare word, an unparsable override and an unknown profile in our words, before Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    names = profiles(conf_dir)
    for text in overrides:
        if "=" not in text and not text.startswith("~"):
            hint = f"profile={text}" if text in names else "profile=demo or ratio=2"
            raise ProfileError(f"{text!r} is not an override: write key=value, e.g. {hint} "
                               f"(profiles: {_choices(conf_dir)})")
        try:
            (o,) = parser.parse_overrides([text])
        except OverrideParseException as e:
            reason = next((ln for ln in str(e).splitlines()[1:] if ln and not ln.startswith("See ")),
                          str(e).splitlines()[0])
            raise ProfileError(f"cannot read override {text!r} ({reason}): write key=value, "
                               "quoting a value with spaces or commas") from None
        if o.is_sweep_override():
            raise ProfileError(f"{text!r} is a sweep (several values); params.yaml takes one value "
                               f"(a sweep of experiments: dvc exp run --queue -S {text})")
        if o.key_or_group == "profile" and o.value() not in names:
            raise ProfileError(f"unknown profile {o.value()!r}: choose one of {_choices(conf_dir)} (profile=<name>)")


def _translate(e: Exception, overrides: list[str], conf_dir: Path) -> str:
    """One line for a Hydra/OmegaConf error: for an unknown key, the closest valid key(s)."""
    text = str(e)
    m = re.search(r"Could not (?:override|delete from config|append to config)[^']*'([^']+)'", text)
    if m:
        key = m.group(1)
        known = _keys(overrides, conf_dir)
        if key not in known:
            return f"unknown key {key!r}{_did_you_mean(key, known)}"
        cause = str(e.__cause__ or "").splitlines()
        return f"cannot set {key!r}: {cause[0] if cause else text.splitlines()[0]}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()][:1]
    lines += [ln.strip() for ln in str(e.__cause__ or "").splitlines() if ln.strip()][:1]
    full_key = getattr(e, "full_key", None)
    where = f" (at {full_key})" if full_key else ""
    return f"cannot compose params.yaml: {': '.join(lines) or type(e).__name__}{where}"


def _keys(overrides: list[str], conf_dir: Path) -> list[str]:
    """Every dotted key of the composition with the same profile (for suggestions)."""
    from dvc.utils.hydra import compose_and_dump

    profile = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") == "profile"][-1:]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "params.yaml"
        compose_and_dump(out, str(conf_dir.resolve()), None, "config", str(conf_dir.resolve()), profile)
        data = yaml.safe_load(out.read_text()) or {}

    def walk(d: dict, prefix: str = ""):
        for k, v in d.items():
            yield f"{prefix}{k}"
            if isinstance(v, dict):
                yield from walk(v, f"{prefix}{k}.")

    return ["profile", *walk(data)]


def _did_you_mean(key: str, known: list[str]) -> str:
    close = _closest(key, known)
    if close:
        return f"; did you mean {' or '.join(close)}?"
    parent = key.rpartition(".")[0]
    siblings = [k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == parent and "." in k] if parent else []
    if siblings:
        return f"; keys under {parent}: {', '.join(siblings)}"
    return f"; top-level keys: {', '.join(k for k in known if '.' not in k)}"


def _closest(key: str, known: list[str]) -> list[str]:
    """Valid keys nearest `key`, one dotted part at a time (difflib), so `clasify.train.epochs` finds
    `classify.train.epochs` rather than every key that shares a long prefix with it."""
    known_set = set(known)
    prefixes = [""]
    for part in key.split("."):
        nxt = []
        for pre in prefixes:
            children = sorted({k[len(pre):].split(".")[0] for k in known_set if k.startswith(pre) and k != pre[:-1]})
            hits = [part] if part in children else difflib.get_close_matches(part, children, n=2, cutoff=0.6)
            nxt += [f"{pre}{h}." for h in hits]
        prefixes = nxt[:3]
    return [p[:-1] for p in prefixes if p[:-1] in known_set and p[:-1] != key]
