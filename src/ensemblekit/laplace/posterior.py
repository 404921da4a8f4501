"""The Gaussian last-layer posterior ``N(θ̂, (H + δ I)^{-1})`` of one trained network.

MacKay, "A Practical Bayesian Framework for Backpropagation Networks", Neural Computation
1992 (the Laplace approximation and the evidence for the prior precision); Kristiadi, Hein &
Hennig, "Being Bayesian, Even Just a Bit, Fixes Overconfidence in ReLU Networks", ICML 2020
(only the last layer is Bayesian); Daxberger et al., "Laplace Redux — Effortless Bayesian
Deep Learning", NeurIPS 2021 (the structures and the marginal-likelihood prior).

``θ̂`` ``(K, q)`` is the trained final layer ``[W, b]`` (for regression its K mean rows),
``H`` the curvature of :mod:`ensemblekit.laplace.curvature` in one of its layouts and ``δ``
the precision of the isotropic prior ``N(0, δ^{-1} I)``. All linear algebra is float64 on
CPU; the layouts' spectra are computed once (``eigh``; the tiny negative eigenvalues rounding
leaves are clamped to 0), so the evidence over a grid of ``δ`` costs one decomposition.

The function ``f_k = θ_k φ̃`` has the posterior variance ``v_k(φ) = φ̃ᵀ Σ_kk φ̃``, the
diagonal of ``J Σ Jᵀ`` (``J = I ⊗ φ̃ᵀ``). Every layout gives it in one form,
``v_k = Σ_r w_kr (φ̃ᵀ U_k[:, r])²`` (:func:`function_variance_from`), a sum of non-negative
terms, with ``U_k`` the eigenvectors of the block ``Σ_kk`` (dense, blockdiag), the
eigenvectors of ``A`` shared by every ``k`` (kron: ``(G ⊗ A + δ I)^{-1}`` has the
eigenvalues ``1 / (λ_i μ_j + δ)`` on ``Q_G ⊗ Q_A``, so ``w_kj = Σ_i Q_G[k, i]² / (λ_i μ_j + δ)``)
or the identity (diag: ``w = 1 / (h + δ)``).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch

from ..errors import ConfigError, DataError
from .curvature import check_finite, layout_for, with_bias

__all__ = ["DEFAULT_GRID", "LastLayerPosterior", "check_prior_precision", "cholesky_jitter", "function_variance_from",
           "projected_squares", "variance_from_squares",
           "select_prior"]

DEFAULT_GRID: tuple[float, ...] = tuple(10.0 ** (i / 4) for i in range(-16, 17))
"""Prior precisions tried: ``10^-4 .. 10^4``, four per decade."""

_FACTORS = {"dense": ("H",), "blockdiag": ("H",), "kron": ("G", "A"), "diag": ("h",)}


def check_prior_precision(value: Any) -> float:
    """``δ`` as a float > 0 and finite.

    Raises:
        ConfigError: anything else.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"laplace prior precision must be a finite number > 0, got {value!r}")
    return float(value)


def cholesky_jitter(m: torch.Tensor, tries: int = 8) -> torch.Tensor:
    """The Cholesky factor of the symmetric ``m`` ``(..., n, n)``, adding ``10^k · 1e-10 · mean(diag)``
    to the diagonal (k = 0, 1, ...) when rounding makes it fail.

    Raises:
        DataError: ``m`` is not finite, or not positive definite even with the jitter.
    """
    if not torch.isfinite(m).all():
        raise DataError("laplace posterior precision has NaN or infinite entries")
    eye = torch.eye(m.shape[-1], dtype=m.dtype, device=m.device)
    scale = m.diagonal(dim1=-2, dim2=-1).abs().mean().clamp_min(1e-300)
    for k in range(tries + 1):
        jitter = 0.0 if k == 0 else float(scale) * 1e-10 * 10.0 ** (k - 1)
        chol, info = torch.linalg.cholesky_ex(m + jitter * eye)
        if not bool((info != 0).any()):
            return chol
    raise DataError("laplace posterior precision is not positive definite, even with jitter; raise the prior precision")


