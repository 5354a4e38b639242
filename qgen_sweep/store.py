"""The results store: Parquet files under one results directory; the ledger of what is done.

`ResultsStore` is the only door to these files: every other module reads and writes them through
its methods (DuckDB in `qgen_sweep.analysis` reads the files `files(kind)` lists).

Layout:

    <root>/sweep.toml                      resolved spec as launched (provenance)
    <root>/plan.parquet                    every planned trial: id + config columns (PLAN_SCHEMA)
    <root>/trials/bits=B/<id>.parquet      one final row per finished trial (TRIAL_SCHEMA)
    <root>/epochs/bits=B/<id>.parquet      one row per epoch (EPOCH_SCHEMA), rewritten each epoch
    <root>/measures/bits=B/<id>.parquet    generalization measures of a finished trial
    <root>/failures/<id>-<attempt>.parquet one row per failed attempt (FAILURE_SCHEMA)
    <root>/measure_failures/<id>-<n>.parquet  one row per failed measure job
    <root>/robustness/bits=B/<id>.parquet  losses on corrupted test sets, one row per
                                           (source, corruption, severity)
    <root>/robustness_failures/<id>-<n>.parquet  one row per failed robustness job
    <root>/landscape/bits=B/<id>.parquet   loss-landscape points of a finished trial
    <root>/landscape_failures/<id>-<n>.parquet  one row per failed landscape job
    <root>/checkpoints/<id>/               trial checkpoints (written by the trial engine)
    <root>/checkpoints/<id>/attempts.json  one entry per start of the trial (attempt, host, ...)
    <root>/optuna/journal.log              the Optuna studies of an adaptive sweep
    <root>/corrupt/                        unreadable files moved aside by launch / resume
    <root>/ray/                            Ray Tune's own experiment folders (not the ledger)
    <root>/.lock, .lock.json               the sweep lock (flock) and who holds it
    <root>/.measure.lock, .measure.lock.json  the lock of `qgen-sweep measure` (each post-hoc
                                           kind has its own: .robustness.lock, .landscape.lock)

Per-trial kinds (`KINDS`: trials, epochs, measures, and any later one) share one layout,
`<kind>/bits=B/<trial_id>.parquet`, and the rows of their failed jobs go to the kind's failure
folder. A new kind is one `Kind` entry: its folder, the lock its writers hold, its failure folder.

A failed attempt writes one failure row; a trial is *failed* when it has failure rows and no
final row (a trial that failed once and then finished keeps its failure rows as history).
A trial is *complete* when its final row and its epoch rows both read back (`complete_ids`): a
finished trial whose epochs file was lost (damaged, then moved to `corrupt/`) is run again by the
next launch / resume of a grid sweep, which continues from its last.pt (the whole history is in
it, so nothing is trained again: the kept model is evaluated once more) and then rewrites its
epochs file and replaces its final row. Until then `status` lists it as finished without a curve.

Every file is written atomically (temporary file in the same folder, fsync, os.replace), so a
crash or kill leaves either the old file or the new one, never a torn one. A trial is done when
its final row exists and reads back; a file that does not read back (truncated by hand, a disk
error) is reported by `corrupt_files()` and treated as missing.

`bits` is stored inside every file as well as in the folder name; readers should not rely on
Hive partition inference (DuckDB: hive_partitioning = false).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import socket
import typing
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from qgen_sweep.atomic import atomic_open, remove_stale_temp_files, write_text_atomic
from qgen_sweep.errors import StoreError, UsageError
from qgen_sweep.provenance import failure_row
from qgen_sweep.trial.config import COLUMN_FIELDS, TrialConfig

_TS = pa.timestamp("us", tz="UTC")

# Arrow type of a config column, from the TrialConfig field's annotation; seeds are any 64-bit
# integer, every other integer field is small (bits, depth, epochs, ...).
_ARROW_TYPES: dict[Any, pa.DataType] = {int: pa.int32(), float: pa.float64(), str: pa.string(),
                                       bool: pa.bool_()}
_WIDE_COLUMNS = {"seed": pa.int64()}


def _config_columns() -> list[tuple[str, pa.DataType]]:
    hints = typing.get_type_hints(TrialConfig)
    columns = []
    for name in COLUMN_FIELDS:
        columns.append((name, _WIDE_COLUMNS.get(name) or _ARROW_TYPES[hints[name]]))
        if name == "lr":  # level of lr within its optimizer's list (0, 1, 2)
            columns.append(("lr_index", pa.int32()))
    return columns


# The configuration columns of the plan and of the final trial rows, in this order.
CONFIG_COLUMNS = _config_columns()


def config_columns(config: TrialConfig, lr_index: int) -> dict[str, Any]:
    """The identity and config columns of a plan row or a trial row (one function for both):
    trial_id, the CONFIG_COLUMNS values and the canonical config JSON."""
    return {"trial_id": config.trial_id, **{name: getattr(config, name) for name in COLUMN_FIELDS},
            "lr_index": lr_index, "config_json": config.canonical_json()}


PLAN_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("sweep", pa.string()),
        ("position", pa.int32()),  # order in the plan
        *CONFIG_COLUMNS,
        ("config_json", pa.string()),  # canonical TrialConfig JSON
    ]
)

TRIAL_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("sweep", pa.string()),
        *CONFIG_COLUMNS,
        ("status", pa.string()),  # "done" | "diverged"
        ("train_acc", pa.float64()),  # fractions in [0, 1]
        ("test_acc", pa.float64()),
        ("train_loss", pa.float64()),
        ("test_loss", pa.float64()),
        ("gap", pa.float64()),  # test_loss - train_loss
        ("l2_norm", pa.float64()),
        ("best_epoch", pa.int32()),
        ("epochs_run", pa.int32()),
        ("diverged_epoch", pa.int32()),  # null unless diverged
        ("seconds", pa.float64()),  # wall time of the trial (all attempts' training)
        ("step_size_layers", pa.list_(pa.string())),  # quantized layers, network order
        ("step_sizes", pa.list_(pa.float64())),  # learned LSQ step size per layer (Figure 1)
        ("config_json", pa.string()),  # canonical TrialConfig JSON
        ("engine", pa.string()),  # "single" | "fused"
        ("bundle_id", pa.string()),  # null unless trained in a fused bundle
        ("attempts", pa.int32()),
        ("host", pa.string()),
        ("device", pa.string()),
        ("git_rev", pa.string()),
        ("versions_json", pa.string()),  # {"qgen_sweep": ..., "torch": ..., ...}
        ("started_at", _TS),
        ("finished_at", _TS),
    ]
)

EPOCH_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("bits", pa.int32()),
        ("epoch", pa.int32()),
        ("train_loss", pa.float64()),
        ("train_acc", pa.float64()),
        ("test_loss", pa.float64()),
        ("test_acc", pa.float64()),
        ("lr", pa.float64()),
        ("seconds", pa.float64()),
        ("step_size_min", pa.float64()),
        ("step_size_mean", pa.float64()),
        ("step_size_max", pa.float64()),
    ]
)

FAILURE_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("bits", pa.int32()),
        ("attempt", pa.int32()),
        ("error_type", pa.string()),
        ("message", pa.string()),
        ("traceback_tail", pa.string()),
        ("host", pa.string()),
        ("time", _TS),
    ]
)


# landscape/bits=B/<id>.parquet: one row per evaluated point of a loss-landscape curve (the
# curves and the meaning of i, j, a, b: qgen_sweep/landscape/schema.py).
LANDSCAPE_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("sweep", pa.string()),
        ("dataset", pa.string()),
        ("bits", pa.int32()),
        ("landscape_id", pa.string()),  # LandscapeSettings.key()
        ("kind", pa.string()),  # one of CURVES
        ("dims", pa.int32()),  # 1 or 2: directions of the surface
        ("grid", pa.int32()),  # points per axis (odd)
        ("span", pa.float64()),  # a, b in [-span, span] (units of the filter norms)
        ("seed", pa.int64()),  # --seed
        ("ignore", pa.string()),  # which 1-D parameters get a zero direction ("biasbn" | "bn")
        ("direction_seed", pa.int64()),  # derived per configuration: the same for every precision
        ("twin_id", pa.string()),  # FP32 twin's trial id (every kind, null for FP32 trials)
        ("i", pa.int32()),  # grid offset of a (steps)
        ("j", pa.int32()),  # grid offset of b (steps)
        ("a", pa.float64()),
        ("b", pa.float64()),
        ("loss", pa.float64()),  # mean cross-entropy over the full training split, nats
        ("accuracy", pa.float64()),  # training accuracy, fraction in [0, 1]
        ("examples", pa.int64()),  # training examples the loss and accuracy average over
        ("evaluator", pa.string()),  # "stacked" (several points per forward) | "loop"
        ("points_per_pass", pa.int32()),
        ("seconds", pa.float64()),  # wall time of this curve
        ("device", pa.string()),
        ("host", pa.string()),
        ("versions_json", pa.string()),
        ("computed_at", _TS),
    ]
)


@dataclass(frozen=True)
class Kind:
    """One kind of per-trial result file, `<root>/<name>/bits=B/<trial_id>.parquet`.

    `lock`: the SweepLock its writers hold (its folders are cleaned of a killed writer's
    temporary files on entry); `failures`: the folder of the failure rows (FAILURE_SCHEMA) of the
    jobs that write it; `schema`: its columns, or None when the module that computes the kind
    owns them and passes them to `write_row` (measures: qgen_sweep/measures/schema.py).
    """

    name: str
    lock: str
    failures: str | None = None
    schema: pa.Schema | None = None


KINDS: dict[str, Kind] = {kind.name: kind for kind in (
    Kind("trials", lock="sweep", failures="failures", schema=TRIAL_SCHEMA),
    Kind("epochs", lock="sweep", schema=EPOCH_SCHEMA),
    Kind("measures", lock="measure", failures="measure_failures"),
    Kind("robustness", lock="robustness", failures="robustness_failures"),
    # Many rows per trial (one per evaluated point); qgen_sweep/landscape writes them whole.
    Kind("landscape", lock="landscape", failures="landscape_failures", schema=LANDSCAPE_SCHEMA),
)}


class PlanEntry(Protocol):
    """What a plan row is made of (qgen_sweep.plan.PlannedTrial)."""

    position: int
    config: TrialConfig
    lr_index: int


def write_table_atomic(path: Path, table: pa.Table) -> None:
    """Write `table` to `path` so that readers see the old file or the whole new one."""
    with atomic_open(path) as handle:
        pq.write_table(table, handle)


def rows_to_table(rows: Iterable[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Build a table with exactly `schema`'s columns; missing keys become nulls, extras fail."""
    rows = list(rows)
    names = set(schema.names)
    for row in rows:
        extra = set(row) - names
        if extra:
            raise StoreError(f"unknown result column(s) {sorted(extra)}; schema has {schema.names}")
    return pa.Table.from_pylist([{n: row.get(n) for n in schema.names} for row in rows], schema)


