"""Sweep specs: `sweeps/<name>.toml` -> a validated, frozen `SweepSpec`.

A spec file has these sections (every key is checked; unknown keys are errors with a did-you-mean):

    description = "one line shown by `qgen-sweep list`"
    search = "grid"              # the only search for now; adaptive searches add their own value
    results_dir = "runs/x"       # optional; default ./runs/<sweep>

    [grid]                       # axes: a list of values per TrialConfig field
    bits = [2, 4, 8, 32]
    optimizer = ["sgd", "adam", "rmsprop"]
    weight_decay = [0, 1e-4, 2e-4]
    depth = [2, 3, 4]
    width = [8, 10, 12]
    [grid.lr]                    # conditional axis: one list per optimizer (level = lr_index)
    sgd = [0.1, 0.05, 0.01]
    adam = [1e-3, 5e-4, 1e-4]

    [train]                      # fixed TrialConfig fields (dataset, epochs, base_width, ...)
    [runtime]                    # TrialRuntime fields (device, threads, ...): never in the trial id
    [resources]                  # cpu, gpu (fractions allowed), max_concurrent, max_failures

`--set key=value` overrides (e.g. `train.epochs=3`, `grid.bits=[2,32]`) are applied to the raw
TOML before validation, so they get exactly the same checks; the resolved spec is what is saved
with the results and hashed.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qgen_sweep.adaptive.settings import OPTUNA_FIELDS, OptunaSettings, parse_optuna
from qgen_sweep.adaptive.settings import identity as optuna_identity
from qgen_sweep.errors import SpecError, UsageError
from qgen_sweep.resources import data_dir
from qgen_sweep.trial.config import (
    AMP_MODES,
    AUGMENTATIONS,
    BITS,
    COMPILE_MODES,
    DATASETS,
    FIRST_LAST_POLICIES,
    OPTIMIZERS,
    RUNTIME_DTYPES,
    TrialRuntime,
)

SEARCHES = ("grid", "optuna")  # any other value is a spec error naming these

TOP_KEYS = ("description", "search", "results_dir", "grid", "train", "runtime", "resources",
            "optuna")

# Expected TOML type of every TrialConfig field. Floats accept integers (weight_decay = 0).
_INT, _FLOAT, _STR = "integer", "number", "string"
CONFIG_FIELDS: dict[str, str] = {
    "dataset": _STR, "bits": _INT, "optimizer": _STR, "lr": _FLOAT, "weight_decay": _FLOAT,
    "depth": _INT, "width": _INT, "base_width": _INT, "epochs": _INT, "batch_size": _INT,
    "milestones": "list of integers", "gamma": _FLOAT, "momentum": _FLOAT, "seed": _INT,
    "augment": _STR, "first_last": _STR, "step_size_lr_scale": _FLOAT, "amp": _STR,
}
CHOICES: dict[str, tuple] = {
    "dataset": DATASETS, "bits": BITS, "optimizer": OPTIMIZERS, "augment": AUGMENTATIONS,
    "first_last": FIRST_LAST_POLICIES, "amp": AMP_MODES,
}
# Fields that may be swept; milestones is a list itself, so it is only ever fixed (in [train]).
AXIS_FIELDS = tuple(k for k in CONFIG_FIELDS if k != "milestones")
# Axis order of the plan (bits innermost so each configuration's precisions run side by side).
AXIS_ORDER = (
    "dataset", "optimizer", "lr", "weight_decay", "depth", "width", "base_width", "epochs",
    "batch_size", "gamma", "momentum", "seed", "augment", "first_last", "step_size_lr_scale",
    "amp", "bits",
)
_NONNEG = {"weight_decay", "momentum"}  # may be 0; other numbers must be > 0 (seed: any int)

RUNTIME_FIELDS: dict[str, str] = {
    "device": _STR, "data_dir": _STR, "download": "boolean", "eval_batch_size": _INT,
    "eval_test_every": _INT, "compile": _STR, "channels_last": "boolean", "threads": _INT,
    "dtype": _STR,
}
RESOURCE_FIELDS: dict[str, str] = {
    "cpu": _FLOAT, "gpu": _FLOAT, "max_concurrent": _INT, "max_failures": _INT,
    "engine": _STR, "bundle_size": _INT,
}
ENGINES = ("single", "fused")  # fused: trials of one architecture trained as one network (issue 8)


@dataclass(frozen=True)
class Resources:
    """Per-trial resources and scheduling limits (never part of a trial id)."""

    cpu: float = 1.0  # Ray CPUs per trial; fractions let several tiny trials share a core
    gpu: float = 0.0  # Ray GPU fraction per trial (bookkeeping only: memory is not limited)
    max_concurrent: int = 0  # 0 = as many as the cluster's resources allow
    max_failures: int = 2  # retries per trial after its first failed attempt (Ray FailureConfig)
    engine: str = "single"  # "fused": bundles of up to bundle_size trials per task (issue 8)
    bundle_size: int = 8  # members per fused bundle (resources above are per bundle then)


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: the axes, the fixed trial fields, runtime and resources."""

    name: str
    source: str  # the file it came from (for messages)
    description: str
    search: str
    axes: dict[str, tuple]  # field -> values; "lr" absent when lr_table is used
    lr_table: dict[str, tuple[float, ...]]  # optimizer -> learning rates (empty when lr is plain)
    fixed: dict[str, Any]  # TrialConfig fields held constant
    runtime: TrialRuntime
    resources: Resources
    results_dir: str | None = None
    optuna: OptunaSettings | None = None  # search = "optuna" only (qgen_sweep.adaptive)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def resolved(self) -> dict[str, Any]:
        """The spec as a plain dict (overrides applied): what is saved and hashed."""
        return json.loads(json.dumps(self.raw))

    @property
    def spec_hash(self) -> str:
        """sha256 of the canonical resolved spec without resources/runtime/results_dir (16 hex)."""
        ident = {k: v for k, v in self.raw.items() if k in ("search", "grid", "train")}
        if self.optuna is not None:  # the study-defining settings (not the n_trials budget)
            ident["optuna"] = optuna_identity(self.optuna)
        text = json.dumps(ident, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_toml(self) -> str:
        """The resolved spec as TOML text (sweep.toml in the results directory)."""
        return dumps_toml(self.raw)


# ---- finding and loading -------------------------------------------------------------------------
def sweeps_dir() -> Path:
    """The folder of shipped sweep specs."""
    return data_dir("sweeps")


def available_sweeps() -> list[Path]:
    """Spec files that ship with qgen-sweep, sorted by name."""
    return sorted(sweeps_dir().glob("*.toml"))


def find_spec(name: str) -> Path:
    """Resolve a sweep name (file stem in sweeps/) or a path to a .toml file."""
    path = Path(name)
    if path.suffix == ".toml" or "/" in name:
        if path.is_file():
            return path
        raise UsageError(f"sweep spec file {name} does not exist (give a path to a .toml file)")
    candidate = sweeps_dir() / f"{name}.toml"
    if candidate.is_file():
        return candidate
    names = [p.stem for p in available_sweeps()]
    hint = _did_you_mean(name, names)
    raise UsageError(
        f"no sweep named {name!r}{hint}; available: {', '.join(names)} (or give a .toml path)"
    )


def load_spec(name: str, overrides: list[str] | tuple[str, ...] = ()) -> SweepSpec:
    """Load, override and validate a sweep spec; raises SpecError listing every problem."""
    path = find_spec(name)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise SpecError([f"{path}: not valid TOML: {error}"]) from None
    except UnicodeDecodeError:
        raise SpecError([f"{path}: not a UTF-8 text file"]) from None
    apply_overrides(raw, overrides, str(path))
    return parse_spec(raw, name=path.stem, source=str(path))


def spec_from_text(text: str, name: str, source: str) -> SweepSpec:
    """Parse a resolved spec saved as TOML (a results directory's sweep.toml)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SpecError([f"{source}: not valid TOML: {error}"]) from None
    return parse_spec(raw, name=name, source=source)


# ---- --set overrides -----------------------------------------------------------------------------
def parse_value(text: str) -> Any:
    """A --set value as TOML (3, 1e-4, [2, 32], true, "x"); a bare word is a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict[str, Any], overrides, source: str) -> None:
    """Apply `key.sub=value` overrides in place; unknown keys are errors with a did-you-mean."""
    problems = []
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.epochs=3")
            continue
        problem = _set_key(raw, key.split("."), parse_value(value.strip()))
        if problem:
            problems.append(f"--set {key}: {problem}")
    if problems:
        raise SpecError([f"{source}: {p}" for p in problems])


