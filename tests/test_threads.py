"""The thread policy's probes and its following of the load (ensemblekit.threads), on fake machines."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from ensemblekit import threads
from ensemblekit.ensemble import Ensemble
from ensemblekit.models import model_factory
from ensemblekit.training import RunDir, Trainer


# ----------------------------------------------------------------- the cgroup quota of this process's own cgroup
def _write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_is_the_smallest_on_the_way_to_the_root(tmp_path):
    root, self_cgroup = tmp_path / "cg", tmp_path / "self_cgroup"
    _write(self_cgroup, "0::/kubepods/pod1/ctr\n")
    _write(root / "kubepods" / "cpu.max", "400000 100000\n")  # 4 cores for all pods
    _write(root / "kubepods" / "pod1" / "cpu.max", "max 100000\n")  # unlimited at the pod
    _write(root / "kubepods" / "pod1" / "ctr" / "cpu.max", "150000 100000\n")  # 1.5 for the container
    _write(root / "other" / "cpu.max", "50000 100000\n")  # another cgroup's quota does not apply
    assert threads.cgroup_cpu_quota(str(root), str(self_cgroup)) == 1.5
    _write(root / "kubepods" / "cpu.max", "100000 100000\n")  # a parent's tighter limit wins
    assert threads.cgroup_cpu_quota(str(root), str(self_cgroup)) == 1.0
    # a container that sees the host's path but has its own cgroup mounted at the root
    _write(self_cgroup, "0::/system.slice/docker-abc.scope\n")
    _write(root / "cpu.max", "250000 100000\n")
    assert threads.cgroup_cpu_quota(str(root), str(self_cgroup)) == 2.5
    _write(root / "cpu.max", "max 100000\n")
    assert threads.cgroup_cpu_quota(str(root), str(self_cgroup)) is None


def test_cgroup_v1_quota_from_the_cpu_controller_line(tmp_path):
    root, self_cgroup = tmp_path / "cg", tmp_path / "self_cgroup"
    _write(self_cgroup, "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n")  # hybrid: v1 has the cpu controller
    mount = root / "cpu,cpuacct"
    for folder, quota in ((mount, "-1"), (mount / "docker", "-1"), (mount / "docker" / "abc", "250000")):
        _write(folder / "cpu.cfs_quota_us", f"{quota}\n")
        _write(folder / "cpu.cfs_period_us", "100000\n")
    _write(root / "cpu.max", "100000 100000\n")  # a v2 file is not read when v1 has the controller
    assert threads.cgroup_cpu_quota(str(root), str(self_cgroup)) == 2.5
    _write(mount / "docker" / "cpu.cfs_quota_us", "200000\n")
    assert threads.cgroup_cpu_quota(str(root), str(self_cgroup)) == 2.0
    _write(self_cgroup, "2:cpuacct:/\n1:cpu:/\n0::/\n")  # controllers mounted apart: root/cpu
    _write(root / "cpu" / "cpu.cfs_quota_us", "-1\n")
    _write(root / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert threads.cgroup_cpu_quota(str(root), str(self_cgroup)) is None
    _write(root / "cpu" / "cpu.cfs_quota_us", "50000\n")
    assert threads.cgroup_cpu_quota(str(root), str(self_cgroup)) == 0.5


# ----------------------------------------------------------------- measure(): the probes combined
def _stat(*cpus: str) -> str:
    return "cpu  0 0 0 0 0 0 0 0\n" + "".join(f"cpu{i} {v}\n" for i, v in enumerate(cpus)) + "intr 0\n"


def _fake_machine(tmp_path, after: list[str], quota: str = "300000 100000") -> threads.Probes:
    """8 cores, affinity {0..3}, a 3-core quota on this process's cgroup; ``/proc/stat`` goes
    from all-zero to ``after`` while measure() sleeps."""
    stat, self_cgroup, root = tmp_path / "stat", tmp_path / "self_cgroup", tmp_path / "cg"
    stat.write_text(_stat(*["0 0 0 0 0 0 0 0"] * 8))
    _write(self_cgroup, "0::/job\n")
    _write(root / "job" / "cpu.max", quota + "\n")
    return threads.Probes(cpu_count=lambda: 8, affinity=lambda: {0, 1, 2, 3}, proc_stat=str(stat), self_cgroup=str(self_cgroup),
                          cgroup_root=str(root), sleep=lambda s: stat.write_text(_stat(*after)))


def test_measure_combines_cores_affinity_quota_and_load(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    # over the window: cpu0 100/100 busy, cpu1 100/100 (user + system), cpu2 60/100 (iowait is idle),
    # cpu3 idle, cpu4-7 busy but outside the affinity set
    busy = ["100 0 0 0 0 0 0 0", "80 0 20 0 0 0 0 0", "50 0 10 30 10 0 0 0", "0 0 0 100 0 0 0 0"] + ["100 0 0 0 0 0 0 0"] * 4
    # 2.6 busy cores round to 3: 4 affinity cores - 3 = 1 thread; usable cores min(8, 4, ceil 3.0) = 3
    assert threads.measure(probes=_fake_machine(tmp_path, busy)) == threads.ThreadChoice(1, "auto", 3, 2.6, None)
    quiet = ["0 0 0 100 0 0 0 0", "40 0 0 60 0 0 0 0", "0 0 0 100 0 0 0 0", "0 0 0 100 0 0 0 0"] + ["100 0 0 0 0 0 0 0"] * 4
    # 0.4 busy rounds to 0: 4 free cores, capped by the 3-core quota
    assert threads.measure(probes=_fake_machine(tmp_path, quiet)) == threads.ThreadChoice(3, "auto", 3, 0.4, None)
    # a 2.5-core quota rounds up to 3 usable cores; no /proc/stat: the load is unknown (None), taken as 0
    probes = dataclasses.replace(_fake_machine(tmp_path, quiet, "250000 100000"), proc_stat=str(tmp_path / "missing"))
    assert threads.measure(probes=probes) == threads.ThreadChoice(3, "auto", 3, None, None)


# ----------------------------------------------------------------- following the load: the decision
def test_decide_lowers_at_once_and_raises_after_two_readings_with_a_margin():
    gov = threads.ThreadGovernor(threads.Machine(2), 2, sample=lambda: None, clock=lambda: 0.0)
    assert gov.decide(0.1) == 2
    assert gov.decide(0.5) == 1  # half a core busy: taken, at the first reading
    gov.threads = 1
    assert gov.decide(0.35) == 1  # 0.35 + margin 0.2 rounds to a busy core: no raise pending
    assert gov.decide(0.25) == 1  # 0.45 rounds to 0: a raise to 2, pending
    assert gov.decide(0.4) == 1  # 0.6 rounds to 1: the pending raise is dropped
    assert gov.decide(0.1) == 1  # pending again, first reading
    assert gov.decide(0.0) == 2  # the second reading in a row: raised
    big = threads.ThreadGovernor(threads.Machine(8, quota=6.0), 6, sample=lambda: None, clock=lambda: 0.0)
    assert big.decide(2.4) == 6  # 8 - 2 = 6: the quota, not the load, is the limit
    assert big.decide(3.0) == 5  # 8 - 3
    big.threads = 5
    # 0.9 (+ margin 1.1) leaves 7 free, capped at 6 by the quota; 2.4 (+ 0.2 = 2.6 -> 3 busy) resets the raise
    assert [big.decide(x) for x in (0.9, 2.4, 0.9, 0.9)] == [5, 5, 5, 6]


def _fake_governor(increments: list[tuple[float, float]], apply_log: list):
    """A 2-core governor at 2 threads, its clock at 0, 1, 2, ... per call; each reading adds
    ``(machine busy core-seconds, own CPU seconds)`` from ``increments``."""
    clock = iter(range(100))
    totals, state, increments = [0.0, 0.0], {"torch": 2}, [(0.0, 0.0)] + increments  # the first: the baseline

    def sample():
        db, do = increments.pop(0) if increments else (0.0, 0.0)
        totals[0] += db
        totals[1] += do
        return tuple(totals)

    def apply(n):
        if n is not None:
            apply_log.append(n)
            state["torch"] = n
        return state["torch"]

    gov = threads.ThreadGovernor(threads.Machine(2, frozenset({0, 1})), 2, sample=sample, clock=lambda: float(next(clock)), apply=apply)
    return gov, state


def test_tick_measures_others_load_every_interval_and_changes_threads():
    applied: list[int] = []
    # per 2 s reading: (machine busy, own CPU) -> others = (busy - own) / 2 s
    gov, torch_state = _fake_governor([(4.0, 3.9), (4.0, 2.6), (4.0, 2.0), (1.0, 1.0), (1.1, 1.0)], applied)
    events = [gov.tick() for _ in range(10)]  # clock 1..10: readings at 2, 4, 6, 8, 10
    assert events[0] is None and events[2] is None  # 2 s after the last reading or not at all
    changes = [(e["old"], e["new"], e["load"]) for e in events if e is not None]
    # 0.05 busy: stay; 0.7: down to 1; 1.0: stay; 0.0: raise pending; 0.05: raised
    assert changes == [(2, 1, 0.7), (1, 2, 0.05)]
    assert [i for i, e in enumerate(events, start=1) if e] == [4, 10]
    assert applied == [1, 2] and gov.events == [e for e in events if e]
    torch_state["torch"] = 3  # someone else set torch's threads: the governor stops for good
    assert [gov.tick() for _ in range(6)] == [None] * 6
    assert not gov.active and applied == [1, 2]


# ----------------------------------------------------------------- following the load: in a training run
def _train(blobs, run_dir) -> None:
    factory = model_factory({"name": "mlp", "kwargs": {"hidden": [8]}}, input_shape=blobs.input_shape, num_classes=blobs.num_classes)
    cfg = {"epochs": 2, "batch_size": 60, "optimizer": {"name": "adam", "lr": 0.01}, "progress": False}
    Trainer(Ensemble.from_factory(factory, seeds=[0, 1]), blobs, cfg, seed=0, run=RunDir(run_dir)).fit()


@pytest.fixture
def spy_threads(monkeypatch):
    """torch.set_num_threads recorded (and applied); torch's count restored afterwards."""
    before, calls, real = torch.get_num_threads(), [], torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n) or real(n))
    monkeypatch.setattr(threads, "_choice", None)
    monkeypatch.setattr(threads, "_governor", None)
    yield calls
    real(before)


