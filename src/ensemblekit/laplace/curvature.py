"""Last-layer curvature: the generalised Gauss-Newton (GGN) of the final linear layer, from its input features.

The final layer computes ``f = θ φ̃`` with ``θ = [W, b]`` of shape ``(K, q)`` and
``φ̃ = [φ, 1]`` (``q = d + 1``; ``φ̃ = φ`` and ``q = d`` when the layer has no bias), so
the Jacobian of ``f`` w.r.t. ``θ`` is ``I_K ⊗ φ̃ᵀ`` and the GGN of the summed negative
log-likelihood is ``H = Σ_n (I ⊗ φ̃_n) Λ_n (I ⊗ φ̃_nᵀ) = Σ_n Λ_n ⊗ φ̃_n φ̃_nᵀ`` with
``Λ_n`` the Hessian of the loss w.r.t. the outputs (MacKay, "A Practical Bayesian Framework
for Backpropagation Networks", Neural Computation 1992; Daxberger et al., "Laplace Redux —
Effortless Bayesian Deep Learning", NeurIPS 2021). The parameters are ordered row-major,
``θ[k, j]`` at index ``k * q + j`` (``torch.cat([W, b[:, None]], 1).reshape(-1)``).

- classification (softmax cross-entropy): ``Λ_n = diag p_n − p_n p_nᵀ``. For a linear
  model this GGN is the exact Hessian and equals the Fisher.
- regression (a Gaussian likelihood with the network's own per-example variance
  ``σ²_{n,k}``, held fixed; mean outputs only): ``Λ_n = diag(1 / σ²_{n,k})``, so the
  outputs are independent and ``H`` is block diagonal with blocks
  ``H_k = Σ_n φ̃_n φ̃_nᵀ / σ²_{n,k}``.

Structures (what is kept of ``H``):

- ``full``: classification keeps the dense ``P × P`` matrix (``P = K q``, layout
  ``dense``); regression keeps the ``K`` blocks ``(K, q, q)`` (layout ``blockdiag``), which
  is all of ``H``.
- ``kfac``: classification keeps the Kronecker factors of Ritter, Botev & Barber, "A
  Scalable Laplace Approximation for Neural Networks", ICLR 2018: ``G = (1/N) Σ_n Λ_n``
  ``(K × K)`` and ``A = Σ_n φ̃_n φ̃_nᵀ`` ``(q × q)``, ``H ≈ G ⊗ A`` (layout ``kron``). The
  ``1/N`` sits on ``G`` so that ``G ⊗ A`` has the scale of ``H`` and is exactly ``H`` for
  ``N = 1`` (and whenever ``Λ_n`` is the same for every example). Regression's ``H`` is block
  diagonal already, so ``kfac`` keeps the exact blocks there (layout ``blockdiag``).
- ``diag``: the diagonal of ``H``, ``(K, q)`` (layout ``diag``).

Sums are accumulated in float64 over batches (:class:`Curvature`).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError, DataError

__all__ = ["STRUCTURES", "LAYOUTS", "MAX_DENSE", "layout_for", "with_bias", "Curvature", "check_finite"]

STRUCTURES = ("full", "kfac", "diag")
LAYOUTS = ("dense", "blockdiag", "kron", "diag")
MAX_DENSE = 20000
"""The largest ``P`` the dense ``full`` classification structure accepts (a ``P × P`` float64 matrix)."""


def layout_for(structure: str, task: str) -> str:
    """How ``structure`` is stored for ``task`` (see the module docstring).

    Raises:
        ConfigError: an unknown structure.
    """
    if structure not in STRUCTURES:
        raise ConfigError(f"laplace structure must be one of {', '.join(STRUCTURES)}, got {structure!r}")
    if structure == "diag":
        return "diag"
    if task == "regression":
        return "blockdiag"
    return "dense" if structure == "full" else "kron"


def with_bias(phi: torch.Tensor, bias: bool, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``φ̃ = [φ, 1]`` (``bias``) or ``φ``, as ``dtype``: features ``(..., d)`` -> ``(..., q)``."""
    phi = phi.to(dtype)
    if not bias:
        return phi
    return torch.cat([phi, torch.ones_like(phi[..., :1])], dim=-1)


