"""What the dashboard shows, as JSON-able dicts, from the DuckDB layer (and the running trials).

Every number comes from the read-only analysis connection (`qgen_sweep.analysis.db.connect`:
file access off, configuration locked, a memory limit) through the same SQL files as `report`
(progress by precision from the `plan` view, table1.sql, the paired statistics, gap_points.sql,
Table 3), each statement under a time limit (`sandbox.with_timeout`). Only the running trials'
latest epochs are read from the store directly (`qgen_sweep.watch`), as `status --watch` does.

The store is re-read only when its files changed: `fingerprint` stats the files (microseconds
each), and a state is rebuilt only when the fingerprint of its kinds moved. The epochs (up to 300
rows per trial) are loaded only for the loss curves, into their own connection.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from qgen_sweep.errors import UsageError

QUERY_TIMEOUT_S = 30.0  # s per dashboard statement (the sandbox interrupts it)
MAX_TRIALS = 5000  # trial rows for the parallel coordinates and the selector (paper: 1,944)
MAX_CURVES = 12  # trials whose loss curves one request may ask for
SUMMARY_KINDS = ("plan", "trials", "failures", "measures")
AXES = ("arch", "optimizer", "lr", "weight_decay", "depth", "width", "bits")  # the grid's axes
_TRIAL_ID = re.compile(r"^[0-9a-f]{16}$")


def fingerprints(roots: Iterable[Path], groups: dict[str, Iterable[str]]) -> dict[str, str]:
    """One short hash per group of kinds, of (path, mtime, size) of every file of those kinds in
    the stores (every group also covers plan.parquet and the lock holder): a group's hash
    changes whenever one of its rows lands or a launch starts or stops. One pass over the files
    for every group: the page polls this every 2 s."""
    from qgen_sweep.store import ResultsStore

    digests = {name: hashlib.sha256() for name in groups}
    for root in roots:
        store = ResultsStore(root)
        listed: dict[str, list[Path]] = {}
        for name, kinds in groups.items():
            paths = [store.plan_path, root / ".lock.json"]
            for kind in kinds:
                if kind != "plan":
                    paths += listed.setdefault(kind, list(store.files(kind)))
            for path in paths:
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                digests[name].update(f"{path}\0{st.st_mtime_ns}\0{st.st_size}\n".encode())
    return {name: digest.hexdigest()[:16] for name, digest in digests.items()}


def fingerprint(roots: Iterable[Path], kinds: Iterable[str]) -> str:
    """The hash of one group of kinds (see `fingerprints`)."""
    return fingerprints(roots, {"kinds": tuple(kinds)})["kinds"]


def _clean(value: Any) -> Any:
    """JSON-safe: NaN / inf become None; lists and dicts recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class DashboardData:
    """The dashboard's states over one results directory (a store or a folder of stores).

    Thread-safe: the HTTP server answers requests from several threads, DuckDB connections are
    not; one lock guards the connections and caches.
    """

    def __init__(self, results_dir: Path | str, timeout: float = QUERY_TIMEOUT_S) -> None:
        from qgen_sweep.analysis.db import find_stores

        self.results_dir = Path(results_dir)
        self.stores = find_stores(self.results_dir)  # a StoreError when there is nothing
        self.timeout = timeout
        self._lock = threading.Lock()
        self._summary: tuple[str, dict[str, Any]] | None = None
        self._epochs_con: tuple[str, Any] | None = None
        from qgen_sweep.store import ResultsStore
        from qgen_sweep.watch import StatusWatch

        self._watches = [StatusWatch(ResultsStore(s.root)) for s in self.stores]

    @property
    def roots(self) -> list[Path]:
        return [s.root for s in self.stores]

    def _keys(self) -> dict[str, str]:
        return fingerprints(self.roots, {"summary": SUMMARY_KINDS, "epochs": ("epochs",)})

    def version(self) -> str:
        """Changes whenever anything the page shows may have changed."""
        keys = self._keys()
        return keys["summary"][:8] + keys["epochs"][:8]

    def state(self) -> dict[str, Any]:
        """Everything but the loss curves: progress, running trials, tables, gap, measures,
        trials for the parallel coordinates and the curve selector."""
        keys = self._keys()
        with self._lock:
            if self._summary is None or self._summary[0] != keys["summary"]:
                self._summary = (keys["summary"], self._build_summary())
            running = self._running()
            summary = self._summary[1]
        version = keys["summary"][:8] + keys["epochs"][:8]
        return _clean({**summary, "version": version, "running": running,
                       "progress": _with_running(summary["progress"], running)})

    def curves(self, trial_ids: list[str]) -> dict[str, Any]:
        """Per-epoch train / test loss and accuracy of the given trials (at most MAX_CURVES)."""
        bad = [t for t in trial_ids if not _TRIAL_ID.match(t)]
        if bad or len(trial_ids) > MAX_CURVES:
            raise UsageError(f"curves take 1 to {MAX_CURVES} trial ids of 16 hex digits, but got "
                             f"{len(trial_ids)} ({', '.join(bad[:3]) or 'too many'})")
        with self._lock:
            con = self._epochs_connection()
            rows = self._query(con, _CURVES_SQL, [trial_ids])
        by_trial: dict[str, dict[str, Any]] = {}
        for r in rows:
            curve = by_trial.setdefault(r["trial_id"], {
                "trial_id": r["trial_id"], "sweep": r["sweep"], "precision": r["precision"],
                "epoch": [], "train_loss": [], "test_loss": [], "test_acc": []})
            for name in ("epoch", "train_loss", "test_loss", "test_acc"):
                curve[name].append(r[name])
        return _clean({"curves": [by_trial[t] for t in trial_ids if t in by_trial]})

    # -- building ---------------------------------------------------------------------------------
    def _query(self, con: Any, sql: str, params: Any = None) -> list[dict[str, Any]]:
        from qgen_sweep.analysis.sandbox import with_timeout

        def work() -> list[dict[str, Any]]:
            result = con.execute(sql, params)
            names = [d[0] for d in result.description]
            return [dict(zip(names, row, strict=True)) for row in result.fetchall()]

        return with_timeout(con, self.timeout, work, "a dashboard query")

    def _build_summary(self) -> dict[str, Any]:
        from qgen_sweep.analysis.db import connect, sql_file

        con = connect(self.results_dir, SUMMARY_KINDS)
        sql = {name: sql_file(f"{name}.sql").read_text()
               for name in ("table1", "gap_points", "paired", "paired_summary")}
        trials = self._query(con, _TRIALS_SQL, [MAX_TRIALS])
        return {
            "results_dir": str(self.results_dir),
            "sweeps": [s.sweep for s in self.stores],
            "progress": self._query(con, _PROGRESS_SQL),
            "table1": self._query(con, sql["table1"]),
            "paired": self._paired(con, sql["paired"], sql["paired_summary"]),
            "gap": _gap_boxes(self._query(con, sql["gap_points"])),
            "measures": self._measures(con),
            "trials": trials,
            "trials_capped": len(trials) == MAX_TRIALS,
            "axes": [a for a in AXES if len({t[a] for t in trials}) > 1],
        }

    def _paired(self, con: Any, paired_sql: str, summary_sql: str) -> list[dict[str, Any]]:
        """The report's paired table: per Int-b and metric, pairs, mean, 95% CI, median, p."""
        from qgen_sweep.analysis.report import PAIRED_METRICS
        from qgen_sweep.analysis.stats import paired_summary

        pairs = self._query(con, paired_sql)
        summaries = self._query(con, summary_sql.replace("{paired}", paired_sql))
        out = []
        for s in summaries:
            key = (s["sweep"], s["dataset"], s["bits"])
            group = [p for p in pairs if (p["sweep"], p["dataset"], p["bits"]) == key]
            for metric, column, unit in PAIRED_METRICS:
                out.append({"sweep": s["sweep"], "dataset": s["dataset"],
                            "precision": s["precision"], "metric": metric, "unit": unit,
                            "n_pairs": s["n_pairs"], "mean_diff": s[column],
                            **paired_summary([p[column] for p in group])})
        return out

    def _measures(self, con: Any) -> list[dict[str, Any]]:
        views = {r["view_name"] for r in self._query(con, "SELECT view_name FROM duckdb_views()")}
        if "measures_table3" not in views:
            return []
        return self._query(con, "SELECT * FROM measures_table3")

    def _epochs_connection(self) -> Any:
        from qgen_sweep.analysis.db import connect

        key = fingerprint(self.roots, ("trials", "epochs"))
        if self._epochs_con is None or self._epochs_con[0] != key:
            self._epochs_con = (key, connect(self.results_dir, ("plan", "trials", "epochs")))
        return self._epochs_con[1]

    def _running(self) -> list[dict[str, Any]]:
        rows = []
        for store, watch in zip(self.stores, self._watches, strict=True):
            holder, running = watch.running()
            rows += [{**r, "sweep": store.sweep, "launch": (holder or {}).get("command")}
                     for r in running]
        return rows


