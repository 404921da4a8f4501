"""Presets (nes, varhyper, curve) run compare's cells: keyed, reused, refused and retrained exactly like them."""

from __future__ import annotations

import json

import pytest

from ensemblekit import hashing
from ensemblekit.experiments.cells import cell_dir, run_cell, train_hash
from ensemblekit.experiments.nes import NesConfig, nes_cells
from ensemblekit.experiments.presets import get_preset, run_preset
from ensemblekit.experiments.units import StaleResultError
from ensemblekit.experiments.varhyper import VarHyperConfig

MLP = {"name": "mlp", "kwargs": {"hidden": [16]}}
TRAIN = {"epochs": 2, "batch_size": 48, "optimizer": {"name": "adam", "lr": 0.02}, "progress": False}


def _cfg(**kw) -> VarHyperConfig:
    return VarHyperConfig(model=MLP, train=TRAIN, forms=["linear"], baselines=["l2"], lambdas=[0.01, 1.0], fractions=[0.0, 0.5],
                          seeds=[0], weighting="balanced", **kw)


def _files(run, key):
    """What a finished cell holds on disk: its row and its log, as bytes."""
    return {name: (run / key / name).read_bytes() for name in ("results.json", "metrics.jsonl")}


def test_preset_cells_are_reused_refused_and_retrained_like_compare_cells(blobs, tmp_path, monkeypatch):
    preset, run = get_preset("varhyper"), tmp_path / "run"
    first = run_preset(preset, _cfg(), str(run), data=blobs, plots=False)
    specs = {spec["key"]: spec for spec, _ in first.cells}
    rows = {spec["key"]: row for spec, row in first.cells}
    assert list(specs) == ["hyper_linear-s0", "l2-s0"] and not first.failed
    for key, spec in specs.items():  # each cell is keyed by its spec and data, and by the code, as a compare cell is
        record = json.loads((run / key / "spec.json").read_text())
        assert record["hash"] == train_hash(spec, blobs) == rows[key]["spec_hash"] and record["code"] == hashing.code_fingerprint()
        assert rows[key]["method"] == spec["label"] and rows[key]["budget"] is None and not (run / key / "checkpoints").exists()
    assert rows["hyper_linear-s0"]["name"] == "varhyper" and rows["l2-s0"]["name"] == "l2_nets"
    acc = first.results["summary"]["hyper_linear"]["acc_mean"]
    assert acc == [[rows["hyper_linear-s0"]["details"]["accuracy"][i][j] for j in range(2)] for i in range(2)]
    assert 0.5 < acc[0][0] <= 1.0  # three well separated blobs: far above chance (1/3)
    before = {key: _files(run, key) for key in specs}

    # the same config again: every cell reused (nothing rewritten), the same numbers
    again = run_preset(preset, _cfg(), str(run), data=blobs, plots=False)
    assert {key: _files(run, key) for key in specs} == before
    assert again.results["summary"] == first.results["summary"]
    assert run_cell(specs["l2-s0"], cell_dir(str(run), specs["l2-s0"]), blobs)["test"] == rows["l2-s0"]["test"]  # compare's unit reuses it

    # a changed setting that only the hypernetwork trains with: refused before anything is written ...
    summary_file = (run / "varhyper.json").read_bytes()
    with pytest.raises(StaleResultError, match="hyper_linear-s0 holds work of another config .* --force"):
        run_preset(preset, _cfg(prior_std=0.5), str(run), data=blobs, plots=False)
    assert (run / "varhyper.json").read_bytes() == summary_file and {key: _files(run, key) for key in specs} == before
    # ... and with force only that cell is retrained: the L2 nets' cell is the very same file
    forced = run_preset(preset, _cfg(prior_std=0.5), str(run), data=blobs, plots=False, force=True)
    new = {spec["key"]: row for spec, row in forced.cells}
    assert _files(run, "l2-s0") == before["l2-s0"] and new["l2-s0"]["test"] == rows["l2-s0"]["test"]
    assert new["hyper_linear-s0"]["spec_hash"] != rows["hyper_linear-s0"]["spec_hash"]
    assert new["hyper_linear-s0"]["hyperparameters"]["prior_std"] == 0.5 and new["hyper_linear-s0"]["test"]["nll"] != rows["hyper_linear-s0"]["test"]["nll"]

    # other code: refused, or kept on record (and named in the report), as for compare
    monkeypatch.setattr(hashing, "code_fingerprint", lambda: "newcode00000")
    with pytest.raises(StaleResultError, match="computed by other code .* --accept-code-change"):
        run_preset(preset, _cfg(prior_std=0.5), str(run), data=blobs, plots=False)
    kept = run_preset(preset, _cfg(prior_std=0.5), str(run), data=blobs, plots=False, accept_code_change=True)
    assert [row["code_accepted"]["accepted_under"] for _, row in kept.cells] == ["newcode00000"] * 2
    assert kept.results["summary"] == forced.results["summary"]
    assert "Not every row was computed by this code" in (run / "varhyper.md").read_text()


def test_nes_cells_take_the_shared_settings_their_methods_declare():
    cfg = NesConfig(pool=4, ensemble=2, deviation_k=3, seeds=[0, 1], methods=["edgenes", "darts", "deepens_darts", "nes_deviation"])
    (stage,) = nes_cells(cfg)
    assert [spec["folder"] for spec in stage[:4]] == ["seed0/edgenes", "seed0/darts", "seed0/deepens_darts", "seed0/nes_deviation"]
    params = {spec["label"]: set(spec["method"]["params"]) for spec in stage if spec["seed"] == 0}
    assert params == {"edgenes": {"search", "channels", "layers", "pool", "members", "hyper", "lambdas"},
                      "darts": {"search", "channels", "layers"}, "deepens_darts": {"search", "channels", "layers", "members"},
                      "nes_deviation": {"search", "channels", "layers", "pool", "members", "k"}}
    deviation = next(spec for spec in stage if spec["label"] == "nes_deviation")["method"]["params"]
    assert (deviation["pool"], deviation["members"], deviation["k"]) == (4, 2, 3)
