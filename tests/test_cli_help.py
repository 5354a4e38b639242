"""Every command's --help has an example and describes every option (the click group walked)."""

from __future__ import annotations

import re
import subprocess
import sys

import click
import pytest

from qgen_sweep.cli import cli

QGEN = [sys.executable, "-m", "qgen_sweep.cli"]
COMMANDS = sorted(cli.commands)


def _help(*args: str) -> str:
    proc = subprocess.run([*QGEN, *args, "--help"], capture_output=True, text=True, timeout=60,
                          env={"COLUMNS": "100", "PATH": ""})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _visible_options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option) and not p.hidden]


def test_the_group_lists_every_command_with_an_example():
    shown = _help()
    assert "Typical session:" in shown and "qgen-sweep launch smoke" in shown
    assert len(COMMANDS) >= 14
    for name in COMMANDS:
        assert re.search(rf"^\s+{re.escape(name)}\b", shown, re.MULTILINE), name


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_an_example_and_every_option_a_description(name):
    command = cli.commands[name]
    shown = _help(name)
    examples = shown.split("Examples:", 1)
    assert len(examples) == 2, f"`qgen-sweep {name} --help` shows no Examples: section"
    assert re.search(rf"^\s+qgen-sweep {re.escape(name)}\b", examples[1], re.MULTILINE), (
        f"no example of `qgen-sweep {name}` in its --help")
    undescribed = [p.opts[0] for p in _visible_options(command) if not (p.help or "").strip()]
    assert not undescribed, f"{name}: options without a description: {undescribed}"
    flat = " ".join(shown.split())
    for option in _visible_options(command):
        assert option.opts[-1] in shown, (name, option.opts)
        first_words = " ".join(option.help.split()[:3])
        assert first_words in flat, (name, option.opts, first_words)
