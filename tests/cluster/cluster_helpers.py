"""Helpers for the cluster tests: read a results store back, find a node's trial processes."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

from qgen_sweep.store import ResultsStore

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "cluster"
BIN = Path(sys.executable).parent
QGEN = str(BIN / "qgen-sweep")
RAY_DIR = Path(os.environ.get("QGEN_RAY_DIR", "/tmp/qgen-ray2"))
SKIP_CODE = 77  # the scripts' "cannot run here" exit code


def base_env() -> dict[str, str]:
    """The tests' environment with this venv first on PATH and no inherited Ray address."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "SLURM_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["QGEN_PYTHON"] = sys.executable  # the python ray-up.sh / ray-node.sh run qgen_sweep with
    return env


def parse_assignments(text: str) -> dict[str, str]:
    """KEY=VALUE lines (and `export KEY=VALUE`) printed by the cluster scripts."""
    out = {}
    for line in text.splitlines():
        line = line.removeprefix("export ").strip()
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out[key] = value
    return out


def wait_until(condition: Callable[[], bool], timeout: float, what: str,
               alive: Callable[[], bool] = lambda: True, poll: float = 1.0) -> None:
    """Poll `condition` until true; fail after `timeout` s or as soon as `alive()` is false."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert alive(), f"gave up waiting for {what}: the process under test exited"
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(poll)


def planned_ids(results: Path) -> set[str]:
    """Trial ids in plan.parquet (empty before the launch wrote it)."""
    path = ResultsStore(results).plan_path
    return set(pq.read_table(path, columns=["trial_id"]).column(0).to_pylist()) if path.exists() \
        else set()


def final_rows(results: Path) -> list[dict]:
    """Every readable final trial row of the store."""
    table = ResultsStore(results).read("trials")
    return [] if table is None else table.to_pylist()


def assert_complete_once(results: Path, expected: int) -> list[dict]:
    """Every planned trial has exactly one final row, and the plan has `expected` trials."""
    plan = planned_ids(results)
    rows = final_rows(results)
    ids = [r["trial_id"] for r in rows]
    assert len(plan) == expected, f"plan has {len(plan)} trials, expected {expected}"
    assert len(ids) == len(set(ids)), f"duplicated final rows: {sorted(ids)}"
    assert set(ids) == plan, f"missing: {sorted(plan - set(ids))}, extra: {sorted(set(ids) - plan)}"
    assert ResultsStore(results).corrupt_files() == []
    return rows


def _parent(pid: int) -> int | None:
    try:
        # /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after ')'.
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def descendants(root: int) -> set[int]:
    """Pids of every live process below `root` in the process tree."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _parent(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    out, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def training_processes(root: int) -> list[int]:
    """Ray trial workers below `root` that are running a trial right now.

    Ray renames a worker's process title to `ray::<Actor>.<method>` while it runs a task, so a
    Tune function trainable in the middle of a trial is `ray::ImplicitFunc.train`.
    """
    found = []
    for pid in descendants(root):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            continue
        if title.startswith("ray::ImplicitFunc.train"):
            found.append(pid)
    return found
