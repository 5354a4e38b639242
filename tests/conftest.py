"""Shared fixtures. Tests run on the CPU with few threads (the CI machine has 2 cores)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

def pytest_terminal_summary(terminalreporter) -> None:
    """List the files a test wants a person to look at (browser screenshots)."""
    from browser_helpers import ARTIFACTS

    if ARTIFACTS:
        terminalreporter.write_sep("-", "screenshots written by the tests")
        for path in ARTIFACTS:
            terminalreporter.write_line(path)
