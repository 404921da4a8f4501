"""Curve ensembles (Garipov et al. 2018): networks along a low-loss curve between two trained networks."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from pydantic import Field

from ..curves import check_same_architecture, curve_ensemble, curve_from_ensembles, curve_from_files, get_parametrization
from ..curves.model import CurveModel
from ..data.dataset import Data
from ..ensemble import Ensemble
from ..errors import ConfigError
from ..models.registry import ModelFactory
from ..training.checkpoint import RunDir
from ..schema import StrictModel
from ..training.config import PenaltyConfig, TrainConfig
from ..training.engine import resolve_device
from ..training.tasks import task_loss
from .base import BOTH_TASKS, Method, register_method

__all__ = ["CurveEnsemble", "CurveParams", "curve_stage_config"]


class CurveParams(StrictModel):
    members: int = Field(3, ge=1)
    curve: Any = "bezier"
    num_bends: int = Field(3, ge=3)
    weight_decay: float | None = Field(None, ge=0)
    curve_epochs: int | None = Field(None, ge=1)
    endpoints: list[str] | None = None
    grid: int = Field(61, ge=2)


def curve_stage_config(train: TrainConfig, epochs: int) -> tuple[TrainConfig, float]:
    """The curve stage's TrainConfig and the weight decay it moves onto ``phi(t)``.

    Weight decay must act on the point, not on the bends, so it is taken out of the
    optimizer (``optimizer.weight_decay``, coupled) or ``train.weight_decay`` (decoupled)
    and returned to be added as ``0.5 * wd * ||phi(t)||^2``. Penalties, early stopping
    and per-member optimizer settings concern ensembles of members and are dropped. An
    optimizer given as a callable is used as is (its own weight decay would reach the bends).

    Args:
        train: the method's training config. epochs: the curve stage's epochs (>= 1).

    Returns:
        ``(config, weight_decay)``.
    """
    opt = train.optimizer
    wd = float(train.weight_decay)
    if isinstance(opt, Mapping):
        opt = dict(opt)
        opt.pop("per_member", None)
        wd = float(opt.pop("weight_decay", 0.0)) or wd
        opt["weight_decay"] = 0.0  # explicit: AdamW would otherwise decay the bends by default
    elif isinstance(opt, str):
        opt = {"name": opt, "weight_decay": 0.0}
    cfg = train.model_copy(update={"epochs": epochs, "optimizer": opt, "weight_decay": 0.0, "penalties": PenaltyConfig(), "early_stopping": None})
    return cfg, wd


@register_method("curve_ensemble")
class CurveEnsemble(Method):
    """Ensembles of networks on a mode-connecting curve (docs/methods.md, curve_ensemble).

    Train two endpoints independently (stage ``endpoints``, like ``independent`` with two
    members) or load them from ``endpoints``; fit a curve between them (stage ``curve``:
    one ``t ~ U[0,1]`` per mini-batch, the loss at ``phi(t)``, weight decay on
    ``phi(t)``); the ensemble is ``members`` networks at evenly spaced t in [0, 1]
    (both endpoints included; one member = the midpoint), each with BatchNorm
    statistics recomputed by one pass over the training data.

    Budget: each endpoint costs one budget and the curve stage ``curve_epochs`` epochs
    (a curve epoch costs about one model epoch); ``at_budget(B)`` (B >= 3) spends
    ``B - 2`` budgets on the curve and returns ``B`` members, the size of the
    ``independent`` ensemble of the same budget.

    Args:
        members: networks on the curve in the ensemble (>= 1; default 3).
        curve: ``bezier`` (default), ``polychain`` or a callable ``(t, k) -> (k,)``.
        num_bends: bends including the endpoints (>= 3; default 3 = one free bend).
        weight_decay: decay on ``phi(t)`` (default: the optimizer's ``weight_decay`` or
            ``train.weight_decay``, moved off the bends; see :func:`curve_stage_config`).
        curve_epochs: epochs of the curve stage (default ``train.epochs``).
        endpoints: saved ensemble files (``ensemble.safetensors``): one file (its members
            0 and 1) or two files (member 0 of each); no endpoint training then.
        grid: points of the t grid in :meth:`report` (default 61).

    Example:
        >>> m = ek.create_method("curve_ensemble", model="cnn1d", members=3, epochs=30).fit(data)
        >>> m.curve_.point(0.5)   # the weights at the middle of the curve
    """

    tasks = BOTH_TASKS  # classification and regression (a Gaussian head: docs/regression.md)

    Params = CurveParams
    test_params = {"members": 2}

    @classmethod
    def at_budget(cls, budget: int, train: TrainConfig, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        if budget < 3:
            return None
        return {"members": budget, "curve_epochs": (budget - 2) * train.epochs}

    def validate(self) -> None:
        super().validate()
        get_parametrization(self.params_.curve)
        if self.params_.endpoints is not None and len(self.params_.endpoints) not in (1, 2):
            raise ConfigError(f"{self.name}: endpoints must list one or two ensemble files, got {len(self.params_.endpoints)}")

    def _check(self, data: Data, factory: ModelFactory) -> None:
        import os

        for path in self.params_.endpoints or []:
            if not os.path.isfile(path):
                raise ConfigError(f"{self.name}: endpoint file not found: {path}")

    def _curve(self, data: Data, factory: ModelFactory, run: RunDir | None, wd: float) -> CurveModel:
        p = self.params_
        opts = {"num_bends": p.num_bends, "curve": p.curve, "weight_decay": wd}
        if p.endpoints is None:
            ends = Ensemble.from_factory(factory, seeds=self.member_seeds(2))
            self.endpoints_ = self._train_stage(ends, data, run, "endpoints")
            return curve_from_ensembles(self.endpoints_, 0, self.endpoints_, 1, **opts)
        pair = (p.endpoints[0], p.endpoints[0], 0, 1) if len(p.endpoints) == 1 else (p.endpoints[0], p.endpoints[1], 0, 0)
        curve = curve_from_files(*pair, factory=factory, **opts)
        try:
            check_same_architecture(factory(), curve.template)
        except ConfigError as exc:
            raise ConfigError(f"{self.name}: the endpoint files do not hold the configured model ({exc})") from None
        return curve

    def _fit(self, data: Data, factory: ModelFactory, run: RunDir | None) -> None:
        cfg, wd = curve_stage_config(self.train_config_, self.params_.curve_epochs or self.train_config_.epochs)
        wd = self.params_.weight_decay if self.params_.weight_decay is not None else wd
        curve = self._curve(data, factory, run, wd).to(resolve_device(cfg.device))
        # the curve has no per-epoch validation: BatchNorm statistics are only right after a pass at fixed t
        self.curve_ = self._train_stage(curve, dataclasses.replace(data, val=None), run, "curve", config=cfg,
                                        loss_for=lambda c: c.regularized(task_loss(cfg, data)))
        self.ensemble_ = self._measured("points_bn", lambda: curve_ensemble(self.curve_, self.params_.members, data.train))

    def report(self, run: RunDir, data: Data) -> None:
        """Evaluate the curve and the straight line on the t grid; write ``curve.json`` and the plots
        (classification: test error and NLL along t; a regression run has its row's metrics only)."""
        if data.is_regression:
            return
        from ..report.curve_report import write_curve_report

        write_curve_report({self.curve_.curve_name: self.curve_}, data, run.file("curve"), grid=self.params_.grid)
