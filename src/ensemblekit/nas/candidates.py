"""Training a candidate architecture from scratch: the unit of work of the search methods.

A candidate is a pure function of its spec (genotype, initialisation seed, width, depth,
training config and the data's digest), so it is trained once and kept under the hash of
that spec: two methods (or two comparison cells) that need the same architecture with
the same seed share one training. :func:`train_candidate` is importable and takes only a
JSON-able spec, so an execution backend (Ray) can run the candidates of a pool in
parallel; it resumes from its own checkpoints after a kill.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import torch

from ..data.dataset import Data
from ..ensemble import Ensemble
from ..hashing import code_fingerprint, spec_hash
from ..models.registry import model_factory
from ..serialization import load_tensors, read_json, save_tensors, write_json
from ..training.checkpoint import RunDir
from .genotype import Genotype
from .select import ensemble_nll

__all__ = ["candidate_spec", "train_candidate", "load_candidate", "candidate_probs"]

_DONE = "candidate.json"


def candidate_spec(genotype: Genotype, *, seed: int, channels: int, layers: int, train: Mapping[str, Any], data: Data) -> dict[str, Any]:
    """The JSON-able spec of one candidate; ``key`` is the hash of everything that shapes its result."""
    body = {"genotype": genotype.to_json(), "seed": int(seed), "channels": int(channels), "layers": int(layers), "data": data.digest()}
    shaping = {k: v for k, v in train.items() if k != "progress"}  # how training is shown does not change it
    return {"key": "cand-" + spec_hash({**body, "train": shaping, "code": code_fingerprint()}), **body, "train": dict(train)}


def _model_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": "darts", "kwargs": {"genotype": spec["genotype"], "channels": spec["channels"], "layers": spec["layers"]}}


def train_candidate(spec: Mapping[str, Any], *, data: Data, root: str, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train the ``darts`` network of ``spec`` from scratch into ``root/<key>`` (or return the
    record of a finished one).

    Writes checkpoints, ``ensemble.safetensors``, ``probs.safetensors`` (validation and test
    probabilities) and, last, ``candidate.json`` (which marks it done).

    Returns:
        ``{key, val_nll, val_acc, test_acc, seconds, flops, steps}``.
    """
    from ..training.engine import Trainer

    folder = os.path.join(root, str(spec["key"]))
    done = os.path.join(folder, _DONE)
    if os.path.exists(done):
        return read_json(done)
    factory = model_factory(_model_spec(spec), input_shape=data.input_shape, num_classes=data.num_classes)
    seed = int(spec["seed"])
    trainer = Trainer(Ensemble.from_factory(factory, seeds=[seed]), data, spec["train"], seed=seed, run=RunDir(folder), stage="train",
                      callbacks=list(callbacks))
    ens = trainer.fit()
    val, test = ens.predict_proba(data.val)[0], ens.predict_proba(data.test)[0]
    ens.members_info = [{"seed": seed, "genotype": Genotype.from_json(spec["genotype"]).text()}]
    ens.save(os.path.join(folder, "ensemble.safetensors"))
    save_tensors(os.path.join(folder, "probs.safetensors"), {"val": val, "test": test})
    cost = trainer.cost()
    record = {"key": spec["key"], "val_nll": ensemble_nll(val[None], data.val.y), "val_acc": float((val.argmax(1) == data.val.y).float().mean()),
              "test_acc": float((test.argmax(1) == data.test.y).float().mean()), "seconds": trainer.wall_s, "flops": cost["flops"],
              "steps": cost["steps"], "history": trainer.history}
    write_json(done, record)
    return record


def load_candidate(root: str, key: str) -> Ensemble:
    """The trained network of a finished candidate (one member)."""
    return Ensemble.load(os.path.join(root, key, "ensemble.safetensors"))


def candidate_probs(root: str, keys: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Validation and test probabilities ``(P, N, C)`` of finished candidates, in ``keys`` order."""
    loaded = [load_tensors(os.path.join(root, k, "probs.safetensors"))[0] for k in keys]
    return torch.stack([t["val"] for t in loaded]), torch.stack([t["test"] for t in loaded])