def _allowed_children(path: list[str]) -> list[str] | None:
    """Keys allowed under a dotted prefix (None = free-form leaf)."""
    if not path:
        return list(TOP_KEYS)
    head = path[0]
    tables = {
        "grid": list(AXIS_FIELDS), "train": list(CONFIG_FIELDS),
        "runtime": list(RUNTIME_FIELDS), "resources": list(RESOURCE_FIELDS),
        "optuna": list(OPTUNA_FIELDS),
    }
    if len(path) == 1:
        return tables.get(head)
    if path[:2] == ["grid", "lr"] and len(path) == 2:
        return list(OPTIMIZERS)
    return None


def _set_key(raw: dict[str, Any], parts: list[str], value: Any) -> str | None:
    node = raw
    for depth, part in enumerate(parts):
        allowed = _allowed_children(parts[:depth])
        if allowed is None or part not in allowed:
            where = ".".join(parts[:depth]) or "the top level"
            choices = ", ".join(allowed) if allowed else "none (not a table)"
            return f"unknown key {part!r}{_did_you_mean(part, allowed or [])} under {where}; " \
                   f"allowed: {choices}"
        if depth == len(parts) - 1:
            node[part] = value
            return None
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    return None


def _did_you_mean(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---- validation ----------------------------------------------------------------------------------
class _Problems:
    """Collects one-line problems, each prefixed with the file."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: list[str] = []

    def add(self, key: str, message: str) -> None:
        self.lines.append(f"{self.source}: {key}: {message}")

    def unknown(self, where: str, key: str, allowed) -> None:
        hint = _did_you_mean(key, allowed)
        self.add(f"{where}{key}", f"unknown key{hint}; allowed: {', '.join(allowed)}")


def _type_ok(value: Any, kind: str) -> bool:
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _FLOAT:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == _STR:
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "list of integers":
        return isinstance(value, list) and all(_type_ok(v, _INT) for v in value)
    raise AssertionError(kind)


def _toml_type(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array",
             dict: "table"}
    return names.get(type(value), type(value).__name__)


def _check_value(problems: _Problems, key: str, name: str, value: Any) -> bool:
    """Check one TrialConfig field value: type, choices, range. True when fine."""
    kind = CONFIG_FIELDS[name]
    if not _type_ok(value, kind):
        problems.add(key, f"must be a {kind}, but got {value!r} ({_toml_type(value)})")
        return False
    if name in CHOICES and value not in CHOICES[name]:
        allowed = ", ".join(str(c) for c in CHOICES[name])
        problems.add(key, f"{value!r} is not allowed; allowed: {allowed}")
        return False
    if kind in (_INT, _FLOAT) and name != "seed":
        low_ok = value >= 0 if name in _NONNEG else value > 0
        if not (math.isfinite(value) and low_ok):
            rule = ">= 0" if name in _NONNEG else "> 0"
            problems.add(key, f"must be a finite number {rule}, but got {value!r}")
            return False
    return True


def _check_axis(problems: _Problems, key: str, name: str, values: Any) -> tuple | None:
    if not isinstance(values, list):
        problems.add(key, f"an axis must be a list of values, but got {values!r} (write "
                          f"[{json.dumps(values)}] for a single value, or move it to [train])")
        return None
    if not values:
        problems.add(key, "axis is empty; give at least one value")
        return None
    if not all(_check_value(problems, key, name, v) for v in values):
        return None
    if len({json.dumps(v) for v in values}) != len(values):
        dupes = sorted({str(v) for v in values if values.count(v) > 1})
        problems.add(key, f"duplicate values {', '.join(dupes)}; list each value once")
        return None
    if name in _FLOAT_FIELDS:
        values = [float(v) for v in values]
    return tuple(values)


_FLOAT_FIELDS = {k for k, v in CONFIG_FIELDS.items() if v == _FLOAT}


def _parse_grid(problems: _Problems, grid: Any) -> tuple[dict[str, tuple], dict[str, tuple]]:
    axes: dict[str, tuple] = {}
    lr_table: dict[str, tuple] = {}
    if not isinstance(grid, dict):
        problems.add("grid", f"must be a table of axes, but got {grid!r}")
        return axes, lr_table
    for name, values in grid.items():
        if name not in AXIS_FIELDS:
            problems.unknown("grid.", name, AXIS_FIELDS)
        elif name == "lr" and isinstance(values, dict):
            lr_table = _parse_lr_table(problems, values)
        else:
            checked = _check_axis(problems, f"grid.{name}", name, values)
            if checked is not None:
                axes[name] = checked
    return axes, lr_table


def _parse_lr_table(problems: _Problems, table: dict[str, Any]) -> dict[str, tuple]:
    out = {}
    for optimizer, values in table.items():
        if optimizer not in OPTIMIZERS:
            problems.unknown("grid.lr.", optimizer, OPTIMIZERS)
            continue
        checked = _check_axis(problems, f"grid.lr.{optimizer}", "lr", values)
        if checked is not None:
            out[optimizer] = checked
    return out


def _parse_fixed(problems: _Problems, train: Any) -> dict[str, Any]:
    fixed: dict[str, Any] = {}
    if not isinstance(train, dict):
        problems.add("train", f"must be a table, but got {train!r}")
        return fixed
    for name, value in train.items():
        if name not in CONFIG_FIELDS:
            problems.unknown("train.", name, list(CONFIG_FIELDS))
        elif name == "milestones":
            ok = _type_ok(value, "list of integers") and all(m >= 1 for m in value)
            if ok and value == sorted(set(value)):
                fixed[name] = tuple(value)
            else:
                problems.add("train.milestones", f"must be strictly increasing epochs >= 1, "
                                                 f"but got {value!r} (e.g. [100, 200])")
        elif _check_value(problems, f"train.{name}", name, value):
            fixed[name] = float(value) if name in _FLOAT_FIELDS else value
    return fixed


def _parse_table(problems: _Problems, section: str, table: Any, fields: dict[str, str]):
    out: dict[str, Any] = {}
    if not isinstance(table, dict):
        problems.add(section, f"must be a table, but got {table!r}")
        return out
    for name, value in table.items():
        if name not in fields:
            problems.unknown(f"{section}.", name, list(fields))
        elif not _type_ok(value, fields[name]):
            problems.add(f"{section}.{name}",
                         f"must be a {fields[name]}, but got {value!r} ({_toml_type(value)})")
        else:
            out[name] = float(value) if fields[name] == _FLOAT else value
    return out


def _parse_resources(problems: _Problems, table: Any) -> Resources:
    values = _parse_table(problems, "resources", table, RESOURCE_FIELDS)
    rules = {
        "cpu": (lambda v: math.isfinite(v) and v > 0, "> 0 (fractions like 0.5 share a core)"),
        "gpu": (lambda v: math.isfinite(v) and v >= 0, ">= 0 (fractions like 0.25 share a GPU)"),
        "max_concurrent": (lambda v: v >= 0, ">= 0 (0 = as many as resources allow)"),
        "max_failures": (lambda v: v >= 0, ">= 0 (retries after the first failed attempt)"),
        "engine": (lambda v: v in ENGINES, f"one of {', '.join(ENGINES)}"),
        "bundle_size": (lambda v: v >= 1, ">= 1 (trials trained together in one fused bundle)"),
    }
    for name, value in list(values.items()):
        check, rule = rules[name]
        if not check(value):
            problems.add(f"resources.{name}", f"must be {rule}, but got {value!r}")
            del values[name]
    return Resources(**values)


def _parse_runtime(problems: _Problems, table: Any) -> TrialRuntime:
    values = _parse_table(problems, "runtime", table, RUNTIME_FIELDS)
    for name in ("eval_batch_size", "threads"):
        if name in values and values[name] < 1:
            problems.add(f"runtime.{name}", f"must be an integer >= 1, but got {values[name]!r}")
            del values[name]
    if "device" in values and values["device"].split(":")[0] not in ("auto", "cpu", "cuda"):
        problems.add("runtime.device",
                     f"{values['device']!r} is not allowed; allowed: auto, cpu, cuda, cuda:N")
        del values["device"]
    for name, allowed in (("dtype", RUNTIME_DTYPES), ("compile", COMPILE_MODES)):
        if name in values and values[name] not in allowed:
            problems.add(f"runtime.{name}",
                         f"{values[name]!r} is not allowed; allowed: {', '.join(allowed)}")
            del values[name]
    return TrialRuntime(**values)


def _parse_top(problems: _Problems, raw: dict[str, Any]) -> tuple[str, str, str | None]:
    for key in raw:
        if key not in TOP_KEYS:
            problems.unknown("", key, TOP_KEYS)
    description = raw.get("description", "")
    if not isinstance(description, str):
        problems.add("description", f"must be a string, but got {description!r}")
        description = ""
    search = raw.get("search", "grid")
    if search not in SEARCHES:
        problems.add("search", f"{search!r} is not supported; allowed: {', '.join(SEARCHES)}")
    results_dir = raw.get("results_dir")
    if results_dir is not None and not isinstance(results_dir, str):
        problems.add("results_dir", f"must be a string path, but got {results_dir!r}")
        results_dir = None
    return description, str(search), results_dir


def _check_cross(problems: _Problems, axes, lr_table, fixed) -> None:
    both = sorted(set(axes) & set(fixed))
    for name in both:
        problems.add(f"train.{name}", f"is also a grid axis (grid.{name}); keep it in one place")
    if lr_table and "lr" in fixed:
        problems.add("train.lr", "is also a grid axis (grid.lr); keep it in one place")
    for name in ("dataset", "optimizer", "lr", "bits", "weight_decay", "depth", "width"):
        present = name in axes or name in fixed or (name == "lr" and lr_table)
        if not present:
            problems.add(f"grid.{name}", f"missing: give it as an axis in [grid] or a fixed value "
                                         f"in [train] (allowed: {CONFIG_FIELDS[name]})")
    if lr_table:
        fixed_optimizer = (fixed["optimizer"],) if "optimizer" in fixed else ()
        optimizers = axes.get("optimizer") or fixed_optimizer
        missing = [o for o in optimizers if o not in lr_table]
        if missing:
            problems.add("grid.lr", f"no learning rates for optimizer(s) {', '.join(missing)}; "
                                    f"add e.g. grid.lr.{missing[0]} = [1e-3]")


def parse_spec(raw: dict[str, Any], name: str, source: str) -> SweepSpec:
    """Validate a raw spec dict; raises SpecError with one line per problem."""
    problems = _Problems(source)
    description, search, results_dir = _parse_top(problems, raw)
    axes, lr_table = _parse_grid(problems, raw.get("grid", {}))
    fixed = _parse_fixed(problems, raw.get("train", {}))
    runtime = _parse_runtime(problems, raw.get("runtime", {}))
    resources = _parse_resources(problems, raw.get("resources", {}))
    optuna = parse_optuna(raw.get("optuna"), search, problems.add, problems.unknown)
    if not problems.lines:
        _check_cross(problems, axes, lr_table, fixed)
    if problems.lines:
        raise SpecError(problems.lines)
    return SweepSpec(
        name=name, source=source, description=description, search=search, axes=axes,
        lr_table=lr_table, fixed=fixed, runtime=runtime, resources=resources,
        results_dir=results_dir, optuna=optuna, raw=raw,
    )


def runtime_dict(runtime: TrialRuntime) -> dict[str, Any]:
    """TrialRuntime as a plain dict (to ship to workers)."""
    return dataclasses.asdict(runtime)


# ---- TOML writing (tomllib reads only; our specs are tables of scalars and lists) ---------------
def _toml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_scalar(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def dumps_toml(data: dict[str, Any], prefix: str = "") -> str:
    """Serialize nested dicts of scalars and lists as TOML."""
    lines = [f"{k} = {_toml_scalar(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for key, value in data.items():
        if isinstance(value, dict):
            name = f"{prefix}{key}"
            lines += ["", f"[{name}]", dumps_toml(value, prefix=f"{name}.").rstrip("\n")]
    return "\n".join(lines).strip("\n") + "\n"
