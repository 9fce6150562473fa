"""Pretrained weight files: the registry, `weights fetch`, and the one checked loader every stage uses.

Every pretrained network of the project (fidelity's Inception, the classifiers' ImageNet backbones)
reads a file under `models/pretrained/` (tracked by DVC, so a team downloads once and `dvc pull`s
after) through `load`. Nothing downloads at run time: a stage that lacks a file stops with an error
naming it and the command that gets it. `fetch` is the one place that touches the network, and only
when a user runs it.

What `load` checks, and reports as `Checked.verified`:
- "sha256": a registry file whose full sha256 is pinned below, and matches: the published bytes;
- "prefix": a file whose full digest is not pinned, checked by the leading hex digits of its sha256
  that its torch.hub-style name carries (`...-6726825d.pth`): this catches corruption, not a substitute;
- "none": a user-supplied file with neither. It is loaded only because a param names it explicitly,
  and its sha256 goes into the stage's metrics; it is never taken for a published file.
Every file is read with `torch.load(weights_only=True)`: plain tensors, never unpickled code.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import tempfile
import urllib.request
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from synthmri.io import atomic_path

DEFAULT_DIR = Path("models/pretrained")
FETCH_COMMAND = "synthmri weights fetch"
Verified = Literal["sha256", "prefix", "none"]
_HEX = set("0123456789abcdef")
_HUB_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")  # torch.hub's `<name>-<sha256 prefix>.<ext>`


def name_prefix(file_name: str) -> str | None:
    """The sha256 prefix a torch.hub-style file name carries (`resnet50-0676ba61.pth` -> `0676ba61`), if any."""
    m = _HUB_NAME.search(file_name)
    return m.group(1) if m else None


@dataclass(frozen=True)
class WeightsFile:
    name: str  # registry key, as `synthmri weights fetch <name>` takes it
    file: str  # file name under models/pretrained/ (torch.hub's name: it ends in -<sha256 prefix>.pth)
    url: str
    sha256: str  # the published file's full sha256 (64 hex); where none is known, the prefix its name carries
    used_by: str  # what reads it
    size: int | None = None  # bytes, where known: a wrong size fails before the digest is computed

    def __post_init__(self):
        if len(self.sha256) < 8 or not set(self.sha256) <= _HEX:
            raise ValueError(f"weights {self.name}: sha256 must be >= 8 lowercase hex digits, got {self.sha256!r}")
        prefix = name_prefix(self.file)
        if prefix is not None and not (self.sha256.startswith(prefix) or prefix.startswith(self.sha256)):
            raise ValueError(f"weights {self.name}: file name {self.file} says sha256 {prefix}..., registry says {self.sha256}")

    @property
    def pinned(self) -> bool:
        """Whether the full digest is known (else only its prefix is checked)."""
        return len(self.sha256) == 64


# URLs: torch-fidelity's feature_extractor_inceptionv3.URL_INCEPTION_V3 and torchvision's
# <Model>_Weights.IMAGENET1K_V1.url (tests check both against the installed libraries). Full digests:
# the published files' sha256, as found in several independent public sources (issue 9 §3).
REGISTRY: dict[str, WeightsFile] = {w.name: w for w in (
    WeightsFile("inception", "weights-inception-2015-12-05-6726825d.pth",
                "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
                "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
                "fidelity (torch-fidelity's FID Inception, converted from TF 2015-12-05)", size=95_628_359),
    WeightsFile("vgg19", "vgg19-dcbb9e9d.pth", "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
                "dcbb9e9dad569fff7a846263a77324fc34978fea2bfb039c012d710e1776ae44",
                "classify (torchvision vgg19, IMAGENET1K_V1)", size=574_673_361),
    WeightsFile("resnet50", "resnet50-0676ba61.pth", "https://download.pytorch.org/models/resnet50-0676ba61.pth",
                "0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a",
                "classify (torchvision resnet50, IMAGENET1K_V1)"),
    WeightsFile("resnet152", "resnet152-394f9c45.pth", "https://download.pytorch.org/models/resnet152-394f9c45.pth",
                "394f9c45966e3651a89bbb78a48410a6755854ce4a5ab64927cf1c7247f85e58",
                "classify (torchvision resnet152, IMAGENET1K_V1)"),
    WeightsFile("mobilenet_v2", "mobilenet_v2-b0353104.pth", "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
                "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
                "classify (torchvision mobilenet_v2, IMAGENET1K_V1)"),
)}


class MissingWeightsError(FileNotFoundError):
    """A pretrained weights file is absent; the message names it and how to get it."""


class WeightsError(ValueError):
    """A weights file that is not the bytes it claims to be, or not plain tensors; the message says which."""


class FetchError(RuntimeError):
    """A download that failed (network, HTTP); the message names the file and the URL. Nothing was written."""


class UnpinnedWeightsWarning(UserWarning):
    """A file was loaded whose full sha256 is not pinned (checked by its name's prefix, or not at all)."""


def get(name: str) -> WeightsFile:
    if name not in REGISTRY:
        raise ValueError(f"unknown weights {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def by_file(path: str | os.PathLike) -> WeightsFile | None:
    """The registry entry whose file name `path` has, if any."""
    name = Path(path).name
    return next((w for w in REGISTRY.values() if w.file == name), None)


def require(path: str | os.PathLike) -> Path:
    """`path` if it is a file, else MissingWeightsError naming it and the command that fetches it."""
    path = Path(path)
    if path.is_file():
        return path
    entry = by_file(path)
    if entry is None:
        how = f"put the file there (`{FETCH_COMMAND}` fetches the registered files: {', '.join(REGISTRY)})"
    else:
        how = (f"run `{FETCH_COMMAND} {entry.name}` on a machine with internet (it writes "
               f"{(DEFAULT_DIR / entry.file).as_posix()}), or `dvc pull` where the team has pushed it")
        if path.parent != DEFAULT_DIR:
            how += f", and put it at {path.as_posix()}"
    raise MissingWeightsError(f"pretrained weights not found: {path.as_posix()}; {how}. Nothing is downloaded at run time.")


def weights_path(name: str, weights_dir: str | os.PathLike = DEFAULT_DIR) -> Path:
    """The file of registry entry `name` under `weights_dir`, or MissingWeightsError."""
    return require(Path(weights_dir) / get(name).file)


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


# ---- the checked loader ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Checked:
    """What was loaded: the record a stage writes into its metrics."""

    path: str
    sha256: str  # the file's full digest, whatever `verified` says
    bytes: int
    verified: Verified  # "sha256" | "prefix" | "none" (module docstring)
    registry: str | None  # registry name, if the file is a registry file

    def record(self) -> dict[str, Any]:
        return asdict(self)


# A successful check per (path, size, mtime): a 575 MB VGG-19 is hashed once per process, not once per seed.
_CHECKED: dict[tuple[str, int, int, WeightsFile | None], Checked] = {}


def check(path: str | os.PathLike, entry: WeightsFile | None = None) -> Checked:
    """The file's digest and how far it is verified; WeightsError when it is not the bytes it claims to be.

    `entry` defaults to the registry entry of the file's name: a registry file is checked against its
    pinned digest wherever it lies; any other file by the prefix its name carries, if it carries one.
    """
    path = require(path)
    entry = entry or by_file(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, entry)
    if key in _CHECKED:
        return _CHECKED[key]
    where = path.as_posix()
    fix = f"delete it and run `{FETCH_COMMAND} {entry.name}` again" if entry else "replace it with the file you meant"
    if entry is not None and entry.size is not None and st.st_size != entry.size:
        raise WeightsError(f"{where}: {st.st_size:,} bytes, the published {entry.name} file has {entry.size:,}; "
                           f"the file is truncated or not the published one: {fix}")
    digest = sha256_of(path)
    expected = entry.sha256 if entry is not None else name_prefix(path.name)
    if expected is None:
        verified: Verified = "none"
    elif digest.startswith(expected):
        verified = "sha256" if len(expected) == 64 else "prefix"
    else:
        what = f"is not {expected}" if len(expected) == 64 else f"does not start with {expected}"
        whose = f"({entry.name})" if entry else "(the digest prefix its torch.hub-style name carries)"
        raise WeightsError(f"{where}: sha256 {digest} {what} {whose}; the file is corrupt or not the published "
                           f"one: {fix}")
    result = Checked(where, digest, st.st_size, verified, entry.name if entry else None)
    _CHECKED[key] = result
    return result


def load(path: str | os.PathLike, entry: WeightsFile | None = None) -> tuple[dict[str, torch.Tensor], Checked]:
    """A state dict read without unpickling code (`weights_only=True`), after `check`; and its record.

    Give a path only where the user named the file (a param); registry files come through `load_registered`.
    """
    checked = check(path, entry)
    if checked.verified != "sha256":
        how = ("checked only by the sha256 prefix its name carries" if checked.verified == "prefix"
               else "a user-supplied file: its digest is recorded, it is not verified against a published one")
        warnings.warn(f"{checked.path}: no pinned full sha256 ({how}); sha256 {checked.sha256}",
                      UnpinnedWeightsWarning, stacklevel=2)
    try:
        state = torch.load(checked.path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any refusal means the file is not plain tensors
        raise WeightsError(f"{checked.path}: not a plain state dict of tensors ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{checked.path}: expected a state dict, got {type(state).__name__}")
    return state, checked


def load_registered(name: str, weights_dir: str | os.PathLike = DEFAULT_DIR) -> tuple[dict[str, torch.Tensor], Checked]:
    """Registry entry `name`'s file under `weights_dir`, checked against its pinned digest, loaded safely."""
    entry = get(name)
    return load(weights_path(name, weights_dir), entry)



# ---- fetch: the only network access, on request ----------------------------------------------------


def fetch(names: list[str] | tuple[str, ...] | None, dest_dir: str | os.PathLike = DEFAULT_DIR) -> list[dict[str, Any]]:
    """Download the named registry files (all when `names` is empty) into `dest_dir`, checking sha256.

    A file already there with the right digest is kept; a wrong one is an error (it is not overwritten).
    """
    entries = [get(n) for n in (names or list(REGISTRY))]
    return [fetch_one(e, dest_dir) for e in entries]


def fetch_one(entry: WeightsFile, dest_dir: str | os.PathLike = DEFAULT_DIR, timeout: float = 60.0) -> dict[str, Any]:
    dest = Path(dest_dir) / entry.file
    if dest.is_file():
        return check(dest, entry).record() | {"name": entry.name, "status": "present"}

    def failed(e: BaseException) -> FetchError:
        return FetchError(f"downloading {entry.name} from {entry.url} failed ({type(e).__name__}: {e}); nothing was "
                          f"written. Check the connection, or download the file by hand and put it at {dest.as_posix()}")

    h = hashlib.sha256()
    with atomic_path(dest) as tmp:  # a failed or wrong download leaves nothing behind
        try:
            response = urllib.request.urlopen(entry.url, timeout=timeout)
        except (OSError, http.client.HTTPException, ValueError) as e:  # URLError, HTTPError, timeouts, bad URLs
            raise failed(e) from None
        with response, open(tmp, "wb") as out:
            while True:
                try:
                    block = response.read(1 << 20)
                except (OSError, http.client.HTTPException) as e:  # a connection lost mid-file
                    raise failed(e) from None
                if not block:
                    break
                h.update(block)
                out.write(block)  # a full disk raises here, as the disk error it is
        digest = h.hexdigest()
        if not digest.startswith(entry.sha256):
            what = f"is not {entry.sha256}" if entry.pinned else f"does not start with {entry.sha256}"
            raise WeightsError(f"{entry.url}: downloaded sha256 {digest} {what} ({entry.name}); nothing was written")
    return check(dest, entry).record() | {"name": entry.name, "status": "downloaded"}


# ---- diffusers folders from the model hub (SD-Turbo) -----------------------------------------------


@dataclass(frozen=True)
class HubFolder:
    """A diffusers model folder fetched at a pinned revision; files whose digest is not pinned here are
    recorded in the folder's `sha256.json` when first fetched, and checked against it after."""

    name: str  # as `synthmri weights fetch <name>` takes it
    dir: str  # folder under models/pretrained/
    repo: str  # model-hub repository
    revision: str  # pinned commit
    patterns: tuple[str, ...]  # the files fetched (the fp32 safetensors; no pickled .bin, no fp16 variant)
    sha256: dict[str, str]  # relative path -> published full sha256, where known
    used_by: str


DIGESTS_FILE = "sha256.json"
HUB_FOLDERS: dict[str, HubFolder] = {f.name: f for f in (
    # SD-Turbo as the SD-Turbo study used it (docs/studies.md); revision: the repository head when last seen.
    HubFolder("sd-turbo", "sd-turbo", "stabilityai/sd-turbo", "b261bac6fd2cf515557d5d0707481eafa0485ec2",
              ("model_index.json", "scheduler/*", "tokenizer/*", "text_encoder/config.json",
               "text_encoder/model.safetensors", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
               "vae/config.json", "vae/diffusion_pytorch_model.safetensors"),
              {"unet/diffusion_pytorch_model.safetensors":
               "438da6db739c8651ec4152341b8133d6896db452ea27afdb6b9b0344f0c40532"},
              "train_generator_shared (generator.kind: sd_turbo)"),
)}
_FOLDER_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def _folder_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != DIGESTS_FILE
                  and not p.relative_to(folder).as_posix().startswith("."))


def check_folder(name: str, folder: str | os.PathLike) -> dict[str, Any]:
    """Every file of hub folder `name` at `folder`, its digest checked against the pinned one or the one
    recorded at fetch; MissingWeightsError (one line, naming the fetch command) when the folder is absent."""
    entry = HUB_FOLDERS[name]
    folder = Path(folder)
    if not all((folder / part).is_dir() for part in _FOLDER_PARTS):
        raise MissingWeightsError(
            f"pretrained weights not found: {folder.as_posix()} (diffusers folders {', '.join(_FOLDER_PARTS)}); run "
            f"`{FETCH_COMMAND} {name}` on a machine with internet (it writes {(DEFAULT_DIR / entry.dir).as_posix()}), "
            f"or `dvc pull` where the team has pushed it. Nothing is downloaded at run time.")
    recorded = json.loads((folder / DIGESTS_FILE).read_text()) if (folder / DIGESTS_FILE).is_file() else {}
    found = {p.relative_to(folder).as_posix(): sha256_of(p) for p in _folder_files(folder)}
    verified: dict[str, Verified] = {}
    for rel, digest in found.items():
        expected, how = (entry.sha256[rel], "sha256") if rel in entry.sha256 else (recorded.get(rel), "none")
        if expected is not None and digest != expected:
            whose = "published" if how == "sha256" else f"recorded in {DIGESTS_FILE} at fetch"
            raise WeightsError(f"{(folder / rel).as_posix()}: sha256 {digest} is not the {whose} {expected}; the file "
                               f"is corrupt or not the published one: delete {folder.as_posix()} and run "
                               f"`{FETCH_COMMAND} {name}` again")
        verified[rel] = how
    absent = sorted(set(entry.sha256) - set(found))
    if absent:
        raise MissingWeightsError(f"{folder.as_posix()}: missing {absent}; run `{FETCH_COMMAND} {name}` again")
    record = {"path": folder.as_posix(), "registry": name, "revision": entry.revision,
              "files": {rel: {"sha256": d, "verified": verified[rel]} for rel, d in found.items()}}
    return {"sha256": found, "record": record}


def _hub_download(entry: HubFolder, local_dir: Path) -> None:
    from huggingface_hub import snapshot_download

    snapshot_download(repo_id=entry.repo, revision=entry.revision, allow_patterns=list(entry.patterns),
                      local_dir=str(local_dir))


def fetch_folder(name: str, dest_dir: str | os.PathLike = DEFAULT_DIR, download=_hub_download) -> list[dict[str, Any]]:
    """Download hub folder `name` at its pinned revision into `dest_dir/<dir>`, check the pinned digests,
    record every file's digest in its sha256.json. A folder already there is checked, not overwritten."""
    entry = HUB_FOLDERS[name]
    target = Path(dest_dir) / entry.dir
    if target.is_dir():
        checked = check_folder(name, target)
        status = "present"
    else:
        partial = target.with_name(f".{entry.dir}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            download(entry, partial)
        except Exception as e:  # noqa: BLE001 - the network or the hub: one line, nothing left behind
            shutil.rmtree(partial, ignore_errors=True)
            raise FetchError(f"downloading {name} ({entry.repo} at {entry.revision[:12]}) failed ({type(e).__name__}: "
                             f"{e}); nothing was written. Check the connection") from None
        shutil.rmtree(partial / ".cache", ignore_errors=True)  # the hub client's bookkeeping
        digests = {p.relative_to(partial).as_posix(): sha256_of(p) for p in _folder_files(partial)}
        wrong = {rel: d for rel, d in digests.items() if rel in entry.sha256 and d != entry.sha256[rel]}
        absent = sorted(set(entry.sha256) - set(digests))
        if wrong or absent:
            shutil.rmtree(partial, ignore_errors=True)
            raise WeightsError(f"{name}: downloaded files {sorted(wrong)} have the wrong sha256 and {absent} are "
                               f"missing; nothing was written")
        (partial / DIGESTS_FILE).write_text(json.dumps(digests, indent=2, sort_keys=True) + "\n")
        partial.rename(target)
        checked = check_folder(name, target)
        status = "downloaded"
    return [{"name": name, "status": status, "path": (target / rel).as_posix(), **info}
            for rel, info in checked["record"]["files"].items()]


# ---- random Inception weights (demo profile and tests) ---------------------------------------------


def random_inception_state_dict(seed: int) -> dict[str, torch.Tensor]:
    """torch-fidelity's Inception architecture with seeded random weights, as a state dict.

    PyTorch's default init makes degenerate features (IS 1, FID ~0 between different sets); a
    Kaiming-normal init of the convolutions gives usable numbers (seen with torch-fidelity 0.4.0). The network is built by
    torch-fidelity's own class, so the keys and shapes are exactly those its loader expects.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):  # keep the fresh init
            return None

    with tempfile.TemporaryDirectory(prefix="synthmri-inception-") as tmp:
        empty = Path(tmp) / "empty.pth"
        torch.save({}, empty)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = _Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
            for module in net.modules():
                if isinstance(module, torch.nn.Conv2d):
                    torch.nn.init.kaiming_normal_(module.weight)
    return {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}


def save_random_inception(path: str | os.PathLike, seed: int) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(random_inception_state_dict(seed), tmp)
    return path