def _eigh(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (clamped to >= 0) and eigenvectors of the symmetric PSD ``m`` (batched)."""
    sym = 0.5 * (m + m.transpose(-1, -2))
    try:
        lam, vec = torch.linalg.eigh(sym)
    except RuntimeError:  # eigh did not converge: a jittered copy
        lam, vec = torch.linalg.eigh(sym + 1e-12 * sym.diagonal(dim1=-2, dim2=-1).abs().mean() * torch.eye(m.shape[-1], dtype=m.dtype))
    return lam.clamp_min(0.0), vec


def projected_squares(phi_t: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    """``(φ̃ᵀ U_k[:, r])²`` ``(..., K or 1, q)``: the part of :func:`function_variance_from` that
    does not depend on the weights (for the kron, blockdiag and diag layouts, not on ``δ`` either,
    so a prior search projects the features once)."""
    if basis is None:
        return phi_t.square().unsqueeze(-2)
    return torch.einsum("...j,kjr->...kr", phi_t, basis).square()


def variance_from_squares(squares: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``v_k = Σ_r w_kr squares_kr`` ``(..., K)`` from :func:`projected_squares` and ``w`` ``(K, q)``."""
    if squares.shape[-2] == 1:
        return squares.squeeze(-2) @ weights.T
    return (squares * weights).sum(-1)


def function_variance_from(phi_t: torch.Tensor, basis: torch.Tensor | None, weights: torch.Tensor) -> torch.Tensor:
    """``v_k = Σ_r w_kr (φ̃ᵀ U_k[:, r])²`` for features ``φ̃`` ``(..., q)``: ``(..., K)``.

    Args:
        phi_t: features with the bias column.
        basis: ``U`` ``(K, q, q)`` or ``(1, q, q)`` (shared by every output), ``None``: the identity.
        weights: ``w`` ``(K, q)``.
    """
    return variance_from_squares(projected_squares(phi_t, basis), weights)


def select_prior(nll: Callable[[float], float], grid: Sequence[float] = DEFAULT_GRID) -> float:
    """The ``δ`` of ``grid`` with the smallest ``nll(δ)`` (e.g. a validation NLL; non-finite values lose).

    Raises:
        DataError: ``nll`` is not finite anywhere on the grid.
    """
    grid = [check_prior_precision(float(d)) for d in grid]
    values = [float(nll(d)) for d in grid]
    finite = [(v, d) for v, d in zip(values, grid) if math.isfinite(v)]
    if not finite:
        raise DataError("laplace prior selection: the validation NLL is not finite for any prior precision on the grid")
    return min(finite)[1]


def _golden_max(f: Callable[[float], float], a: float, b: float, iters: int = 40) -> float:
    """The argmax of ``f`` on ``[a, b]`` by golden-section search (``f`` unimodal there)."""
    r = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = b - r * (b - a), a + r * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iters):
        if fc >= fd:
            b, d, fd = d, c, fc
            c = b - r * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + r * (b - a)
            fd = f(d)
    return c if fc >= fd else d


