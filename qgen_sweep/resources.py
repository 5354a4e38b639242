"""Locate the shipped data folders: sweeps/, analysis/ (SQL) and workers/ (cluster templates).

In a source checkout (editable install) they are the repository's top-level folders; in a wheel
they are copied to qgen_sweep/_data/ by setup.py.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Return the folder `name` ("sweeps", "analysis" or "workers")."""
    for candidate in (_PACKAGE_DIR.parent / name, _PACKAGE_DIR / "_data" / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"qgen-sweep data folder {name!r} not found next to {_PACKAGE_DIR}")
