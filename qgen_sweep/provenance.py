"""Provenance and failure rows: what every job that writes to the store records about itself.

One place for the trial runner, `measure`, and any later per-trial job (robustness,
landscape, ...): the code revision and package versions of the driver, the host, the time, and
the FAILURE_SCHEMA row of a failed attempt (error type, first line of the message, the last
lines of the traceback). Standard library only.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import socket
import subprocess
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

TRACEBACK_LINES = 15  # enough to see where an error came from without storing whole logs
MESSAGE_CHARS = 500  # a failure row keeps the first line of the message, cut to this length
PACKAGES = ("qgen-sweep", "torch", "ray", "pyarrow", "numpy")


def now() -> dt.datetime:
    """The current time in UTC (every timestamp of the store is UTC)."""
    return dt.datetime.now(dt.UTC)


def host() -> str:
    """The machine a row is written on."""
    return socket.gethostname()


def versions_json(packages: tuple[str, ...] = PACKAGES) -> str:
    """{"python": ..., "<package>": version or null, ...} as sorted JSON."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return json.dumps(versions, sort_keys=True)


def git_revision() -> str | None:
    """HEAD of the checkout qgen_sweep runs from, with "-dirty" for uncommitted changes."""
    here = Path(__file__).resolve().parent  # the qgen_sweep package
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        diff = ["git", "-C", str(here), "diff", "--quiet", "HEAD", "--", str(here)]
        dirty = subprocess.run(diff, capture_output=True, timeout=10).returncode != 0
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}-dirty" if dirty else rev


def provenance() -> dict[str, Any]:
    """Code revision and package versions, computed once in the driver and shipped to workers."""
    return {"git_rev": git_revision(), "versions": versions_json()}


def failure_row(trial_id: str, bits: int, attempt: int, error: BaseException | str,
                error_type: str | None = None) -> dict[str, Any]:
    """A FAILURE_SCHEMA row for one failed attempt: an exception, or a message from the driver
    (a worker that died before it could write its own row)."""
    if isinstance(error, BaseException):
        lines = traceback.format_exception(type(error), error, error.__traceback__)
        tail = "".join(lines).splitlines()[-TRACEBACK_LINES:]
        message, error_type = str(error), type(error).__name__
    else:
        tail, message = [], error
    first = message.strip().splitlines()[0] if message.strip() else "(no message)"
    return {"trial_id": trial_id, "bits": bits, "attempt": attempt,
            "error_type": error_type or "Error", "message": first[:MESSAGE_CHARS],
            "traceback_tail": "\n".join(tail), "host": host(), "time": now()}
