"""The import rules of docs/ARCHITECTURE.md, checked on the source: layers import only
downward, the adaptive search sees only the backends' interface, ray and torch stay in their
rooms. The checker is also run on a copy of the package with a planted upward import, so a
broken checker cannot pass quietly."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "qgen_sweep"

# Lowest first. A unit is a top-level module or subpackage of qgen_sweep; it may import units of
# its own layer or below, never above.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "atomic", "resources", "provenance"),  # foundations
    ("trial",),  # the trial engine and its torch-free contracts (config, archs)
    ("store", "collapse"),  # the results store; the collapsed rule it and the views share
    ("spec", "spec_optuna"),  # sweep specs
    ("plan",),  # spec -> trials
    ("backends", "analysis"),  # where trials run; DuckDB over the store
    ("search", "adaptive", "posthoc", "cluster"),  # search strategies; post-hoc job driver
    ("measures", "robustness", "landscape"),  # post-hoc job kinds
    ("launcher", "watch", "dashboard", "export_mlflow"),  # what the commands drive
    ("commands", "cli"),
]
# Modules outside `backends` that implement a search may use the backends' interface only.
BACKENDS_INTERFACE = {"qgen_sweep.backends", "qgen_sweep.backends.progress"}
INTERFACE_ONLY = ("search", "adaptive")
# Third-party libraries that only some rooms may import (module path prefixes).
CONFINED = {
    "ray": ("qgen_sweep.backends.ray", "qgen_sweep.cluster.wait"),
    "torch": ("qgen_sweep.trial.", "qgen_sweep.measures.", "qgen_sweep.robustness.",
              "qgen_sweep.landscape."),
}


def _unit(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def _layer(unit: str) -> int:
    for index, units in enumerate(LAYERS):
        if unit in units:
            return index
    raise AssertionError(f"qgen_sweep.{unit} is in no layer of tests/test_architecture.py; "
                         "add it to LAYERS (and to docs/ARCHITECTURE.md)")


def _imports(path: Path, package: Path) -> list[str]:
    """The modules a module imports, at any depth (function-level imports included): for
    `from M import x` the module M; for `from qgen_sweep import x` the submodule x, if it is
    one (else a name of the package itself, like __version__)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module == "qgen_sweep":
            names += [f"qgen_sweep.{a.name}" for a in node.names
                      if (package / a.name).is_dir() or (package / f"{a.name}.py").is_file()]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    return names


def violations(package: Path) -> list[str]:
    """One line per import that breaks a rule, for the package folder `package`."""
    found = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        unit = _unit(module)
        if unit == "qgen_sweep":
            continue
        for name in _imports(path, package):
            top = name.split(".")[0]
            if top in CONFINED and not module.startswith(CONFINED[top]):
                found.append(f"{module} imports {top}, which only {CONFINED[top]} may")
            if top != "qgen_sweep" or name == "qgen_sweep":
                continue
            target = _unit(name)
            if target == unit:
                continue
            if _layer(target) > _layer(unit):
                found.append(f"{module} imports {name}: layer {target} is above {unit}")
            if unit in INTERFACE_ONLY and target == "backends" and name not in BACKENDS_INTERFACE:
                found.append(f"{module} imports {name}: a search uses only the backends' "
                             f"interface ({', '.join(sorted(BACKENDS_INTERFACE))})")
    return sorted(set(found))


def test_the_package_follows_the_import_rules() -> None:
    assert violations(PACKAGE) == []


def test_every_search_strategy_is_a_valid_search_value() -> None:
    from qgen_sweep.search import STRATEGIES
    from qgen_sweep.spec import SEARCHES

    assert set(STRATEGIES) == set(SEARCHES)


@pytest.mark.parametrize(("module", "planted", "expected"), [
    ("store.py", "from qgen_sweep.launcher import run_sweep", "layer launcher is above store"),
    ("spec.py", "from qgen_sweep.adaptive import study", "layer adaptive is above spec"),
    ("backends/local.py", "import qgen_sweep.adaptive.strategy",
     "layer adaptive is above backends"),
    ("adaptive/strategy.py", "from qgen_sweep.backends.runner import run_one",
     "a search uses only the backends' interface"),
    ("plan.py", "    import torch", "imports torch"),
])
def test_a_planted_violation_is_found(tmp_path: Path, module: str, planted: str,
                                      expected: str) -> None:
    copy = tmp_path / "qgen_sweep"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "static"))
    target = copy / module
    if planted.startswith(" "):  # a function-level import counts too
        target.write_text(target.read_text() + f"\n\ndef _planted():\n{planted}\n")
    else:
        target.write_text(target.read_text() + f"\n{planted}\n")
    found = violations(copy)
    assert len(found) == 1 and expected in found[0], found
