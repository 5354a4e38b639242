"""`qgen-sweep dashboard`: serve the live, read-only web page of a sweep on this machine.

    qgen-sweep dashboard smoke
    qgen-sweep dashboard --results-dir runs --port 9000

Heavy libraries (duckdb, numpy) are imported inside the command.
"""

from __future__ import annotations

from pathlib import Path

import click

from qgen_sweep.errors import UsageError


@click.command("dashboard")
@click.argument("sweep", required=False)
@click.option("--results-dir", type=click.Path(path_type=Path), default=None,
              help="A sweep's results directory, or a folder of them (every sweep side by "
                   "side). Default: ./runs/SWEEP.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="TCP port (0 = any free port).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. The page has no login: keep 127.0.0.1 and reach it from "
                   "elsewhere through an SSH tunnel (ssh -L 8765:127.0.0.1:8765 HOST).")
@click.option("--verbose", is_flag=True, help="Log every request to stderr.")
def dashboard_command(sweep: str | None, results_dir: Path | None, port: int, host: str,
                      verbose: bool) -> None:
    """Serve a live web page of SWEEP's results on this machine, read-only.

    Progress by precision with the running trials' epochs, Table 1 and the paired table, gap
    by precision, loss curves of the trials you pick, the measures (Table 3) and parallel
    coordinates over the grid's axes. It refreshes itself when a trial's row lands, so it can
    stay open beside a launch; it needs no internet (everything ships with qgen-sweep).

    \b
    Examples:
      qgen-sweep dashboard smoke                         # http://127.0.0.1:8765/
      qgen-sweep dashboard --results-dir runs --port 0   # every sweep under runs/, any port
    """
    from qgen_sweep.commands.analysis import resolve_results_dir
    from qgen_sweep.dashboard.data import DashboardData
    from qgen_sweep.dashboard.server import DashboardServer

    folder = resolve_results_dir(sweep, results_dir)
    data = DashboardData(folder)  # a ResultsDirError (exit 2) when there are no results
    try:
        server = DashboardServer(data, host, port, verbose=verbose)
    except OSError as error:
        raise UsageError(f"cannot listen on {host}:{port} ({error.strerror}); pick another "
                         f"--port (0 = any free port)") from None
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: serving on {host}: anyone who reaches this address sees the "
                   "results (the page has no login)", err=True)
    click.echo(f"dashboard of {folder}: {server.url} (read-only; Ctrl-C stops)", err=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("dashboard stopped")
    finally:
        server.server_close()


COMMANDS = (dashboard_command,)
