"""The GPU benchmark script runs end to end on CPU with tiny sizes (its figures come from a GPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_script_runs_quick_on_cpu(tmp_path) -> None:
    out = tmp_path / "gpu.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "gpu.py"), "--device", "cpu", "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["quick"] and result["device"].startswith("cpu")
    assert [r["members"] for r in result["cnn1d"]["rows"]] == [1, 2]
    assert {(r["model"], r["precision"]) for r in result["resnets"]} == {("resnet", "fp32"), ("resnet", "bf16"), ("wrn", "fp32"), ("wrn", "bf16")}
    assert all(r["ensemblekit_s_per_epoch"] > 0 and r["loop_s_per_epoch"] > 0 for r in result["resnets"])
    assert {r["method"] for r in result["compare"]["rows"]} == {"Single", "Ind", "FGE"}
    assert all(0 <= r["test_error_pct"] <= 100 for r in result["compare"]["rows"])
