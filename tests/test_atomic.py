"""Atomic writes: the destination is either the old file or the whole new one."""

from __future__ import annotations

from pathlib import Path

import pytest

from qgen_sweep.atomic import atomic_open, write_text_atomic


def test_write_replaces_whole_file_and_leaves_no_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "result.json"
    write_text_atomic(target, "old")
    write_text_atomic(target, "new content")
    assert target.read_text() == "new content"
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.json"]


def test_failure_inside_the_block_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "plan.parquet"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_open(target) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["plan.parquet"]
