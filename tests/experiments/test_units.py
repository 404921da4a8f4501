"""Results never go stale: units keyed by their spec's hash, refused or retrained when the spec changed,
locked while they train so that two commands on one --out never train a cell twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from ensemblekit.config import CompareConfig
from ensemblekit.experiments.compare import cell_specs, run_cell, run_compare, train_hash
from ensemblekit.experiments.units import StaleResultError, UnitBusyError, claim

CFG = {"data": "digits", "model": {"name": "mlp", "kwargs": {"hidden": [8]}},
       "train": {"epochs": 2, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}, "progress": False},
       "budgets": [1, 2], "seeds": [0], "methods": [{"name": "independent", "label": "Ind"}]}




def test_a_changed_config_into_the_same_out_is_refused_or_retrained_never_relabelled(cli, blobs, tmp_path, capsys):
    out = tmp_path / "cmp"
    first = run_compare(CompareConfig(**CFG), str(out), data=blobs).rows
    assert all(len(r["spec_hash"]) == 16 for r in first)
    before = (out / "results.json").read_text()
    changed = CompareConfig(**{**CFG, "train": {**CFG["train"], "optimizer": {"name": "adam", "lr": 0.05}}})
    with pytest.raises(StaleResultError, match="holds work of another config .* --force"):
        run_compare(changed, str(out), data=blobs)
    assert (out / "results.json").read_text() == before  # nothing was written
    again = run_compare(changed, str(out), data=blobs, force=True).rows
    assert [r["spec_hash"] for r in again] != [r["spec_hash"] for r in first]
    assert [r["test"]["nll"] for r in again] != [r["test"]["nll"] for r in first]
    reused = run_compare(changed, str(out), data=blobs).rows  # the same config reuses every cell
    assert [{k: v for k, v in r.items() if k != "elapsed_s"} for r in reused] == [{k: v for k, v in r.items() if k != "elapsed_s"} for r in again]
    # the CLI: one line, exit 2
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**CFG, "out": str(out)}))
    assert cli("compare", str(cfg)) == 2
    err = capsys.readouterr().err
    assert "holds work of another config" in err and "Traceback" not in err and len(err.strip().splitlines()) <= 3


_HOLD = """
import sys, time
from ensemblekit.experiments.units import claim
with claim(sys.argv[1], sys.argv[2], {}):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_a_cell_computed_by_other_code_is_refused_recomputed_or_kept_on_record(cli, tmp_path, capsys, monkeypatch):
    from ensemblekit import hashing

    out = tmp_path / "cmp"
    cfg = CompareConfig(**{**CFG, "budgets": [1]})
    blobs = cfg.data.load()  # the data the CLI loads too
    first = run_compare(cfg, str(out), data=blobs).rows
    assert first[0]["provenance"]["code"] == hashing.code_fingerprint()
    before = (out / "results.json").read_text()
    monkeypatch.setattr(hashing, "code_fingerprint", lambda: "newcode00000")  # an upgrade: the same config, other code
    with pytest.raises(StaleResultError, match="computed by other code .* --force .* --accept-code-change"):
        run_compare(cfg, str(out), data=blobs)
    assert (out / "results.json").read_text() == before  # refused before anything was written
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump({**CFG, "budgets": [1], "out": str(out)}))
    assert cli("compare", str(cfg_file)) == 2
    err = capsys.readouterr().err
    assert "computed by other code" in err and "Traceback" not in err and len(err.strip().splitlines()) <= 3
    kept = run_compare(cfg, str(out), data=blobs, accept_code_change=True)
    assert kept.rows[0]["test"] == first[0]["test"] and kept.rows[0]["code_accepted"]["accepted_under"] == "newcode00000"
    spec = json.loads((out / "cells" / cell_specs(cfg)[0]["key"] / "spec.json").read_text())
    assert spec["code"] == "newcode00000" and spec["accepted_code_changes"][0]["computed_by"] == first[0]["provenance"]["code"]
    assert "Not every row was computed by this code" in kept.markdown and "--accept-code-change" in kept.markdown
    assert run_compare(cfg, str(out), data=blobs).rows[0]["test"] == first[0]["test"]  # accepted once: reused without asking
    monkeypatch.setattr(hashing, "code_fingerprint", lambda: "third0000000")
    redone = run_compare(cfg, str(out), data=blobs, force=True).rows[0]
    assert "code_accepted" not in redone and redone["elapsed_s"] > 0
    assert json.loads((out / "cells" / cell_specs(cfg)[0]["key"] / "spec.json").read_text())["code"] == "third0000000"


