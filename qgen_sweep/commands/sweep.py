"""Sweep commands: list, show, validate, launch, status, resume.

    qgen-sweep list
    qgen-sweep show smoke [--copy my-smoke.toml]
    qgen-sweep validate cifar10-grid --set train.epochs=3
    qgen-sweep launch smoke [--results-dir DIR] [--address ADDR] [--max-concurrent N] [--dry-run]
    qgen-sweep status smoke [--format table|markdown|csv|json]
    qgen-sweep resume smoke [--set runtime.device=cuda] [--dry-run]

Heavy libraries (ray, torch, pyarrow) are imported inside the commands.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from qgen_sweep.commands._output import chosen_format, format_option, json_alias
from qgen_sweep.errors import QGenError, UsageError

_SET_HELP = "Override a spec value, e.g. --set train.epochs=3 (repeatable; same validation)."


def _load(sweep: str, overrides: tuple[str, ...], data_dir: Path | None = None):
    from qgen_sweep.spec import load_spec, with_data_dir

    return with_data_dir(load_spec(sweep, overrides), data_dir)


_DATA_DIR_OPTION = click.option(
    "--data-dir", type=click.Path(path_type=Path), default=None,
    help="Dataset folder for the trials (sets runtime.data_dir; default: the spec's, else "
         "$QGEN_DATA_DIR, else ~/.cache/qgen-sweep/data).")


def _results_dir(spec, results_dir: Path | None) -> Path:
    return results_dir if results_dir is not None else spec.default_results_dir()


@click.command("list")
def list_command() -> None:
    """Available sweeps with their trial counts and descriptions.

    \b
    Examples:
      qgen-sweep list
      qgen-sweep show smoke          # the TOML of one of them
    """
    from qgen_sweep.plan import plan
    from qgen_sweep.search import strategy_for
    from qgen_sweep.spec import available_sweeps, load_spec

    rows = []
    for path in available_sweeps():
        try:
            spec = load_spec(str(path))
            count = strategy_for(spec).total(plan(spec))  # an adaptive search: its budget
            rows.append((path.stem, str(count), spec.description))
        except QGenError as error:
            rows.append((path.stem, "invalid", str(error).splitlines()[0]))
    width = max(len(r[0]) for r in rows) if rows else 0
    for name, count, description in rows:
        click.echo(f"{name:<{width}}  {count:>7} trials  {description}")


@click.command("show")
@click.argument("sweep")
@click.option("--copy", "copy_to", type=click.Path(path_type=Path), default=None,
              help="Write the spec to this file (or into this folder as SWEEP.toml) instead of "
                   "printing it, to edit and launch as your own sweep.")
def show_command(sweep: str, copy_to: Path | None) -> None:
    """Print the TOML of a shipped sweep (as `qgen-sweep list` names it), comments included.

    \b
    Examples:
      qgen-sweep show smoke
      qgen-sweep show cifar10-grid --copy my-grid.toml   # then edit it and:
      qgen-sweep launch my-grid.toml
    """
    from qgen_sweep.spec import find_spec, read_spec_text

    path = find_spec(sweep)  # an unknown name lists the shipped ones
    text = read_spec_text(path)
    if copy_to is None:
        click.echo(text, nl=False)
        return
    target = copy_to / path.name if copy_to.is_dir() else copy_to
    if not target.parent.is_dir():
        raise UsageError(f"--copy {target}: folder {target.parent} does not exist; create it "
                         "first, or pick another path")
    try:
        with open(target, "x", encoding="utf-8") as handle:  # "x": never overwrite a file
            handle.write(text)
    except FileExistsError:
        raise UsageError(f"--copy {target} already exists; pick another path, or delete it "
                         "first") from None
    except OSError as error:
        raise UsageError(f"--copy {target} cannot be written ({error.strerror}); pick a "
                         "writable path") from None
    click.echo(f"wrote {target}; edit it, then `qgen-sweep validate {target}` and "
               f"`qgen-sweep launch {target}`")


@click.command("validate")
@click.argument("sweep")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
@_DATA_DIR_OPTION
def validate_command(sweep: str, overrides: tuple[str, ...], data_dir: Path | None) -> None:
    """Plan SWEEP and print the trial count per axis; any problem (a spec value, missing data,
    an unwritable results directory) exits 2. The device is checked by launch, on the machine
    the trials run on.

    \b
    Examples:
      qgen-sweep validate cifar10-grid
      qgen-sweep validate smoke --set train.epochs=3 --set "grid.bits=[2, 32]"
      qgen-sweep validate my-sweep.toml
    """
    from qgen_sweep.launcher import preflight
    from qgen_sweep.search import strategy_for

    spec = _load(sweep, overrides, data_dir)
    trials = preflight(spec, _results_dir(spec, None), device=False)
    _warn_unreached_milestones(trials)
    click.echo("\n".join(strategy_for(spec).describe(trials)))
    click.echo(f"  spec hash {spec.spec_hash}; results in {_results_dir(spec, None)}")


_RUN_OPTIONS = [
    click.option("--results-dir", type=click.Path(path_type=Path), default=None,
                 help="Results directory (default: the spec's results_dir, else ./runs/SWEEP)."),
    _DATA_DIR_OPTION,
    click.option("--address", default=None,
                 help="Ray cluster address to join (default: start a local cluster)."),
    click.option("--max-concurrent", type=int, default=None,
                 help="Most trials at once (default: the spec's; 0 = as resources allow)."),
    click.option("--backend", type=click.Choice(["ray", "local"]), default="ray",
                 show_default=True, help="ray = Ray Tune; local = in this process, one by one."),
    click.option("--bundle-size", type=click.IntRange(min=1), default=None,
                 help="Fused engine: train up to K trials of one architecture together."),
    click.option("--progress-interval", type=click.FloatRange(min=0), default=10.0,
                 show_default=True,
                 help="In a log (output not a terminal): seconds between heartbeat lines "
                      "(counts, ETA, what the running trials are at); 0 = a line per event."),
    click.option("--log", "loggers", multiple=True, type=click.Choice(["tensorboard"]),
                 help="Also log every epoch's metrics and each trial's hyperparameters for "
                      "TensorBoard, under RESULTS/tensorboard/ (view: tensorboard --logdir "
                      "RESULTS/tensorboard)."),
]


def _run_options(function):
    for option in reversed(_RUN_OPTIONS):
        function = option(function)
    return function


@click.command("launch")
@click.argument("sweep")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
@_run_options
@click.option("--dry-run", is_flag=True, help="Plan and print what would run; write nothing.")
def launch_command(sweep: str, overrides: tuple[str, ...], results_dir: Path | None,
                   data_dir: Path | None, address: str | None, max_concurrent: int | None,
                   backend: str, bundle_size: int | None, progress_interval: float,
                   loggers: tuple[str, ...], dry_run: bool) -> None:
    """Run every trial of SWEEP that has no final result yet (on Ray by default). SWEEP is a
    shipped sweep's name (`qgen-sweep list`) or a .toml file.

    \b
    Examples:
      qgen-sweep launch smoke
      qgen-sweep launch cifar10-grid --dry-run              # what would run, nothing written
      qgen-sweep launch smoke --set train.epochs=1 --backend local --results-dir /tmp/quick
      qgen-sweep launch cifar10-grid --address ray://head:10001 --max-concurrent 8
    """
    spec = _load(sweep, overrides, data_dir)
    results_dir = _results_dir(spec, results_dir)
    if dry_run:
        _dry_run(spec, results_dir, backend, address)
        return
    _run(spec, results_dir, address, max_concurrent, backend, f"launch {spec.name}",
         bundle_size, progress_interval, loggers)


@click.command("resume")
@click.argument("sweep")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a value of the saved spec for this run, e.g. --set "
                   "runtime.device=cuda or --set resources.max_concurrent=2 (repeatable); "
                   "what the trials compute (grid, train, search) cannot change.")
@_run_options
@click.option("--dry-run", is_flag=True, help="Print what would run; write nothing.")
def resume_command(sweep: str, overrides: tuple[str, ...], results_dir: Path | None,
                   data_dir: Path | None, address: str | None, max_concurrent: int | None,
                   backend: str, bundle_size: int | None, progress_interval: float,
                   loggers: tuple[str, ...], dry_run: bool) -> None:
    """Retry failed trials and continue interrupted ones from their checkpoints, with the spec
    saved in the results directory (sweep.toml).

    \b
    Examples:
      qgen-sweep resume smoke
      qgen-sweep resume cifar10-grid --set runtime.device=cuda --max-concurrent 4
      qgen-sweep resume smoke --dry-run            # what would run, nothing written
    """
    from qgen_sweep.spec import with_data_dir

    results_dir = results_dir if results_dir is not None else _default_dir(sweep)
    spec = with_data_dir(_resumed_spec(results_dir, overrides), data_dir)
    if dry_run:
        _dry_run(spec, results_dir, backend, address)
        return
    _run(spec, results_dir, address, max_concurrent, backend, f"resume {spec.name}",
         bundle_size, progress_interval, loggers)


def _resumed_spec(results_dir: Path, overrides: tuple[str, ...]):
    """The saved spec with --set applied; an override that changes the trials is refused."""
    from qgen_sweep.spec import saved_spec, spec_from_file

    saved = saved_spec(results_dir)
    if not overrides:
        return saved
    spec = spec_from_file(Path(results_dir) / "sweep.toml", name=saved.name, overrides=overrides)
    if spec.spec_hash != saved.spec_hash:
        raise UsageError(f"--set {' '.join(overrides)} changes what the trials of {results_dir} "
                         f"compute (spec hash {saved.spec_hash} -> {spec.spec_hash}); resume "
                         f"takes resources.*, runtime.* and other settings only, so launch the "
                         f"changed sweep into another --results-dir")
    return spec


def _default_dir(sweep: str) -> Path:
    """./runs/<name> for a sweep name; the spec's results_dir when it names one."""
    from qgen_sweep.spec import results_dir_for

    return results_dir_for(sweep)


