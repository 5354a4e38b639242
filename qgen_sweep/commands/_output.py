"""The one `--format` option of every command that prints results.

Every command chooses its formats from one vocabulary, FORMATS: `table` (aligned text for
people; the default), `markdown`, `csv`, `json` and `parquet` (a file, with --output).
Accuracies are fractions wherever a command hands over data (query, JSON summaries, result.json)
and percent wherever it lays numbers out for people (train's lines, progress tables, the report
in every format, whose `units` say so): docs/ARCHITECTURE.md, "CLI conventions".

`--json` is kept, hidden, on the commands that had it before `--format` existed (status, train,
measure, robustness, landscape): it means `--format json`.

No COMMANDS here: this module only helps the command modules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

FORMATS = ("table", "markdown", "csv", "json", "parquet")
_HELP = {
    "table": "aligned text",
    "markdown": "a markdown table",
    "csv": "CSV",
    "json": "JSON for scripts",
    "parquet": "a Parquet file (needs --output)",
}


def format_option(*choices: str, default: str = "table",
                  help_: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`--format` with `choices` (a subset of FORMATS, in that order) as the `fmt` parameter."""
    unknown = set(choices) - set(FORMATS)
    if unknown:
        raise ValueError(f"formats {sorted(unknown)} are not in {FORMATS}")
    described = "; ".join(f"{c} = {_HELP[c]}" for c in choices)
    return click.option("--format", "fmt", type=click.Choice(choices), default=default,
                        show_default=True, help=help_ or f"Output format: {described}.")


def json_alias(function: Callable[..., Any]) -> Callable[..., Any]:
    """The hidden `--json` flag (as `as_json`): the old spelling of `--format json`."""
    return click.option("--json", "as_json", is_flag=True, hidden=True,
                        help="Same as --format json (the older spelling).")(function)


def chosen_format(fmt: str, as_json: bool) -> str:
    """--format, or json when the old --json flag was given."""
    return "json" if as_json else fmt