class LastLayerPosterior:
    """``N(θ̂, (H + δ I)^{-1})`` over the final layer ``θ = [W, b]`` ``(K, q)`` (see the module docstring).

    Args:
        theta: ``θ̂`` ``(K, q)``.
        factors: the curvature factors of ``structure``'s layout
            (:meth:`ensemblekit.laplace.curvature.Curvature.factors`).
        structure: ``full`` | ``kfac`` | ``diag``. task: ``classification`` | ``regression``.
        num_data: N, the examples the curvature summed over. bias: ``φ̃`` has the bias column.
        prior_precision: ``δ`` (> 0; :meth:`fit_prior` chooses it).

    Raises:
        DataError: factors missing, of the wrong shape, or not finite.
    """

    def __init__(self, theta: torch.Tensor, factors: dict[str, torch.Tensor], *, structure: str, task: str,
                 num_data: int, bias: bool, prior_precision: float = 1.0) -> None:
        self.structure, self.task = structure, task
        self.layout = layout_for(structure, task)
        self.theta = theta.detach().to("cpu", torch.float64).clone()
        if self.theta.dim() != 2:
            raise DataError(f"laplace posterior mean must be (K, q), got shape {tuple(self.theta.shape)}")
        self.factors = {k: factors[k].detach().to("cpu", torch.float64) for k in _FACTORS[self.layout] if k in factors}
        if len(self.factors) != len(_FACTORS[self.layout]):
            raise DataError(f"laplace posterior ({self.layout}) needs the factors {', '.join(_FACTORS[self.layout])}")
        self._check_shapes()
        check_finite(self.factors)
        self.num_data, self.bias = int(num_data), bool(bias)
        self.prior_precision = check_prior_precision(prior_precision)
        self._spectrum: tuple[torch.Tensor, ...] | None = None
        self._variance: tuple[float, torch.Tensor | None, torch.Tensor] | None = None

    def _check_shapes(self) -> None:
        k, q = self.theta.shape
        p = k * q
        want = {"dense": {"H": (p, p)}, "blockdiag": {"H": (k, q, q)}, "kron": {"G": (k, k), "A": (q, q)},
                "diag": {"h": (k, q)}}[self.layout]
        for name, shape in want.items():
            if tuple(self.factors[name].shape) != shape:
                raise DataError(f"laplace posterior factor {name} has shape {tuple(self.factors[name].shape)}, expected {shape}")

    @property
    def basis_depends_on_prior(self) -> bool:
        """Whether :meth:`variance_factors`' basis ``U`` changes with ``δ`` (only the dense layout's
        per-output blocks of ``(H + δI)^{-1}`` are re-diagonalised for each ``δ``)."""
        return self.layout == "dense"

    @property
    def num_outputs(self) -> int:
        """K, the outputs (classes or regression means) of the final layer the posterior covers."""
        return int(self.theta.shape[0])

    @property
    def num_params(self) -> int:
        """P = K q."""
        return int(self.theta.numel())

    def num_stored(self) -> int:
        """Numbers the curvature factors hold (``θ̂`` is the network's own head)."""
        return sum(t.numel() for t in self.factors.values())

    def spectrum(self) -> tuple[torch.Tensor, ...]:
        """``(λ, V)`` of ``H`` (dense, blockdiag batched), ``(λ_G, Q_G, μ_A, Q_A)`` (kron), ``(h,)`` (diag); cached."""
        if self._spectrum is None:
            f = self.factors
            if self.layout in ("dense", "blockdiag"):
                self._spectrum = _eigh(f["H"])
            elif self.layout == "kron":
                self._spectrum = (*_eigh(f["G"]), *_eigh(f["A"]))
            else:
                self._spectrum = (f["h"].clamp_min(0.0),)
        return self._spectrum

    # ----------------------------------------------------------------- evidence and prior
    def logdet_precision(self, delta: float | None = None) -> float:
        """``log det(H + δ I)`` (``H`` as the structure keeps it)."""
        delta = self.prior_precision if delta is None else check_prior_precision(delta)
        s = self.spectrum()
        if self.layout == "kron":
            return float(torch.log(s[0][:, None] * s[2][None, :] + delta).sum())
        return float(torch.log(s[0] + delta).sum())

    def log_marglik(self, delta: float | None = None) -> float:
        """The Laplace evidence up to terms that do not depend on ``δ`` (MacKay 1992):
        ``−½ δ ‖θ̂‖² + (P/2) log δ − ½ log det(H + δ I)``.

        The data log-likelihood ``log p(D | θ̂)`` and ``(P/2) log 2π`` cancel between the
        prior's normaliser and the Laplace integral or do not depend on ``δ``, so they are
        left out: the value ranks prior precisions, it is not the evidence itself.
        """
        delta = self.prior_precision if delta is None else check_prior_precision(delta)
        norm = float(self.theta.square().sum())
        return -0.5 * delta * norm + 0.5 * self.num_params * math.log(delta) - 0.5 * self.logdet_precision(delta)

    def fit_prior(self, method: str = "marglik", grid: Sequence[float] = DEFAULT_GRID) -> float:
        """Set ``δ`` to the maximiser of :meth:`log_marglik`: the best point of ``grid``, then a
        golden-section search in ``log δ`` between its neighbours (kept only if it is better).

        Returns:
            The new ``δ``.

        Raises:
            ConfigError: a method other than ``marglik`` (validation-based selection is
                :func:`select_prior`), or a bad grid.
        """
        if method != "marglik":
            raise ConfigError(f"LastLayerPosterior.fit_prior method must be 'marglik' (validation: select_prior), got {method!r}")
        grid = sorted(check_prior_precision(float(d)) for d in grid)
        if not grid:
            raise ConfigError("laplace prior grid is empty")
        values = [self.log_marglik(d) for d in grid]
        i = max(range(len(grid)), key=values.__getitem__)
        best, best_value = grid[i], values[i]
        lo, hi = math.log(grid[max(i - 1, 0)]), math.log(grid[min(i + 1, len(grid) - 1)])
        if hi > lo:
            t = _golden_max(lambda u: self.log_marglik(math.exp(u)), lo, hi)
            if self.log_marglik(math.exp(t)) > best_value:
                best = math.exp(t)
        self.prior_precision = best
        return best

    # ----------------------------------------------------------------- matrices (small P: tests, inspection)
    def curvature_matrix(self) -> torch.Tensor:
        """``H`` as the structure keeps it, as a dense ``(P, P)`` matrix (row-major ``θ[k, j]``)."""
        f = self.factors
        if self.layout == "dense":
            return f["H"].clone()
        if self.layout == "blockdiag":
            return torch.block_diag(*f["H"])
        if self.layout == "kron":
            return torch.kron(f["G"], f["A"])
        return torch.diag(f["h"].reshape(-1))

    def covariance(self, delta: float | None = None) -> torch.Tensor:
        """``Σ = (H + δ I)^{-1}`` as a dense ``(P, P)`` matrix."""
        delta = self.prior_precision if delta is None else check_prior_precision(delta)
        prec = self.curvature_matrix() + delta * torch.eye(self.num_params, dtype=torch.float64)
        return torch.cholesky_inverse(cholesky_jitter(prec))

    # ----------------------------------------------------------------- predictive pieces
    def variance_factors(self, delta: float | None = None) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(U, w)`` of :func:`function_variance_from` for ``δ`` (float64; the last one is cached)."""
        delta = self.prior_precision if delta is None else check_prior_precision(delta)
        if self._variance is not None and self._variance[0] == delta:
            return self._variance[1], self._variance[2]
        k, q = self.theta.shape
        s = self.spectrum()
        basis: torch.Tensor | None
        if self.layout == "dense":
            vk = s[1].reshape(k, q, -1)  # rows of V for output k: (K, q, P)
            blocks = torch.einsum("kjp,p,klp->kjl", vk, 1.0 / (s[0] + delta), vk)  # Σ_kk
            weights, basis = _eigh(blocks)
        elif self.layout == "blockdiag":
            weights, basis = 1.0 / (s[0] + delta), s[1]
        elif self.layout == "kron":
            weights = s[1].square() @ (1.0 / (s[0][:, None] * s[2][None, :] + delta))
            basis = s[3][None]
        else:
            weights, basis = 1.0 / (s[0] + delta), None
        self._variance = (delta, basis, weights)
        return basis, weights

    def function_variance(self, phi: torch.Tensor, delta: float | None = None) -> torch.Tensor:
        """The posterior variance of each output ``f_k = θ_k φ̃`` at features ``φ`` ``(B, d)``: ``(B, K)`` float64."""
        basis, weights = self.variance_factors(delta)
        return function_variance_from(with_bias(phi.detach().cpu(), self.bias), basis, weights)

    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``num`` draws of ``θ ~ N(θ̂, Σ)``: ``(num, K, q)`` float64 (``generator``: a CPU generator)."""
        k, q = self.theta.shape
        delta, s = self.prior_precision, self.spectrum()
        if self.layout in ("dense", "blockdiag"):
            h = self.factors["H"]
            chol = cholesky_jitter(h + delta * torch.eye(h.shape[-1], dtype=torch.float64))
            z = torch.randn(*h.shape[:-2], h.shape[-1], num, generator=generator, dtype=torch.float64)
            eps = torch.linalg.solve_triangular(chol.mT, z, upper=True)  # (L Lᵀ)^{-1} = Σ: cov L^{-T} z
            eps = eps.T.reshape(num, k, q) if self.layout == "dense" else eps.permute(2, 0, 1)
        else:
            z = torch.randn(num, k, q, generator=generator, dtype=torch.float64)
            if self.layout == "kron":
                eps = s[1] @ (z / (s[0][:, None] * s[2][None, :] + delta).sqrt()) @ s[3].T
            else:
                eps = z / (s[0] + delta).sqrt()
        return self.theta + eps

    # ----------------------------------------------------------------- state
    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """``(tensors, small)``: ``theta`` and the factors, and a JSON-able dict (safetensors-ready)."""
        small = {"structure": self.structure, "task": self.task, "num_data": self.num_data, "bias": self.bias,
                 "prior_precision": self.prior_precision}
        return {"theta": self.theta, **self.factors}, small

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], small: Any) -> "LastLayerPosterior":
        """Read :meth:`state` back.

        Raises:
            DataError: malformed state.
        """
        try:
            return cls(tensors["theta"], tensors, structure=str(small["structure"]), task=str(small["task"]),
                       num_data=int(small["num_data"]), bias=bool(small["bias"]), prior_precision=float(small["prior_precision"]))
        except DataError:
            raise
        except (KeyError, TypeError, ValueError) as exc:  # ConfigError too (a bad structure or precision)
            raise DataError(f"laplace posterior state is malformed ({type(exc).__name__}: {exc})") from None

    def __repr__(self) -> str:
        return f"LastLayerPosterior({self.structure}, K={self.theta.shape[0]}, q={self.theta.shape[1]}, δ={self.prior_precision:.3g})"

