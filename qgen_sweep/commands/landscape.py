"""`qgen-sweep landscape`: loss landscapes around the kept models (the paper's Figure 2).

    qgen-sweep landscape smoke --dims 2 --grid 21
    qgen-sweep landscape cifar10-grid --where "depth = 3 AND width = 10" --plots out/
    qgen-sweep landscape smoke --backend local --grid 5 --dims 1      # a quick look

For every finished trial matching --where: the training loss and accuracy on a grid around the
kept model along filter-normalized random directions (the same directions for every precision of
a configuration), and the lines from the initial weights and from the FP32 twin. Resumable like
`measure` (one file per trial, written when its job ends; other settings add rows beside the
old ones). Heavy libraries are imported inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from qgen_sweep.commands._posthoc import JobOptions, job_options
from qgen_sweep.errors import QGenError


def _settings(options: dict[str, Any], jobs: JobOptions, sweep: str):
    from qgen_sweep.landscape.settings import LandscapeSettings

    return LandscapeSettings(dims=options["dims"], grid=options["grid"], span=options["span"],
                             seed=options["seed"], ignore=options["ignore"],
                             interpolate=options["interpolate"], points=options["points"],
                             eval_batch_size=options["eval_batch_size"],
                             device=jobs.device_for(sweep), data_dir=jobs.data_dir)


def _figures(root: Path, plots: Path, formats: str) -> None:
    from qgen_sweep.analysis.db import connect
    from qgen_sweep.landscape.report import all_figures

    chosen = tuple(f.strip() for f in formats.split(",") if f.strip())
    paths = all_figures(connect(root, kinds=("trials", "landscape")), plots, chosen)
    click.echo(f"wrote {len(paths)} figure files to {plots}")


@click.command("landscape")
@click.argument("sweep")
@click.option("--dims", type=int, default=2, show_default=True,
              help="Random directions: 1 (a line) or 2 (a surface).")
@click.option("--grid", type=int, default=41, show_default=True,
              help="Points per axis, odd (the kept model is the centre).")
@click.option("--span", type=float, default=1.0, show_default=True,
              help="a, b in [-SPAN, SPAN] (1 = each filter moved by its own norm).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Directions seed (combined with each configuration's FP32 twin id).")
@click.option("--ignore", type=click.Choice(["biasbn", "bn"]), default="biasbn",
              show_default=True, help="1-D parameters left out of the directions: biases and "
              "BN (Li et al.'s plots), or BN only (biases move along themselves).")
@click.option("--interpolate/--no-interpolate", default=True, show_default=True,
              help="Also the lines initialisation -> kept model and FP32 twin -> Int-b.")
@click.option("--points", type=int, default=16, show_default=True,
              help="Grid points evaluated together in one forward pass.")
@click.option("--eval-batch-size", type=int, default=512, show_default=True,
              help="Training examples per forward pass (times --points copies).")
@click.option("--plots", "plots_dir", type=click.Path(path_type=Path, file_okay=False),
              default=None, help="Afterwards, draw every trial's surface and every complete "
              "configuration's panel and lines into this folder.")
@click.option("--plot-formats", default="png,pdf,svg", show_default=True,
              help="Formats of the --plots figures.")
@job_options
def landscape_command(sweep: str, jobs: JobOptions, plots_dir: Path | None, plot_formats: str,
                      **options: Any) -> None:
    """Loss landscapes of the finished trials of SWEEP (Li et al. 2018, the paper's Figure 2).

    One `landscape` runs per results directory at a time (it may run beside `launch` and
    `measure`); a killed run leaves nothing half-written, and the next one computes only the
    surfaces still missing. `qgen-sweep report SWEEP --plots DIR` then shows the flatness table,
    its Kendall coefficients against the gap, and the Figure 2 panel.

    \b
    Examples:
      qgen-sweep landscape smoke --dims 2 --grid 21
      qgen-sweep landscape cifar10-grid --where "optimizer = 'sgd'" --plots out/
    """
    from qgen_sweep.landscape.ledger import LANDSCAPE, has_curves
    from qgen_sweep.posthoc.runner import run_jobs

    settings = _settings(options, jobs, sweep)
    detail = (f"{settings.dims}D, grid {settings.grid}, span {settings.span:g}, seed "
              f"{settings.seed}, id {settings.key()}")
    failed: QGenError | None = None
    try:
        run_jobs(jobs.run(LANDSCAPE, sweep, settings.to_dict()), has_curves(settings),
                 detail=detail)
    except QGenError as error:  # draw what finished, then report the failures
        if "job(s) failed" not in str(error):
            raise
        failed = error
    if plots_dir is not None:
        _figures(jobs.root(sweep), plots_dir, plot_formats)
    if failed is not None:
        raise failed


COMMANDS = (landscape_command,)
