"""report.html: every table of the Markdown report, images that are valid PNGs, and (when a
headless Chromium is installed) a page that renders with every image loaded."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import matplotlib.image as mpimg
import pytest
import yaml


def test_compare_writes_a_self_contained_report(tmp_path, cli):
    cfg = {"data": "digits", "model": {"name": "mlp", "kwargs": {"hidden": [8]}},
           "train": {"epochs": 1, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}, "progress": False},
           "budgets": [1, 2], "seeds": [0, 1], "methods": [{"name": "independent", "label": "Ind"}, {"name": "snapshot", "label": "SSE", "cycles": 2}],
           "out": str(tmp_path / "cmp")}
    (tmp_path / "cmp.yaml").write_text(yaml.safe_dump(cfg))
    assert cli("compare", tmp_path / "cmp.yaml") == 0
    page = (tmp_path / "cmp" / "report.html").read_text()
    md = (tmp_path / "cmp" / "results.md").read_text()
    n_tables = len(re.findall(r"^\|[-| ]+\|$", md, flags=re.M))
    assert n_tables >= 5 and page.count("<table>") == n_tables
    for heading in re.findall(r"^## (.+)$", md, flags=re.M):
        assert heading.replace("&", "&amp;").replace("'", "&#x27;") in page or heading in page, heading
    pngs = sorted(p.name for p in (tmp_path / "cmp").glob("*.png"))
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', page)
    assert [name for name, _ in images] == pngs and len(pngs) >= 3
    for _, data in images:
        raw = base64.b64decode(data)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        assert mpimg.imread(io.BytesIO(raw), format="png").ndim == 3
    assert "budgets:" in page and "ensemblekit" in page  # the resolved config and the versions
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no headless Chromium installed (apt-get install chromium)")
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", "--dump-dom",
                          (tmp_path / "cmp" / "report.html").as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert f'data-images="{len(pngs)}"' in dom and 'data-broken-images="0"' in dom
