"""Run a command under a pseudo-terminal (what a person at a terminal sees) or a pipe (a log)."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time
from collections.abc import Callable

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_in_pty(args: list[str], env: dict[str, str], timeout: float = 180,
               while_running: Callable[[str], None] | None = None) -> tuple[int, str]:
    """Run `args` with stdin/stdout/stderr on a fresh pseudo-terminal (120 columns); return the
    exit code and everything it wrote, escape sequences included. `while_running(text so far)`
    is called after each read (a test may act on what it has seen)."""
    master, slave = pty.openpty()
    env = env | {"COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color"}
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env,
                            close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed the terminal (Linux: EIO)
                    break
                if not data:
                    break
                chunks.append(data)
                if while_running is not None:
                    while_running(b"".join(chunks).decode(errors="replace"))
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
        code = proc.wait(timeout=30)
    finally:
        os.close(master)
    return code, b"".join(chunks).decode(errors="replace")


def screen_lines(text: str) -> list[str]:
    """The lines a terminal showed at some moment: escape sequences removed, split at CR / LF."""
    return [line for line in re.split(r"[\r\n]+", ANSI.sub("", text)) if line.strip()]
