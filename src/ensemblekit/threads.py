"""How many CPU threads torch uses: the cores this process may use, minus those busy now.

torch's default is one thread per core. On a shared machine that is badly wrong: OpenMP
threads wait for each other at the end of every parallel region, so when another process
holds a core the thread scheduled there arrives late and every region waits for it (on 2
cores with one busy, 3.0-3.8x the time of one thread; ``benchmarks/threads.py``). So the
command line takes the cores it may use (CPU affinity, the CPU quota of its own cgroup)
minus those other processes keep busy (:func:`choose_threads`, a pure function, and
:func:`measure`), and keeps following them while it trains (:class:`ThreadGovernor`):
about every 2 s of training, at a step boundary, it compares the machine's busy time in
``/proc/stat`` (not the load average, which lags by minutes) with this process's own CPU
time, and changes torch's thread count when the cores left free changed, so a job
started next to a running one no longer leaves it a thread too many. Each change is an
``"event": "threads"`` line of the run's ``metrics.jsonl``.

``--threads N``, ``ENSEMBLEKIT_THREADS=N`` and ``configure_threads(N)`` pin the count: it
is then never changed. Float sums on CPU depend on the thread count, so a run whose count
followed the load can round differently from a rerun: pin it for bit-identical reruns.
The choice is recorded in ``results.json`` (``provenance.thread_policy``).

OpenMP's passive wait policy (``OMP_WAIT_POLICY``) is left to the user: it was measured
and is not set (docs/cpu.md); the value in force is recorded with the thread count.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

__all__ = ["ThreadChoice", "choose_threads", "configure_threads", "current_choice", "measure", "cgroup_cpu_quota", "busy_cpus",
           "Probes", "Machine", "ThreadGovernor", "follow_load", "thread_changes"]


@dataclass(frozen=True)
class ThreadChoice:
    """A thread count and why: ``source`` is ``--threads``, ``ENSEMBLEKIT_THREADS``,
    ``auto`` (this policy) or ``caller`` (torch's setting, left as the caller made it)."""

    threads: int
    source: str
    cores: int | None = None  # cores this process may use (affinity, quota)
    busy: float | None = None  # cores other processes kept busy at the last measurement
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


# ------------------------------------------------------------------ probes: where the machine is read
def _affinity() -> set[int] | None:
    try:
        return os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return None


def _clk_tck() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): no /proc/stat either
        return 100


@dataclass(frozen=True)
class Probes:
    """Where the policy reads the machine (tests point these at fake files and functions)."""

    cpu_count: Callable[[], int | None] = os.cpu_count
    affinity: Callable[[], set[int] | None] = _affinity
    proc_stat: str = "/proc/stat"
    self_cgroup: str = "/proc/self/cgroup"
    cgroup_root: str = "/sys/fs/cgroup"
    cpu_time: Callable[[], float] = time.process_time  # this process's CPU seconds, all its threads
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    clk_tck: int = _clk_tck()  # /proc/stat counts in 1/clk_tck seconds


PROBES = Probes()


def _v2_quota(folder: str) -> float | None:
    """Cores allowed by ``folder/cpu.max`` (``quota period``; ``None``: ``max``, missing, unreadable)."""
    try:
        with open(os.path.join(folder, "cpu.max")) as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _v1_quota(folder: str) -> float | None:
    """Cores allowed by ``folder/cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (``None``: -1, missing)."""
    try:
        with open(os.path.join(folder, "cpu.cfs_quota_us")) as f:
            quota_us = int(f.read())
        with open(os.path.join(folder, "cpu.cfs_period_us")) as f:
            period_us = int(f.read())
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