def _run(spec, results_dir: Path, address, max_concurrent, backend: str, command: str,
         bundle_size: int | None = None, progress_interval: float = 10.0,
         loggers: tuple[str, ...] = ()) -> None:
    from qgen_sweep.launcher import LaunchOptions, check_complete, run_sweep
    from qgen_sweep.search import strategy_for

    options = LaunchOptions(results_dir=results_dir, address=address,
                            max_concurrent=max_concurrent, backend=backend,
                            bundle_size=bundle_size, progress_interval=progress_interval,
                            loggers=tuple(dict.fromkeys(loggers)))
    click.echo(f"{command}: results in {results_dir}")
    store = run_sweep(spec, options, command)
    _print_status(store, title=f"{spec.name}: summary", search=strategy_for(spec))
    check_complete(spec, store)


def _dry_run(spec, results_dir: Path, backend: str = "ray", address: str | None = None) -> None:
    from qgen_sweep.launcher import preflight
    from qgen_sweep.search import strategy_for
    from qgen_sweep.store import ResultsStore

    trials = preflight(spec, results_dir, backend, address)  # what launch would refuse
    _warn_unreached_milestones(trials)
    click.echo("\n".join(strategy_for(spec).dry_run(trials, ResultsStore(results_dir))))
    click.echo(f"dry run: nothing written (results would go to {results_dir})")


