"""CPU used by the processes of a run, read from /proc: the server's process
tree, PostgreSQL's, the load generator's and the database hop's relay, each
apart (``--cpu``, the crowd).

A process tree's CPU is its live processes' own plus what its root has reaped:
a PostgreSQL backend that exits between two readings moves from the first sum
to the second, so the difference of two readings is what the tree used between
them, whoever exited.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, text

_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    found = [pid]
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        child, parent = map(int, line.split())
        children.setdefault(parent, []).append(child)
    i = 0
    while i < len(found):
        found.extend(children.get(found[i], []))
        i += 1
    return found


def process_cpu_s(pid: int, children_too: bool = False) -> float:
    """CPU seconds of a process (and of the children it reaped) from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children_too:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks * _TICK_S


def tree_cpu_s(root: int) -> float:
    """CPU seconds used by a process tree: the root with every child it reaped,
    and the live processes below it."""
    return sum(process_cpu_s(pid, children_too=pid == root) for pid in descendants(root))


def postmaster_pid(engine: Engine) -> int | None:
    """The database server's main process, when it runs on this machine and the
    role may read its data directory's name (else None: not measured)."""
    try:
        with engine.connect() as conn:
            data_dir = conn.execute(text("SHOW data_directory")).scalar_one()
        return int(Path(data_dir, "postmaster.pid").read_text().split()[0])
    except Exception:
        return None


@dataclass
class CpuMeter:
    """CPU seconds of the server's trees and the database's between start() and stop()."""

    server_pids: list[int]
    database_pid: int | None
    relay_pid: int | None = None  # the database's hop (flashsale/hop.py), if any
    server_s: float = 0.0
    database_s: float | None = None
    relay_s: float | None = None

    def start(self) -> CpuMeter:
        self.server_s = sum(tree_cpu_s(pid) for pid in self.server_pids)
        self.database_s = tree_cpu_s(self.database_pid) if self.database_pid else None
        self.relay_s = process_cpu_s(self.relay_pid) if self.relay_pid else None
        return self

    def stop(self) -> CpuMeter:
        self.server_s = sum(tree_cpu_s(pid) for pid in self.server_pids) - self.server_s
        if self.database_pid and self.database_s is not None:
            self.database_s = tree_cpu_s(self.database_pid) - self.database_s
        if self.relay_pid and self.relay_s is not None:
            self.relay_s = process_cpu_s(self.relay_pid) - self.relay_s
        return self
