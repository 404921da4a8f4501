"""Loading never runs code a file names; files are written readable by the group; no temporary files are left behind."""

from __future__ import annotations

import json
import os
import stat

import pytest
import yaml

import ensemblekit as ek
from ensemblekit.errors import ConfigError
from ensemblekit.serialization import atomic_write_text, load_tensors, save_tensors




def _crafted_run(tmp_path, blobs, marker):
    """A run directory whose ensemble and config name `os:system` with a command that creates `marker`."""
    m = ek.create_method("independent", model={"name": "mlp", "kwargs": {"hidden": [4]}}, members=1, epochs=1, progress=False).fit(blobs)
    run = tmp_path / "run"
    run.mkdir()
    path = str(run / "ensemble.safetensors")
    m.ensemble_.save(path)
    tensors, meta = load_tensors(path)
    meta["groups"][0]["spec"] = {"factory": "os:system", "kwargs": {"command": f"touch {marker}"}}
    save_tensors(path, tensors, meta)
    cfg = {"data": "digits", "model": {"factory": "os:system", "kwargs": {"command": f"touch {marker}"}}, "method": "independent"}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    return run


def test_a_crafted_ensemble_runs_nothing_on_load_evaluate_or_resume(cli, blobs, tmp_path, capsys):
    marker = tmp_path / "pwned"
    run = _crafted_run(tmp_path, blobs, marker)
    with pytest.raises(ConfigError, match="user factory 'os:system'; loading would import and run it"):
        ek.Ensemble.load(str(run / "ensemble.safetensors"))
    assert cli("evaluate", str(run)) == 2
    assert cli("train", "--resume", str(run)) == 2
    err = capsys.readouterr().err
    assert "--trust-factory" in err and "Traceback" not in err
    assert not marker.exists()


def test_registered_models_load_without_trust(blobs, tmp_path):
    m = ek.create_method("independent", model={"name": "mlp", "kwargs": {"hidden": [4]}, "dropconnect": 0.1}, members=2, epochs=1,
                         progress=False).fit(blobs)
    m.ensemble_.save(str(tmp_path / "e.safetensors"))
    back = ek.Ensemble.load(str(tmp_path / "e.safetensors"))
    assert back.predict_proba(blobs.test.x).shape == (2, len(blobs.test), 3)


@pytest.mark.parametrize("meta, match", [
    ({"format": "ensemblekit.ensemble/1"}, "not an ensemblekit ensemble file"),
    ({"format": "ensemblekit.ensemble/1", "groups": [{"spec": None}]}, "malformed metadata of group 0"),
    ({"format": "ensemblekit.ensemble/1", "groups": [{"spec": {"name": "mlp", "kwargs": {"input_shape": [8], "num_classes": 3}},
                                                       "frozen": [], "members": 1}]}, "lacks tensor 'g0.param"),
])
def test_malformed_ensemble_files_are_refused_in_one_line(tmp_path, meta, match):
    import torch

    path = str(tmp_path / "e.safetensors")
    save_tensors(path, {"x": torch.zeros(1)}, meta)
    with pytest.raises(ek.DataError, match=match):
        ek.Ensemble.load(path)


def test_files_follow_the_umask_and_dead_writers_leave_no_temporaries(tmp_path):
    old = os.umask(0o022)
    try:
        (tmp_path / ".tmp-r.json.999999.x").write_text("half a file a killed writer left")
        atomic_write_text(tmp_path / "r.json", json.dumps({"a": 1}))
        assert stat.S_IMODE(os.stat(tmp_path / "r.json").st_mode) == 0o644
        assert sorted(os.listdir(tmp_path)) == ["r.json"]
    finally:
        os.umask(old)