def test_training_records_a_change_of_threads_in_metrics_jsonl(blobs, tmp_path, spy_threads, monkeypatch):
    torch.set_num_threads(2)
    monkeypatch.setattr(threads, "_choice", threads.ThreadChoice(2, "auto", 2, 0.0))
    readings = iter(range(100))  # others keep one core busy: 4 core-seconds busy, 2 of them ours, per 2 s
    clock = iter(range(100))
    gov = threads.ThreadGovernor(threads.Machine(2, frozenset({0, 1})), 2, clock=lambda: float(next(clock)),
                                 sample=lambda: (lambda k: (4.0 * k, 2.0 * k))(next(readings)))
    monkeypatch.setattr(threads, "_governor", gov)
    spy_threads.clear()
    _train(blobs, tmp_path / "run")  # 240 training examples, batch 60: 4 steps per epoch
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    events = [r for r in lines if r.get("event") == "threads"]
    assert [{k: e[k] for k in ("stage", "epoch", "step", "old", "new", "load")} for e in events] == [
        {"stage": "train", "epoch": 1, "step": 2, "old": 2, "new": 1, "load": 1.0}]
    assert isinstance(events[0]["time"], float)
    assert [r["epoch"] for r in lines if "event" not in r] == [1, 2]
    assert spy_threads == [1] and torch.get_num_threads() == 1
    assert threads.current_choice() == {"threads": 1, "source": "auto", "cores": 2, "busy": 1.0, "omp_wait_policy": None}