class Curvature:
    """Running sums of the last-layer GGN for one structure, one batch at a time.

    Args:
        structure: ``full`` | ``kfac`` | ``diag``.
        task: ``classification`` | ``regression``.
        num_outputs: K (classes, or regression targets D).
        features: q, the length of ``φ̃``.

    Example:
        >>> c = Curvature("kfac", "classification", 3, 5)
        >>> c.add_classification(torch.randn(4, 5), torch.softmax(torch.randn(4, 3), -1))
        >>> sorted(c.factors())
        ['A', 'G']
    """

    def __init__(self, structure: str, task: str, num_outputs: int, features: int) -> None:
        self.structure, self.task = structure, task
        self.layout = layout_for(structure, task)
        self.num_outputs, self.features = int(num_outputs), int(features)
        k, q = self.num_outputs, self.features
        if self.layout == "dense" and k * q > MAX_DENSE:
            raise ConfigError(f"laplace structure full needs a {k * q} x {k * q} matrix (over {MAX_DENSE}); use structure kfac or diag")
        shapes = {"dense": {"H": (k, q, k, q)}, "blockdiag": {"H": (k, q, q)}, "kron": {"G": (k, k), "A": (q, q)},
                  "diag": {"h": (k, q)}}[self.layout]
        self.sums = {name: torch.zeros(shape, dtype=torch.float64) for name, shape in shapes.items()}
        self.num_data = 0

    def _check(self, phi_t: torch.Tensor, other: torch.Tensor) -> None:
        if phi_t.dim() != 2 or phi_t.shape[1] != self.features or other.shape != (phi_t.shape[0], self.num_outputs):
            raise DataError(f"laplace curvature expects features (B, {self.features}) and outputs (B, {self.num_outputs}), "
                            f"got {tuple(phi_t.shape)} and {tuple(other.shape)}")
        dev = phi_t.device
        if any(t.device != dev for t in self.sums.values()):
            self.sums = {k: t.to(dev) for k, t in self.sums.items()}

    @torch.no_grad()
    def add_classification(self, phi_t: torch.Tensor, probs: torch.Tensor) -> None:
        """Add a batch: ``φ̃`` ``(B, q)`` and the softmax probabilities ``p`` ``(B, K)``."""
        self._check(phi_t, probs)
        phi_t, p = phi_t.double(), probs.double()
        self.num_data += phi_t.shape[0]
        if self.layout == "diag":
            self.sums["h"] += (p - p * p).T @ phi_t.square()
            return
        lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # (B, K, K)
        if self.layout == "kron":
            self.sums["G"] += lam.sum(0)
            self.sums["A"] += phi_t.T @ phi_t
            return
        b, k, q = phi_t.shape[0], self.num_outputs, self.features
        for c in range(k):  # H[c, j, k', l] = Σ_n Λ_n[c, k'] φ̃_nj φ̃_nl, one class row at a time (memory B K q)
            rows = (lam[:, c, :, None] * phi_t[:, None, :]).reshape(b, k * q).T @ phi_t  # ((k', j), l)
            self.sums["H"][c] += rows.reshape(k, q, q).permute(1, 0, 2)

    @torch.no_grad()
    def add_regression(self, phi_t: torch.Tensor, var: torch.Tensor) -> None:
        """Add a batch: ``φ̃`` ``(B, q)`` and the likelihood's variances ``σ²`` ``(B, K)`` (> 0)."""
        self._check(phi_t, var)
        phi_t, prec = phi_t.double(), 1.0 / var.double()
        self.num_data += phi_t.shape[0]
        if self.layout == "diag":
            self.sums["h"] += prec.T @ phi_t.square()
        else:
            self.sums["H"] += torch.einsum("nk,nj,nl->kjl", prec, phi_t, phi_t)

    def factors(self) -> dict[str, torch.Tensor]:
        """The finished factors on CPU (float64): ``H`` ``(P, P)`` | ``H`` ``(K, q, q)`` | ``G``, ``A`` | ``h``.

        Raises:
            DataError: no data was added, or the sums are not finite.
        """
        if self.num_data == 0:
            raise DataError("laplace curvature: the fitting split gave no examples")
        out = {k: v.cpu() for k, v in self.sums.items()}
        if self.layout == "dense":
            p = self.num_outputs * self.features
            out["H"] = out["H"].reshape(p, p)
        if self.layout == "kron":
            out["G"] = out["G"] / self.num_data
        check_finite(out)
        return out


def check_finite(factors: dict[str, torch.Tensor]) -> None:
    """Refuse curvature factors with NaN or infinite entries (one line).

    Raises:
        DataError: a factor is not finite.
    """
    for name, t in factors.items():
        if not torch.isfinite(t).all():
            raise DataError(f"laplace curvature factor {name} has NaN or infinite entries (non-finite features or outputs on the fitting split)")
