"""`qgen-sweep measure`: generalization measures of finished trials (paper Table 3).

    qgen-sweep measure smoke
    qgen-sweep measure cifar10-grid --only pacbayes --where "bits = 2"
    qgen-sweep measure smoke --backend local --iterations 4 --mc-samples 3   # quick look

Measures every trial with status 'done' (and matching --where) whose measures file is missing
or lacks a requested family; resumable like launch (jobs write their file atomically when they
finish). Each job is a Ray task with the sweep's per-trial resources. Search settings default to
the paper's (docs/science.md). Heavy libraries are imported inside the command.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import click

from qgen_sweep.errors import QGenError, UsageError

FAMILIES = ("pacbayes", "sharpness")


def _families(only: str | None) -> tuple[str, ...]:
    if not only:
        return FAMILIES
    names = tuple(dict.fromkeys(n.strip() for n in only.split(",") if n.strip()))
    unknown = [n for n in names if n not in FAMILIES]
    if unknown or not names:
        raise UsageError(f"--only takes a comma-separated subset of {','.join(FAMILIES)}, "
                         f"but got {only!r} (e.g. --only pacbayes)")
    return names


def _results_dir(sweep: str, results_dir: Path | None) -> Path:
    if results_dir is not None:
        return results_dir
    from qgen_sweep.backends.launcher import default_results_dir
    from qgen_sweep.spec import load_spec

    try:
        return default_results_dir(load_spec(sweep))
    except QGenError:
        return Path("runs") / Path(sweep).stem


def _resources(results_dir: Path, cpu: float | None, gpu: float | None) -> tuple[float, float]:
    """Per-task resources: the flags, else the launched spec's [resources], else 1 CPU."""
    spec_cpu, spec_gpu = 1.0, 0.0
    if (results_dir / "sweep.toml").is_file():
        from qgen_sweep.backends.launcher import saved_spec

        resources = saved_spec(results_dir).resources
        spec_cpu, spec_gpu = resources.cpu, resources.gpu
    return (spec_cpu if cpu is None else cpu), (spec_gpu if gpu is None else gpu)


def _settings(options: dict[str, Any], families: tuple[str, ...], device: str) -> dict[str, Any]:
    from qgen_sweep.measures.run import MeasureSettings
    from qgen_sweep.measures.search import SearchSettings

    search_keys = {"noise", "bn_affine", "seed", "iterations", "mc_samples", "restarts",
                   "ascent_steps", "ascent_lr", "ascent_batch_size", "tolerance", "target_drop",
                   "mc_chunk", "magnitude_eps"}
    search = SearchSettings(**{k: v for k, v in options.items() if k in search_keys})
    settings = MeasureSettings(search=search, families=families, delta=options["delta"],
                               eval_batch_size=options["eval_batch_size"], device=device,
                               data_dir=options["data_dir"])
    return settings.to_dict()


def _result_text(result: dict[str, Any]) -> str:
    """'measured  3f2a... Int4  1.2 s' (and the failure message)."""
    label = "FP32" if result["bits"] == 32 else f"Int{result['bits']}"
    line = f"{result['status']:8s} {result['trial_id']} {label:5s} {result['seconds']:.1f} s"
    return f"{line}  {result['message']}" if result["message"] else line


def _run_local(results_dir: str, trials, settings, on_result, progress) -> list[dict[str, Any]]:
    from qgen_sweep.measures.run import run_job

    results = []
    for trial in trials:
        if progress is not None:
            progress.on_start(trial["trial_id"])
        results.append(run_job(results_dir, trial, settings))
        on_result(results[-1])
    return results


@click.command("measure")
@click.argument("sweep")
@click.option("--results-dir", type=click.Path(path_type=Path), default=None,
              help="Results directory (default: the spec's results_dir, else ./runs/SWEEP).")
@click.option("--only", default=None, help="Families: pacbayes,sharpness (default both).")
@click.option("--where", default=None, help='One SQL condition on the trials view\'s columns, '
              'e.g. "bits = 2 AND optimizer = \'sgd\'" (read-only, like query).')
@click.option("--noise", type=click.Choice(["reference", "jiang"]), default="reference",
              show_default=True, help="Gaussian noise scale convention (docs/science.md).")
@click.option("--bn-affine", type=click.Choice(["perturb", "fixed"]), default="perturb",
              show_default=True, help="Perturb the folded biases that carry each BN's shift "
              "(perturb, as the reference code) or only the conv/linear weights (fixed).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--iterations", type=int, default=15, show_default=True, help="Bisection steps.")
@click.option("--mc-samples", type=int, default=10, show_default=True,
              help="Gaussian samples per PAC-Bayes bisection step.")
@click.option("--restarts", type=int, default=10, show_default=True,
              help="Gradient-ascent restarts per sharpness bisection step.")
@click.option("--ascent-steps", type=int, default=20, show_default=True,
              help="Gradient-ascent steps per sharpness restart (paper appendix B.2: 20).")
@click.option("--ascent-lr", type=float, default=1e-4, show_default=True,
              help="Sharpness gradient-ascent learning rate (paper appendix B.2: 0.0001).")
