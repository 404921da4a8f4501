"""CPU efficiency: the thread policy (ensemblekit.threads), the per-step overhead work, chunked prediction."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

import ensemblekit as ek
from ensemblekit import threads
from ensemblekit.ensemble import Ensemble
from ensemblekit.models import model_factory
from ensemblekit.training import Trainer


@pytest.mark.parametrize("cores, affinity, quota, busy, expected", [
    (2, None, None, 0.0, 2),     # quiet 2-core machine: every core
    (2, None, None, 0.3, 2),     # a light job (30% of a core) does not take a core
    (2, None, None, 0.5, 1),     # half a core busy counts as taken
    (2, None, None, 0.98, 1),    # `yes > /dev/null` on one core
    (2, None, None, 2.0, 1),     # everything busy: still one thread
    (16, 4, None, 0.0, 4),       # taskset -c 0-3: four cores
    (16, 4, None, 1.2, 3),       # one of those four busy
    (64, None, 2.0, 0.0, 2),     # docker --cpus=2 on a 64-core host
    (64, None, 2.5, 10.0, 3),    # a fractional quota rounds up; busy host cores elsewhere do not matter
    (64, None, 4.0, 62.0, 2),    # ... unless the host itself is nearly full
    (8, 8, 0.5, 0.0, 1),         # a half-core quota: one thread
])
def test_choose_threads(cores, affinity, quota, busy, expected):
    assert threads.choose_threads(cores, affinity, quota, busy) == expected


def test_choose_threads_rejects_no_cores():
    with pytest.raises(ValueError):
        threads.choose_threads(0)


def test_cgroup_quota_v2_v1_and_unlimited(tmp_path):
    """Without /proc/self/cgroup only the root is read (tests/test_threads.py: the process's own cgroup)."""
    none = str(tmp_path / "no-self-cgroup")
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "cpu.max").write_text("150000 100000\n")
    assert threads.cgroup_cpu_quota(str(tmp_path / "v2"), none) == 1.5
    (tmp_path / "v2" / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_cpu_quota(str(tmp_path / "v2"), none) is None
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cgroup_cpu_quota(str(tmp_path / "v1"), none) == 3.0
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert threads.cgroup_cpu_quota(str(tmp_path / "v1"), none) is None
    assert threads.cgroup_cpu_quota(str(tmp_path / "none"), none) is None


def test_busy_cpus_from_proc_stat(tmp_path, monkeypatch):
    """Two samples of /proc/stat: cpu0 busy 90 of 100 jiffies, cpu1 10 of 100, cpu2 outside the affinity."""
    stat = tmp_path / "stat"
    samples = iter([
        "cpu  0 0 0 0 0 0 0 0\ncpu0 100 0 0 900 0 0 0 0\ncpu1 50 0 0 950 0 0 0 0\ncpu2 0 0 0 1000 0 0 0 0\n",
        "cpu  0 0 0 0 0 0 0 0\ncpu0 180 0 10 910 0 0 0 0\ncpu1 55 0 5 1040 0 0 0 0\ncpu2 100 0 0 1000 0 0 0 0\n",
    ])
    stat.write_text(next(samples))
    monkeypatch.setattr(threads.time, "sleep", lambda s: stat.write_text(next(samples)))
    assert threads.busy_cpus({0, 1}, path=str(stat)) == pytest.approx(0.9 + 0.1)
    assert threads.busy_cpus({0, 1}, path=str(tmp_path / "missing")) is None


def _tiny_train(tmp_path, name: str) -> dict:
    cfg = {"data": "digits", "model": {"name": "mlp", "kwargs": {"hidden": [16]}}, "method": {"name": "independent", "members": 2},
           "train": {"epochs": 1, "batch_size": 100}, "out": str(tmp_path)}
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(cfg))
    return {"config": str(path), "run_dir": str(tmp_path / name), "results": tmp_path / name / "results.json"}


