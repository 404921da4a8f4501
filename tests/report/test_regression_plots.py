"""Regression figures: the 1-D predictive band, quantile calibration and size curves.

Each figure is read back before it is saved (``save_figure`` wrapped) so the tests check what
is drawn (lines, bands, legend text), not only that a PNG exists.
"""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from ensemblekit.errors import ConfigError, DataError
from ensemblekit.metrics.predictive import Gaussian
from ensemblekit.metrics.regression_calibration import quantile_calibration, scale_variance
from ensemblekit.metrics.regression_summary import gaussian_size_curve
from ensemblekit.report import plots, regression_plots
from ensemblekit.report.regression_plots import predictive_band, regression_calibration_plot, regression_size_curve_plot


@pytest.fixture
def drawn(monkeypatch):
    """The content of every figure saved during the test: per axis, its lines (and error-bar lines), bands and legend."""
    figures: list[list[dict]] = []
    original = plots.save_figure

    def capture(fig, path):
        axes = []
        for ax in fig.axes:
            legend = ax.get_legend()
            axes.append({
                "lines": {ln.get_label(): (np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float), ln.get_linestyle())
                          for ln in ax.get_lines()}
                         | {c.get_label(): (np.asarray(c.lines[0].get_xdata(), float), np.asarray(c.lines[0].get_ydata(), float),
                                            c.lines[0].get_linestyle()) for c in ax.containers if hasattr(c, "lines")},
                "bands": {c.get_label(): c.get_paths()[0].vertices.copy() for c in ax.collections if c.get_paths()},
                "legend": [t.get_text() for t in legend.get_texts()] if legend else [],
                "title": ax.get_title(),
            })
        figures.append(axes)
        return original(fig, path)

    monkeypatch.setattr(plots, "save_figure", capture)
    monkeypatch.setattr(regression_plots, "save_figure", capture)
    return figures


def _assert_png(path):
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 1000
    assert mpimg.imread(path, format="png").ndim == 3


def _toy(m=3, n=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, generator=g) * 8 - 4  # unsorted on purpose
    mean = x.pow(3).unsqueeze(0) + torch.randn(m, n, generator=g)
    var = torch.rand(m, n, generator=g) + 0.1
    return x, Gaussian(mean=mean, var=var)


def _band(drawn_axis, prefix):
    (label,) = [k for k in drawn_axis["bands"] if k.startswith(prefix)]
    return drawn_axis["bands"][label]


def test_predictive_band_draws_the_mean_and_both_bands_sorted_by_x(tmp_path, drawn):
    x, pd = _toy()
    x_train = np.linspace(-4, 4, 20)
    out = predictive_band(pd, x, tmp_path / "sub" / "band.png", train=(x_train, x_train**3), truth=lambda v: v**3,
                          title="x cubed", std_factor=3.0, members=True)
    assert out == tmp_path / "sub" / "band.png"
    _assert_png(out)
    (ax,) = drawn[0]
    order = torch.argsort(x)
    mean = pd.mean.double().mean(0)[order].numpy()
    alea = pd.var.double().mean(0)[order].numpy()
    epi = pd.mean.double().var(0, unbiased=False)[order].numpy()
    xs, ys, _ = ax["lines"]["ensemble mean"]
    np.testing.assert_allclose(xs, np.sort(x.numpy()), rtol=0, atol=1e-6)
    np.testing.assert_allclose(ys, mean, rtol=1e-6, atol=1e-6)
    total_band, alea_band = _band(ax, "total"), _band(ax, "aleatoric")
    np.testing.assert_allclose(total_band[:, 1].max(), (mean + 3 * np.sqrt(alea + epi)).max(), rtol=1e-6)
    np.testing.assert_allclose(total_band[:, 1].min(), (mean - 3 * np.sqrt(alea + epi)).min(), rtol=1e-6)
    np.testing.assert_allclose(alea_band[:, 1].max(), (mean + 3 * np.sqrt(alea)).max(), rtol=1e-6)
    np.testing.assert_allclose(alea_band[:, 1].min(), (mean - 3 * np.sqrt(alea)).min(), rtol=1e-6)
    legend = " | ".join(ax["legend"])
    assert "aleatoric + epistemic" in legend and "aleatoric: mean ± 3 std" in legend
    assert {"ensemble mean", "members' means", "ground truth", "training data"} <= set(ax["legend"])
    gx, gy, style = ax["lines"]["ground truth"]
    assert style == "--" and gx.min() == pytest.approx(-4) and gx.max() == pytest.approx(4)
    np.testing.assert_allclose(gy, gx**3)
    assert ax["title"] == "x cubed"


