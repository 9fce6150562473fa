"""Typed params of the classification stages: section `classify` and the top-level `ratio`.

Defaults are the paper's classifier (paper §5.2.1; docs/paper_as_coded.md, "Classifier") with the slips of its
code corrected; the as-coded profile sets each slip's param (`paper_as_coded`, `draw_seed`,
`drop_test_copies`, the S2/S3/S5 entries). Scenarios are data (README, "Classification scenarios"): each entry says, per
class, how many real and how many synthetic training images to draw, and whether to fine-tune after a
first training phase.

Amounts (the scenario vocabulary), per class or one value for every class:
  real:      N | "all" | "x<f>" (int(f * available), e.g. "x0.5")
  synthetic: N | "all" | "x<f>" (int(f * real drawn), e.g. "x0.113", the paper's code for S2/S3)
             | "R<r>:S<s>" (the paper's text for S2/S3, pairs as written: int(real drawn * s / r),
               e.g. "R66:S33" adds 401 to 802 real) | "fill" (up to the largest real class of the mix)
A mapping names classes explicitly; a class it does not name gets 0. With `draw: pooled` the real
amount counts all classes together (one scalar: N | "all" | "x<f>").

Protocols (README, "Protocols"): train-on-synthetic / validate-on-real is `{real: 0, synthetic: all}`
(the paper's S6; model selection on the real val split); train-on-real / test-on-synthetic is
`{test: synthetic}`: the real training images, tested on every generated image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from synthmri.params import ParamsError, build

ARCHS = ("vgg19", "resnet50", "resnet152", "mobilenet_v2", "small_cnn")
_NUM = r"\d+(\.\d+)?"
_AMOUNT = re.compile(rf"^(all|fill|x{_NUM}|R{_NUM}:S{_NUM})$")
PAIR = re.compile(rf"^R(?P<r>{_NUM}):S(?P<s>{_NUM})$")  # the paper's "R66:S33": s synthetic per r real


def _check(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ParamsError(f"{key}: {msg}")


Amount = int | str  # see the module docstring


def check_amount(value: Any, key: str, *, synthetic: bool) -> None:
    """Refuse an amount outside the vocabulary, naming the key."""
    if isinstance(value, bool):
        raise ParamsError(f"{key}: expected a count or an amount string, got {value!r}")
    if isinstance(value, int):
        _check(value >= 0, key, f"must be >= 0, got {value}")
        return
    if not isinstance(value, str) or not _AMOUNT.match(value):
        raise ParamsError(f"{key}: {value!r} is not an amount (N, 'all', 'x<f>'"
                          + (", 'R<r>:S<s>' as in 'R66:S33', 'fill')" if synthetic else ")"))
    pair = PAIR.match(value)
    if not synthetic and (value == "fill" or pair):
        raise ParamsError(f"{key}: {value!r} applies to synthetic images only")
    if pair:
        _check(float(pair["r"]) > 0, key, f"the real part of {value!r} must be > 0")


@dataclass(frozen=True)
class ModelParams:
    arch: Literal["vgg19", "resnet50", "resnet152", "mobilenet_v2", "small_cnn"] = "vgg19"  # small_cnn: the demo's, no pretrained weights
    pretrained: bool = True  # ImageNet weights from models/pretrained/ (`synthmri weights fetch`)
    weights_dir: str = "models/pretrained"
    trainable: Literal["paper", "all"] = "paper"  # paper: VGG-19 frozen except block5_conv2-4 (paper's code)


@dataclass(frozen=True)
class TrainParams:
    image_size: int = 256  # input side in pixels (paper §5.2.1)
    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-4  # Adam
    seeds: tuple[int, ...] = (33, 66, 99)  # paper's code: one notebook per seed
    augment: Literal["none", "flip"] = "none"  # paper: none; flip = random horizontal flip on the device
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads; 0 = torch's default
    eval_batch_size: int = 128
    precise_bn: bool = True  # recompute BatchNorm statistics over the training set each epoch (no effect on VGG-19)

    def __post_init__(self):
        _check(16 <= self.image_size <= 1024 and self.image_size % 32 == 0, "classify.train.image_size",
               "must be in [16, 1024] and a multiple of 32 (five poolings halve it)")
        _check(self.epochs >= 1, "classify.train.epochs", "must be >= 1")
        _check(self.batch_size >= 1, "classify.train.batch_size", "must be >= 1")
        _check(self.eval_batch_size >= 1, "classify.train.eval_batch_size", "must be >= 1")
        _check(0 < self.lr <= 1, "classify.train.lr", "must be in (0, 1]")
        _check(len(self.seeds) >= 1, "classify.train.seeds", "must list at least one seed")
        _check(len(set(self.seeds)) == len(self.seeds), "classify.train.seeds", "must not repeat a seed")
        _check(all(s >= 0 for s in self.seeds), "classify.train.seeds", "must be >= 0")
        _check(self.threads >= 0, "classify.train.threads", "must be >= 0")
        _check(self.device == "auto" or self.device == "cpu" or re.fullmatch(r"cuda(:\d+)?", self.device) is not None,
               "classify.train.device", f"expected auto, cpu, cuda or cuda:N, got {self.device!r}")


@dataclass(frozen=True)
class ScenarioParams:
    real: Amount | dict[str, Amount] = "all"  # real training images per class
    synthetic: Amount | dict[str, Amount] = 0  # synthetic training images per class
    draw: Literal["random", "pooled"] = "random"  # per class; pooled: real drawn from all classes together (S5 as coded)
    draw_seed: int | Literal["train"] | None = None  # None: classify.draw_seed; train: each training seed's own
    finetune: ScenarioMix | None = None  # a second phase on this mix, starting from the first phase's model
    finetune_epochs: int = 3  # paper §5.2.2, Scenario 5
    seeds: tuple[int, ...] = ()  # () = classify.train.seeds
    group: str = ""  # report: which table/figure the entry belongs to (e.g. S2)
    label: str = ""  # report: the entry's label there (e.g. R90:S10)
    note: str = ""  # where it follows the paper's text or its code
    # the test set: real (the real Testing split) | synthetic (every generated image: train-on-real /
    # test-on-synthetic, a fidelity signal beside FID; the training set may then hold no synthetic image)
    test: Literal["real", "synthetic"] = "real"


@dataclass(frozen=True)
class ScenarioMix:
    """The training mix of a fine-tuning phase (same vocabulary as a scenario's first phase)."""

    real: Amount | dict[str, Amount] = "all"
    synthetic: Amount | dict[str, Amount] = 0
    draw: Literal["random", "pooled"] = "random"


@dataclass(frozen=True)
class ClassifyParams:
    model: ModelParams = field(default_factory=ModelParams)
    train: TrainParams = field(default_factory=TrainParams)
    paper_as_coded: bool = False  # inputs without ImageNet mean subtraction, label order like list(set(...)) (paper's code)
    draw_seed: int | None = None  # None: each training seed draws its own images; paper's code: 42 for all seeds
    drop_test_copies: bool = True  # Training copies of Testing images (sha256 or pixels) never train; false: kept, counted
    bootstrap: int = 1000  # resamples of the test set for the 95% CIs
    scenarios: dict[str, ScenarioParams] = field(default_factory=dict)


def _build_mix(cls: type, raw: Any, where: str):
    """`build` for a scenario or mix whose amounts may be scalars or per-class mappings."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{where}: expected a mapping, got {type(raw).__name__}")
    raw = dict(raw)
    for key in ("real", "synthetic"):
        if key not in raw:
            continue
        value = raw.pop(key)
        per = value if isinstance(value, dict) else {"*": value}
        for name, amount in per.items():
            check_amount(amount, f"{where}.{key}" + ("" if name == "*" else f".{name}"), synthetic=key == "synthetic")
        raw[f"_{key}"] = value
    ft = raw.pop("finetune", None)
    amounts = {k[1:]: raw.pop(k) for k in ("_real", "_synthetic") if k in raw}
    obj = build(cls, raw, where)
    if obj.draw == "pooled" and isinstance(amounts.get("real", obj.real), dict):
        raise ParamsError(f"{where}.real: draw: pooled takes one real amount for all classes together "
                          f"(N, 'all' or 'x<f>'), not a per-class mapping")
    extra: dict[str, Any] = dict(amounts)
    if ft is not None:
        if cls is not ScenarioParams:
            raise ParamsError(f"{where}.finetune: a fine-tuning phase cannot itself fine-tune")
        extra["finetune"] = _build_mix(ScenarioMix, ft, f"{where}.finetune")
    if isinstance(obj, ScenarioParams):
        _check(obj.finetune_epochs >= 1, f"{where}.finetune_epochs", "must be >= 1")
        _check(len(set(obj.seeds)) == len(obj.seeds), f"{where}.seeds", "must not repeat a seed")
        _check(all(isinstance(s, int) and s >= 0 for s in obj.seeds), f"{where}.seeds", "must be integers >= 0")
        _check_seed(obj.draw_seed, f"{where}.draw_seed", train_ok=True)
        if obj.test == "synthetic":  # the images tested on must never train
            for key, mix in (("synthetic", amounts.get("synthetic", obj.synthetic)),
                             ("finetune.synthetic", extra["finetune"].synthetic if "finetune" in extra else 0)):
                _check(not _any_synthetic(mix), f"{where}.{key}",
                       f"must be 0 with test: synthetic (the synthetic images are the test set), got {mix!r}")
    return _replace(obj, extra)


def _any_synthetic(amount: Any) -> bool:
    return any(v != 0 for v in amount.values()) if isinstance(amount, dict) else amount != 0


def _replace(obj, extra: dict[str, Any]):
    from dataclasses import replace

    return replace(obj, **extra) if extra else obj


def load_classify(raw: Any, where: str = "classify") -> ClassifyParams:
    """The `classify` section as ClassifyParams; unknown keys and bad amounts raise ParamsError."""
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ParamsError(f"{where}: expected a mapping, got {type(raw).__name__}")
    raw = dict(raw)
    scen_raw = raw.pop("scenarios", None) or {}
    if not isinstance(scen_raw, dict):
        raise ParamsError(f"{where}.scenarios: expected a mapping of name -> scenario")
    cfg = build(ClassifyParams, raw, where)
    scenarios = {}
    for name, entry in scen_raw.items():
        _check(re.fullmatch(r"[A-Za-z0-9_-]+", str(name)) is not None, f"{where}.scenarios",
               f"scenario name {name!r} must be letters, digits, _ or - (it names files, stages and params keys)")
        scenarios[str(name)] = _build_mix(ScenarioParams, entry or {}, f"{where}.scenarios.{name}")
    _check(cfg.bootstrap >= 0, f"{where}.bootstrap", "must be >= 0")
    _check_seed(cfg.draw_seed, f"{where}.draw_seed")
    return _replace(cfg, {"scenarios": scenarios})


def _check_seed(value: Any, key: str, *, train_ok: bool = False) -> None:
    ok = value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0) \
        or (train_ok and value == "train")
    _check(ok, key, f"expected an integer >= 0{', train' if train_ok else ''} or null, got {value!r}")


def load_ratio(value: Any) -> float:
    """The top-level `ratio`: synthetic images per real image, every class (the SD-Turbo study's sweep)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParamsError(f"ratio: expected a number >= 0 (synthetic images per real image), got {value!r}")
    if value < 0:
        raise ParamsError(f"ratio: must be >= 0 (0 = real only), got {value}")
    return float(value)


def ratio_scenario(ratio: float) -> ScenarioParams:
    """The ratio sweep as a scenario: all real images plus int(ratio * real) synthetic per class."""
    return ScenarioParams(real="all", synthetic=f"x{ratio:g}" if ratio else 0, group="ratio", label=f"1:{ratio:g}")