@click.option("--ascent-batch-size", type=int, default=128, show_default=True,
              help="Examples per gradient-ascent step.")
@click.option("--target-drop", type=float, default=0.1, show_default=True,
              help="Training-accuracy drop the scales are tuned to.")
@click.option("--tolerance", type=float, default=0.01, show_default=True)
@click.option("--magnitude-eps", type=float, default=1e-3, show_default=True)
@click.option("--delta", type=float, default=0.05, show_default=True)
@click.option("--eval-batch-size", type=int, default=1024, show_default=True)
@click.option("--mc-chunk", type=int, default=10, show_default=True,
              help="Perturbed copies evaluated together in one forward pass.")
@click.option("--device", default=None, help="auto, cpu or cuda[:N] (default: the launched "
              "spec's runtime device; auto = the task's GPU when it has one).")
@click.option("--data-dir", default=None, help="Dataset folder (default: $QGEN_DATA_DIR).")
@click.option("--backend", type=click.Choice(["ray", "local"]), default="ray", show_default=True,
              help="ray = one Ray task per trial; local = in this process, one by one.")
@click.option("--address", default=None, help="Ray cluster to join (default: start a local one).")
@click.option("--cpus-per-task", type=float, default=None,
              help="CPUs per job (default: the sweep's resources.cpu).")
@click.option("--gpus-per-task", type=float, default=None,
              help="GPUs per job (default: the sweep's resources.gpu).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary instead of lines.")
def measure_command(sweep: str, results_dir: Path | None, only: str | None, where: str | None,
                    backend: str, address: str | None, cpus_per_task: float | None,
                    gpus_per_task: float | None, device: str | None, as_json: bool,
                    **options: Any) -> None:
    """Compute PAC-Bayes and sharpness measures for the finished trials of SWEEP.

    One `measure` runs per results directory at a time (it may run beside `launch`); a killed
    run leaves nothing half-written, and the next one measures what is still missing.
    """
    from qgen_sweep.measures.select import eligible_trials, no_finished_trials
    from qgen_sweep.store import ResultsStore, SweepLock

    families = _families(only)
    _check_device(device)
    root = _results_dir(sweep, results_dir).resolve()  # Ray workers may run elsewhere
    if not root.is_dir():  # checked before the lock, which would create the directory
        raise no_finished_trials(root, sweep)
    cpu, gpu = _resources(root, cpus_per_task, gpus_per_task)
    settings = _settings(options, families, device or _spec_device(root))
    eligible_trials(ResultsStore(root), where)  # a bad --where is refused before the lock is made
    with SweepLock(root, "measure", name="measure"):
        _measure(sweep, root, families, where, settings, backend, address, cpu, gpu, as_json)


def _check_device(device: str | None) -> None:
    from qgen_sweep.spec import valid_device

    if device is not None and not valid_device(device):
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N (N = 0, 1, ...), but got "
                         f"{device!r}")


def _measure(sweep: str, root: Path, families: tuple[str, ...], where: str | None,
             settings: dict[str, Any], backend: str, address: str | None, cpu: float,
             gpu: float, as_json: bool) -> None:
    from qgen_sweep.backends.progress import JobProgress
    from qgen_sweep.measures.select import pending_trials
    from qgen_sweep.store import ResultsStore

    todo, done = pending_trials(ResultsStore(root), families, where)
    if not as_json:
        click.echo(f"measure {sweep}: {len(todo)} to measure, {done} already measured "
                   f"({','.join(families)}) in {root}")
    seen: list[dict[str, Any]] = []
    progress = None if as_json or not todo else JobProgress(len(todo), f"measure {sweep}")

    def on_result(result: dict[str, Any]) -> None:
        seen.append(result)
        if progress is not None:
            progress.on_done(result["trial_id"], ok=result["status"] != "failed",
                             text=_result_text(result))

    with progress if progress is not None else contextlib.nullcontext():
        if todo and backend == "local":
            _run_local(str(root), todo, settings, on_result, progress)
        elif todo:
            from qgen_sweep.backends.ray_tasks import run_measure_jobs

            if progress is not None:
                progress.phase("starting Ray and the first jobs...")
            note = progress.note if progress is not None else \
                (lambda line: click.echo(line, err=True))
            run_measure_jobs(str(root), todo, settings, cpu, gpu, address, on_result, note=note)
    _finish(seen, done, as_json, root)


def _spec_device(root: Path) -> str:
    if (root / "sweep.toml").is_file():
        from qgen_sweep.backends.launcher import saved_spec

        return saved_spec(root).runtime.device
    return "auto"


def _finish(results: list[dict[str, Any]], done: int, as_json: bool, root: Path) -> None:
    failed = [r for r in results if r["status"] == "failed"]
    measured = len(results) - len(failed)
    if as_json:
        click.echo(json.dumps({"measured": measured, "failed": len(failed),
                               "already_measured": done, "results": results}, indent=2))
    else:
        click.echo(f"measured {measured}, failed {len(failed)}, already measured {done}")
    if failed:
        raise QGenError(f"{len(failed)} measure job(s) failed (rows in {root}/measure_failures/); "
                        "fix the cause and rerun `qgen-sweep measure` to retry them")


COMMANDS = (measure_command,)
