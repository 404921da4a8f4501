"""Distillation as a method: a teacher (any method, or a finished run) taught to one student network.

Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015 (``loss: kd``);
Malinin, Mlodozeniec & Gales, "Ensemble Distribution Distillation", ICLR 2020 (``loss: end2``: a
Prior Network student, :class:`~ensemblekit.distill.PriorNetwork`); Tran et al., "Hydra:
Preserving Ensemble Diversity for Model Distillation", 2020 (``loss: hydra``: one body, a head per
teacher member, :mod:`ensemblekit.efficient.heads`). docs/methods.md (distill).

The teacher is trained first (``teacher: {name: ..., params}``; reused from
``<cache>/teachers/<hash>`` when a teacher of the same spec, seed, data and code finished there:
never trained twice) or read from a run (``teacher: RUN``); its member predictions on the training
split (and the auxiliary inputs, ``aux``) are computed once; the student trains on them in the
stage ``student``. The row's training cost is the teacher's (stage ``teacher``), the predictions'
(``teacher_predictions``) and the student's; its inference cost and parameters are the student's.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any, ClassVar, Literal, Mapping

import torch
from pydantic import Field, field_validator

from ..data.dataset import Data, Split
from ..errors import ConfigError
from ..hashing import code_fingerprint, spec_hash
from ..models.registry import ModelFactory
from ..schema import StrictModel
from ..serialization import read_json, write_json
from ..training.checkpoint import RunDir
from ..training.config import TrainConfig
from .base import BOTH_TASKS, METHODS, Method, register_method
from .from_run import data_digest, load_trained_run

__all__ = ["Distill", "DistillParams", "AuxParams", "DEFAULT_TEACHER"]

DEFAULT_TEACHER: dict[str, Any] = {"name": "independent", "members": 5}


class AuxParams(StrictModel):
    size: float = Field(1.0, gt=0)  # auxiliary inputs, as a fraction of the training split's size
    mixup: float = Field(0.0, ge=0)  # Beta(a, a) mixing of random pairs (0: no mixing)
    augment: list[Any] = Field(default_factory=list)  # train.augment-style transforms applied to them
    noise: float = Field(0.0, ge=0)  # Gaussian perturbation, in units of each feature's standard deviation


class DistillParams(StrictModel):
    teacher: dict[str, Any] | str = Field(default_factory=lambda: dict(DEFAULT_TEACHER))  # a method spec, or a finished run
    student: Any = None  # the student's model spec (default: the method's model)
    loss: Literal["kd", "end2", "hydra"] = "kd"
    temperature: float = Field(1.0, gt=0)
    label_weight: float = Field(0.0, ge=0, le=1)  # the share of the labels' own loss
    smoothing: float = Field(1e-4, ge=0, lt=1)  # end2: members' probabilities pulled towards uniform
    end2: Literal["split", "joint"] = "split"  # split: the mean by KD, the precision by the Dirichlet NLL; joint: the NLL alone
    precision_weight: float = Field(0.01, gt=0)  # end2 split: the weight of the precision's Dirichlet NLL (per class)
    aux: AuxParams | None = None
    student_budget: int = Field(1, ge=1)  # budgets of the row's total that the student gets

    @field_validator("teacher")
    @classmethod
    def _teacher(cls, v: Any) -> Any:
        if isinstance(v, dict) and not isinstance(v.get("name"), str):
            raise ValueError("a teacher spec needs a method name: {name: independent, members: 5, ...}")
        if isinstance(v, str) and not v:
            raise ValueError("a teacher run must be a directory")
        return v


@register_method("distill")
class Distill(Method):
    """A teacher (an ensemble method or a finished run) distilled into one student network.

    ``loss: kd`` (default): the student learns the teacher's pooled probabilities at
    ``temperature`` (T² · KL); ``end2``: the student is a Prior Network whose Dirichlet fits the
    members' probability vectors (its mutual information is an OOD score; ``end2: split``, the
    default, learns the Dirichlet's mean by KD and its precision by the members' Dirichlet NLL,
    ``joint`` the NLL alone); ``hydra``: the
    student's final layer becomes one head per teacher member, head m learning member m.
    Regression: the student's Gaussian learns the teacher mixture's mean and total variance
    (``kd``) or member m's Gaussian per head (``hydra``). ``label_weight`` mixes in the labels'
    own loss; ``aux`` adds fixed auxiliary inputs (augmented, mixed) labelled by the teacher.

    Budget: kB = the teacher at (k - ``student_budget``)B (its own rule: k−1 members for
    ``independent``) plus the student for ``student_budget`` · E epochs; ``None`` when
    k ≤ ``student_budget``. A teacher run's cost is its recorded one, and the student gets kB.

    Papers: Hinton, Vinyals & Dean 2015; Malinin, Mlodozeniec & Gales, ICLR 2020; Tran et al.
    2020; docs/methods.md (distill).
    """

    Params = DistillParams
    tasks = BOTH_TASKS
    run_inputs: ClassVar[tuple[str, ...]] = ("teacher",)
    test_params: ClassVar[dict[str, Any]] = {"teacher": {"name": "independent", "members": 2}}

    # ------------------------------------------------------------------ budget
    @classmethod
    def at_budget(cls, budget: int, train: TrainConfig, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        p = dict(params or {})
        teacher = p.get("teacher", DEFAULT_TEACHER)
        if isinstance(teacher, str):
            return {"student_budget": budget}
        s = int(p.get("student_budget", 1))
        if budget <= s or not isinstance(teacher, Mapping) or "name" not in teacher:
            return None
        kind = METHODS.get(str(teacher["name"]))
        rest = {k: v for k, v in teacher.items() if k not in ("name", "label", "model", "train")}
        spent = kind.at_budget(budget - s, train, rest)
        return None if spent is None else {"teacher": {**dict(teacher), **spent}, "student_budget": s}

    def epoch_flops(self, data: Data) -> float | None:
        """``None``: teacher and student split the budget in epochs (``budget_unit: flops`` keeps that allocation)."""
        return None

    # ------------------------------------------------------------------ the pieces
    def _model(self) -> Any:
        return self.params_.student if self.params_.student is not None else self.model

    def _heads(self) -> int:
        teacher = self.params_.teacher
        return int(teacher.get("members", 5)) if isinstance(teacher, Mapping) else 5

    def _student(self, factory: ModelFactory, heads: int) -> Any:
        from ..ensemble import Ensemble

        if self.params_.loss != "hydra":
            return Ensemble.from_factory(factory, seeds=self.member_seeds(1, "student"))
        from ..efficient.heads import to_heads
        from ..efficient.shared import SharedEnsemble
        from ..seeding import derive_seed

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "student"))
            net = to_heads(factory(), members=heads)
        return SharedEnsemble(net, "heads", {"members": heads}, factory.spec)

    def _trainable(self, factory: ModelFactory, data: Data) -> Any:
        return self._student(factory, self._heads())

    def _teacher_method(self) -> Method:
        spec = dict(self.params_.teacher)  # type: ignore[arg-type]
        name = spec.pop("name")
        spec.pop("label", None)
        model = spec.pop("model", self.model)
        train = {**self.train, **dict(spec.pop("train", None) or {})}
        if name == self.name:
            raise ConfigError(f"{self.name}: a teacher cannot itself be distilled (teacher: {{name: {name}}})")
        if name not in METHODS.names():
            raise ConfigError(f"{self.name}: teacher method {name!r} is not registered; valid: {', '.join(METHODS.names())}")
        return METHODS.get(name)(model, seed=self.seed, train=train, **spec)

    # ------------------------------------------------------------------ checks
    def _check(self, data: Data, factory: ModelFactory) -> None:
        p = self.params_
        if p.loss == "end2" and data.is_regression:
            raise ConfigError(f"{self.name}: loss: end2 fits a Dirichlet over class probabilities; for regression use kd "
                              "(the mixture's mean and total variance) or hydra")
        if data.is_regression and (p.aux is not None or self.train_config_.augment or self.train_config_.mixup > 0):
            raise ConfigError(f"{self.name}: regression distillation learns from the training inputs only "
                              "(aux, train.augment and train.mixup are for classification)")
        if data.is_regression and self.train_config_.loss == "mse":
            raise ConfigError(f"{self.name}: a regression student learns a mean and a variance; train.loss must be gaussian_nll, not mse")
        if not data.train.in_memory:
            raise ConfigError(f"{self.name}: distillation looks up the teacher's predictions by example; it needs an in-memory training split")
        if p.aux is not None:
            from ..distill.targets import check_aux_specs

            check_aux_specs(p.aux.model_dump(), data.input_shape)
        if isinstance(p.teacher, str):
            load_trained_run(p.teacher, data, self.name)
        else:
            teacher = self._teacher_method()
            teacher.validate()
            teacher.check(data)
        if p.loss == "hydra":
            self._student(factory, 2)  # a model the heads cannot take is named here

    # ------------------------------------------------------------------ fit
    def _task_data(self, data: Data) -> tuple[Data, Any]:
        self.raw_data_ = data  # the teacher reads inputs in the data's own units
        out, scaling = super()._task_data(data)
        self.scaling_ = scaling
        return out, scaling

    def _fit(self, data: Data, factory: ModelFactory, run: RunDir | None) -> None:
        from ..distill import PriorNetwork
        from ..distill.targets import StreamedTeacher, distill_loss_fn, teacher_targets
        from ..training.tasks import task_loss

        p, cfg = self.params_, self.train_config_
        teacher = self._teacher(getattr(self, "raw_data_", data))
        raw = getattr(self, "raw_data_", data)
        targets = self._measured("teacher_predictions", lambda: teacher_targets(teacher, raw.train, getattr(self, "scaling_", None)))
        if p.loss == "hydra" and targets.num_members < 1:
            raise ConfigError(f"{self.name}: the teacher has no members")
        data, targets = self._with_aux(data, teacher, targets)
        streamed = not data.is_regression and (bool(cfg.augment) or cfg.mixup > 0)
        loss_fn = distill_loss_fn(p.loss, targets, temperature=p.temperature, smoothing=p.smoothing, label_weight=p.label_weight,
                                  end2=p.end2, precision_weight=p.precision_weight,
                                  label_loss=task_loss(cfg, data) if p.label_weight > 0 else None,
                                  stream=StreamedTeacher(teacher, len(data.input_shape)) if streamed else None)
        student = self._student(factory, targets.num_members)
        config = cfg.model_copy(update={"epochs": cfg.epochs * p.student_budget})
        trained = self._train_stage(student, data, run, "student", loss_fn=loss_fn, config=config)
        self.teacher_members_ = targets.num_members
        self.ensemble_ = PriorNetwork(trained) if p.loss == "end2" else trained

    def _with_aux(self, data: Data, teacher: Any, targets: Any) -> tuple[Data, Any]:
        """The training split with the auxiliary inputs appended (labelled by the teacher's class)."""
        aux = self.params_.aux
        if aux is None:
            return data, targets
        from ..distill.targets import auxiliary_inputs, check_aux_specs, teacher_targets
        from ..seeding import derive_seed

        x, y = data.train.tensors()
        extra = auxiliary_inputs(x, aux.size, seed=derive_seed(self.seed, "aux"), mixup=aux.mixup, noise=aux.noise,
                                 augment=check_aux_specs(aux.model_dump(), data.input_shape))
        more = self._measured("teacher_predictions", lambda: teacher_targets(teacher, extra))
        split = Split(torch.cat([x, extra.to(x.dtype)]), torch.cat([y, more.classes().to(y.dtype)]))
        return dataclasses.replace(data, train=split), targets.cat(more)

    # ------------------------------------------------------------------ the teacher
    def _teacher(self, data: Data) -> Any:
        """The trained teacher: read from a run, reused from the cache, or trained now (its cost in stage ``teacher``)."""
        p = self.params_
        if isinstance(p.teacher, str):
            pred = load_trained_run(p.teacher, data, self.name)
            row_path = os.path.join(p.teacher, "results.json")
            row = read_json(row_path) if os.path.isfile(row_path) else {}
            self.cost_["teacher"] = float(row.get("wall_s") or 0.0)
            self.flops_["teacher"] = (row.get("cost") or {}).get("train_flops")
            return pred
        method = self._teacher_method()
        folder = self._teacher_folder(method, data)
        if folder is not None and os.path.isfile(os.path.join(folder, "teacher.json")):
            from ..predictors import load_predictor

            record = read_json(os.path.join(folder, "teacher.json"))
            self.cost_["teacher"], self.flops_["teacher"] = float(record["seconds"]), record.get("flops")
            self.teacher_reused_ = True
            return load_predictor(os.path.join(folder, "ensemble.safetensors"))
        method.fit(data, run_dir=folder, resume=self.resume_)
        self.cost_["teacher"], self.flops_["teacher"] = method.train_seconds_, method.train_flops_
        self.teacher_reused_ = False
        if folder is not None:
            method.ensemble_.save(os.path.join(folder, "ensemble.safetensors"))
            write_json(os.path.join(folder, "teacher.json"), {"seconds": method.train_seconds_, "flops": method.train_flops_,
                                                               "spec": method.get_params() | {"name": method.name}})
        return method.ensemble_

    def _teacher_folder(self, method: Method, data: Data) -> str | None:
        """``<cache>/teachers/<hash of spec, seed, training, data and code>`` (``None``: in memory)."""
        if self.cache_dir_ is None:
            return None
        key = spec_hash({"name": method.name, "params": copy.deepcopy(method.params), "model": method.model, "seed": method.seed,
                         "train": TrainConfig(**method.train).model_dump(mode="json"), "data": data_digest(data), "code": code_fingerprint()})
        return os.path.join(self.cache_dir_, "teachers", key)

    def details(self, data: Data) -> dict[str, Any]:
        return {"teacher_members": getattr(self, "teacher_members_", None), "teacher_reused": getattr(self, "teacher_reused_", None),
                "loss": self.params_.loss}
