"""Who owns a trial or a lock: host, pid and the process's start time (so a reused pid is not taken for the owner).

A journal file has no heartbeat, so on one machine the only sure sign that a RUNNING trial or a held lock was left
behind by a dead process is that the process is gone. The start time (clock ticks since boot, from /proc) tells a
live owner from a later process that happens to get the same pid.
"""

from __future__ import annotations

import functools
import os
import socket


@functools.cache
def host() -> str:
    return socket.gethostname()


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), None when unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def me() -> str:
    """This process as ``host:pid:start``."""
    pid = os.getpid()
    return f"{host()}:{pid}:{start_ticks(pid) or 0}"


def parse(owner: str) -> tuple[str, int, int] | None:
    try:
        name, pid, start = str(owner).rsplit(":", 2)
        return name, int(pid), int(start)
    except ValueError:
        return None


def is_alive(owner: str) -> bool | None:
    """True when the owner process runs, False when it is gone, None when this machine cannot tell (another host,
    or an owner string it does not understand): then only a heartbeat or a time threshold can decide."""
    parsed = parse(owner)
    if parsed is None:
        return None
    name, pid, start = parsed
    if name != host():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    ticks = start_ticks(pid)
    if ticks is None:
        return os.path.exists(f"/proc/{pid}") if os.path.isdir("/proc/self") else True
    if start and ticks != start:
        return False  # the pid was reused by a later process
    # A zombie (killed, not yet reaped by its parent) holds nothing: it cannot write any more.
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read().decode("ascii", "replace")
        if stat[stat.rfind(")") + 2 :].split()[0] in ("Z", "X"):
            return False
    except OSError:
        return False
    return True