def test_predictive_band_accepts_column_inputs_and_does_not_mutate(tmp_path, drawn):
    x, pd = _toy()
    x_np = x.numpy().copy()
    x_col = x_np.reshape(-1, 1)
    mean0, var0 = pd.mean.clone(), pd.var.clone()
    single = Gaussian(pd.mean.unsqueeze(-1), pd.var.unsqueeze(-1))  # (M, N, 1): one target
    _assert_png(predictive_band(single, x_col, tmp_path / "band.png"))
    _assert_png(predictive_band((pd.mean, pd.var), torch.from_numpy(x_np), tmp_path / "band2.png"))
    assert torch.equal(pd.mean, mean0) and torch.equal(pd.var, var0)
    np.testing.assert_array_equal(x_col[:, 0], x.numpy())  # not sorted in place
    assert "members' means" not in drawn[0][0]["legend"]  # members are off by default
    np.testing.assert_allclose(drawn[0][0]["lines"]["ensemble mean"][1], drawn[1][0]["lines"]["ensemble mean"][1])


@pytest.mark.parametrize("bad_x", [torch.rand(50, 2), torch.rand(5, 10, 1)])
def test_predictive_band_rejects_inputs_that_are_not_one_feature(tmp_path, bad_x):
    _, pd = _toy()
    with pytest.raises(DataError, match="`x`") as exc:
        predictive_band(pd, bad_x, tmp_path / "band.png")
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "band.png").exists()


def test_predictive_band_rejects_multi_output_and_bad_arguments(tmp_path):
    x, pd = _toy()
    multi = Gaussian(torch.randn(3, 50, 2), torch.rand(3, 50, 2) + 0.1)
    with pytest.raises(DataError, match="2 outputs") as exc:
        predictive_band(multi, x, tmp_path / "band.png")
    assert "\n" not in str(exc.value)
    with pytest.raises(DataError, match="one value per example"):
        predictive_band(pd, x[:40], tmp_path / "band.png")
    with pytest.raises(DataError, match="equal length"):
        predictive_band(pd, x, tmp_path / "band.png", train=(np.zeros(4), np.zeros(5)))
    with pytest.raises(DataError, match="truth"):
        predictive_band(pd, x, tmp_path / "band.png", truth=lambda v: v[:3])
    for k in (0, -1.0, float("nan"), True):
        with pytest.raises(ConfigError, match="std_factor"):
            predictive_band(pd, x, tmp_path / "band.png", std_factor=k)


def _calibrated(n=2000, seed=0):
    """A 3-member mixture and targets drawn from that same mixture."""
    g = torch.Generator().manual_seed(seed)
    pd = Gaussian(mean=torch.randn(3, n, generator=g, dtype=torch.float64),
                  var=torch.rand(3, n, generator=g, dtype=torch.float64) + 0.1)
    member = torch.randint(0, 3, (n,), generator=g)
    idx = torch.arange(n)
    y = pd.mean[member, idx] + pd.var[member, idx].sqrt() * torch.randn(n, generator=g, dtype=torch.float64)
    return pd, y


