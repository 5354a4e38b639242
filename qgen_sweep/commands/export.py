"""`qgen-sweep export`: hand finished trials to the tools people already use (MLflow).

    qgen-sweep export smoke --mlflow sqlite:///mlflow.db
    qgen-sweep export --results-dir runs --mlflow http://127.0.0.1:5000 --where "bits = 2"

mlflow is imported inside the command (an optional extra).
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("export")
@click.argument("sweep", required=False)
@click.option("--results-dir", type=click.Path(path_type=Path), default=None,
              help="A sweep's results directory, or a folder of them. Default: ./runs/SWEEP.")
@click.option("--mlflow", "uri", required=True, metavar="URI",
              help="MLflow tracking URI: sqlite:///mlflow.db, a file:/// folder, or a server's "
                   "http(s):// address.")
@click.option("--experiment", default=None,
              help="MLflow experiment to export into (default: the sweep's name).")
@click.option("--where", default=None,
              help='One SQL condition on the trials view\'s columns, e.g. "bits = 2".')
def export_command(sweep: str | None, results_dir: Path | None, uri: str,
                   experiment: str | None, where: str | None) -> None:
    """Push SWEEP's finished trials into MLflow: one run per trial with its configuration as
    params, final and per-epoch metrics, and qgen.* tags. Trials already in the experiment
    (same qgen.trial_id tag) are skipped, so rerunning it adds only new trials.

    \b
    Examples:
      qgen-sweep export smoke --mlflow sqlite:///mlflow.db
      mlflow ui --backend-store-uri sqlite:///mlflow.db    # then open http://127.0.0.1:5000
      qgen-sweep export cifar10-grid --mlflow http://127.0.0.1:5000 --where "bits = 2"
    """
    from qgen_sweep.backends.progress import JobProgress
    from qgen_sweep.commands.analysis import resolve_results_dir
    from qgen_sweep.export_mlflow import export, finished_trials, run_name

    folder = resolve_results_dir(sweep, results_dir)
    trials = finished_trials(folder, where)  # --where is checked before MLflow is touched

    def shown(trial: dict, new: bool) -> None:
        verb = "exported" if new else "skipped "
        progress.on_done(trial["trial_id"], text=f"{verb} {trial['trial_id']} {run_name(trial)}")

    with JobProgress(len(trials), f"export {folder.name} to MLflow") as progress:
        counts = export(trials, uri, experiment, on_run=shown)
    click.echo(f"exported {counts['exported']} trial(s) to MLflow at {uri}; "
               f"{counts['skipped']} were already there")


COMMANDS = (export_command,)
