"""What watching a sweep costs: the dashboard's per-poll and per-change work, the running-trials
table's per-redraw work, on the synthetic 972-trial store of bench_analysis.

Figures (CPU seconds next to wall time: the machine is shared):
- dashboard_poll: one `/api/version` fingerprint (the page asks every 2 s), against rebuilding
  the state from scratch each poll (what a dashboard without the fingerprint would do);
- dashboard_state_warm: `/api/state` when nothing changed (cached summary, running trials only),
  against the cold build;
- dashboard_state_cold: the first `/api/state` (DuckDB load + every section), against
  `report`'s build_report on the same store (the same SQL files, Table 1 / paired / Table 2);
- dashboard_curves: 12 trials' loss curves with the epochs connection already loaded;
- running_rows: the running-trials rows of 8 trials in one redraw when their files did not
  change (a stat each), against re-reading the 8 epoch files every redraw.

    python -m benchmarks.run_all --only watch [--quick]
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.bench_analysis import _best_of, grid, make_store


def _figure(name: str, value: tuple[float, float], baseline: tuple[float, float] | None,
            notes: str) -> list[dict]:
    """Wall and CPU figures of one measurement (ratio = baseline / ours: higher is better)."""
    out = []
    for index, kind in ((0, "wall clock"), (1, "CPU time")):
        base = None if baseline is None else baseline[index]
        ratio = None if base is None or value[index] <= 0 else base / value[index]
        suffix = "" if index == 0 else "_cpu"
        out.append({"name": f"{name}{suffix}_seconds", "value": value[index], "unit": "s",
                    "baseline": base, "ratio": ratio, "notes": f"{notes}; {kind}"})
    return out


def _running_rows(root: Path, ids: list[str]) -> Callable[[], object]:
    """One redraw's rows: a stat per running trial (the files did not change: no read)."""
    from qgen_sweep.backends.running import RunningTrials

    trials = RunningTrials(root, poll=0.0, clock=time.monotonic)
    trials.rows(set(ids))  # the first read: the plan and each epoch file once
    return lambda: trials.rows(set(ids))


def _reread(root: Path, configs: list) -> Callable[[], object]:
    """The plain way: read each running trial's epoch file on every redraw."""
    from qgen_sweep.store import ResultsStore

    store = ResultsStore(root)
    return lambda: [max(store.epochs(c.trial_id, c.bits), key=lambda r: r["epoch"])
                    for c in configs]


def run(quick: bool) -> list[dict]:
    """Build the synthetic store in a temporary folder; time the dashboard and the table."""
    from qgen_sweep.analysis.report import build_report
    from qgen_sweep.dashboard.data import DashboardData

    epochs = 30 if quick else 300
    repeat = 3
    saved = os.environ.get("QGEN_SWEEP_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="qgen-bench-watch-") as tmp:
        root = Path(tmp) / "runs" / "cifar10-grid"
        os.environ["QGEN_SWEEP_CACHE_DIR"] = str(Path(tmp) / "cache")
        try:
            make_store(root, "cifar10-grid", "cifar10", epochs, seed=0)
            build_report(root)  # fills the analysis cache: both sides start warm
            load_before = os.getloadavg()[0]
            data = DashboardData(root)
            cold = _best_of(lambda: DashboardData(root).state(), 1)
            data.state()
            warm = _best_of(data.state, repeat)
            poll = _best_of(data.version, repeat)
            report = _best_of(lambda: build_report(root), repeat)
            configs = grid("cifar10", epochs)[:12]
            ids = [c.trial_id for c in configs]
            data.curves(ids)  # loads the epochs connection once
            curves = _best_of(lambda: data.curves(ids), repeat)
            cached = _best_of(_running_rows(root, ids[:8]), 20)
            uncached = _best_of(_reread(root, configs[:8]), 20)
            load = f"1-min load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} on " \
                   f"{os.cpu_count()} cores"
        finally:
            if saved is None:
                os.environ.pop("QGEN_SWEEP_CACHE_DIR", None)
            else:
                os.environ["QGEN_SWEEP_CACHE_DIR"] = saved
    size = f"972 trials x {epochs} epoch rows, analysis cache warm, best of {repeat}; {load}"
    return [
        *_figure("dashboard_poll", poll, cold,
                 f"{size}; the fingerprint of every store file (stat only); baseline = "
                 "rebuilding the state on every poll"),
        *_figure("dashboard_state_warm", warm, cold,
                 f"{size}; /api/state with no file changed; baseline = the cold build"),
        *_figure("dashboard_state_cold", cold, report,
                 f"972 trials, once; progress, Table 1, paired (bootstrap), gap, trials; "
                 f"baseline = report's build_report (Table 1, paired, Table 2); {load}"),
        *_figure("dashboard_curves", curves, None,
                 f"{size}; 12 trials' curves, epochs connection loaded"),
        *_figure("running_rows", cached, uncached,
                 f"972-trial store, 8 running trials, files unchanged, best of 20 redraws; "
                 f"baseline = reading the 8 epoch files every redraw; {load}"),
    ]