def _warn_unreached_milestones(trials) -> None:
    """A warning when a learning-rate milestone is past a trial's last epoch (it never applies)."""
    late = sorted({(m, t.config.epochs) for t in trials for m in t.config.milestones
                   if m > t.config.epochs})
    if late:
        shown = ", ".join(f"{m} (of {epochs} epochs)" for m, epochs in late)
        click.echo(f"warning: train.milestones {shown} are after the last epoch: the learning "
                   f"rate never drops there; lower them or raise train.epochs", err=True)


@click.command("status")
@click.argument("sweep")
@click.option("--results-dir", type=click.Path(path_type=Path), default=None,
              help="Results directory (default: the spec's results_dir, else ./runs/SWEEP).")
@format_option("table", "markdown", "csv", "json",
               help_="table = the status table with failures (the default); markdown or csv = "
                     "the counts by precision; json = counts, failures, corrupt files, who runs "
                     "the sweep, for scripts.")
@json_alias
@click.option("--failures", default=5, show_default=True, help="How many latest failures to show.")
@click.option("--watch", is_flag=True,
              help="Redraw every --interval seconds (with the running trials' epochs) until the "
                   "sweep is finished or its launch stops; a log gets one line per interval.")
@click.option("--interval", type=float, default=5.0, show_default=True,
              help="Seconds between redraws with --watch.")
