"""Sweep specs: `sweeps/<name>.toml` -> a validated, frozen `SweepSpec`.

A spec file has these sections (every key is checked; unknown keys are errors with a did-you-mean):

    description = "one line shown by `qgen-sweep list`"
    search = "grid"              # "grid": every point; "optuna": an adaptive search ([optuna])
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
    [resources]                  # cpu, gpu (fractions allowed), max_concurrent, max_failures,
                                 # engine ("single" | "fused"), bundle_size
    [optuna]                     # search = "optuna" only: sampler, objective, budget, pruner
                                 # (qgen_sweep/spec_optuna.py)

`--set key=value` overrides (e.g. `train.epochs=3`, `grid.bits=[2,32]`) are applied to the raw
TOML before validation, so they get exactly the same checks; the resolved spec is what is saved
with the results (written with tomli-w, so any Unicode text reads back) and hashed.

Validation checks every value before anything is planned or written: types, choices, and ranges
(integers must fit the Parquet columns they end up in: int32, seed int64), nesting depth, and
text that is not Unicode (lone surrogates from a non-UTF-8 command line).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qgen_sweep.errors import QGenError, SpecError, UsageError
from qgen_sweep.resources import data_dir
from qgen_sweep.spec_optuna import OPTUNA_FIELDS, OptunaSettings, parse_optuna
from qgen_sweep.spec_optuna import identity as optuna_identity
from qgen_sweep.trial.archs import ARCH_NAMES
from qgen_sweep.trial.config import (
    AMP_MODES,
    AUGMENTATIONS,
    BITS,
    COMPILE_MODES,
    DATASETS,
    DECODE_MODES,
    FIRST_LAST_POLICIES,
    OPTIMIZERS,
    RUNTIME_DTYPES,
    TrialConfig,
    TrialRuntime,
)

SEARCHES = ("grid", "optuna")  # any other value is a spec error naming these

TOP_KEYS = ("description", "search", "results_dir", "grid", "train", "runtime", "resources",
            "optuna")

# Expected TOML type of every field of [train] (TrialConfig), [runtime] (TrialRuntime) and
# [resources] (Resources), from the dataclass field's annotation: a field added to one of them is
# a spec key at once. Floats accept integers (weight_decay = 0); an optional field (`int | None`)
# takes the type it holds, and leaving the key out keeps its default.
_INT, _FLOAT, _STR = "integer", "number", "string"
_TOML_KINDS: dict[Any, str] = {int: _INT, float: _FLOAT, str: _STR, bool: "boolean",
                               tuple[int, ...]: "list of integers"}


def field_kinds(cls: type) -> dict[str, str]:
    """field name -> expected TOML type, in the dataclass's field order."""
    hints = typing.get_type_hints(cls)
    kinds = {}
    for f in dataclasses.fields(cls):
        held = [a for a in typing.get_args(hints[f.name]) if a is not type(None)]
        optional = isinstance(hints[f.name], types.UnionType) and len(held) == 1
        kinds[f.name] = _TOML_KINDS[held[0] if optional else hints[f.name]]
    return kinds