@pytest.mark.parametrize("pin", ["api", "env"])
def test_pinned_threads_are_never_changed(blobs, tmp_path, spy_threads, monkeypatch, pin):
    monkeypatch.setattr(threads, "PROBES", threads.Probes(clock=iter(range(100)).__next__))  # every reading would be due
    monkeypatch.setattr(threads, "measure", lambda window_s=0.2: threads.ThreadChoice(2, "auto", 2, 0.0))
    monkeypatch.setenv("ENSEMBLEKIT_THREADS", "2")
    threads.configure_threads()  # an automatic choice that would follow the load ...
    assert threads.current_choice()["source"] == "ENSEMBLEKIT_THREADS" and threads._governor is None
    monkeypatch.delenv("ENSEMBLEKIT_THREADS")
    threads.configure_threads()
    assert threads._governor is not None
    if pin == "api":
        threads.configure_threads(2)  # ... is stopped by a pinned count
        assert threads.current_choice()["source"] == "caller"
    else:
        monkeypatch.setenv("ENSEMBLEKIT_THREADS", "2")
        threads.configure_threads()
        assert threads.current_choice()["source"] == "ENSEMBLEKIT_THREADS"
    assert threads._governor is None
    spy_threads.clear()
    _train(blobs, tmp_path / "run")
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and not any("event" in r for r in lines)
    assert spy_threads == [] and threads.follow_load() is None and threads.thread_changes() == []


def test_env_threads_must_be_a_positive_integer(monkeypatch):
    monkeypatch.setattr(threads, "_choice", None)
    monkeypatch.setattr(threads, "_governor", None)
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("ENSEMBLEKIT_THREADS", bad)
        with pytest.raises(ValueError, match="ENSEMBLEKIT_THREADS"):
            threads.configure_threads()


def test_the_threads_option_stops_following_the_load(cli, tmp_path, spy_threads, monkeypatch):
    """``ensemblekit --threads N`` pins the count even after an automatic choice in this process."""
    monkeypatch.delenv("ENSEMBLEKIT_THREADS", raising=False)
    monkeypatch.setattr(threads, "PROBES", threads.Probes(clock=iter(range(10_000)).__next__))  # every reading would be due
    monkeypatch.setattr(threads, "measure", lambda window_s=0.2: threads.ThreadChoice(2, "auto", 2, 0.0))
    threads.configure_threads()
    assert threads._governor is not None
    cfg = {"data": "digits", "model": {"name": "mlp", "kwargs": {"hidden": [8]}}, "method": {"name": "independent", "members": 2},
           "train": {"epochs": 2, "batch_size": 100}, "out": str(tmp_path)}
    (tmp_path / "cfg.yaml").write_text(json.dumps(cfg))
    spy_threads.clear()
    assert cli("--threads", "1", "train", str(tmp_path / "cfg.yaml"), "--run-dir", str(tmp_path / "run")) == 0
    assert threads._governor is None and spy_threads == [1]  # set once by the option, never by the policy
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and not any("event" in r for r in lines)