def _self_cgroups(path: str) -> list[tuple[str, str, str]] | None:
    """``(hierarchy id, controllers, cgroup path)`` per line of ``/proc/self/cgroup``."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    return [tuple(line.split(":", 2)) for line in lines if line.count(":") >= 2]  # type: ignore[misc]


def _walk_up(base: str, cgroup: str) -> list[str]:
    """``base/a/b``, ``base/a``, ``base`` for the cgroup path ``/a/b``."""
    parts = [p for p in cgroup.split("/") if p and p not in (".", "..")]
    return [os.path.join(base, *parts[:i]) for i in range(len(parts), -1, -1)]


def cgroup_cpu_quota(root: str = "/sys/fs/cgroup", self_cgroup: str = "/proc/self/cgroup") -> float | None:
    """The CPU quota of this process's cgroup in cores (``None`` when unlimited or unknown).

    The cgroup is read from ``self_cgroup``: under v2 (``0::/a/b``) the ``cpu.max`` of
    ``root/a/b`` and of every parent up to ``root``; under v1 (a ``cpu`` controller line,
    e.g. ``4:cpu,cpuacct:/a/b``) ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` of the same
    folders under the controller's mount (``root/cpu,cpuacct`` or ``root/cpu``). The
    smallest quota found wins (a parent's limit applies to its children). Folders that do
    not exist are skipped: in a container the path is often the host's, while its own
    cgroup is mounted at ``root``. Without ``self_cgroup`` only ``root`` is read.
    """
    entries = _self_cgroups(self_cgroup)
    v1 = [(ctrl, path) for _, ctrl, path in entries or [] if "cpu" in ctrl.split(",")]
    if v1:
        ctrl, path = v1[0]
        mounts = [os.path.join(root, m) for m in (ctrl, "cpu", "cpu,cpuacct") if os.path.isdir(os.path.join(root, m))]
        quotas = [_v1_quota(folder) for folder in _walk_up(mounts[0], path)] if mounts else []
    else:
        path = next((p for hid, ctrl, p in entries or [] if hid == "0" and not ctrl), "/")
        quotas = [_v2_quota(folder) for folder in _walk_up(root, path)]
        if entries is None:  # no /proc/self/cgroup: the root, v2 or v1
            quotas.append(_v1_quota(os.path.join(root, "cpu")))
    found = [q for q in quotas if q is not None]
    return min(found) if found else None


def _cpu_times(cpus: set[int] | frozenset[int] | None, path: str = "/proc/stat") -> dict[int, tuple[int, int]] | None:
    """``cpu -> (busy jiffies, total jiffies)`` from ``/proc/stat`` (``None`` off Linux)."""
    try:
        with open(path) as f:
            lines = f.readlines()
    except OSError:
        return None
    out = {}
    for line in lines:
        name, *fields = line.split() or [""]
        if not name.startswith("cpu") or name == "cpu":
            continue
        cpu = int(name[3:])
        if cpus is not None and cpu not in cpus:
            continue
        values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
        idle = values[3] + values[4]
        out[cpu] = (sum(values) - idle, sum(values))
    return out


def busy_cpus(cpus: set[int] | None = None, window_s: float = 0.2, path: str = "/proc/stat",
              sleep: Callable[[float], None] | None = None) -> float | None:
    """How many of ``cpus`` other processes keep busy, measured over ``window_s`` seconds
    (this process sleeps meanwhile, so it does not count itself); ``None`` off Linux."""
    before = _cpu_times(cpus, path)
    if not before:
        return None
    (sleep or time.sleep)(window_s)
    after = _cpu_times(cpus, path) or {}
    busy = 0.0
    for cpu, (b0, t0) in before.items():
        b1, t1 = after.get(cpu, (b0, t0))
        if t1 > t0:
            busy += (b1 - b0) / (t1 - t0)
    return busy


@dataclass(frozen=True)
class Machine:
    """The cores this process may use: the machine's, its affinity set, its cgroup quota."""

    cores: int
    cpus: frozenset[int] | None = None  # the affinity set (None: unknown, every core)
    quota: float | None = None  # cores, from the cgroup

    @classmethod
    def probe(cls, probes: Probes | None = None) -> "Machine":
        """The machine as ``probes`` (default :data:`PROBES`) read it now."""
        p = probes or PROBES
        cpus = p.affinity()
        return cls(p.cpu_count() or 1, frozenset(cpus) if cpus else None, cgroup_cpu_quota(p.cgroup_root, p.self_cgroup))

    @property
    def usable(self) -> int:
        """``min(cores, affinity, ceil(quota))``."""
        n = min(self.cores, len(self.cpus) if self.cpus else self.cores)
        return min(n, math.ceil(self.quota)) if self.quota else n

    def threads(self, busy: float) -> int:
        """:func:`choose_threads` for this machine with ``busy`` cores taken by others."""
        return choose_threads(self.cores, len(self.cpus) if self.cpus else None, self.quota, busy)


def measure(window_s: float = 0.2, probes: Probes | None = None) -> ThreadChoice:
    """The policy's choice for this process now: the machine read through ``probes``
    (default :data:`PROBES`), ``/proc/stat`` sampled over ``window_s`` while it sleeps."""
    p = probes or PROBES
    machine = Machine.probe(p)
    busy = busy_cpus(set(machine.cpus) if machine.cpus else None, window_s, p.proc_stat, sleep=p.sleep)
    return ThreadChoice(machine.threads(busy or 0.0), "auto", machine.usable, None if busy is None else round(busy, 2),
                        os.environ.get("OMP_WAIT_POLICY"))


def read_load(machine: Machine, probes: Probes | None = None) -> tuple[float, float] | None:
    """``(core-seconds the machine's usable cpus were busy since boot, CPU seconds this
    process used)``; ``None`` without ``/proc/stat``."""
    p = probes or PROBES
    times = _cpu_times(machine.cpus, p.proc_stat)
    if not times:
        return None
    return sum(busy for busy, _ in times.values()) / p.clk_tck, p.cpu_time()


# ------------------------------------------------------------------ following the load while training
def _torch_threads(n: int | None = None) -> int:
    """torch's thread count, after setting it to ``n`` when given."""
    import torch

    if n is not None:
        torch.set_num_threads(n)
    return torch.get_num_threads()


class ThreadGovernor:
    """Follows the cores other processes keep busy, while this one trains.

    :meth:`tick` runs at every training step and does nothing until ``interval_s`` seconds
    passed since the last reading. Then ``sample()`` (``(machine busy core-seconds, own CPU
    seconds)``, :func:`read_load`) gives the cores *other* processes kept busy over the
    interval, ``(busy - own) / wall``, and :meth:`decide` the thread count.

    Hysteresis: the count is lowered at the first reading that calls for it (a thread too
    many next to a busy core costs 2-3x), and raised only after ``confirm`` consecutive
    readings that call for the same higher count with ``margin`` cores to spare (a thread
    too few costs ~1.2x), so a load near a boundary does not make the count flap. When
    torch's count is not the one it set (someone else set it), it stops for good.

    Args: ``machine`` (the cores this process may use), ``threads`` (the count in force),
        ``sample`` and ``clock`` (default: :func:`read_load`, ``PROBES.clock``), ``apply``
        (sets a count, or with ``None`` only reads it; returns torch's count).
    """

    def __init__(self, machine: Machine, threads: int, *, sample: Callable[[], tuple[float, float] | None] | None = None,
                 clock: Callable[[], float] | None = None, apply: Callable[[int | None], int] = _torch_threads,
                 interval_s: float = 2.0, margin: float = 0.2, confirm: int = 2) -> None:
        self.machine, self.threads = machine, int(threads)
        self.sample = sample or (lambda: read_load(machine))
        self.clock = clock or PROBES.clock
        self.apply = apply
        self.interval_s, self.margin, self.confirm = float(interval_s), float(margin), int(confirm)
        self.active = True
        self.events: list[dict[str, Any]] = []
        self._pending: tuple[int, int] | None = None  # (higher count, readings in a row asking for it)
        self._lock = threading.Lock()
        self._last = (self.clock(), self.sample())

    def decide(self, load: float) -> int:
        """The thread count after a reading of ``load`` cores busy with other processes
        (it remembers a pending raise between readings)."""
        lower = self.machine.threads(load)
        if lower < self.threads:
            self._pending = None
            return lower
        higher = self.machine.threads(load + self.margin)
        if higher <= self.threads:
            self._pending = None
            return self.threads
        count = self._pending[1] + 1 if self._pending is not None and self._pending[0] == higher else 1
        self._pending = (higher, count)
        return higher if count >= self.confirm else self.threads

    def tick(self) -> dict[str, Any] | None:
        """Re-measure when due; the change made (``{"event", "time", "old", "new", "load"}``) or ``None``."""
        now = self.clock()
        if not self.active or now - self._last[0] < self.interval_s or not self._lock.acquire(blocking=False):
            return None
        try:
            return self._check(now)
        finally:
            self._lock.release()

    def _check(self, now: float) -> dict[str, Any] | None:
        (t0, before), after = self._last, self.sample()
        self._last = (now, after)
        self.active = self.apply(None) == self.threads  # else someone else set torch's count: theirs from now on
        if not self.active or before is None or after is None or now <= t0:
            return None
        load = max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / (now - t0))
        new = self.decide(load)
        if new == self.threads:
            return None
        event = {"event": "threads", "time": round(time.time(), 3), "old": self.threads, "new": new, "load": round(load, 2)}
        self.threads = self.apply(new)
        self._pending = None
        self.events.append(event)
        return event


_choice: ThreadChoice | None = None
_governor: ThreadGovernor | None = None


def follow_load() -> dict[str, Any] | None:
    """Called by the training loop at every step: the automatic policy's re-measurement
    (cheap until it is due). The change of thread count made, or ``None`` (always when the
    count is pinned or was never configured)."""
    global _choice
    gov = _governor
    event = gov.tick() if gov is not None else None
    if event is not None and _choice is not None and _choice.source == "auto":
        _choice = replace(_choice, threads=event["new"], busy=event["load"])
    return event


def thread_changes() -> list[dict[str, Any]]:
    """The changes the automatic policy made in this process (empty when pinned)."""
    return list(_governor.events) if _governor is not None else []


def _env_threads() -> int | None:
    """``ENSEMBLEKIT_THREADS`` as a count (``None`` when unset or empty)."""
    value = os.environ.get("ENSEMBLEKIT_THREADS", "").strip()
    if value and (not value.isdigit() or int(value) < 1):
        raise ValueError(f"ENSEMBLEKIT_THREADS must be a positive integer, got {value!r}")
    return int(value) if value else None


def configure_threads(threads: int | None = None, source: str = "caller", *, follow: bool = True) -> ThreadChoice:
    """Apply a thread count to torch and remember it for ``results.json``.

    ``threads=N`` pins the count (so does ``ENSEMBLEKIT_THREADS`` when ``threads`` is
    ``None``): it is never changed. ``threads=None`` runs the policy once per process (later
    calls reuse it) and, with ``follow`` (default), lets training follow the free cores
    (:class:`ThreadGovernor`); a count that changed mid-run can change float rounding, so
    pin it for bit-identical reruns.
    """
    global _choice, _governor

    if threads is None and _env_threads() is not None:
        threads, source = _env_threads(), "ENSEMBLEKIT_THREADS"
    if threads is not None:
        _choice, _governor = ThreadChoice(int(threads), source, omp_wait_policy=os.environ.get("OMP_WAIT_POLICY")), None
    elif _choice is None or _choice.source != "auto":
        _choice, _governor = measure(), None
    _torch_threads(_choice.threads)
    if threads is None and follow and (_governor is None or not _governor.active):
        _governor = ThreadGovernor(Machine.probe(), _choice.threads)
    elif not follow:
        _governor = None
    return _choice


def current_choice() -> dict[str, Any]:
    """The recorded choice, or torch's current count when nothing was configured."""
    n = _torch_threads()
    if _choice is not None and _choice.threads == n:
        return _choice.as_dict()
    return ThreadChoice(n, "caller", omp_wait_policy=os.environ.get("OMP_WAIT_POLICY")).as_dict()
