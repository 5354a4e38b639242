"""Options and glue shared by the post-hoc per-trial commands (measure, robustness, landscape).

    @click.command("measure")
    @click.argument("sweep")
    @click.option("--only", ...)              # the command's own settings
    @job_options                              # --results-dir, --where, --backend, ... as `jobs`
    def measure_command(sweep, only, jobs: JobOptions, **settings): ...
        run_jobs(jobs.run(MEASURE, sweep, settings_dict), is_done, detail=...)

No COMMANDS here: this module only helps the command modules.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from qgen_sweep.commands._output import chosen_format, format_option, json_alias

_SHARED = (
    click.option("--results-dir", type=click.Path(path_type=Path), default=None,
                 help="Results directory (default: the spec's results_dir, else ./runs/SWEEP)."),
    click.option("--where", default=None,
                 help='One SQL condition on the trials view\'s columns, e.g. "bits = 2 AND '
                 'optimizer = \'sgd\'" (read-only, like query).'),
    click.option("--device", default=None, help="auto, cpu or cuda[:N] (default: the launched "
                 "spec's runtime device; auto = the task's GPU when it has one)."),
    click.option("--data-dir", default=None, help="Dataset folder (default: the launched "
                 "spec's runtime.data_dir, else $QGEN_DATA_DIR)."),
    click.option("--backend", type=click.Choice(["ray", "local"]), default="ray",
                 show_default=True,
                 help="ray = one Ray task per trial; local = in this process, one by one."),
    click.option("--address", default=None,
                 help="Ray cluster to join (default: start a local one)."),
    click.option("--cpus-per-task", type=float, default=None,
                 help="CPUs per job (default: the sweep's resources.cpu)."),
    click.option("--gpus-per-task", type=float, default=None,
                 help="GPUs per job (default: the sweep's resources.gpu)."),
    format_option("table", "json", help_="table = a line per job with an ETA, then a summary; "
                  "json = only the summary, as one JSON object."),
    json_alias,
)
_NAMES = ("results_dir", "where", "device", "data_dir", "backend", "address", "cpus_per_task",
          "gpus_per_task")


@dataclass(frozen=True)
class JobOptions:
    """The shared options of one invocation, as the command function receives them."""

    results_dir: Path | None
    where: str | None
    device: str | None
    data_dir: str | None
    backend: str
    address: str | None
    cpus_per_task: float | None
    gpus_per_task: float | None
    as_json: bool  # --format json

    def root(self, sweep: str) -> Path:
        """The results directory, absolute (Ray workers may run elsewhere)."""
        from qgen_sweep.spec import results_dir_for

        return results_dir_for(sweep, self.results_dir).resolve()

    def device_for(self, sweep: str) -> str:
        """--device (checked), else the launched spec's runtime device."""
        from qgen_sweep.errors import UsageError
        from qgen_sweep.posthoc.runner import spec_device
        from qgen_sweep.spec import valid_device

        if self.device is not None and not valid_device(self.device):
            raise UsageError(f"--device must be auto, cpu, cuda or cuda:N (N = 0, 1, ...), but "
                             f"got {self.device!r}")
        return self.device or spec_device(self.root(sweep))

    def data_dir_for(self, sweep: str) -> str | None:
        """--data-dir, else the launched spec's runtime.data_dir (the data the trials used)."""
        from qgen_sweep.posthoc.runner import spec_data_dir

        return self.data_dir or spec_data_dir(self.root(sweep))

    def run(self, kind, sweep: str, settings: dict[str, Any]):
        """The JobRun of this invocation, with per-task resources resolved."""
        from qgen_sweep.posthoc.runner import JobRun, task_resources

        root = self.root(sweep)
        cpu, gpu = task_resources(root, self.cpus_per_task, self.gpus_per_task)
        return JobRun(kind=kind, sweep=sweep, root=root, settings=settings, where=self.where,
                      backend=self.backend, address=self.address, cpu=cpu, gpu=gpu,
                      as_json=self.as_json)


def job_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the shared options to a command function; it receives them as `jobs=JobOptions`."""

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        as_json = chosen_format(kwargs.pop("fmt"), kwargs.pop("as_json")) == "json"
        jobs = JobOptions(**{name: kwargs.pop(name) for name in _NAMES}, as_json=as_json)
        return command(jobs=jobs, **kwargs)

    for option in reversed(_SHARED):
        wrapper = option(wrapper)
    return wrapper