CONFIG_FIELDS: dict[str, str] = field_kinds(TrialConfig)
RUNTIME_FIELDS: dict[str, str] = field_kinds(TrialRuntime)
CHOICES: dict[str, tuple] = {
    "dataset": DATASETS, "bits": BITS, "optimizer": OPTIMIZERS, "augment": AUGMENTATIONS,
    "first_last": FIRST_LAST_POLICIES, "amp": AMP_MODES, "arch": ARCH_NAMES,
}
# Fields that may be swept; milestones is a list itself, so it is only ever fixed (in [train]).
AXIS_FIELDS = tuple(k for k in CONFIG_FIELDS if k != "milestones")
# Axis order of the plan (bits innermost so each configuration's precisions run side by side).
AXIS_ORDER = (
    "dataset", "arch", "optimizer", "lr", "weight_decay", "depth", "width", "base_width", "epochs",
    "batch_size", "gamma", "momentum", "seed", "augment", "first_last", "step_size_lr_scale",
    "amp", "resolution", "pretrained", "bin_regularizer", "bits",
)
# may be 0; other numbers must be > 0 (seed: any int)
_NONNEG = {"weight_decay", "momentum", "bin_regularizer"}
# Integer ranges: what the Parquet columns hold (store.CONFIG_COLUMNS: seed is int64, the other
# integer config columns int32); tests/test_spec_hardening.py checks these against the schema.
INT32_MAX = 2**31 - 1
INT_RANGES: dict[str, tuple[int, int]] = {"seed": (-(2**63), 2**63 - 1)}
DEFAULT_INT_RANGE = (1, INT32_MAX)  # counts and sizes: >= 1
# A spec is at most [grid.lr] > optimizer > list deep; anything much deeper is not a spec (and
# would exhaust Python's recursion in messages and hashing).
MAX_DEPTH = 8
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")  # runtime.device, measure --device

ENGINES = ("single", "fused")  # fused: trials of one architecture trained as one network


@dataclass(frozen=True)
class Resources:
    """Per-trial resources and scheduling limits (never part of a trial id)."""

    cpu: float = 1.0  # Ray CPUs per trial; fractions let several tiny trials share a core
    gpu: float = 0.0  # Ray GPU fraction per trial (bookkeeping only: memory is not limited)
    max_concurrent: int = 0  # 0 = as many as the cluster's resources allow
    max_failures: int = 2  # retries per trial after its first failed attempt (Ray FailureConfig)
    engine: str = "single"  # "fused": bundles of up to bundle_size trials per task
    bundle_size: int = 8  # members per fused bundle (resources above are per bundle then)
    # N >= 1: one trial = N data-parallel workers (DDP through Ray Train), one GPU and `cpu`
    # CPUs each; the trial computes what one process with the same global batch computes.
    gpus_per_trial: int = 0


RESOURCE_FIELDS: dict[str, str] = field_kinds(Resources)


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
    optuna: OptunaSettings | None = None  # search = "optuna" only (qgen_sweep/spec_optuna.py)
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
        """The resolved spec as TOML text."""
        return dumps_toml(self.raw)

    def saved_text(self) -> str:
        """What a results directory's sweep.toml holds: the sweep's name and spec hash in two
        comment lines (read back by `saved_spec`), then the resolved spec."""
        return f"{_NAME_LINE}{self.name}\n# spec hash: {self.spec_hash}\n{self.to_toml()}"

    def default_results_dir(self) -> Path:
        """`results_dir` of the spec, else ./runs/<sweep>."""
        return Path(self.results_dir) if self.results_dir else Path("runs") / self.name


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
    bad = _bad_characters(path.stem)
    if bad:
        raise UsageError(f"a sweep name may not hold control characters or lone surrogates, but "
                         f"{_show(str(path))} has {bad}; rename the file")
    raw = _parse_toml(read_spec_text(path), str(path))
    apply_overrides(raw, overrides, str(path))
    return parse_spec(raw, name=path.stem, source=str(path))


def read_spec_text(path: Path) -> str:
    """The text of a spec file; SpecError (one line) when it is unreadable or not UTF-8."""
    try:
        return Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise SpecError([f"{path}: not a UTF-8 text file (byte {error.start}); save it as "
                         "UTF-8"]) from None
    except OSError as error:
        raise SpecError([f"{path}: cannot be read ({error.strerror or error}); check the path "
                         "and its permissions"]) from None


def _parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SpecError([f"{source}: not valid TOML: {error}"]) from None
    except RecursionError:
        raise SpecError([f"{source}: not a sweep spec: its values are nested too deeply "
                         f"(a spec is at most {MAX_DEPTH} levels deep)"]) from None


def spec_from_text(text: str, name: str, source: str,
                   overrides: list[str] | tuple[str, ...] = ()) -> SweepSpec:
    """Parse a resolved spec saved as TOML (a results directory's sweep.toml), with `--set`
    overrides applied as load_spec applies them."""
    raw = _parse_toml(text, source)
    apply_overrides(raw, overrides, source)
    return parse_spec(raw, name=name, source=source)


