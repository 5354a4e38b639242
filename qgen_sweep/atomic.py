"""Atomic file writes, shared by the store, the trial engine and the CLI.

A write goes to a temporary file in the destination's folder, is flushed and fsynced, then
`os.replace`d over the destination: readers (and a crash or a SIGKILL at any moment) see either the
old file or the whole new one, never a torn one. The temporary name is unique per writer
(mkstemp), so concurrent writers never clobber each other's half-written files. Standard library
only: importing it costs nothing.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_open(path: Path, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file to write `path` through; it replaces `path` when the block ends.

    If the block raises, the temporary file is removed and `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def remove_stale_temp_files(folder: Path, recursive: bool = True) -> int:
    """Delete the temporary files that killed writers left under `folder` (in `folder` alone
    when not `recursive`); return how many.

    Only call this while holding the lock that excludes every writer of `folder` (a live writer's
    temporary file would go too). A SIGKILL between mkstemp and os.replace is the only way such a
    file survives; its destination still holds the old content or nothing, so nothing is lost.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for tmp in (folder.rglob if recursive else folder.glob)(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def write_text_atomic(path: Path, text: str) -> None:
    """Replace `path`'s content with `text` (UTF-8) atomically."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
