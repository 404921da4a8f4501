"""EdgeNES's hypernetwork over architectures: ``lambda -> (alpha, beta)``, piecewise-linear
between K learned logit sets.

Paper: Babkin & Bakhteev, "Differentiable search of neural-network ensembles with diversity
control" (MIPT 2024; docs/methods.md, edgenes).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .genotype import Genotype, derive_genotype

__all__ = ["ArchHypernet"]


class ArchHypernet(nn.Module):
    """``alpha(lambda, a)``: K logit sets ``a_k`` at fixed, evenly spaced pivots
    ``lambda_k = k * Lambda / (K - 1)`` on ``[0, Lambda]``, linearly interpolated.

    For ``lambda`` in ``[lambda_k, lambda_{k+1}]`` with ``w = (lambda - lambda_k) / (lambda_{k+1} - lambda_k)``
    the output is ``(1 - w) a_k + w a_{k+1}``: continuous, equal to ``a_k`` at a pivot and to
    the mean of two neighbours halfway. The reference code swapped ``w`` and ``1 - w`` and
    detached the interpolation weight; here both neighbouring logit sets receive the
    gradient ``(1 - w)`` and ``w``, and the pivots are fixed positions (buffers), not
    learned, so the map cannot fold over. ``lambda`` outside ``[0, Lambda]`` is clamped.

    Args:
        alpha: ``(2, E, 7)`` initial operation logits (usually DARTS's alpha*), copied to every pivot.
        beta: ``(2, E)`` initial input logits.
        lam_max: Lambda (> 0), the number of kept edges of a genotype (16 for 2 cells x 4 nodes x 2).
        pivots: K (>= 2; default 5 as in the reference).
        noise: std of Gaussian noise added to each pivot's copy (default 0.1) so the pivots start apart.
        generator: randomness of that noise.

    Example:
        >>> h = ArchHypernet(torch.zeros(2, 14, 7), torch.zeros(2, 14), lam_max=16.0, noise=0.0)
        >>> h(8.0)[0].shape
        torch.Size([2, 14, 7])
    """

    def __init__(self, alpha: torch.Tensor, beta: torch.Tensor, lam_max: float, pivots: int = 5, noise: float = 0.1,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if pivots < 2:
            raise ConfigError(f"pivots (K) must be >= 2, got {pivots}")
        if not lam_max > 0:
            raise ConfigError(f"lam_max (Lambda) must be > 0, got {lam_max}")
        if noise < 0:
            raise ConfigError(f"noise must be >= 0, got {noise}")
        a = alpha.detach().float().cpu().unsqueeze(0).repeat(pivots, 1, 1, 1)
        b = beta.detach().float().cpu().unsqueeze(0).repeat(pivots, 1, 1)
        if noise > 0:
            a = a + noise * torch.randn(a.shape, generator=generator)
            b = b + noise * torch.randn(b.shape, generator=generator)
        self.alphas = nn.Parameter(a)
        self.betas = nn.Parameter(b)
        self.lam_max = float(lam_max)
        self.register_buffer("pivots", torch.linspace(0.0, self.lam_max, pivots))

    @property
    def num_pivots(self) -> int:
        return int(self.alphas.shape[0])

    def interpolation(self, lam: float | torch.Tensor) -> tuple[int, torch.Tensor]:
        """``(k, w)``: the left pivot and the weight of the right one for ``lambda``."""
        lam_t = torch.as_tensor(lam, dtype=torch.float32).clamp(0.0, self.lam_max)
        pos = lam_t / self.lam_max * (self.num_pivots - 1)
        k = int(min(int(pos.floor()), self.num_pivots - 2))
        return k, pos - k

    def forward(self, lam: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha (2, E, 7), beta (2, E))`` at ``lambda``."""
        k, w = self.interpolation(lam)
        w = w.to(self.alphas)
        return (1 - w) * self.alphas[k] + w * self.alphas[k + 1], (1 - w) * self.betas[k] + w * self.betas[k + 1]

    @torch.no_grad()
    def sample(self, lam: float, keep: int = 2, generator: torch.Generator | None = None) -> Genotype:
        """A discrete architecture at ``lambda``: the argmax of Gumbel-perturbed logits, i.e. an
        exact sample of each edge's categorical over operations and, for each node's inputs,
        of the Plackett-Luce top-``keep`` without replacement (the zero-temperature limit of
        the relaxed samples used in training). ``generator``: the noise's randomness."""
        from .relax import gumbel_noise

        alpha, beta = self(lam)
        alpha = alpha + gumbel_noise(alpha.shape, generator=generator)
        beta = beta + gumbel_noise(beta.shape, generator=generator)
        return derive_genotype(alpha, beta, keep)

    @torch.no_grad()
    def mode(self, lam: float, keep: int = 2) -> Genotype:
        """The most likely architecture at ``lambda`` (argmax operations, top-``keep`` inputs)."""
        alpha, beta = self(lam)
        return derive_genotype(alpha, beta, keep)
