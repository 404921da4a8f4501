"""How many CPU threads torch uses: the cores this process may use, minus those busy now.

torch's default is one thread per core the machine has. That is right on an idle machine
and badly wrong on a shared one: OpenMP threads wait for each other at the end of every
parallel region, so when another process holds one core the thread scheduled there
arrives late and every region waits for it. On 2 cores with one kept busy by an
unrelated process, training took 3.0x (5 cnn1d members) to 3.8x (one) the
time of one thread with torch's default (``benchmarks/threads.py`` measures it). So the command line chooses the
thread count from the cores it may use (CPU affinity, the cgroup CPU quota) minus the
cores other processes keep busy when it starts (:func:`choose_threads`, a pure function,
and :func:`measure`).

``--threads N`` / ``ENSEMBLEKIT_THREADS=N`` override the choice; it is recorded in every
``results.json`` (``provenance.thread_policy``). Busy cores are measured from
``/proc/stat`` over a short window rather than the load average, which lags by minutes
(right after one run ends, the next would see a busy machine that is idle).

OpenMP's passive wait policy (``OMP_WAIT_POLICY=PASSIVE``: idle threads sleep instead of
spinning) was measured too and is *not* set: next to a busy core it rescues two threads
but one thread is as fast, and on a quiet machine it made training 30-45% slower
(docs/cpu.md). Set it yourself before starting Python if it helps your workload; the
value in force is recorded with the thread count.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ThreadChoice", "choose_threads", "configure_threads", "current_choice", "measure", "cgroup_cpu_quota", "busy_cpus"]

@dataclass(frozen=True)
class ThreadChoice:
    """A thread count and why: ``source`` is ``--threads``, ``ENSEMBLEKIT_THREADS``,
    ``auto`` (this policy) or ``caller`` (torch's setting, left as the caller made it)."""

    threads: int
    source: str
    cores: int | None = None  # cores this process may use (affinity, quota)
    busy: float | None = None  # cores other processes kept busy when it started
    omp_wait_policy: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose_threads(cores: int, affinity: int | None = None, quota: float | None = None, busy: float = 0.0) -> int:
    """The thread count for a process that may use ``min(cores, affinity, ceil(quota))``
    cores while other processes keep ``busy`` cores busy (a float: 0.6 is one core at 60%).

    A core counts as taken when another process uses it at least half of the time
    (``round(busy)``, halves up); at least one thread is always left. A cgroup quota caps
    the count but is not reduced by ``busy``: the busy cores are the machine's, the quota
    this process's share of them.

    >>> choose_threads(2, busy=0.0), choose_threads(2, busy=0.98), choose_threads(2, busy=2.0)
    (2, 1, 1)
    >>> choose_threads(64, affinity=8, busy=0.4), choose_threads(64, quota=2.5, busy=10.0)
    (8, 3)
    """
    if cores < 1:
        raise ValueError(f"cores must be >= 1, got {cores}")
    free = min(cores, affinity or cores) - math.floor(max(busy, 0.0) + 0.5)
    if quota is not None and quota > 0:
        free = min(free, math.ceil(quota))
    return max(1, free)


def cgroup_cpu_quota(root: str = "/sys/fs/cgroup") -> float | None:
    """The CPU quota of this process's cgroup in cores (``None`` when unlimited or unknown);
    cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``."""
    try:
        with open(os.path.join(root, "cpu.max")) as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(root, "cpu", "cpu.cfs_quota_us")) as f:
            quota_us = int(f.read())
        with open(os.path.join(root, "cpu", "cpu.cfs_period_us")) as f:
            period_us = int(f.read())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def _cpu_times(cpus: set[int] | None, path: str = "/proc/stat") -> dict[int, tuple[int, int]] | None:
    """``cpu -> (busy jiffies, total jiffies)`` from ``/proc/stat`` (``None`` off Linux)."""
    try:
        with open(path) as f:
            lines = f.readlines()
    except OSError:
        return None
    out = {}
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        cpu = int(name[3:])
        if cpus is not None and cpu not in cpus:
            continue
        values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
        idle = values[3] + values[4]
        out[cpu] = (sum(values) - idle, sum(values))
    return out


def busy_cpus(cpus: set[int] | None = None, window_s: float = 0.2, path: str = "/proc/stat") -> float | None:
    """How many of ``cpus`` other processes keep busy, measured over ``window_s`` seconds
    (this process sleeps meanwhile, so it does not count itself); ``None`` off Linux."""
    before = _cpu_times(cpus, path)
    if not before:
        return None
    time.sleep(window_s)
    after = _cpu_times(cpus, path) or {}
    busy = 0.0
    for cpu, (b0, t0) in before.items():
        b1, t1 = after.get(cpu, (b0, t0))
        if t1 > t0:
            busy += (b1 - b0) / (t1 - t0)
    return busy


def measure(window_s: float = 0.2) -> ThreadChoice:
    """The policy's choice for this process now (it samples ``/proc/stat`` for ``window_s``)."""
    cores = os.cpu_count() or 1
    try:
        affinity_set: set[int] | None = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        affinity_set = None
    quota = cgroup_cpu_quota()
    busy = busy_cpus(affinity_set, window_s)
    threads = choose_threads(cores, len(affinity_set) if affinity_set else None, quota, busy or 0.0)
    usable = min(cores, len(affinity_set) if affinity_set else cores, math.ceil(quota) if quota else cores)
    return ThreadChoice(threads, "auto", usable, None if busy is None else round(busy, 2), os.environ.get("OMP_WAIT_POLICY"))


_choice: ThreadChoice | None = None


def configure_threads(threads: int | None = None, source: str = "caller") -> ThreadChoice:
    """Apply a thread count to torch and remember it for ``results.json``.

    ``threads=None`` runs the policy once per process (later calls reuse that choice, so
    several runs in one process use the same count and give the same numbers).
    """
    global _choice
    import torch

    if threads is not None:
        _choice = ThreadChoice(int(threads), source, omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"))
    elif _choice is None or _choice.source != "auto":
        _choice = measure()
    torch.set_num_threads(_choice.threads)
    return _choice


def current_choice() -> dict[str, Any]:
    """The recorded choice, or torch's current count when nothing was configured."""
    import torch

    if _choice is not None and _choice.threads == torch.get_num_threads():
        return _choice.as_dict()
    return ThreadChoice(torch.get_num_threads(), "caller", omp_wait_policy=os.environ.get("OMP_WAIT_POLICY")).as_dict()
