"""Wait until a Ray cluster has the expected number of live nodes (run inside batch jobs).

`python -m qgen_sweep.cluster.wait HEAD:PORT NODES [--timeout SECONDS]` exits 0 once NODES nodes
are alive, 1 with a one-line reason at the timeout. `ray` is imported inside the function: the
cluster package itself stays standard-library only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _join(address: str):
    """Import ray and join the cluster at `address` as a driver (once per process)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import logging

    import ray

    if not ray.is_initialized():
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    return ray


def alive_nodes(address: str) -> int:
    """The number of live nodes of the Ray cluster at `address`."""
    return sum(1 for node in _join(address).nodes() if node.get("Alive"))


def describe(address: str) -> str:
    """The cluster's totals for the job log, e.g. "2 node(s) up: 96 CPUs, 8 GPUs"."""
    ray = _join(address)
    total = ray.cluster_resources()
    return (f"{alive_nodes(address)} node(s) up: {total.get('CPU', 0):g} CPUs, "
            f"{total.get('GPU', 0):g} GPUs")


def wait_for_nodes(address: str, expected: int, timeout: float, poll: float = 2.0) -> int:
    """Poll until `expected` nodes are alive; return the count seen last (may be < expected)."""
    deadline = time.monotonic() + timeout
    seen = alive_nodes(address)
    while seen < expected and time.monotonic() < deadline:
        time.sleep(poll)
        seen = alive_nodes(address)
    return seen


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m qgen_sweep.cluster.wait")
    parser.add_argument("address")
    parser.add_argument("nodes", type=int)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds (default 300)")
    ns = parser.parse_args(argv)
    seen = wait_for_nodes(ns.address, ns.nodes, ns.timeout)
    if seen < ns.nodes:
        print(f"error: the Ray cluster at {ns.address} has {seen} of {ns.nodes} nodes after "
              f"{ns.timeout:g} s; see the nodes' Ray logs (ray-node.sh output in the job log)",
              file=sys.stderr)
        sys.exit(1)
    print(f"Ray cluster at {ns.address}: {describe(ns.address)}")


if __name__ == "__main__":
    main()