def spec_from_file(path: Path, name: str,
                   overrides: list[str] | tuple[str, ...] = ()) -> SweepSpec:
    """Parse a saved spec file (sweep.toml); every problem is a one-line SpecError."""
    return spec_from_text(read_spec_text(path), name=name, source=str(path), overrides=overrides)


SAVED_SPEC = "sweep.toml"  # in a results directory: the resolved spec it was launched with
_NAME_LINE = "# sweep: "


def saved_spec(results_dir: Path | str) -> SweepSpec:
    """The resolved spec a results directory was launched with (its sweep.toml)."""
    path = Path(results_dir) / SAVED_SPEC
    if not path.is_file():
        raise UsageError(f"{results_dir} holds no launched sweep (no {SAVED_SPEC}); run "
                         f"`qgen-sweep launch SWEEP --results-dir {results_dir}` first")
    text = read_spec_text(path)
    names = [line.removeprefix(_NAME_LINE).strip() for line in text.splitlines()
             if line.startswith(_NAME_LINE)]
    return spec_from_text(text, name=names[0] if names else path.parent.name, source=str(path))


def results_dir_for(sweep: str, given: Path | None = None) -> Path:
    """`given` (a --results-dir), else the results_dir of the sweep's spec, else
    ./runs/<sweep name> (also for a name that names no spec: `status` and `resume` say so)."""
    if given is not None:
        return given
    try:
        return load_spec(sweep).default_results_dir()
    except QGenError:
        return Path("runs") / Path(sweep).stem


# ---- --set overrides -----------------------------------------------------------------------------
def parse_value(text: str) -> Any:
    """A --set value as one TOML value (3, 1e-4, [2, 32], true, "x"); anything else (a bare word,
    or text that parses only as more than one key) is the string itself."""
    try:
        parsed = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:
        raise SpecError([f"--set value {_show(text)}: nested too deeply (a spec is at most "
                         f"{MAX_DEPTH} levels deep)"]) from None
    return parsed["v"] if list(parsed) == ["v"] else text


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
def _show(value: Any, limit: int = 80) -> str:
    """repr(value) cut to `limit` characters, for one-line messages about arbitrary input."""
    try:
        text = repr(value)
    except RecursionError:
        text = f"<{type(value).__name__} nested too deeply>"
    return text if len(text) <= limit else text[: limit - 5] + " ...'"


def _bad_characters(text: str) -> str:
    """U+XXXX of the characters a spec string may not hold: lone surrogates (not Unicode text:
    they cannot be written as UTF-8) and, in names, control characters."""
    found = dict.fromkeys(ch for ch in text if 0xD800 <= ord(ch) <= 0xDFFF or
                          (ord(ch) < 0x20 or ord(ch) == 0x7F))
    return ", ".join(f"U+{ord(ch):04X}" for ch in found)


def _shape_problems(raw: Any, source: str) -> list[str]:
    """Nesting deeper than MAX_DEPTH and strings that are not Unicode text (lone surrogates, e.g.
    from a non-UTF-8 command line), found without recursion."""
    stack: list[tuple[tuple[str, ...], Any]] = [((), raw)]
    problems = []
    while stack:
        path, node = stack.pop()
        where = ".".join(path) or "the top level"
        if len(path) > MAX_DEPTH:
            return [f"{source}: {_show(where)}: nested too deeply (a spec is at most "
                    f"{MAX_DEPTH} levels deep)"]
        if isinstance(node, dict):
            stack += [((*path, str(k)), v) for k, v in node.items()]
            texts = [str(k) for k in node]
        elif isinstance(node, list):
            stack += [((*path, f"[{i}]"), v) for i, v in enumerate(node)]
            texts = []
        else:
            texts = [node] if isinstance(node, str) else []
        for text in texts:
            surrogates = [ch for ch in text if 0xD800 <= ord(ch) <= 0xDFFF]
            if surrogates:
                problems.append(f"{source}: {_show(where)}: {_show(text)} is not Unicode text "
                                f"(U+{ord(surrogates[0]):04X}: bytes that were not UTF-8); "
                                f"write it in UTF-8")
    return problems


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


