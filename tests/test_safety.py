"""Nothing runs code from the data: a scan of the package's source for loaders that can execute what they read.

Artifacts pulled from a remote (weights, checkpoints, manifests, params) are data from elsewhere: they are
read with `torch.load(weights_only=True)` or safetensors, `yaml.safe_load`, CSV/JSON parsers; never with
pickle, `yaml.load`, `np.load(allow_pickle=True)`, `eval`/`exec`, or an unfiltered `extractall` (archive
members could write outside their target: ingest extracts member by member, see test_ingest).
"""

from __future__ import annotations

import ast

from tests.conftest import ROOT


def _name(node: ast.AST) -> str:
    """`torch.load` for Attribute(Name('torch'), 'load'); `.extractall` when the base is an expression."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return ""


def _kw(call: ast.Call, key: str):
    for kw in call.keywords:
        if kw.arg == key:
            return kw.value.value if isinstance(kw.value, ast.Constant) else kw.value
    return None


def unsafe_calls(source: str) -> list[str]:
    """Calls that may run code from what they read, as 'line: reason'."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name, line = _name(node.func), node.lineno
        if name == "torch.load" and _kw(node, "weights_only") is not True:
            found.append(f"{line}: torch.load without weights_only=True")
        elif name.split(".")[0] in ("pickle", "cPickle", "dill", "cloudpickle") and name.endswith(("load", "loads")):
            found.append(f"{line}: {name} unpickles")
        elif name in ("joblib.load", "pd.read_pickle", "pandas.read_pickle", "torch.hub.load"):
            found.append(f"{line}: {name} unpickles or runs downloaded code")
        elif name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all"):
            found.append(f"{line}: {name} (use yaml.safe_load)")
        elif name in ("np.load", "numpy.load") and _kw(node, "allow_pickle") not in (None, False):
            found.append(f"{line}: {name} with allow_pickle")
        elif name in ("eval", "exec"):
            found.append(f"{line}: {name}()")
        elif name.endswith(".extractall") and _kw(node, "filter") is None:
            found.append(f"{line}: extractall without a filter")
    return found


def test_the_scan_finds_each_unsafe_loader():
    bad = (
        "import pickle, torch, yaml, numpy as np, zipfile\n"
        "pickle.load(f)\n"
        "torch.load(p)\n"
        "torch.load(p, weights_only=False)\n"
        "yaml.load(s)\n"
        "np.load(p, allow_pickle=True)\n"
        "eval(s)\n"
        "zipfile.ZipFile(p).extractall(d)\n"
    )
    assert [f.split(":")[0] for f in unsafe_calls(bad)] == ["2", "3", "4", "5", "6", "7", "8"]
    ok = "torch.load(p, map_location='cpu', weights_only=True)\nyaml.safe_load(s)\nnp.load(p)\nmodel.eval()\n"
    assert unsafe_calls(ok) == []


def test_package_source_never_loads_executable_data():
    problems = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        problems += [f"{path.relative_to(ROOT)}:{p}" for p in unsafe_calls(path.read_text())]
    assert not problems, "\n".join(problems)
