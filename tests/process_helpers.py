"""Process-tree helpers for the tests that SIGKILL a driver (read from /proc; no psutil)."""

from __future__ import annotations

from pathlib import Path


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (e.g. the Ray processes a driver started)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def alive(pids: set[int]) -> set[int]:
    """The pids that still run and could touch the store: zombies count as gone, and so do
    Ray's dashboard / runtime-env agents, which linger a minute or two after their raylet."""
    running = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            name = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except (OSError, IndexError):
            continue
        if state != "Z" and not name.endswith("Agent"):
            running.add(pid)
    return running


def pause_after_each_posthoc_job(folder: Path, seconds: float = 60) -> dict[str, str]:
    """The environment for a post-hoc run (measure, robustness, landscape) whose jobs each pause
    after writing their result (qgen_sweep.backends.faults), so a test that kills the run once
    the first result is on disk lands part-way however fast this machine computes."""
    import json

    from qgen_sweep.backends.faults import ENV_VAR, POSTHOC

    path = Path(folder) / "pause-faults.json"
    path.write_text(json.dumps({"faults": [{"trial_id": "*", "epoch": POSTHOC, "times": 1,
                                            "action": "pause", "seconds": seconds}]}))
    return {ENV_VAR: str(path)}
