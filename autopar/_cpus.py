"""The CPU budget: how many CPUs this process may really keep busy, and where that came from.

    affinity   os.process_cpu_count() (3.13+: the affinity mask, or PYTHON_CPU_COUNT),
               else len(os.sched_getaffinity(0)), else os.cpu_count()
    quota      the least CPU quota of this process's cgroup and its parents:
               v2  cpu.max              "<quota> <period>" or "max <period>"
               v1  cpu.cfs_quota_us / cpu.cfs_period_us   (a quota of -1: none)
    budget     min(affinity, ceil(quota)), at least 1

A quota is rounded up, as loky does (loky PR #355; CPython issue 80235): 1.5 CPUs run
2 workers, each busy three quarters of the time, rather than 1 that leaves half a CPU
idle. A container limited to 2 CPUs on a 64-core host sees all 64 in its affinity mask and
only the quota says 2.

The files are read under ``root`` ("/" in use; tests point it at a fake tree).
"""

from __future__ import annotations

import math
import os
import sys
import threading
from typing import Iterator, List, NamedTuple, Optional, Tuple


class CpuBudget(NamedTuple):
    """The CPUs to plan for, and a line saying where the number came from."""

    cpus: int
    source: str


def affinity() -> Tuple[int, str]:
    """CPUs the OS lets this process run on, and the call that said so."""
    process_cpu_count = getattr(os, "process_cpu_count", None)
    if process_cpu_count is not None:
        return max(1, process_cpu_count() or 1), "os.process_cpu_count()"
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0))), "os.sched_getaffinity(0)"
    return max(1, os.cpu_count() or 1), "os.cpu_count()"


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _own_cgroups(root: str) -> List[Tuple[str, str]]:
    """(controllers, path) of each line of /proc/self/cgroup, e.g. ("cpu,cpuacct", "/x")."""
    text = _read(os.path.join(root, "proc/self/cgroup")) or ""
    found = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            found.append((parts[1], parts[2]))
    return found


def _levels(mount: str, path: str) -> Iterator[str]:
    """The cgroup directory of ``path`` under ``mount``, then each parent up to the mount
    (a limit on a parent holds for its children). Inside a container the path may name
    the host's hierarchy, absent here: then only the mount itself is found."""
    parts = [p for p in path.split("/") if p and p != ".."]
    for depth in range(len(parts), -1, -1):
        level = os.path.join(mount, *parts[:depth])
        if os.path.isdir(level):
            yield level


def _quota(quota: str, period: str) -> Optional[float]:
    """CPUs a quota allows; None for no limit ("max", -1) or text that is not a quota."""
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _v2_limit(root: str) -> Optional[Tuple[float, str]]:
    mount = os.path.join(root, "sys/fs/cgroup")
    paths = [path for controllers, path in _own_cgroups(root) if controllers == ""] or ["/"]
    best: Optional[Tuple[float, str]] = None
    for level in _levels(mount, paths[0]):
        text = _read(os.path.join(level, "cpu.max"))
        fields = text.split() if text else []
        cpus = _quota(fields[0], fields[1]) if len(fields) == 2 else None
        if cpus is not None and (best is None or cpus < best[0]):
            where = os.path.join("/sys/fs/cgroup", os.path.relpath(level, mount), "cpu.max")
            best = cpus, f"cgroup v2 {os.path.normpath(where)} {fields[0]}/{fields[1]}"
    return best


def _v1_limit(root: str) -> Optional[Tuple[float, str]]:
    paths = [path for ctl, path in _own_cgroups(root) if "cpu" in ctl.split(",")] or ["/"]
    best: Optional[Tuple[float, str]] = None
    for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        mount = os.path.join(root, "sys/fs/cgroup", name)
        for level in _levels(mount, paths[0]):
            quota = _read(os.path.join(level, "cpu.cfs_quota_us"))
            period = _read(os.path.join(level, "cpu.cfs_period_us"))
            cpus = _quota(quota, period) if quota and period else None
            if cpus is not None and (best is None or cpus < best[0]):
                where = os.path.join("/sys/fs/cgroup", name, os.path.relpath(level, mount))
                best = cpus, f"cgroup v1 {os.path.normpath(where)} cfs {quota}/{period}"
        if best is not None:
            return best
    return None


def read(root: str = "/", cpus: Optional[Tuple[int, str]] = None) -> CpuBudget:
    """The CPU budget from the files under ``root``, within ``cpus`` (default: :func:`affinity`).

    A cgroup v2 quota is looked for first; a v1 quota only where no v2 one is set (a
    hybrid host mounts both, with the cpu controller on one of them).
    """
    count, source = cpus if cpus is not None else affinity()
    limit = _v2_limit(root) or _v1_limit(root)
    if limit is None:
        return CpuBudget(count, f"{source} = {count}; no cgroup CPU quota")
    quota, where = limit
    allowed = max(1, math.ceil(quota))
    if allowed >= count:
        return CpuBudget(count, f"{source} = {count}; {where} allows {quota:g}")
    return CpuBudget(allowed, f"{where} = {quota:g} CPUs -> {allowed} (of {count}: {source})")


def running_now(root: str = "/") -> Optional[int]:
    """Tasks running or ready to run on the whole system at this instant, the caller
    included (the fourth field of /proc/loadavg, "running/all"); None where unknown.

    A count under one cannot be true (the caller runs as it reads): some sandboxes write
    zeros there, and reading them as idle cores would count every core idle."""
    text = _read(os.path.join(root, "proc/loadavg")) or ""
    try:
        running = int(text.split()[3].split("/")[0])
    except (IndexError, ValueError):
        return None
    return running if running >= 1 else None


def gil_enabled() -> bool:
    """False on a free-threaded CPython (3.13t and later) running with the GIL disabled:
    there, Python code runs on threads in parallel."""
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


# _lock guards _budget: read once per program (a quota or affinity set later is not seen).
_lock = threading.Lock()
_budget: Optional[CpuBudget] = None


def budget() -> CpuBudget:
    """This process's CPU budget, read on first use and kept."""
    global _budget
    with _lock:
        if _budget is None:
            _budget = read()
        return _budget


def _fresh_lock_after_fork() -> None:
    # A lock held mid-fork would stay held in the child. The budget is kept: a child
    # shares its parent's cgroup and affinity.
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_lock_after_fork)