def status_command(sweep: str, results_dir: Path | None, fmt: str, as_json: bool,
                   failures: int, watch: bool, interval: float) -> None:
    """Planned / done / collapsed / diverged / failed / running / interrupted / pending by
    precision; safe while a launch runs. Collapsed = finished at chance-level accuracy or with a
    huge training loss. Before the first launch, every planned trial shows as pending.

    \b
    Examples:
      qgen-sweep status smoke
      qgen-sweep status smoke --watch              # live, beside a running launch
      qgen-sweep status cifar10-grid --format json
    """
    from qgen_sweep.store import ResultsStore

    fmt = chosen_format(fmt, as_json)
    store = ResultsStore(results_dir if results_dir is not None else _default_dir(sweep))
    if store.root.is_file():
        raise UsageError(f"--results-dir {store.root} is a file, not a folder; pass the folder "
                         f"a launch wrote (e.g. --results-dir runs/{Path(sweep).stem})")
    if watch and fmt != "table":
        raise UsageError(f"--watch redraws a table; it does not combine with --format {fmt}")
    if watch:
        _watch(store, f"{Path(sweep).stem}: status of {store.root}", failures, interval)
        return
    status, launched = _status_or_plan(sweep, store)
    search = _search_of(store)
    if fmt == "json":
        data = {"launched": launched, "by_bits": status.by_bits, "totals": status.totals,
                "missing": status.missing, "corrupt": [str(p) for p in status.corrupt],
                "no_curve": [{"trial_id": t, "bits": b} for t, b in status.no_curve],
                "running": status.locked_by,
                "failures": [_failure_dict(r) for r in status.failures[:failures]],
                **(search.status_data(store.root) if search else {})}
        click.echo(json.dumps(data, indent=2, default=str))
    elif fmt in ("markdown", "csv"):
        from qgen_sweep.commands.analysis import format_rows
        from qgen_sweep.store import STATUS_COLUMNS

        rows = [(bits, *(row[c] for c in STATUS_COLUMNS)) for bits, row in status.by_bits.items()]
        rows.append(("all", *(status.totals[c] for c in STATUS_COLUMNS)))
        click.echo(format_rows(["bits", *STATUS_COLUMNS], rows, fmt), nl=False)
    else:
        title = f"{Path(sweep).stem}: status of {store.root}"
        _print_status(store, title=title, failures=failures, status=status, search=search)
    if not launched:
        click.echo(f"note: {store.root} holds no launch yet: all {status.totals['planned']} "
                   f"planned trials are pending (`qgen-sweep launch {sweep}` runs them)",
                   err=True)


def _status_or_plan(sweep: str, store):
    """(status, launched): the store's status, or before the first launch (no plan.parquet)
    the spec's plan with every trial pending. An unknown sweep name is a UsageError."""
    from qgen_sweep.store import sweep_status

    if store.plan_path.is_file():
        return sweep_status(store), True
    from qgen_sweep.spec import saved_spec

    spec = saved_spec(store.root) if store.spec_path.is_file() else _load(sweep, ())
    return _pending_status(spec), False


def _pending_status(spec):
    """A SweepStatus with every planned trial pending (adaptive: the trial budget per study)."""
    from qgen_sweep.plan import plan
    from qgen_sweep.search import strategy_for
    from qgen_sweep.store import STATUS_COLUMNS, SweepStatus

    counts = strategy_for(spec).pending(plan(spec))
    by_bits = {bits: {**dict.fromkeys(STATUS_COLUMNS, 0), "planned": n, "pending": n}
               for bits, n in counts.items()}
    return SweepStatus(by_bits, [], [], None)


