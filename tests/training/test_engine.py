"""The training engine: resume equality, NaN detection, clipping, logs."""

from __future__ import annotations

import json
import os

import pytest
import torch

from ensemblekit import Ensemble
from ensemblekit.errors import NonFiniteLossError
from ensemblekit.models import model_factory
from ensemblekit.training import Callback, RunDir, Trainer
from ensemblekit.training.optim import clip_grad_norm_per_member


class _Kill(Callback):
    """Raise mid-epoch, as a SIGKILL would stop the process."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_step_end(self, trainer, step, batch):
        if step == self.at_step:
            raise KeyboardInterrupt


def _ensemble(data, spec, seeds=(0, 1, 2)):
    return Ensemble.from_factory(model_factory(spec, input_shape=data.input_shape, num_classes=data.num_classes), seeds=list(seeds))


CFG = {"epochs": 4, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.01}, "schedule": "cosine", "data_order": "per_member", "progress": False}


def test_resumed_run_ends_exactly_like_an_uninterrupted_one(blobs, tiny_mlp, tmp_path):
    full = Trainer(_ensemble(blobs, tiny_mlp), blobs, CFG, seed=3, run=RunDir(tmp_path / "a")).fit()
    spe = -(-len(blobs.train) // 32)
    with pytest.raises(KeyboardInterrupt):
        Trainer(_ensemble(blobs, tiny_mlp), blobs, CFG, seed=3, run=RunDir(tmp_path / "b"), callbacks=[_Kill(2 * spe + 3)]).fit()
    log = RunDir(tmp_path / "b").read_log()
    assert [r["epoch"] for r in log] == [1, 2]
    resumed_trainer = Trainer(_ensemble(blobs, tiny_mlp, seeds=(7, 8, 9)), blobs, CFG, seed=3, run=RunDir(tmp_path / "b"))
    resumed = resumed_trainer.fit()
    for (k, a), (_, b) in zip(full.state_tensors().items(), resumed.state_tensors().items()):
        assert torch.equal(a, b), k
    assert [r["epoch"] for r in RunDir(tmp_path / "b").read_log()] == [1, 2, 3, 4]
    # a finished stage is reloaded, not retrained
    again = Trainer(_ensemble(blobs, tiny_mlp, seeds=(5, 5, 5)), blobs, CFG, seed=3, run=RunDir(tmp_path / "b"))
    again.fit()
    assert again.finished and len(again.history) == 4


def test_an_epoch_logged_but_killed_before_its_first_checkpoint_is_logged_once_on_resume(blobs, tiny_mlp, tmp_path):
    spe = -(-len(blobs.train) // 32)
    run = RunDir(tmp_path / "r")
    with pytest.raises(KeyboardInterrupt):
        Trainer(_ensemble(blobs, tiny_mlp), blobs, CFG, seed=3, run=run, callbacks=[_Kill(spe + 2)]).fit()
    assert [r["epoch"] for r in run.read_log()] == [1]
    # as if the kill had come between epoch 1's log line and its checkpoint
    os.remove(run.checkpoint_path("train"))
    Trainer(_ensemble(blobs, tiny_mlp), blobs, CFG, seed=3, run=RunDir(tmp_path / "r")).fit()
    assert [r["epoch"] for r in run.read_log()] == [1, 2, 3, 4]


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(blobs, tiny_mlp, tmp_path):
    class Poison(Callback):
        def on_step_end(self, trainer, step, batch):
            if step == 9:  # after epoch 1 (8 steps) has been checkpointed
                with torch.no_grad():
                    trainer.ensemble.groups[0].params["head.weight"][1].fill_(float("nan"))

    run = RunDir(tmp_path / "r")
    with pytest.raises(NonFiniteLossError, match=r"member\(s\) \[1\].*last good checkpoint is kept"):
        Trainer(_ensemble(blobs, tiny_mlp), blobs, CFG, run=run, callbacks=[Poison()]).fit()
    state = run.load_checkpoint("train")
    assert state["epoch"] == 1 and not state["finished"]
    assert all(torch.isfinite(v).all() for v in state["ensemble"].values())


def test_metrics_log_has_one_line_per_epoch(blobs, tiny_mlp, tmp_path):
    Trainer(_ensemble(blobs, tiny_mlp), blobs, {**CFG, "epochs": 3}, run=RunDir(tmp_path)).fit()
    lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    assert {"train_loss", "train_acc", "val_acc", "val_nll", "lr", "wall_s"} <= set(lines[0])
    assert lines[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine reaches 0 at the end


def test_training_reduces_loss_and_members_stay_distinct(blobs, tiny_mlp):
    trainer = Trainer(_ensemble(blobs, tiny_mlp), blobs, {**CFG, "epochs": 6})
    ens = trainer.fit()
    assert trainer.history[-1]["train_loss"] < 0.5 * trainer.history[0]["train_loss"]
    w = ens.groups[0].params["head.weight"]
    assert not torch.allclose(w[0], w[1])


def test_grad_clip_is_per_member():
    g = torch.tensor([[3.0, 4.0], [0.3, 0.4]])  # norms 5 and 0.5
    p = torch.zeros(2, 2, requires_grad=True)
    p.grad = g.clone()
    norms = clip_grad_norm_per_member([p], 1.0, members=2)
    torch.testing.assert_close(norms, torch.tensor([5.0, 0.5]))
    torch.testing.assert_close(p.grad, torch.tensor([[0.6, 0.8], [0.3, 0.4]]), atol=1e-5, rtol=0)
