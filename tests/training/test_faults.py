"""Faults surface as one line and lose nothing: a full disk, Ctrl-C, outputs that turn non-finite on validation."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

import ensemblekit as ek
from ensemblekit.errors import NonFiniteLossError
from ensemblekit.models import model_factory
from ensemblekit.training import Callback, RunDir, Trainer

RUN = {"data": "digits", "model": {"name": "mlp", "kwargs": {"hidden": [16]}}, "method": {"name": "independent", "members": 2},
       "train": {"epochs": 4, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}, "progress": False}}




@pytest.mark.parametrize("code, text", [(errno.ENOSPC, "No space left on device"), (errno.EROFS, "Read-only file system")])
def test_a_full_disk_is_one_line_and_the_last_good_checkpoint_stays(cli, tmp_path, capsys, monkeypatch, code, text):
    import ensemblekit.serialization as ser

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**RUN, "out": str(tmp_path / "runs")}))
    real, calls = ser.os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) > 3:  # config.yaml, then the checkpoints of epochs 1 and 2 were written
            raise OSError(code, text)
        return real(fd)

    monkeypatch.setattr(ser.os, "fsync", fsync)
    assert cli("train", str(cfg), "--run-dir", str(tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert text in err and "checkpoints/train.safetensors" in err and "Traceback" not in err
    state = RunDir(tmp_path / "run").load_checkpoint("train")
    assert state["epoch"] == 2  # the checkpoint before the failed write, intact
    assert not [p for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.startswith(".tmp-")]
    monkeypatch.setattr(ser.os, "fsync", real)
    assert cli("train", "--resume", str(tmp_path / "run")) == 0  # and the run continues from it


def test_ctrl_c_says_how_to_continue(tmp_path):
    cfg = tmp_path / "c.yaml"
    # far more epochs than the test waits for: the run must still be training when Ctrl-C comes
    cfg.write_text(yaml.safe_dump({**RUN, "train": {**RUN["train"], "epochs": 5000}, "out": str(tmp_path / "runs")}))
    # SIGINT as a terminal delivers it: a suite started in the background of a
    # non-interactive shell ignores SIGINT, and its children would inherit that
    proc = subprocess.Popen([sys.executable, "-m", "ensemblekit", "train", str(cfg), "--run-dir", str(tmp_path / "run")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        log = tmp_path / "run" / "metrics.jsonl"
        deadline = time.time() + 120
        # epoch k's line is logged just before its checkpoint is written: three lines mean epoch 2's checkpoint exists
        while time.time() < deadline and proc.poll() is None and not (log.exists() and log.read_text().count("\n") >= 3):
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before Ctrl-C (code {proc.returncode}): {proc.communicate()[1][-2000:]}"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err
    assert RunDir(tmp_path / "run").load_checkpoint("train")["epoch"] >= 2


def test_non_finite_validation_outputs_stop_the_run_and_say_which_checkpoint_exists(blobs, tmp_path):
    class Poison(Callback):
        def __init__(self, at):
            self.at = at

        def on_step_end(self, trainer, step, batch):  # after the epoch's last step, before its validation pass
            if step == self.at:
                with torch.no_grad():
                    trainer.model.groups[0].params["head.weight"][1].fill_(float("nan"))

    factory = model_factory({"name": "mlp", "kwargs": {"hidden": [8]}}, input_shape=blobs.input_shape, num_classes=3)
    cfg = {"epochs": 3, "batch_size": 30, "progress": False}  # 240 / 30 = 8 steps per epoch
    with pytest.raises(NonFiniteLossError, match=r"validation outputs became non-finite after epoch 1 \(member\(s\) \[1\]\); no checkpoint"):
        Trainer(ek.Ensemble.from_factory(factory, seeds=[0, 1]), blobs, cfg, run=RunDir(tmp_path / "a"), callbacks=[Poison(8)]).fit()
    with pytest.raises(NonFiniteLossError, match="after epoch 2 .*last good checkpoint is kept in .*train.safetensors"):
        Trainer(ek.Ensemble.from_factory(factory, seeds=[0, 1]), blobs, cfg, run=RunDir(tmp_path / "b"), callbacks=[Poison(16)]).fit()
    assert RunDir(tmp_path / "b").load_checkpoint("train")["epoch"] == 1
