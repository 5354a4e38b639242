"""Run the real `qgen-sweep` CLI in this process (qgen_sweep.cli.main), output captured.

Much faster than a subprocess (no interpreter start, imports already paid), and it runs exactly
the code a user's command runs: click's parsing, the command, main()'s error handling. An
exception that escapes main() (what a user would see as a traceback) is caught and returned as
`code=None` with its traceback in `stderr`, so tests can assert that it never happens.
"""

from __future__ import annotations

import contextlib
import io
import os
import traceback
from dataclasses import dataclass
from pathlib import Path

from qgen_sweep.cli import main


@dataclass(frozen=True)
class CliResult:
    code: int | None  # exit status; None when an exception escaped main()
    stdout: str
    stderr: str

    @property
    def crashed(self) -> bool:
        return self.code is None or "Traceback (most recent call last)" in self.stderr

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_cli(*args: str, cwd: Path | None = None) -> CliResult:
    """`qgen-sweep ARGS...` in-process; returns its exit code and captured output."""
    out, err = io.StringIO(), io.StringIO()
    code: int | None
    previous = Path.cwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            except BaseException:  # noqa: BLE001 - reported to the test as a crash
                err.write(traceback.format_exc())
                code = None
    finally:
        os.chdir(previous)
    return CliResult(code, out.getvalue(), err.getvalue())


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under `root`: relative path -> (mtime_ns, bytes); equal means untouched."""
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
