"""`qgen-sweep measure`: generalization measures of finished trials (paper Table 3).

    qgen-sweep measure smoke
    qgen-sweep measure cifar10-grid --only pacbayes --where "bits = 2"
    qgen-sweep measure smoke --backend local --iterations 4 --mc-samples 3   # quick look

Measures every trial with status 'done' (and matching --where) whose measures file is missing
or lacks a requested family; resumable like launch (jobs write their file atomically when they
finish). Each job is a Ray task with the sweep's per-trial resources, run by the shared post-hoc
runner (qgen_sweep.posthoc). Search settings default to the paper's (docs/science.md). Heavy
libraries are imported inside the command.
"""

from __future__ import annotations

from typing import Any

import click

from qgen_sweep.commands._posthoc import JobOptions, job_options
from qgen_sweep.errors import UsageError

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


def _settings(options: dict[str, Any], families: tuple[str, ...], device: str,
              data_dir: str | None) -> dict[str, Any]:
    from qgen_sweep.measures.run import MeasureSettings
    from qgen_sweep.measures.search import SearchSettings

    search_keys = {"noise", "bn_affine", "seed", "iterations", "mc_samples", "restarts",
                   "ascent_steps", "ascent_lr", "ascent_batch_size", "tolerance", "target_drop",
                   "mc_chunk", "magnitude_eps"}
    search = SearchSettings(**{k: v for k, v in options.items() if k in search_keys})
    settings = MeasureSettings(search=search, families=families, delta=options["delta"],
                               eval_batch_size=options["eval_batch_size"], device=device,
                               data_dir=data_dir)
    return settings.to_dict()


@click.command("measure")
@click.argument("sweep")
@click.option("--only", default=None, help="Families: pacbayes,sharpness (default both).")
@click.option("--noise", type=click.Choice(["reference", "jiang"]), default="reference",
              show_default=True, help="Gaussian noise scale convention (docs/science.md).")
@click.option("--bn-affine", type=click.Choice(["perturb", "fixed"]), default="perturb",
              show_default=True, help="Perturb the folded biases that carry each BN's shift "
              "(perturb, as the reference code) or only the conv/linear weights (fixed).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the noise samples and ascent batches (combined with each trial's).")
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
@click.option("--tolerance", type=float, default=0.01, show_default=True,
              help="The bisection stops once the accuracy drop is this close to --target-drop.")
@click.option("--magnitude-eps", type=float, default=1e-3, show_default=True,
              help="Additive epsilon of the magnitude-aware measures' noise (docs/science.md).")
@click.option("--delta", type=float, default=0.05, show_default=True,
              help="Confidence parameter of the PAC-Bayes bounds (they hold w.p. 1 - delta).")
@click.option("--eval-batch-size", type=int, default=1024, show_default=True,
              help="Examples per forward pass (times --mc-chunk copies).")
@click.option("--mc-chunk", type=int, default=10, show_default=True,
              help="Perturbed copies evaluated together in one forward pass.")
@job_options
def measure_command(sweep: str, only: str | None, jobs: JobOptions, **options: Any) -> None:
    """Compute PAC-Bayes and sharpness measures for the finished trials of SWEEP.

    One `measure` runs per results directory at a time (it may run beside `launch`); a killed
    run leaves nothing half-written, and the next one measures what is still missing.

    \b
    Examples:
      qgen-sweep measure smoke
      qgen-sweep measure cifar10-grid --only pacbayes --where "bits = 2"
    """
    from qgen_sweep.measures.select import MEASURE, has_families
    from qgen_sweep.posthoc.runner import run_jobs

    families = _families(only)
    settings = _settings(options, families, jobs.device_for(sweep), jobs.data_dir_for(sweep))
    run_jobs(jobs.run(MEASURE, sweep, settings), has_families(families),
             detail=",".join(families))


COMMANDS = (measure_command,)