def test_a_cell_locked_by_a_live_process_is_refused_and_a_killed_owner_releases_it(blobs, tmp_path):
    spec = cell_specs(CompareConfig(**CFG))[0]
    folder = tmp_path / "cell"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder), train_hash(spec, blobs)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UnitBusyError, match=f"being trained by pid {holder.pid}"):
            run_cell(spec, str(folder), blobs)
    finally:
        holder.kill()  # kill -9: the kernel releases its lock, the lock file stays behind
        holder.wait()
    assert json.loads((folder / ".lock").read_text())["pid"] == holder.pid
    row = run_cell(spec, str(folder), blobs)
    assert row["members"] == 1 and not (folder / ".lock").exists()
    with claim(str(folder / "x"), "h", {}):
        with pytest.raises(UnitBusyError):
            with claim(str(folder / "x"), "h", {}):
                pass
    assert not (folder / "x" / ".lock").exists()


_RACE = """
import json, os, sys, time
from ensemblekit.experiments.units import UnitBusyError, claim
folder, go, log = sys.argv[1:4]
_unlink = os.unlink
def unlink_late(path, *args, **kwargs):  # as if preempted between reading the lock and replacing it
    time.sleep(0.05)
    _unlink(path, *args, **kwargs)
os.unlink = unlink_late
print("ready", flush=True)
while not os.path.exists(go):
    pass
for _ in range(40):  # keep trying for a while: every process meets the lock both free and held
    try:
        with claim(folder, "h", {}):
            with open(log, "a") as f:
                f.write(json.dumps(["in", os.getpid(), time.time()]) + "\\n")
            time.sleep(0.02)
            with open(log, "a") as f:
                f.write(json.dumps(["out", os.getpid(), time.time()]) + "\\n")
    except UnitBusyError:
        pass
"""


def test_many_processes_racing_for_a_dead_lock_never_hold_it_together(tmp_path):
    folder, go, log = tmp_path / "unit", tmp_path / "go", tmp_path / "log"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    (folder / ".lock").write_text(json.dumps({"pid": int(dead), "host": os.uname().nodename, "since": "then"}))
    env = {**os.environ, "ENSEMBLEKIT_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", _RACE, str(folder), str(go), str(log)], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(8)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    go.write_text("")
    for p in procs:
        assert p.wait(timeout=120) == 0
    events = [json.loads(line) for line in log.read_text().splitlines()]
    holders, overlaps = set(), 0
    for kind, pid, _ in events:  # appended in order: at most one process inside at any time
        if kind == "in":
            overlaps += bool(holders)
            holders.add(pid)
        else:
            holders.discard(pid)
    assert sum(e[0] == "in" for e in events) >= 2 and overlaps == 0, events


def test_two_compares_on_one_out_train_each_cell_once(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**CFG, "budgets": [1, 2, 3], "seeds": [0, 1], "out": str(tmp_path / "cmp")}))
    env = {**os.environ, "ENSEMBLEKIT_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "ensemblekit", "compare", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    cells = sorted((tmp_path / "cmp" / "cells").iterdir())
    assert len(cells) == 6
    for cell in cells:  # one training per cell: its log holds each epoch once
        epochs = [json.loads(line)["epoch"] for line in (cell / "metrics.jsonl").read_text().splitlines()]
        assert epochs == [1, 2], (cell.name, epochs)
    rows = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert len(rows) == 6 and not any("failed" in r for r in rows)
