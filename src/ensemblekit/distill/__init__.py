"""Distillation: an ensemble's predictions taught to one network (or one body with M heads).

Owns: the losses (:mod:`.losses`: knowledge distillation at a temperature, the Dirichlet NLL of
Ensemble Distribution Distillation, the Gaussian match of a regression mixture), the teacher's
predictions and the auxiliary inputs (:mod:`.targets`), and the Prior Network predictor kind
(:mod:`.prior_network`: a network read as a Dirichlet, whose mutual information is an OOD score).
The method that trains teacher and student is :class:`ensemblekit.methods.distill.Distill`;
docs/methods.md (distill).

May import: the base modules, ``data``, ``metrics``, ``evaluation``, ``models``, ``training`` and
``ensemble``.
"""

from __future__ import annotations

from .losses import dirichlet_nll, end2_loss, gaussian_kl, kd_loss, precision_only, soften
from .prior_network import PRIOR_NETWORK_FORMAT, PriorNetwork, dirichlet_uncertainty
from .targets import LOSSES, StreamedTeacher, TeacherTargets, auxiliary_inputs, distill_loss_fn, teacher_targets

__all__ = ["kd_loss", "dirichlet_nll", "end2_loss", "precision_only", "gaussian_kl", "soften", "PriorNetwork", "PRIOR_NETWORK_FORMAT", "dirichlet_uncertainty",
           "TeacherTargets", "StreamedTeacher", "teacher_targets", "auxiliary_inputs", "distill_loss_fn", "LOSSES"]
