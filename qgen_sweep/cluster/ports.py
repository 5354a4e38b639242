"""Ray port blocks per batch job, so that two jobs sharing a node never fight over a port.

Ray opens about ten fixed ports per node (GCS, node manager, object manager, dashboard, agents,
client server, metrics) plus one per worker process; its defaults (6379, 8265, 10002-19999, ...)
are the same for every job, so two jobs on one node collide. Each job gets a block of
`BLOCK_SIZE` consecutive ports in [FIRST_PORT, LAST_PORT): the slot is derived from the job id
(deterministic, so a requeued job asks for the same ports), and when a port of that block is busy
on this node (another job whose id maps to the same slot, or any other program) the next slot is
tried. Each node probes its own ports; only the head's GCS port must be known to the workers, and
they get it from the head's address.

Used by workers/ray-node.sh: `python -m qgen_sweep.cluster.ports --job-id ID --role head` prints
shell assignments (QGEN_NODE_IP, QGEN_RAY_PORT, QGEN_RAY_ARGS) for `eval`.
"""

from __future__ import annotations

import argparse
import shlex
import socket
from collections.abc import Callable
from dataclasses import dataclass

FIRST_PORT = 20000  # above the defaults of Ray (6379, 8265, 10001-19999) and most services
LAST_PORT = 32000  # below Linux's ephemeral range (32768-60999) used by outgoing connections
BLOCK_SIZE = 200  # 10 fixed ports + 190 worker ports: one per Ray worker process on the node
N_SLOTS = (LAST_PORT - FIRST_PORT) // BLOCK_SIZE
_FIXED = 10  # offsets 0-9: named ports below; 10.. BLOCK_SIZE-1: worker processes

ROLES = ("head", "worker")


@dataclass(frozen=True)
class RayPorts:
    """The ports of one Ray node: `base` is the first port of the job's block."""

    base: int

    @property
    def gcs(self) -> int:
        """The head's GCS port: the one workers join with `ray start --address HEAD:PORT`."""
        return self.base

    def all_ports(self, role: str) -> list[int]:
        """Every port a node of `role` binds (head: the whole block; worker: no head-only ports)."""
        head_only = {self.base + 0, self.base + 3, self.base + 7}
        ports = range(self.base, self.base + BLOCK_SIZE)
        return [p for p in ports if role == "head" or p not in head_only]

    def ray_start_args(self, role: str) -> list[str]:
        """Port options for `ray start` on a node of `role` ("head" or "worker")."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        b = self.base
        args = [
            f"--node-manager-port={b + 1}",
            f"--object-manager-port={b + 2}",
            f"--dashboard-agent-listen-port={b + 4}",
            f"--dashboard-agent-grpc-port={b + 5}",
            f"--runtime-env-agent-port={b + 6}",
            f"--metrics-export-port={b + 8}",
            f"--min-worker-port={b + _FIXED}",
            f"--max-worker-port={b + BLOCK_SIZE - 1}",
        ]
        if role == "head":
            args = [f"--port={b}", f"--dashboard-port={b + 3}",
                    f"--ray-client-server-port={b + 7}", *args]
        return args


def slot_for_job(job_id: int) -> int:
    """The job's preferred slot: consecutive job ids get neighbouring, disjoint blocks."""
    if job_id < 0:
        raise ValueError(f"job id must be >= 0, got {job_id}")
    return job_id % N_SLOTS


def ports_for_job(job_id: int) -> RayPorts:
    """The job's preferred port block (what it gets when nothing on the node uses those ports)."""
    return RayPorts(FIRST_PORT + slot_for_job(job_id) * BLOCK_SIZE)


def port_is_free(port: int) -> bool:
    """True when a TCP socket can bind `port` on all interfaces right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


def free_ports_for_job(job_id: int, role: str,
                       is_free: Callable[[int], bool] = port_is_free) -> RayPorts:
    """The first block from the job's own slot on whose ports `is_free` holds for this node."""
    first = slot_for_job(job_id)
    for step in range(N_SLOTS):
        ports = RayPorts(FIRST_PORT + ((first + step) % N_SLOTS) * BLOCK_SIZE)
        if all(is_free(p) for p in ports.all_ports(role)):
            return ports
    raise OSError(f"no free block of {BLOCK_SIZE} ports in {FIRST_PORT}-{LAST_PORT} on this node")


def node_ip() -> str:
    """This node's address as other nodes reach it (the interface of the default route).

    Connecting a UDP socket sends no packet; it only asks the kernel which interface it would use,
    as Ray itself does. Falls back to the host name's address, then to loopback.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("8.8.8.8", 80))
            return sock.getsockname()[0]
        except OSError:
            pass
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def shell_assignments(ports: RayPorts, role: str, ip: str) -> str:
    """`QGEN_NODE_IP`, `QGEN_RAY_PORT` and `QGEN_RAY_ARGS` lines for a shell `eval`."""
    args = " ".join([f"--node-ip-address={ip}", *ports.ray_start_args(role)])
    return (f"QGEN_NODE_IP={shlex.quote(ip)}\nQGEN_RAY_PORT={ports.gcs}\n"
            f"QGEN_RAY_ARGS={shlex.quote(args)}\n")


def main(argv: list[str] | None = None) -> None:
    """`python -m qgen_sweep.cluster.ports --job-id ID --role head|worker`: print assignments."""
    parser = argparse.ArgumentParser(prog="python -m qgen_sweep.cluster.ports",
                                     description="Pick a free Ray port block for a batch job.")
    parser.add_argument("--job-id", type=int, required=True)
    parser.add_argument("--role", choices=ROLES, required=True)
    parser.add_argument("--ip", help="this node's address (default: the default route's)")
    ns = parser.parse_args(argv)
    ports = free_ports_for_job(ns.job_id, ns.role)
    print(shell_assignments(ports, ns.role, ns.ip or node_ip()), end="")


if __name__ == "__main__":
    main()