def _search_of(store):
    """The search strategy of the spec a results directory was launched with (None before the
    first launch, or when its sweep.toml does not read back: status then shows the store
    alone)."""
    from qgen_sweep.search import strategy_for
    from qgen_sweep.spec import saved_spec

    try:
        return strategy_for(saved_spec(store.root)) if store.spec_path.is_file() else None
    except QGenError:
        return None


def _failure_dict(row: dict) -> dict:
    keep = ("trial_id", "bits", "attempt", "error_type", "message", "host", "time")
    return {k: row[k] for k in keep}


def _print_status(store, title: str, failures: int = 5, status=None, search=None) -> None:
    from rich.console import Console

    from qgen_sweep.store import sweep_status

    console = Console(highlight=False, width=max(100, Console().width))
    status = sweep_status(store) if status is None else status
    console.print(_status_view(store, status, title, search, failures))
    sys.stdout.flush()


def _status_view(store, status, title: str, search, failures: int = 5,
                 running: list | None = None):
    """The status table, who runs the sweep, the running trials, corrupt files and failures,
    and what the sweep's search strategy adds (an adaptive search: its best trials)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from qgen_sweep.store import STATUS_COLUMNS

    table = Table(title=title, title_justify="left")
    table.add_column("bits", justify="right")
    for column in STATUS_COLUMNS:
        table.add_column(column, justify="right")
    for bits, row in status.by_bits.items():
        table.add_row(str(bits), *(str(row[c]) for c in STATUS_COLUMNS))
    table.add_row("all", *(str(status.totals[c]) for c in STATUS_COLUMNS), style="bold")
    parts: list = [table]
    if status.locked_by:
        parts.append(Text(f"running now: {status.locked_by.get('command')} "
                          f"(pid {status.locked_by.get('pid')}, "
                          f"since {status.locked_by.get('since')})"))
    if running:
        from qgen_sweep.backends.progress import running_table

        parts.append(running_table(running))
    if status.totals["collapsed"]:
        parts.append(Text(f"collapsed: {status.totals['collapsed']} finished trial(s) ended at "
                          f"chance level or with a training loss above 10 ln(classes); "
                          f"`qgen-sweep report` leaves them out of its statistics "
                          f"(--include-collapsed keeps them)"))
    parts += _damage_lines(store, status, search)
    if status.failures:
        parts.append(Text(f"latest failures ({len(status.failures)} failed attempts of "
                          "unfinished trials):"))
    parts += [Text(f"  {row['trial_id']} bits={row['bits']} attempt {row['attempt']}: "
                   f"{row['error_type']}: {row['message']}") for row in status.failures[:failures]]
    parts += [Text(line) for line in (search.status_lines(store.root) if search else [])]
    return Group(*parts)


def _damage_lines(store, status, search) -> list:
    """One line per file that does not read back and per finished trial without a curve."""
    from rich.text import Text

    from qgen_sweep.store import damage_remedy

    reruns = search is None or search.reruns_incomplete  # an adaptive search reruns nothing
    lines = [Text(f"corrupt: {path} does not read back; {damage_remedy(path)}")
             for path in status.corrupt]
    if status.no_curve:
        ids = ", ".join(f"{t} (bits={b})" for t, b in status.no_curve[:5])
        more = f" and {len(status.no_curve) - 5} more" if len(status.no_curve) > 5 else ""
        then = ("`qgen-sweep resume` runs them again to write it" if reruns else
                "an adaptive search does not run them again")
        lines.append(Text(f"no curve: {len(status.no_curve)} finished trial(s) have a final row "
                          f"but no readable epochs file: {ids}{more}; {then}"))
    return lines


def _watch(store, title: str, failures: int, interval: float) -> None:
    from qgen_sweep.watch import watch_status

    if interval <= 0:
        raise UsageError(f"--interval must be > 0 seconds, but got {interval:g}")
    search = _search_of(store)
    last = watch_status(store, lambda snap: _status_view(store, snap.status, title, search,
                                                         failures, snap.running), interval)
    ended = "every planned trial has a result" if last.finished else "the launch stopped"
    click.echo(f"watch ended: {ended}")


COMMANDS = (list_command, show_command, validate_command, launch_command, status_command,
            resume_command)
