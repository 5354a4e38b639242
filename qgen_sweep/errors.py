"""Errors that the CLI turns into one-line messages.

Every message states the rule, the bad value and the way out, e.g.
"bits must be one of 2, 4, 8, 32, but got 3 (use 32 for full precision)".
"""

from __future__ import annotations


class QGenError(Exception):
    """Base class: an expected failure with a message meant for the user."""

    exit_code = 1


class UsageError(QGenError):
    """Bad input from the user (a flag, a spec value, a sweep name): exit code 2."""

    exit_code = 2


class SpecError(UsageError):
    """An invalid sweep spec. `problems` holds one line per problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class DataError(UsageError):
    """A dataset is missing or malformed (says where it looked and how to get it)."""


class StoreError(QGenError):
    """The results store is missing, locked or inconsistent: exit code 1."""


class ResultsDirError(UsageError, StoreError):
    """--results-dir (or the sweep name it defaults from) names no results: a path that does not
    exist, a file, or a folder without sweep results. Bad input, so exit code 2."""


class LeaseLost(QGenError):
    """The launch that started this trial no longer holds the results directory (its driver was
    killed, or a newer launch took the lock): the trial stops and writes nothing more."""


class CheckpointUnreadable(QGenError):
    """A trial's training-state checkpoint did not load. The engine has moved it aside, so the
    next attempt starts the trial afresh; the runner records this attempt as a failure row."""


class Validated:
    """A settings dataclass that refuses to exist with bad values: its `problems()` lists them,
    one line each, and construction raises them as one UsageError (joined by "; ")."""

    def problems(self) -> list[str]:
        """One line per invalid setting (empty when valid)."""
        return []

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise UsageError("; ".join(problems))