def _a(kind: str) -> str:
    """'an integer', 'a number', ...: the type name with its article."""
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def _toml_type(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array",
             dict: "table"}
    return names.get(type(value), type(value).__name__)


def _check_value(problems: _Problems, key: str, name: str, value: Any) -> bool:
    """Check one TrialConfig field value: type, choices, range. True when fine."""
    kind = CONFIG_FIELDS[name]
    if not _type_ok(value, kind):
        problems.add(key, f"must be {_a(kind)}, but got {_show(value)} ({_toml_type(value)})")
        return False
    if name in CHOICES and value not in CHOICES[name]:
        allowed = ", ".join(str(c) for c in CHOICES[name])
        problems.add(key, f"{_show(value)} is not allowed; allowed: {allowed}")
        return False
    if kind == _INT:
        low, high = INT_RANGES.get(name, DEFAULT_INT_RANGE)
        if not low <= value <= high:
            problems.add(key, f"must be an integer in [{low}, {high}] (what its result column "
                              f"holds), but got {_show(value)}")
            return False
    elif kind == _FLOAT:
        low_ok = value >= 0 if name in _NONNEG else value > 0
        if not (math.isfinite(value) and low_ok):
            rule = ">= 0" if name in _NONNEG else "> 0"
            problems.add(key, f"must be a finite number {rule}, but got {_show(value)}")
            return False
    return True


def _check_axis(problems: _Problems, key: str, name: str, values: Any) -> tuple | None:
    if not isinstance(values, list):
        problems.add(key, f"an axis must be a list of values, but got {_show(values)} (write "
                          f"[{_show(values)}] for a single value, or move it to [train])")
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
        problems.add("grid", f"must be a table of axes, but got {_show(grid)}")
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
        problems.add("train", f"must be a table, but got {_show(train)}")
        return fixed
    for name, value in train.items():
        if name not in CONFIG_FIELDS:
            problems.unknown("train.", name, list(CONFIG_FIELDS))
        elif name == "milestones":
            ok = _type_ok(value, "list of integers")
            ok = ok and all(1 <= m <= INT32_MAX for m in value) and value == sorted(set(value))
            if ok:
                fixed[name] = tuple(value)
            else:
                problems.add("train.milestones", f"must be strictly increasing epochs in "
                                                 f"[1, {INT32_MAX}], but got {_show(value)} "
                                                 f"(e.g. [100, 200])")
        elif _check_value(problems, f"train.{name}", name, value):
            fixed[name] = float(value) if name in _FLOAT_FIELDS else value
    return fixed


def _parse_table(problems: _Problems, section: str, table: Any, fields: dict[str, str]):
    out: dict[str, Any] = {}
    if not isinstance(table, dict):
        problems.add(section, f"must be a table, but got {_show(table)}")
        return out
    for name, value in table.items():
        if name not in fields:
            problems.unknown(f"{section}.", name, list(fields))
        elif not _type_ok(value, fields[name]):
            problems.add(f"{section}.{name}", f"must be {_a(fields[name])}, but got "
                                              f"{_show(value)} ({_toml_type(value)})")
        elif fields[name] == _INT and not -INT32_MAX - 1 <= value <= INT32_MAX:
            problems.add(f"{section}.{name}", f"must be an integer in [{-INT32_MAX - 1}, "
                                              f"{INT32_MAX}], but got {_show(value)}")
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
        "gpus_per_trial": (lambda v: v >= 0, ">= 0 (0 = one process per trial; N = N "
                                             "data-parallel workers with a GPU each)"),
    }
    for name, value in list(values.items()):
        check, rule = rules[name]
        if not check(value):
            problems.add(f"resources.{name}", f"must be {rule}, but got {_show(value)}")
            del values[name]
    if values.get("gpus_per_trial", 0) and values.get("engine") == "fused":
        problems.add("resources.gpus_per_trial", "data-parallel trials cannot be fused bundles; "
                                                 "set engine = \"single\" or gpus_per_trial = 0")
    return Resources(**values)


