"""Orchestration overhead: N no-op trials through our launch path vs a plain Ray Tune Tuner.

Both run side by side in one Ray session on this machine, the same trials (a seeds-extended
smoke sweep), the same per-trial CPU fraction and the same reuse_actors setting; the trial engine
is replaced by a no-op, so every second measured is orchestration: planning, the store's rows
(attempts log, epochs, final row), Tune's scheduling and our progress. A second baseline is a
Tuner with Tune's defaults (new actor per trial), what a plain Ray Tune user gets. Also: the wall
time of `qgen-sweep launch smoke` end to end in a fresh process, including Ray's start.

ratio = ours / baseline per-trial overhead: LOWER is better (target <= 1.25).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from qgen_sweep.trial.config import TrialConfig, TrialResult, TrialRuntime

ROOT = Path(__file__).resolve().parent.parent


def noop_trial(config: TrialConfig, runtime: TrialRuntime = TrialRuntime(),
               checkpoint_dir: Path | None = None, on_epoch=None) -> TrialResult:
    """A trial engine that trains nothing (run_trial's signature): pure orchestration cost."""
    nan = math.nan
    return TrialResult(status="done", train_acc=nan, test_acc=nan, train_loss=nan, test_loss=nan,
                       gap=nan, l2_norm=nan, best_epoch=0, epochs_run=0, seconds=0.0,
                       device="cpu")


def _noop_tune(config: dict) -> dict:
    return {"status": "done"}


def _spec(seeds: int):
    from qgen_sweep.spec import load_spec

    return load_spec("smoke", [f"grid.seed={list(range(seeds))}"])


def _ours(spec, workdir: Path) -> float:
    from qgen_sweep.launcher import LaunchOptions, run_sweep

    options = LaunchOptions(results_dir=workdir / f"ours-{time.monotonic_ns()}",
                            trial_fn=f"{__name__}:noop_trial", progress_interval=3600)
    start = time.perf_counter()
    with open(os.devnull, "w") as quiet:
        run_sweep(spec, options, "bench", stream=quiet)
    return time.perf_counter() - start


def _plain(spec, workdir: Path, reuse: bool) -> float:
    from ray import tune

    from qgen_sweep.plan import plan

    trials = [{"trial_id": t.trial_id, "config": t.config.to_dict()} for t in plan(spec)]
    res = spec.resources
    tuner = tune.Tuner(
        tune.with_resources(_noop_tune, {"cpu": res.cpu, "gpu": 0}),
        param_space={"task": tune.grid_search(trials)},
        tune_config=tune.TuneConfig(reuse_actors=reuse,
                                    max_concurrent_trials=res.max_concurrent or None),
        run_config=tune.RunConfig(storage_path=str(workdir / "plain"), verbose=0,
                                  name=f"plain-{time.monotonic_ns()}"),
    )
    start = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - start


def _smoke_wall(workdir: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "qgen_sweep.cli", "launch", "smoke",
                           "--results-dir", str(workdir / "smoke")], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"smoke launch failed: {proc.stderr.strip()[-500:]}")
    return seconds


def run(quick: bool) -> list[dict]:
    """Per-trial overhead of ours vs plain Tune (best of `reps`), and the smoke wall time."""
    from qgen_sweep.backends.ray import init_ray

    # Tune's own per-trial time is bimodal here (plain runs take ~0.10 or ~0.20 s per trial, run
    # to run): six interleaved repetitions, compared by their medians; best-of in the notes.
    seeds, reps = (1, 1) if quick else (3, 6)
    spec = _spec(seeds)
    n = 16 * seeds
    with tempfile.TemporaryDirectory(prefix="qgen-bench-") as tmp:
        workdir = Path(tmp)
        init_ray(None)
        ours, plain, default = [], [], []
        for _ in range(reps):  # interleaved: the machine is shared and its load drifts
            ours.append(_ours(spec, workdir) / n)
            plain.append(_plain(spec, workdir, reuse=True) / n)
            default.append(_plain(spec, workdir, reuse=False) / n)
        import ray

        ray.shutdown()
        smoke = _smoke_wall(workdir)
    note = (f"{n} no-op trials, cpu {spec.resources.cpu:g} per trial, median of {reps} "
            f"interleaved runs; lower is better; 1-min load average {os.getloadavg()[0]:.1f}")
    spread = (f"ours per run {_list(ours)}, plain {_list(plain)}; best-of ratio "
              f"{min(ours) / min(plain):.2f}")
    return [
        {"name": "overhead_per_trial_ours", "value": median(ours), "unit": "s/trial",
         "baseline": median(plain), "ratio": median(ours) / median(plain),
         "notes": f"vs plain Tuner with reuse_actors=True; {note}; target ratio <= 1.25; "
                  f"{spread}"},
        {"name": "overhead_per_trial_vs_tune_defaults", "value": median(ours), "unit": "s/trial",
         "baseline": median(default), "ratio": median(ours) / median(default),
         "notes": f"vs plain Tuner with Tune's defaults (new actor per trial); {note}"},
        {"name": "smoke_wall_time", "value": smoke, "unit": "s", "baseline": 120.0,
         "ratio": smoke / 120.0,
         "notes": "`qgen-sweep launch smoke` in a fresh process incl. Ray start; target < 120 s"},
    ]


def _list(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"