def _read_rows(path: Path, columns: Sequence[str] | None = None) -> list[dict[str, Any]] | None:
    """The rows of one file, or None when it is missing or does not read back."""
    if not path.is_file():
        return None
    try:
        return pq.read_table(path, columns=list(columns) if columns else None).to_pylist()
    except (OSError, pa.ArrowException):
        return None


class ResultsStore:
    """One sweep's results directory; every read and write of its files goes through here."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    # -- paths ---------------------------------------------------------------------------------
    @property
    def spec_path(self) -> Path:
        return self.root / "sweep.toml"

    @property
    def plan_path(self) -> Path:
        return self.root / "plan.parquet"

    @property
    def journal_path(self) -> Path:
        """The Optuna journal of an adaptive sweep (append-only; Optuna's file storage)."""
        return self.root / "optuna" / "journal.log"

    def path(self, kind: str, trial_id: str, bits: int) -> Path:
        """The file of one trial's row of a per-trial kind."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {tuple(KINDS)}, got {kind!r}")
        return self.root / kind / f"bits={int(bits)}" / f"{trial_id}.parquet"

    def failure_path(self, trial_id: str, attempt: int, kind: str = "trials") -> Path:
        """The failure row of one attempt of a job writing `kind` (a trial, a measure job)."""
        return self.root / self._failure_folder(kind) / f"{trial_id}-{attempt}.parquet"

    def checkpoint_dir(self, trial_id: str) -> Path:
        return self.root / "checkpoints" / trial_id

    def _failure_folder(self, kind: str) -> str:
        folder = KINDS[kind].failures if kind in KINDS else None
        if folder is None:
            raise ValueError(f"kind {kind!r} has no failure rows; kinds with failures: "
                             f"{[k for k, v in KINDS.items() if v.failures]}")
        return folder

    # -- writes --------------------------------------------------------------------------------
    def write_row(self, kind: str, row: dict[str, Any], schema: pa.Schema | None = None) -> Path:
        """Write one trial's row of a per-trial kind (its schema, or `schema` for kinds whose
        module owns its columns)."""
        schema = schema or KINDS[kind].schema
        if schema is None:
            raise ValueError(f"kind {kind!r} has no fixed schema; pass the schema of its rows")
        path = self.path(kind, row["trial_id"], row["bits"])
        write_table_atomic(path, rows_to_table([row], schema))
        return path

    def write_rows(self, kind: str, trial_id: str, bits: int, rows: list[dict[str, Any]],
                   schema: pa.Schema | None = None) -> Path:
        """(Re)write all of one trial's rows of a per-trial kind that holds several per trial
        (robustness: one per corruption and severity), atomically."""
        schema = schema or KINDS[kind].schema
        if schema is None:
            raise ValueError(f"kind {kind!r} has no fixed schema; pass the schema of its rows")
        path = self.path(kind, trial_id, bits)
        write_table_atomic(path, rows_to_table(rows, schema))
        return path

    def write_trial(self, row: dict[str, Any]) -> Path:
        """Write a trial's final row; after this the trial counts as done."""
        return self.write_row("trials", row)

    def write_epochs(self, trial_id: str, bits: int, rows: list[dict[str, Any]]) -> Path:
        """(Re)write a trial's per-epoch rows; called after every epoch while it trains."""
        full = [{"trial_id": trial_id, "bits": bits, **row} for row in rows]
        path = self.path("epochs", trial_id, bits)
        write_table_atomic(path, rows_to_table(full, EPOCH_SCHEMA))
        return path

    def write_failure(self, row: dict[str, Any], kind: str = "trials") -> Path:
        """Write one failure row (FAILURE_SCHEMA) of a job writing `kind`."""
        path = self.failure_path(row["trial_id"], row["attempt"], kind)
        write_table_atomic(path, rows_to_table([row], FAILURE_SCHEMA))
        return path

    def record_failure(self, kind: str, trial_id: str, bits: int, error: BaseException | str,
                       attempt: int | None = None, error_type: str | None = None) -> Path:
        """Write the failure row of a failed job (an exception, or a message from the driver).
        `attempt` None: the next number after the job's existing failure rows."""
        if attempt is None:
            folder = self.root / self._failure_folder(kind)
            attempt = 1 + sum(1 for _ in folder.glob(f"{trial_id}-*.parquet"))
        return self.write_failure(failure_row(trial_id, bits, attempt, error, error_type), kind)

    def write_spec(self, text: str) -> None:
        """Save the resolved spec (sweep.toml) atomically."""
        write_text_atomic(self.spec_path, text)

    def write_plan(self, sweep: str, trials: Iterable[PlanEntry]) -> None:
        """Write plan.parquet (atomically): one PLAN_SCHEMA row per planned trial."""
        rows = [plan_row(sweep, t.position, t.config, t.lr_index) for t in trials]
        write_table_atomic(self.plan_path, rows_to_table(rows, PLAN_SCHEMA))

    # -- reads ---------------------------------------------------------------------------------
    def files(self, kind: str) -> Iterator[Path]:
        """Final (non-temporary) Parquet files of one kind or failure folder, sorted."""
        folder = self.root / kind
        if not folder.is_dir():
            return iter(())
        return iter(sorted(p for p in folder.rglob("*.parquet") if not p.name.startswith(".")))

    @staticmethod
    def readable(path: Path) -> bool:
        """True when the file's footer and data read back (not truncated)."""
        try:
            pq.read_table(path)
        except (OSError, pa.ArrowException):
            return False
        return True

    def has(self, kind: str, trial_id: str, bits: int) -> bool:
        """Whether a trial's file of `kind` exists and reads back."""
        path = self.path(kind, trial_id, bits)
        return path.is_file() and self.readable(path)

    def row(self, kind: str, trial_id: str, bits: int,
            columns: Sequence[str] | None = None) -> dict[str, Any] | None:
        """A trial's row of a per-trial kind (some `columns` only), or None when it has no
        readable one."""
        rows = _read_rows(self.path(kind, trial_id, bits), columns)
        return rows[0] if rows else None

    def rows(self, kind: str, trial_id: str, bits: int,
             columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """All of a trial's rows of a per-trial kind ([] when it has no readable file)."""
        return _read_rows(self.path(kind, trial_id, bits), columns) or []

    def final_row(self, trial_id: str, bits: int,
                  columns: Sequence[str] | None = None) -> dict[str, Any] | None:
        """A trial's final row (the outcome of a finished trial), or None when it has none."""
        return self.row("trials", trial_id, bits, columns)

    def epochs(self, trial_id: str, bits: int) -> list[dict[str, Any]]:
        """A trial's per-epoch rows without trial_id / bits ([] when none read back)."""
        rows = _read_rows(self.path("epochs", trial_id, bits)) or []
        return [{k: v for k, v in r.items() if k not in ("trial_id", "bits")} for r in rows]

    def failure(self, trial_id: str, attempt: int, kind: str = "trials") -> dict[str, Any] | None:
        """The failure row of one attempt, or None when there is none that reads back."""
        rows = _read_rows(self.failure_path(trial_id, attempt, kind))
        return rows[0] if rows else None

    def spec_text(self) -> str | None:
        """The saved sweep.toml (None when the directory holds no launched sweep)."""
        return self.spec_path.read_text(encoding="utf-8") if self.spec_path.is_file() else None

    def plan_rows(self, columns: Sequence[str] | None = None) -> list[dict[str, Any]] | None:
        """The rows of plan.parquet (some `columns` only), or None when it is missing or does not
        read back (an adaptive search rewrites it as it suggests trials)."""
        return _read_rows(self.plan_path, columns)

    def planned_bits(self) -> dict[str, int]:
        """trial_id -> bits of every planned trial (a StoreError without a readable plan)."""
        if not self.plan_path.is_file():
            raise StoreError(f"{self.root} has no plan.parquet; run `qgen-sweep launch` first "
                             f"(or pass the --results-dir it used)")
        rows = self.plan_rows(["trial_id", "bits"])
        if rows is None:
            raise StoreError(f"{self.plan_path} does not read back; relaunch to rewrite it")
        return {row["trial_id"]: row["bits"] for row in rows}

    def finished_ids(self, kind: str = "trials") -> set[str]:
        """Trial ids with a readable final file of `kind` (corrupt files do not count)."""
        return {p.stem for p in self.files(kind) if self.readable(p)}

    def started_ids(self) -> set[str]:
        """Trial ids that have an attempts log: they started at least once (some may have finished
        since)."""
        return {path.parent.name for path in (self.root / "checkpoints").glob("*/attempts.json")}

    def complete_ids(self) -> set[str]:
        """Trial ids whose final row and epoch rows both read back: nothing to run again."""
        return self.finished_ids() & self.finished_ids("epochs")

    def complete(self, trial_id: str, bits: int) -> bool:
        """Whether one trial's final row and epoch rows both read back."""
        return self.has("trials", trial_id, bits) and self.has("epochs", trial_id, bits)

    def corrupt_files(self, kinds: Iterable[str] = ("trials", "epochs", "measures", "failures")):
        """Files that exist but do not read back as Parquet."""
        return [p for kind in kinds for p in self.files(kind) if not self.readable(p)]

    def quarantine(self, path: Path) -> Path:
        """Move a file that does not read back to `<root>/corrupt/` (same relative path; a
        later copy of the same file gets a numbered name). Returns where it went."""
        target = self.root / "corrupt" / path.relative_to(self.root)
        n = 1
        while target.exists():
            target = target.with_name(f"{path.stem}.{n}{path.suffix}")
            n += 1
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        return target

    def read(self, kind: str, columns: Sequence[str] | None = None) -> pa.Table | None:
        """All readable files of one kind concatenated (None when there are none)."""
        tables = []
        for path in self.files(kind):
            try:
                tables.append(pq.read_table(path, columns=list(columns) if columns else None))
            except (OSError, pa.ArrowException):
                continue
        if not tables:
            return None
        return pa.concat_tables(tables, promote_options="default")


def plan_row(sweep: str, position: int, config: TrialConfig, lr_index: int) -> dict[str, Any]:
    """A PLAN_SCHEMA row."""
    return {"sweep": sweep, "position": position, **config_columns(config, lr_index)}


# ---- the sweep lock: one launch / resume per results directory ----------------------------------
def check_results_dir(root: Path | str) -> Path:
    """A results directory a launch can write: a folder (or not there yet) under folders, whose
    nearest existing folder this process may write. Otherwise a one-line UsageError."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise UsageError(f"results directory {root} is a file, not a folder; give another "
                         f"--results-dir (or move the file away)")
    folder = root
    while not folder.exists():
        if folder.is_symlink():
            raise UsageError(f"results directory {root}: {folder} is a broken link; give "
                             f"another --results-dir")
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"results directory {root} is under {folder}, which is a file, not a "
                         f"folder; give another --results-dir")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"results directory {root}: {folder} is not writable by this user; "
                         f"give another --results-dir, or change the folder's permissions")
    return root


def _owned_folders() -> dict[str, tuple[str, ...]]:
    """lock name -> the folders its holder writes: its kinds and their failure folders (the sweep
    lock also owns the checkpoints)."""
    owned: dict[str, list[str]] = {"sweep": []}
    for kind in KINDS.values():
        owned.setdefault(kind.lock, []).extend([kind.name] + ([kind.failures] if kind.failures
                                                               else []))
    owned["sweep"].append("checkpoints")
    return {name: tuple(folders) for name, folders in owned.items()}


class SweepLock:
    """An exclusive lock on a results directory, held by `launch` / `resume` while they run.

    It is an flock (filelock.UnixFileLock) on `<root>/.lock`: the kernel drops it when the holding
    process exits for any reason, SIGKILL included, so a killed launch never blocks the next one.
    `<root>/.lock.json` names the holder for the refusal message (it may be stale; the flock is the
    truth). flock is not reliable on some network file systems; run one driver per directory there.

    Each lock has its writers' folders (`OWNED`): on entry, the temporary files a killed writer
    left in them are removed (nobody else writes there while the lock is held). `measure` takes
    its own lock (`name="measure"`), and `landscape` its own (`name="landscape"`), so post-hoc work
    on finished trials can run beside a launch and beside each other.
    """

    OWNED = _owned_folders()

    def __init__(self, root: Path, command: str, name: str = "sweep") -> None:
        from filelock import FileLock

        if name not in self.OWNED:
            raise ValueError(f"unknown lock {name!r}; expected one of {sorted(self.OWNED)}")
        self.root = Path(root)
        self.command = command
        self.name = name
        stem = ".lock" if name == "sweep" else f".{name}.lock"
        self._lock_path = self.root / stem
        self._lock = FileLock(str(self._lock_path), timeout=0)

    @property
    def info_path(self) -> Path:
        return self._lock_path.with_name(self._lock_path.name + ".json")

    def __enter__(self) -> SweepLock:
        self._made_root = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        self._made_lock_file = not self._lock_path.exists()
        self._acquire()
        # the token names this holding of the lock: the trials it starts write only while the
        # lock file still names it and its holder lives (`lease_held`)
        self.token = uuid.uuid4().hex
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "token": self.token}
        write_text_atomic(self.info_path, json.dumps(info))
        self.removed_temp_files = self._remove_stale_temp_files()
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        self.info_path.unlink(missing_ok=True)
        refused = exc_type is not None and issubclass(exc_type, UsageError)
        if refused and self._made_lock_file:  # a refused command leaves the folder as it was
            self._lock_path.unlink(missing_ok=True)  # still held: nobody else is inside
        self._lock.release()
        if refused and self._made_root:
            with contextlib.suppress(OSError):  # not empty: something else wrote there
                self.root.rmdir()

    def _acquire(self) -> None:
        """flock the lock file, making sure the file locked is the one at the path: a refused
        holder unlinks a lock file it created, and a process that opened it just before then
        would otherwise hold a lock on a file nobody else sees."""
        from filelock import Timeout

        for _ in range(3):
            try:
                self._lock.acquire()
            except Timeout:
                raise StoreError(self._refusal()) from None
            if self._holds_the_file_at_the_path():
                return
            self._lock.release()
        raise StoreError(self._refusal())

    def _holds_the_file_at_the_path(self) -> bool:
        fd = getattr(getattr(self._lock, "_context", None), "lock_file_fd", None)
        try:
            at_path = os.stat(self._lock_path)
        except FileNotFoundError:
            return False
        return fd is None or os.path.samestat(at_path, os.fstat(fd))

    def _remove_stale_temp_files(self) -> int:
        removed = sum(remove_stale_temp_files(self.root / folder)
                      for folder in self.OWNED[self.name])
        if self.name == "sweep":  # plan.parquet and sweep.toml live at the top
            removed += remove_stale_temp_files(self.root, recursive=False)
        return removed

    def _refusal(self) -> str:
        try:
            info = json.loads(self.info_path.read_text())
            holder = (f"{info['command']} (pid {info['pid']} on {info['host']}, "
                      f"since {info['since']})")
        except (OSError, ValueError, KeyError):
            holder = "another qgen-sweep process"
        return (f"results directory {self.root} is locked by {holder}; wait for it to finish, "
                f"watch it with `qgen-sweep status`, or use another --results-dir")


def lease_held(root: Path | str, token: str) -> bool:
    """Whether the launch holding `token` still holds the sweep lock of `root`: the lock file
    names it, and (on this host) its process lives. A SIGKILLed driver leaves its lock file
    behind, so the pid is what tells its orphaned workers to stop."""
    try:
        info = json.loads((Path(root) / ".lock.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(info, dict) or info.get("token") != token:
        return False
    if info.get("host") == socket.gethostname():
        try:
            os.kill(int(info["pid"]), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, KeyError, ValueError, TypeError):
            pass  # alive under another user, or no pid to ask about: the token decides
    return True


def lock_holder(root: Path) -> dict[str, Any] | None:
    """Who holds the sweep lock of `root` right now (None when nobody does)."""
    from filelock import FileLock, Timeout

    lock_path = Path(root) / ".lock"
    if not lock_path.exists():
        return None
    probe = FileLock(str(lock_path), timeout=0)
    try:
        probe.acquire()
    except Timeout:
        try:
            return json.loads((Path(root) / ".lock.json").read_text())
        except (OSError, ValueError):
            return {"command": "unknown"}
    probe.release()
    return None


# ---- attempts ledger (per trial, next to its checkpoints) ---------------------------------------
def read_attempts(store: ResultsStore, trial_id: str) -> list[dict[str, Any]]:
    """The attempts log of a trial: one dict per start (attempt, host, started, epochs trained)."""
    path = store.checkpoint_dir(trial_id) / "attempts.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return []


def write_attempts(store: ResultsStore, trial_id: str, attempts: list[dict[str, Any]]) -> None:
    """Atomically rewrite a trial's attempts log."""
    write_text_atomic(store.checkpoint_dir(trial_id) / "attempts.json", json.dumps(attempts))


# ---- status --------------------------------------------------------------------------------------
STATUS_COLUMNS = ("planned", "done", "collapsed", "diverged", "failed", "running", "interrupted",
                  "pending")


@dataclass
class SweepStatus:
    """What the ledger says about a sweep, per precision, plus its latest failures."""

    by_bits: dict[int, dict[str, int]]
    failures: list[dict[str, Any]]  # latest first: trial_id, bits, attempt, error_type, message
    corrupt: list[Path]
    locked_by: dict[str, Any] | None
    # finished trials (counted by their final status) whose epochs file is missing or unreadable,
    # as (trial_id, bits): a grid sweep's next launch / resume runs them again for the curve
    no_curve: list[tuple[str, int]] = dataclasses.field(default_factory=list)

    @property
    def totals(self) -> dict[str, int]:
        return {c: sum(row[c] for row in self.by_bits.values()) for c in STATUS_COLUMNS}

    @property
    def missing(self) -> int:
        """Planned trials without a readable final row."""
        t = self.totals
        return t["planned"] - t["done"] - t["collapsed"] - t["diverged"]


def _final_status(store: ResultsStore) -> dict[str, str]:
    """trial id -> its final status; a 'done' trial that collapsed (qgen_sweep.collapse) counts
    as 'collapsed', as in the analysis views."""
    from qgen_sweep.collapse import is_collapsed

    table = store.read("trials", ["trial_id", "status", "dataset", "train_acc", "train_loss"])
    if table is None:
        return {}
    rows = table.to_pylist()
    return {r["trial_id"]: "collapsed" if r["status"] == "done" and is_collapsed(
        r["dataset"], r["train_acc"], r["train_loss"]) else r["status"] for r in rows}


def _failure_rows(store: ResultsStore) -> list[dict[str, Any]]:
    table = store.read("failures")
    rows = [] if table is None else table.to_pylist()
    return sorted(rows, key=lambda r: r["time"] or dt.datetime.min, reverse=True)


def sweep_status(store: ResultsStore) -> SweepStatus:
    """Count planned / done / collapsed / diverged / failed / running / interrupted / pending
    by bits.

    Safe while a launch runs: it only reads files that are written atomically. `failed` = the
    trial has a failure record and no final row and no launch is running; while one runs, a
    started trial without a final row counts as `running` (it may be retrying). `interrupted` =
    started (has an attempts log) but no final row and no failure, with nobody running it.
    """
    planned = store.planned_bits()
    final = _final_status(store)
    failures = _failure_rows(store)
    failed_ids = {r["trial_id"] for r in failures}
    holder = lock_holder(store.root)
    by_bits: dict[int, dict[str, int]] = {}
    for trial_id, bits in planned.items():
        row = by_bits.setdefault(int(bits), dict.fromkeys(STATUS_COLUMNS, 0))
        row["planned"] += 1
        row[_trial_state(store, trial_id, final, failed_ids, holder is not None)] += 1
    latest = [r for r in failures if r["trial_id"] in planned and r["trial_id"] not in final]
    with_curve = store.finished_ids("epochs")
    no_curve = [(t, int(planned[t])) for t in sorted(final) if t in planned and t not in with_curve]
    return SweepStatus(dict(sorted(by_bits.items())), latest, store.corrupt_files(DAMAGE_KINDS),
                       holder, no_curve)


def _trial_state(store: ResultsStore, trial_id: str, final: dict[str, str], failed: set[str],
                 running: bool) -> str:
    if trial_id in final:
        return final[trial_id] if final[trial_id] in ("diverged", "collapsed") else "done"
    started = (store.checkpoint_dir(trial_id) / "attempts.json").exists()
    if running and started:
        return "running"
    if trial_id in failed:
        return "failed"
    return "interrupted" if started else "pending"


# What follows when launch / resume moves a file that does not read back to corrupt/, by its
# folder and by whether the command runs every incomplete trial again (a grid sweep) or only
# what its sampler asks for (an adaptive search).
_QUARANTINED = {
    ("trials", True): "its trial has no final row now and runs again",
    ("trials", False): "its trial has no final row now (an adaptive search does not run it "
                       "again; its study keeps the outcome)",
    ("epochs", True): "its trial runs again to write its curve (from its checkpoint, training "
                      "nothing, when that is there; else from scratch) and its final row is "
                      "replaced",
    ("epochs", False): "its trial keeps its final row without a curve (an adaptive search does "
                       "not run it again)",
    ("failures", True): "that failed attempt's record is lost; the trial's other rows stay",
    ("failures", False): "that failed attempt's record is lost; the trial's other rows stay",
}
# The files of post-hoc commands: their next run computes what does not read back again.
_RECOMPUTED = {
    "measures": "`qgen-sweep measure` computes that trial's measures again",
    "robustness": "`qgen-sweep robustness` evaluates that trial again",
    "landscape": "`qgen-sweep landscape` computes that trial's points again",
}
# The folders whose unreadable files `status` names; launch / resume move only those of
# corrupt_files' default kinds (the sweep lock's folders, and measures).
DAMAGE_KINDS = ("trials", "epochs", "measures", "failures", "robustness", "landscape",
                "measure_failures", "robustness_failures", "landscape_failures")


def _folder_of(path: Path) -> Path:
    """The store folder a result file lives in (`<kind>/bits=B/<id>.parquet` or
    `<failures>/<id>-<n>.parquet`)."""
    return path.parent.parent if path.parent.name.startswith("bits=") else path.parent


def corrupt_consequence(path: Path, reruns: bool = True) -> str:
    """What launch / resume moving `path` (a file that does not read back) to corrupt/ does to
    its trial; `reruns`: a grid sweep, which runs every incomplete trial again."""
    folder = _folder_of(Path(path)).name
    return _QUARANTINED.get((folder, reruns)) or _RECOMPUTED.get(
        folder, "the next run of the command that wrote it writes it again")


def damage_remedy(path: Path) -> str:
    """The way out for a file that does not read back, as `status` and `report` say it."""
    where = _folder_of(Path(path))
    folder = where.name
    reruns = not ResultsStore(where.parent).journal_path.is_file()  # adaptive: reruns nothing
    if (folder, reruns) in _QUARANTINED:
        return f"`qgen-sweep resume` moves it to corrupt/: {_QUARANTINED[folder, reruns]}"
    return _RECOMPUTED.get(folder, "the next run of the command that wrote it writes it again "
                                   "(a failure row of a post-hoc job: that record is lost)")
