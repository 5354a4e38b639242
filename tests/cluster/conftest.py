"""Fixtures for the cluster tests: a real one-node SLURM and a real local multi-node Ray cluster.

Both come from the project's own scripts (scripts/cluster/), the ones .ci/run uses, and are torn
down after the tests that need them. slurm-up.sh exits 77 on a machine without root or without a
package registry; the SLURM tests then skip with its printed reason.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator

import pytest
from cluster_helpers import SCRIPTS, SKIP_CODE, base_env, parse_assignments


def run_script(name: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run scripts/cluster/NAME; skip the test when it exits 77 (its reason on stderr)."""
    proc = subprocess.run(["bash", str(SCRIPTS / name), *args], capture_output=True, text=True,
                          env=base_env(), timeout=timeout, check=False)
    if proc.returncode == SKIP_CODE:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Callable[[int], dict[str, str]]]:
    """Start SLURM with 1 node (this machine) or N slurmd on this host; stopped at session end.

    Returns the environment its clients need (SLURM_CONF). Asking for another node count
    restarts the daemons (slurm-up.sh is idempotent for the same count).
    """
    env = base_env()

    def start(nodes: int) -> dict[str, str]:
        env.update(parse_assignments(run_script("slurm-up.sh", str(nodes)).stdout))
        return dict(env)

    try:
        yield start
    finally:
        subprocess.run(["bash", str(SCRIPTS / "slurm-down.sh")], env=env, check=False,
                       capture_output=True, timeout=120)


@pytest.fixture
def ray_cluster() -> Iterator[Callable[[int], dict[str, str]]]:
    """Start a local Ray cluster of 1 or 2 nodes (scripts/cluster/ray-up.sh); stop it after."""

    def start(nodes: int) -> dict[str, str]:
        proc = run_script("ray-up.sh", str(nodes))
        env = base_env()
        env.update(parse_assignments(proc.stdout))
        return env

    try:
        yield start
    finally:
        subprocess.run(["bash", str(SCRIPTS / "ray-down.sh")], check=False, capture_output=True,
                       timeout=120)