def test_calibration_plot_draws_each_curve_with_its_error(tmp_path, drawn):
    pd, y = _calibrated()
    raw = quantile_calibration(pd, y)
    narrow = quantile_calibration(scale_variance(pd, 0.25), y)
    assert float(raw["error"]) < 0.02 < float(narrow["error"])  # the fixture is what the test assumes
    before = {k: v.clone() for k, v in raw.items()}
    out = regression_calibration_plot({"raw": raw, "over-confident": narrow}, tmp_path / "qcal.png", title="calibration")
    _assert_png(out)
    assert all(torch.equal(raw[k], before[k]) for k in raw)
    (ax,) = drawn[0]
    assert ax["legend"] == ["perfect calibration", f"raw (calibration error {float(raw['error']):.4f})",
                            f"over-confident (calibration error {float(narrow['error']):.4f})"]
    lx, ly, _ = ax["lines"][ax["legend"][1]]
    np.testing.assert_allclose(lx, raw["levels"].numpy())
    np.testing.assert_allclose(ly, raw["observed"].numpy())
    assert np.abs(ly - lx).max() < 0.05  # the calibrated curve hugs the diagonal
    _, ny, _ = ax["lines"][ax["legend"][2]]
    assert ny[9] > 0.1 + 0.05 and ny[89] < 0.9 - 0.05  # over-confident: flatter than the diagonal
    dx, dy, style = ax["lines"]["perfect calibration"]
    assert style == "--" and list(dx) == [0, 1] and list(dy) == [0, 1]


def test_calibration_plot_recomputes_a_missing_error_and_rejects_bad_curves(tmp_path, drawn):
    levels, observed = np.array([0.25, 0.5, 0.75]), np.array([0.2, 0.5, 0.9])
    regression_calibration_plot({"lists": {"levels": list(levels), "observed": list(observed)}}, tmp_path / "q.png")
    assert drawn[0][0]["legend"][1] == f"lists (calibration error {np.abs(observed - levels).mean():.4f})"
    with pytest.raises(DataError, match="at least one"):
        regression_calibration_plot({}, tmp_path / "q.png")
    with pytest.raises(DataError, match="'levels' and 'observed'"):
        regression_calibration_plot({"x": {"levels": levels}}, tmp_path / "q.png")
    with pytest.raises(DataError, match="equal length"):
        regression_calibration_plot({"x": {"levels": levels, "observed": observed[:2]}}, tmp_path / "q.png")


def test_size_curve_plot_draws_the_metric_against_members(tmp_path, drawn):
    pd, y = _calibrated(n=300)
    curves = {"first": gaussian_size_curve(pd, y), "scaled": gaussian_size_curve(scale_variance(pd, 2.0), y)}
    out = regression_size_curve_plot(curves, tmp_path / "size.png", title="size")
    _assert_png(out)
    (ax,) = drawn[0]
    assert ax["legend"] == ["first", "scaled"] and ax["title"] == "size"
    for label, curve in curves.items():
        xs, ys, _ = ax["lines"][label]
        np.testing.assert_array_equal(xs, [1, 2, 3])
        np.testing.assert_allclose(ys, curve["nll"])
    regression_size_curve_plot(curves, tmp_path / "picp.png", metric="picp@0.9")
    np.testing.assert_allclose(drawn[1][0]["lines"]["first"][1], curves["first"]["picp"]["0.9"])
    _assert_png(tmp_path / "picp.png")


def test_size_curve_plot_rejects_unknown_metrics_and_incomplete_curves(tmp_path):
    curve = {"members": [1, 2], "nll": [1.0, 0.9], "picp": {"0.9": [0.8, 0.85]}}
    for metric in ("error", "picp", "picp@2", "mpiw@x"):
        with pytest.raises(ConfigError, match="metric"):
            regression_size_curve_plot({"a": curve}, tmp_path / "s.png", metric=metric)
    with pytest.raises(DataError, match="no 'crps' entry"):
        regression_size_curve_plot({"a": curve}, tmp_path / "s.png", metric="crps")
    with pytest.raises(DataError, match="no level '0.5'"):
        regression_size_curve_plot({"a": curve}, tmp_path / "s.png", metric="picp@0.5")
    with pytest.raises(DataError, match="'members'"):
        regression_size_curve_plot({"a": {"nll": [1.0]}}, tmp_path / "s.png")
    with pytest.raises(DataError, match="at least one"):
        regression_size_curve_plot({}, tmp_path / "s.png")
    assert not (tmp_path / "s.png").exists()
