"""The `qgen-sweep` command line.

Commands live in qgen_sweep/commands/<topic>.py; each module lists its click commands in a
module-level `COMMANDS` tuple and is discovered here, so adding a command never touches this file.
Command modules import torch / ray / duckdb inside the command functions, never at module level,
so `qgen-sweep --help` starts fast.

Library errors (qgen_sweep.errors.QGenError) become one line on stderr ("error: ...") with exit
code 2 for bad input and 1 for runtime failures; the traceback is shown only with --debug.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import traceback

import click

from qgen_sweep import __version__, commands
from qgen_sweep.errors import QGenError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="qgen-sweep")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Run the QGen study: sweeps of LSQ quantization-aware NiN trainings.

    \b
    Typical session:
      qgen-sweep list                      # the sweeps that ship with qgen-sweep
      qgen-sweep validate cifar10-grid     # plan and check, run nothing
      qgen-sweep launch smoke              # run every trial that has no result yet
      qgen-sweep status smoke              # done / running / failed / diverged by bit width
      qgen-sweep report smoke              # per-precision generalization tables
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _register_commands() -> None:
    for module_info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{module_info.name}")
        for command in getattr(module, "COMMANDS", ()):
            cli.add_command(command)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI and turn QGenError into a one-line message."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="qgen-sweep", standalone_mode=False)
    except QGenError as error:
        if debug:
            traceback.print_exc()
        for line in str(error).splitlines() or [type(error).__name__]:
            click.echo(f"error: {line}", err=True)
        sys.exit(error.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except click.exceptions.Exit as exit_:
        sys.exit(exit_.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(0)


if __name__ == "__main__":
    main()
