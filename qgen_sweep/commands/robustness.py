"""`qgen-sweep robustness`: every finished trial on corrupted test sets (the paper's section 4.3).

    qgen-sweep robustness smoke                                  # generated corruptions, all 15
    qgen-sweep robustness cifar10-grid --source released --where "bits = 2"
    qgen-sweep robustness smoke --corruptions fog,contrast --severities 1-3 --backend local

One job per trial with status 'done' (and matching --where) that lacks a requested set; each
writes robustness/bits=B/<id>.parquet with one row per (source, corruption, severity). Runs on
the shared post-hoc runner (qgen_sweep.posthoc): its own lock, resumable, failures as rows.
Heavy libraries are imported inside the command.
"""

from __future__ import annotations

import click

from qgen_sweep.commands._posthoc import JobOptions, job_options
from qgen_sweep.errors import UsageError


def _sets(corruptions: str | None, severities: str | None,
          source: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    from qgen_sweep.robustness.params import parse_corruptions, parse_severities

    try:
        return (parse_corruptions(corruptions, generated=source == "generated"),
                parse_severities(severities))
    except ValueError as error:
        raise UsageError(str(error)) from None


def _check_released(run, settings) -> None:
    """Before any job starts: every requested file of every selected trial's dataset exists
    (one line naming the first missing one otherwise)."""
    from qgen_sweep.posthoc.select import eligible_trials
    from qgen_sweep.robustness.layout import check_release, release_folder
    from qgen_sweep.store import ResultsStore
    from qgen_sweep.trial.config import TrialRuntime
    from qgen_sweep.trial.data import data_root

    if not run.root.is_dir() or next(ResultsStore(run.root).files("trials"), None) is None:
        return  # the runner reports the missing results
    root = data_root(TrialRuntime(data_dir=settings.data_dir))
    for dataset in sorted({t["dataset"] for t in eligible_trials(ResultsStore(run.root),
                                                                  run.where)}):
        folder = release_folder(dataset, root, settings.corrupted_dir)
        check_release(dataset, folder, settings.corruptions, settings.severities)


@click.command("robustness")
@click.argument("sweep")
@click.option("--corruptions", default=None,
              help="Comma-separated names, or the groups common (the 15 of the benchmark, the "
                   "default), extra (speckle_noise, gaussian_blur, spatter, saturate), all.")
@click.option("--severities", default="1-5", show_default=True,
              help="Severities 1 to 5, as a range or list: 1-5, 3, 1,3,5.")
@click.option("--source", type=click.Choice(["generated", "released"]), default="generated",
              show_default=True, help="generated = corrupt the clean test split on the device "
              "(any dataset, offline); released = read CIFAR-10-C / CIFAR-100-C arrays or "
              "ImageNet-C folders.")
@click.option("--corrupted-dir", default=None, help="Folder of the released sets (default: "
              "DATA_DIR/CIFAR-10-C or DATA_DIR/CIFAR-100-C).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the generated corruptions (the same images for every trial).")
@click.option("--eval-batch-size", type=int, default=1024, show_default=True,
              help="Images per forward pass.")
@job_options
def robustness_command(sweep: str, corruptions: str | None, severities: str | None,
                       source: str, corrupted_dir: str | None, seed: int, eval_batch_size: int,
                       jobs: JobOptions) -> None:
    """Evaluate the finished trials of SWEEP on corrupted test sets: loss, accuracy, and the
    gap = corrupted test loss - clean training loss, per corruption and severity.

    One `robustness` runs per results directory at a time (beside `launch` and `measure`); a
    killed run leaves nothing half-written, and the next one evaluates only what is missing.
    `qgen-sweep report` then shows Table 4, the paired differences against FP32 and the mCE.

    \b
    Examples:
      qgen-sweep robustness smoke
      qgen-sweep robustness cifar10-grid --source released --severities 1,3,5
    """
    from qgen_sweep.posthoc.runner import run_jobs
    from qgen_sweep.robustness.select import ROBUSTNESS, has_sets
    from qgen_sweep.robustness.settings import RobustnessSettings

    names, levels = _sets(corruptions, severities, source)
    settings = RobustnessSettings(source=source, corruptions=names, severities=levels,
                                  seed=seed, eval_batch_size=eval_batch_size,
                                  device=jobs.device_for(sweep), data_dir=jobs.data_dir_for(sweep),
                                  corrupted_dir=corrupted_dir)
    run = jobs.run(ROBUSTNESS, sweep, settings.to_dict())
    if source == "released":
        _check_released(run, settings)
    detail = f"{source}: {len(names)} corruptions x {len(levels)} severities"
    run_jobs(run, has_sets(source, names, levels), detail=detail)


COMMANDS = (robustness_command,)
