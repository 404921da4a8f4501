"""Ensemble files: the format, and the member groups a saved file rebuilds.

A file is safetensors: every stacked tensor under its :func:`~ensemblekit.ensemble.group.state_key`
and JSON metadata ``{"format": ENSEMBLE_FORMAT, "groups": [{members, spec, frozen}], "members": [...]}``.
Groups are rebuilt from their model spec; loading never unpickles and never runs code the
file names unless the caller trusts it (:func:`rebuild_template`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..errors import ConfigError, DataError
from ..models.registry import model_factory
from .group import MemberGroup, state_key

__all__ = ["ENSEMBLE_FORMAT", "saved_groups", "rebuild_template"]

ENSEMBLE_FORMAT = "ensemblekit.ensemble/1"


def saved_groups(path: str, tensors: dict[str, torch.Tensor], meta: Any,
                 factory: Callable[[], nn.Module] | Sequence[Callable[[], nn.Module]] | None = None,
                 device: str | torch.device = "cpu", trust_factory: bool = False) -> tuple[list[MemberGroup], Any]:
    """The member groups and ``members_info`` of tensors and metadata read from ``path``
    (see :meth:`~ensemblekit.ensemble.Ensemble.load` for the arguments and errors)."""
    if not isinstance(meta, dict) or meta.get("format") != ENSEMBLE_FORMAT or not isinstance(meta.get("groups"), list):
        raise DataError(f"{path}: not an ensemblekit ensemble file")
    groups = []
    for gi, gmeta in enumerate(meta["groups"]):
        if not isinstance(gmeta, dict) or not {"spec", "frozen", "members"} <= set(gmeta):
            raise DataError(f"{path}: malformed metadata of group {gi} (expected spec, frozen, members)")
        template = rebuild_template(path, gi, gmeta["spec"], factory[gi] if isinstance(factory, Sequence) else factory, trust_factory).to(device)
        params, buffers = OrderedDict(), OrderedDict()
        for kind, names, out in (("param", [k for k, _ in template.named_parameters()], params),
                                 ("buffer", [k for k, _ in template.named_buffers()], buffers)):
            for k in names:
                key = state_key(gi, kind, k)
                if key not in tensors:
                    raise DataError(f"{path}: lacks tensor {key!r} of the model its metadata names")
                out[k] = tensors[key].requires_grad_(k not in gmeta["frozen"]) if kind == "param" else tensors[key]
        groups.append(MemberGroup(template, params, buffers, gmeta["spec"]))
    return groups, meta.get("members")


def rebuild_template(path: str, gi: int, spec: Any, factory: Callable[[], nn.Module] | None, trust: bool) -> nn.Module:
    """The module a saved group is rebuilt on: registered specs from the registry, user ones by the caller."""
    if spec is not None and not isinstance(spec, dict):
        raise DataError(f"{path}: malformed model spec of group {gi}: {spec!r}")
    if spec is not None and "factory" not in spec:
        return model_factory(spec)()  # a registered model and registered wrappers: no foreign code
    if factory is not None:
        try:
            module = factory()
        except Exception as exc:  # the user's own code failed
            raise ConfigError(f"{path}: the factory given for group {gi} raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(module, nn.Module):
            raise ConfigError(f"factory returned {type(module).__name__}, not an nn.Module")
        return module
    if spec is None:
        raise ConfigError(f"{path}: group {gi} was built by a Python callable; pass factory= (CLI: --factory pkg.mod:fn) to load it")
    if not trust:
        raise ConfigError(f"{path}: group {gi} was built by the user factory {spec['factory']!r}; loading would import and run it. "
                          "Pass your own factory (Ensemble.load(path, factory=make_net), CLI --factory pkg.mod:make_net) "
                          "or, if you trust the file, trust_factory=True (CLI --trust-factory)")
    return model_factory(spec)()
