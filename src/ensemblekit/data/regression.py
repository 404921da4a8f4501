"""Offline regression datasets: scikit-learn's ``diabetes`` and two 1-D synthetic sets.

The protocol they serve is that of Lakshminarayanan, Pritzel and Blundell, "Simple and
Scalable Predictive Uncertainty Estimation using Deep Ensembles" (NeurIPS 2017): random
90/10 train/test splits of a real dataset, and the 1-D cubic toy of their Figure 1. Every
set is a pure function of its arguments (``seed`` included); inputs are left in their
original units (standardise them with :func:`ensemblekit.data.scaling.standardize`,
fitted on the training split).
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .dataset import Data, from_arrays
from .registry import register_dataset

__all__ = ["diabetes", "toy_cubic", "heteroscedastic"]


def _check_size(value: int, name: str, dataset: str, minimum: int = 2) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < minimum:
        raise ConfigError(f"{dataset} {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_positive(value: float, name: str, dataset: str, allow_zero: bool = False) -> float:
    v = float(value)
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ConfigError(f"{dataset} {name} must be a finite number {'>=' if allow_zero else '>'} 0, got {value!r}")
    return v


@register_dataset("diabetes")
def diabetes(test_fraction: float = 0.1, val_fraction: float = 0.1, seed: int = 0) -> Data:
    """scikit-learn's bundled diabetes data (Efron et al. 2004): 442 patients, 10 features, a disease-progression target.

    The raw features (``load_diabetes(scaled=False)``: age, sex, BMI, blood pressure and six
    serum measurements) and the target (25 to 346) are kept in their units; scikit-learn's
    default scaling is computed over all 442 rows, test rows included, so it is not used.

    Args:
        test_fraction: share held out for testing (default 0.1: the Deep Ensembles protocol's 90/10
            split, 44 of 442), drawn with ``seed``.
        val_fraction: share of the rest held out for validation (default 0.1; 0 for the paper's
            protocol, which trains a fixed 40 epochs).
        seed: seed of both splits (the protocol repeats the experiment over 20 seeds).

    Returns:
        regression Data with inputs ``(10,)`` and targets ``(N,)``.

    Example:
        >>> data = load_dataset("diabetes", val_fraction=0.0)
        >>> len(data.train), len(data.test), data.input_shape
        (398, 44, (10,))
    """
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True, scaled=False)
    return from_arrays(
        x.astype(np.float32), y.astype(np.float32), val_fraction=val_fraction, test_fraction=test_fraction,
        seed=seed, task="regression", name="diabetes", info={"source": "sklearn.datasets.load_diabetes(scaled=False)"},
    )


@register_dataset("toy_cubic")
def toy_cubic(num_train: int = 20, num_test: int = 200, noise_std: float = 3.0, train_range: float = 4.0,
              test_range: float = 6.0, val_fraction: float = 0.0, seed: int = 0) -> Data:
    """The 1-D cubic toy of Figure 1 in Lakshminarayanan et al. (NeurIPS 2017): ``y = x^3 + eps``, ``eps ~ N(0, noise_std^2)``.

    Training inputs are drawn ``x ~ U[-train_range, train_range]``; test inputs are an evenly
    spaced grid over ``[-test_range, test_range]`` (wider than the training range, to show
    growing uncertainty away from the data) with targets drawn with the same noise. The
    noise-free curve is ``x^3``.

    Args:
        num_train: training points (default 20, >= 2).
        num_test: grid points (default 200, >= 2).
        noise_std: standard deviation of ``eps`` (default 3, > 0).
        train_range, test_range: half-widths of the training interval and of the test grid
            (default 4 and 6, > 0).
        val_fraction: share of the training points held out for validation (default 0).
        seed: seed of the draws and of the validation split.

    Returns:
        regression Data with inputs ``(1,)`` and targets ``(N,)``.

    Example:
        >>> data = load_dataset("toy_cubic")
        >>> len(data.train), len(data.test), data.task
        (20, 200, 'regression')
    """
    num_train, num_test = _check_size(num_train, "num_train", "toy_cubic"), _check_size(num_test, "num_test", "toy_cubic")
    noise_std = _check_positive(noise_std, "noise_std", "toy_cubic")
    a, b = _check_positive(train_range, "train_range", "toy_cubic"), _check_positive(test_range, "test_range", "toy_cubic")
    rng = np.random.default_rng(int(seed))
    x = rng.uniform(-a, a, size=num_train)
    y = x**3 + rng.normal(0.0, noise_std, size=num_train)
    xt = np.linspace(-b, b, num_test)
    yt = xt**3 + rng.normal(0.0, noise_std, size=num_test)
    return from_arrays(
        x[:, None].astype(np.float32), y.astype(np.float32), xt[:, None].astype(np.float32), yt.astype(np.float32),
        val_fraction=val_fraction, seed=seed, task="regression", name="toy_cubic",
        info={"formula": "y = x^3 + N(0, noise_std^2)", "num_train": num_train, "num_test": num_test, "noise_std": noise_std,
              "train_range": a, "test_range": b},
    )


@register_dataset("heteroscedastic")
def heteroscedastic(num_train: int = 500, num_test: int = 500, x_range: float = 4.0, noise_base: float = 0.1,
                    noise_slope: float = 0.2, val_fraction: float = 0.1, seed: int = 0) -> Data:
    """A 1-D set whose noise grows with ``|x|``: ``y = x sin(x) + eps``, ``eps ~ N(0, (noise_base + noise_slope |x|)^2)``.

    Train and test inputs are both drawn ``x ~ U[-x_range, x_range]``, so the test split
    measures how well a predictive variance follows input-dependent (aleatoric) noise,
    the case the Gaussian likelihood of Lakshminarayanan et al. (NeurIPS 2017) is for.

    Args:
        num_train, num_test: examples drawn for training and testing (default 500 each, >= 2).
        x_range: half-width of the input interval (default 4, > 0).
        noise_base: noise standard deviation at ``x = 0`` (default 0.1, >= 0).
        noise_slope: growth of the noise standard deviation per unit of ``|x|`` (default 0.2, >= 0).
        val_fraction: share of the training examples held out for validation (default 0.1).
        seed: seed of the draws and of the validation split.

    Returns:
        regression Data with inputs ``(1,)`` and targets ``(N,)``.
    """
    num_train, num_test = _check_size(num_train, "num_train", "heteroscedastic"), _check_size(num_test, "num_test", "heteroscedastic")
    r = _check_positive(x_range, "x_range", "heteroscedastic")
    base = _check_positive(noise_base, "noise_base", "heteroscedastic", allow_zero=True)
    slope = _check_positive(noise_slope, "noise_slope", "heteroscedastic", allow_zero=True)
    if base == 0 and slope == 0:
        raise ConfigError("heteroscedastic needs noise: noise_base and noise_slope are both 0")
    rng = np.random.default_rng(int(seed))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.uniform(-r, r, size=n)
        return x, x * np.sin(x) + rng.normal(0.0, 1.0, size=n) * (base + slope * np.abs(x))

    (x, y), (xt, yt) = draw(num_train), draw(num_test)
    return from_arrays(
        x[:, None].astype(np.float32), y.astype(np.float32), xt[:, None].astype(np.float32), yt.astype(np.float32),
        val_fraction=val_fraction, seed=seed, task="regression", name="heteroscedastic",
        info={"formula": "y = x sin(x) + N(0, (noise_base + noise_slope |x|)^2)", "num_train": num_train, "num_test": num_test,
              "x_range": r, "noise_base": base, "noise_slope": slope},
    )
