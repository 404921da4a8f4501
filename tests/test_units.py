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
from ensemblekit.experiments.compare import cell_specs, run_cell, run_compare
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


def test_a_cell_locked_by_a_live_process_is_refused_and_a_dead_owner_is_taken_over(blobs, tmp_path):
    spec = cell_specs(CompareConfig(**CFG))[0]
    folder = tmp_path / "cell"
    folder.mkdir()
    (folder / ".lock").write_text(json.dumps({"pid": os.getppid(), "host": os.uname().nodename, "since": "now"}))
    with pytest.raises(UnitBusyError, match=f"being trained by pid {os.getppid()}"):
        run_cell(spec, str(folder), blobs)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    (folder / ".lock").write_text(json.dumps({"pid": int(dead), "host": os.uname().nodename, "since": "then"}))
    row = run_cell(spec, str(folder), blobs)
    assert row["members"] == 1 and not (folder / ".lock").exists()
    with claim(str(folder / "x"), "h", {}):
        with pytest.raises(UnitBusyError):
            with claim(str(folder / "x"), "h", {}):
                pass
    assert not (folder / "x" / ".lock").exists()


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
