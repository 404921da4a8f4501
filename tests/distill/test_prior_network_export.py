"""A Prior Network student exports as its softmax network and predicts like it."""

from __future__ import annotations

import torch

import ensemblekit as ek
from ensemblekit.distill import PriorNetwork
from ensemblekit.export import export


def test_an_end2_student_exports_one_graph_giving_its_probabilities(blobs, tmp_path):
    small = dict(model={"name": "mlp", "kwargs": {"hidden": [16]}}, epochs=2, batch_size=32, progress=False)
    student = ek.create_method("distill", teacher={"name": "independent", "members": 2}, loss="end2", **small).fit(blobs)
    assert isinstance(student.ensemble_, PriorNetwork)
    path = export(student.ensemble_, str(tmp_path / "student.pt2"), blobs.test.x[:4])
    program = torch.export.load(path)
    out = program.module()(blobs.test.x[:8])
    torch.testing.assert_close(out, student.predict_proba(blobs.test.x[:8]).mean(0), rtol=1e-5, atol=1e-6)