def test_cli_records_the_automatic_choice(cli, tmp_path, monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("ENSEMBLEKIT_THREADS", raising=False)
    monkeypatch.setattr(threads, "_choice", None)
    monkeypatch.setattr(threads, "_governor", None)
    monkeypatch.setattr(threads, "PROBES", threads.Probes(clock=lambda: 0.0))  # the load is never re-measured
    monkeypatch.setattr(threads, "measure", lambda window_s=0.2: threads.ThreadChoice(1, "auto", 2, 1.0, None))
    try:
        run = _tiny_train(tmp_path, "auto")
        assert cli("train", run["config"], "--run-dir", run["run_dir"]) == 0
        assert torch.get_num_threads() == 1
        prov = json.loads(run["results"].read_text())["provenance"]
        assert prov["threads"] == 1
        assert prov["thread_policy"] == {"threads": 1, "source": "auto", "cores": 2, "busy": 1.0, "omp_wait_policy": None}
        monkeypatch.setenv("ENSEMBLEKIT_THREADS", "2")
        run = _tiny_train(tmp_path, "env")
        assert cli("train", run["config"], "--run-dir", run["run_dir"]) == 0
        assert json.loads(run["results"].read_text())["provenance"]["thread_policy"]["source"] == "ENSEMBLEKIT_THREADS"
        run = _tiny_train(tmp_path, "flag")
        assert cli("--threads", "1", "train", run["config"], "--run-dir", run["run_dir"]) == 0  # the option beats the variable
        policy = json.loads(run["results"].read_text())["provenance"]["thread_policy"]
        assert (policy["source"], policy["threads"]) == ("--threads", 1)
    finally:
        torch.set_num_threads(before)


def test_automatic_choice_is_made_once_per_process(monkeypatch):
    calls = []
    monkeypatch.delenv("ENSEMBLEKIT_THREADS", raising=False)
    monkeypatch.setattr(threads, "_choice", None)
    monkeypatch.setattr(threads, "_governor", None)
    monkeypatch.setattr(threads, "PROBES", threads.Probes(clock=lambda: 0.0))
    monkeypatch.setattr(threads, "measure", lambda window_s=0.2: calls.append(1) or threads.ThreadChoice(torch.get_num_threads(), "auto", 2, 0.0))
    threads.configure_threads()
    threads.configure_threads()
    assert len(calls) == 1  # two runs in one process use one count (and so the same numbers)


# ----------------------------------------------------------------- the overhead work, exactly
def _train_hash(optimizer: dict, grad_clip: float | None = None) -> str:
    data = ek.load_dataset("mnist1d", num_samples=600, val_fraction=0.0)
    factory = model_factory({"name": "cnn1d"}, input_shape=data.input_shape, num_classes=data.num_classes)
    cfg = {"epochs": 2, "batch_size": 50, "optimizer": optimizer, "progress": False, "grad_clip": grad_clip, "data_order": "per_member"}
    ens = Trainer(Ensemble.from_factory(factory, seeds=[0, 1, 2]), data, cfg, seed=0).fit()
    h = hashlib.sha256()
    for _, v in sorted(ens.state_tensors().items()):
        h.update(v.detach().numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("optimizer, clip", [({"name": "adam", "lr": 0.01}, None),
                                             ({"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True}, 1.0),
                                             ({"name": "adamw", "lr": 0.01, "weight_decay": 0.05}, None)])
def test_multi_tensor_optimizer_is_bit_identical_to_the_loop(optimizer, clip):
    """The engine's default ``foreach`` optimizers give the same bits as torch's per-tensor loop."""
    from ensemblekit.training.optim import build_optimizer

    assert build_optimizer(optimizer, [torch.zeros(2, requires_grad=True)]).defaults["foreach"] is True
    assert _train_hash(optimizer, clip) == _train_hash({**optimizer, "foreach": False}, clip)


def test_stacked_plan_keeps_one_memory_layout_in_backward():
    """Every ReLU backward of a stacked cnn1d step sees its gradient and its saved output in
    the same memory layout (a mix is a strided kernel 10x slower; see stacked._channels_last)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    factory = model_factory({"name": "cnn1d"}, input_shape=(1, 40), num_classes=10)
    ens = Ensemble.from_factory(factory, seeds=list(range(3))).train()
    assert ens.groups[0].plan is not None and not ens.groups[0].loop
    seen = []

    class Strides(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.threshold_backward.default:
                seen.append((args[0].stride(), args[1].stride()))
            return func(*args, **(kwargs or {}))

    out = ens(torch.randn(8, 1, 40))
    with Strides():
        out.square().sum().backward()
    assert len(seen) == 3 and all(g == o for g, o in seen), seen


# ----------------------------------------------------------------- prediction in member chunks
def test_prediction_in_member_chunks_equals_one_pass(monkeypatch):
    import ensemblekit.ensemble as ens_mod

    factory = model_factory({"name": "cnn1d"}, input_shape=(1, 40), num_classes=10)
    ens = Ensemble.from_factory(factory, seeds=list(range(7)))
    x = torch.randn(50, 1, 40)
    full = ens.predict_proba(x, member_chunk=None)
    for chunk in (1, 3, 7, 100):
        torch.testing.assert_close(ens.predict_proba(x, member_chunk=chunk), full, rtol=1e-5, atol=1e-6)
    # the automatic size follows the activation budget: 3 x the largest layer output
    # (cnn1d: 32 channels x 19 positions x 4 bytes) per member and example
    per = 3 * 32 * 19 * 4
    assert ens.inference_chunk(x) == int(4 * 2**20 // (per * 50))  # the CPU budget: 4 MiB
    monkeypatch.setitem(ens_mod.INFERENCE_ACTIVATION_BYTES, "cpu", per * 50 * 2)
    assert ens.inference_chunk(x) == 2
    monkeypatch.setitem(ens_mod.INFERENCE_ACTIVATION_BYTES, "cpu", 1)
    assert ens.inference_chunk(x) == 1
    calls = []
    real = Ensemble.__call__
    monkeypatch.setattr(Ensemble, "__call__", lambda self, xb, *a, **k: calls.append(k.get("members")) or real(self, xb, *a, **k))
    torch.testing.assert_close(ens.predict_proba(x), full, rtol=1e-5, atol=1e-6)
    assert calls == [slice(i, i + 1) for i in range(7)]
    with pytest.raises(ek.ConfigError):
        ens.predict_proba(x, member_chunk=0)