def _parse_runtime(problems: _Problems, table: Any) -> TrialRuntime:
    values = _parse_table(problems, "runtime", table, RUNTIME_FIELDS)
    for name, low in (("eval_batch_size", 1), ("threads", 1), ("eval_test_every", 0),
                      ("data_workers", 0)):
        if name in values and values[name] < low:
            problems.add(f"runtime.{name}", f"must be an integer >= {low}, but got "
                                            f"{values[name]!r}")
            del values[name]
    if "device" in values and not valid_device(values["device"]):
        problems.add("runtime.device", f"{_show(values['device'])} is not allowed; allowed: "
                                       "auto, cpu, cuda, cuda:N (N = 0, 1, ...)")
        del values["device"]
    for name, allowed in (("dtype", RUNTIME_DTYPES), ("compile", COMPILE_MODES),
                          ("decode", DECODE_MODES)):
        if name in values and values[name] not in allowed:
            problems.add(f"runtime.{name}",
                         f"{_show(values[name])} is not allowed; allowed: {', '.join(allowed)}")
            del values[name]
    return TrialRuntime(**values)


def valid_device(name: str) -> bool:
    """True for auto, cpu, cuda and cuda:N: the devices a trial or a measure job can ask for."""
    return DEVICE_PATTERN.fullmatch(name) is not None


def _parse_top(problems: _Problems, raw: dict[str, Any]) -> tuple[str, str, str | None]:
    for key in raw:
        if key not in TOP_KEYS:
            problems.unknown("", key, TOP_KEYS)
    description = raw.get("description", "")
    if not isinstance(description, str):
        problems.add("description", f"must be a string, but got {_show(description)}")
        description = ""
    search = raw.get("search", "grid")
    if search not in SEARCHES:
        problems.add("search", f"{_show(search)} is not supported; allowed: "
                               f"{', '.join(SEARCHES)}")
    results_dir = raw.get("results_dir")
    if results_dir is not None and not isinstance(results_dir, str):
        problems.add("results_dir", f"must be a string path, but got {_show(results_dir)}")
        results_dir = None
    return description, str(search), results_dir


def _check_cross(problems: _Problems, axes, lr_table, fixed) -> None:
    both = sorted(set(axes) & set(fixed))
    for name in both:
        problems.add(f"train.{name}", f"is also a grid axis (grid.{name}); keep it in one place")
    if lr_table and "lr" in fixed:
        problems.add("train.lr", "is also a grid axis (grid.lr); keep it in one place")
    # depth and width: TrialConfig asks for them where the arch needs them (NiN).
    for name in ("dataset", "optimizer", "lr", "bits", "weight_decay"):
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
    shape = _shape_problems(raw, source)
    if shape:
        raise SpecError(shape)
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


def with_data_dir(spec: SweepSpec, folder: str | Path | None) -> SweepSpec:
    """The spec with runtime.data_dir = `folder` (`--data-dir`; runtime is not in the spec hash,
    so the trials and the results directory stay the same); `spec` itself when None."""
    if folder is None:
        return spec
    raw = spec.resolved()
    raw.setdefault("runtime", {})["data_dir"] = str(folder)
    return parse_spec(raw, name=spec.name, source=spec.source)


def runtime_dict(runtime: TrialRuntime) -> dict[str, Any]:
    """TrialRuntime as a plain dict (to ship to workers)."""
    return dataclasses.asdict(runtime)


# ---- TOML writing ------------------------------------------------------------------------------
def dumps_toml(data: dict[str, Any]) -> str:
    """Serialize a spec dict as TOML with tomli-w (any Unicode text; tomllib only reads)."""
    import tomli_w

    return tomli_w.dumps(data)