def _with_running(progress: list[dict[str, Any]], running: list[dict[str, Any]]
                  ) -> list[dict[str, Any]]:
    """Split each precision's pending count into running (a launch works on it) and pending."""
    counts: dict[str, int] = {}
    for r in running:
        counts[r.get("precision") or "?"] = counts.get(r.get("precision") or "?", 0) + 1
    out = []
    for row in progress:
        busy = min(counts.get(row["precision"], 0), row["pending"])
        out.append({**row, "running": busy, "pending": row["pending"] - busy})
    return out


def _quartiles(values: list[float]) -> list[float]:
    """[min, q1, median, q3, max] with linear interpolation (numpy's default)."""
    import numpy as np

    return [float(v) for v in np.percentile(values, [0, 25, 50, 75, 100])]


def _gap_boxes(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per sweep and precision: the done trials' gaps, their box, and n."""
    groups: dict[tuple[str, str], list[float]] = {}
    for p in points:
        if p["gap"] is not None and math.isfinite(p["gap"]):
            groups.setdefault((p["sweep"], p["precision"]), []).append(float(p["gap"]))
    return [{"sweep": sweep, "precision": precision, "n": len(gaps), "gaps": gaps,
             "box": _quartiles(gaps)} for (sweep, precision), gaps in groups.items()]


# Progress by precision: the plan view's states (status's vocabulary). Running trials are
# counted with the pending ones here and split off by _with_running from the live running list
# (this summary is rebuilt only when a results file changes; the running list every poll).
_PROGRESS_SQL = """
SELECT sweep, bits, precision,
       count(*) AS planned,
       count(*) FILTER (WHERE state = 'done') AS done,
       count(*) FILTER (WHERE state = 'collapsed') AS collapsed,
       count(*) FILTER (WHERE state = 'diverged') AS diverged,
       count(*) FILTER (WHERE state = 'failed') AS failed,
       count(*) FILTER (WHERE state = 'interrupted') AS interrupted,
       count(*) FILTER (WHERE state IN ('pending', 'running')) AS pending
FROM plan
GROUP BY sweep, bits, precision
ORDER BY sweep, precision_order(bits)
"""

# One row per planned trial (finished or not): the axes, its state and, when finished, the gap.
_TRIALS_SQL = """
SELECT p.sweep, p.trial_id, coalesce(json_extract_string(p.config_json, '$.arch'), 'nin') AS arch,
       p.bits, p.precision, p.optimizer, p.lr, p.weight_decay, p.depth, p.width, p.state, t.gap,
       100 * t.test_acc AS test_acc, t.train_loss, t.test_loss
FROM plan AS p
LEFT JOIN trials AS t ON t.sweep = p.sweep AND t.trial_id = p.trial_id
ORDER BY p.sweep, precision_order(p.bits), p.position
LIMIT ?
"""

_CURVES_SQL = """
SELECT e.sweep, e.trial_id, precision_label(e.bits) AS precision, e.epoch, e.train_loss,
       e.test_loss, 100 * e.test_acc AS test_acc
FROM epochs AS e
WHERE list_contains(?, e.trial_id)
ORDER BY e.trial_id, e.epoch
"""
