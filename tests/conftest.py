"""Shared fixtures. Tests run on the CPU with few threads (the CI machine has 2 cores)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

# Files a test wants a person to look at (browser screenshots): listed at the end of the run.
ARTIFACTS: list[str] = []


def pytest_terminal_summary(terminalreporter) -> None:
    if ARTIFACTS:
        terminalreporter.write_sep("-", "screenshots written by the tests")
        for path in ARTIFACTS:
            terminalreporter.write_line(path)
