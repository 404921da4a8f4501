"""Discrete DARTS architectures ("genotypes"): derivation from logits, text and JSON forms,
common-edge counts, random and perturbed genotypes.

A cell has 2 inputs (the outputs of the two previous cells, ``c_{k-2}`` and
``c_{k-1}``) and ``nodes`` intermediate nodes; node ``i`` may take any earlier state
``0 .. i+1`` as input, so with 4 nodes there are 2+3+4+5 = 14 edges, numbered node by
node and input by input (:func:`edge_list`). The cell's output concatenates the
intermediate nodes. A genotype keeps, for every node of the normal and of the
reduction cell, ``keep`` inputs (2 in DARTS) and one operation on each kept edge.

Architecture logits are two tensors per network: ``alpha`` of shape ``(2, E, 7)``
(operation logits of every edge, for the normal and the reduction cell) and ``beta``
of shape ``(2, E)`` (input logits; node ``i``'s inputs are the slice
:func:`node_slices` ``[i]``, normalised by a softmax per node).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import torch

from ..errors import ConfigError
from .ops import OP_NAMES

__all__ = [
    "CELL_TYPES", "Genotype", "edge_list", "node_slices", "num_edges", "derive_genotype", "genotype_logits",
    "common_edges", "random_genotype", "perturb_genotype", "DARTS_V2",
]

CELL_TYPES: tuple[str, str] = ("normal", "reduce")

Node = tuple[tuple[str, int], ...]


def num_edges(nodes: int) -> int:
    """Edges of a cell with ``nodes`` intermediate nodes and 2 inputs (14 for 4 nodes)."""
    return sum(2 + i for i in range(nodes))


def edge_list(nodes: int) -> list[tuple[int, int]]:
    """``(node, input)`` of every edge, in the order of the logits' edge axis."""
    return [(i, j) for i in range(nodes) for j in range(2 + i)]


def node_slices(nodes: int) -> list[slice]:
    """The edge-axis slice of each node's inputs."""
    out, start = [], 0
    for i in range(nodes):
        out.append(slice(start, start + 2 + i))
        start += 2 + i
    return out


def _state_name(j: int) -> str:
    return ("c_{k-2}", "c_{k-1}")[j] if j < 2 else f"n{j - 2}"


@dataclass(frozen=True)
class Genotype:
    """A discrete architecture: per cell type, per node, the kept ``(operation, input)`` pairs.

    Attributes:
        normal, reduce: one tuple per intermediate node of ``(op_name, input_index)``
            pairs sorted by input; input 0 is ``c_{k-2}``, 1 is ``c_{k-1}``, ``j >= 2``
            is node ``j - 2``.

    Example:
        >>> g = Genotype.from_json({"normal": [[["sep_conv_3x3", 0], ["skip_connect", 1]]],
        ...                         "reduce": [[["max_pool_3x3", 0], ["max_pool_3x3", 1]]]})
        >>> print(g.text())
        normal: n0 = sep_conv_3x3(c_{k-2}) + skip_connect(c_{k-1})
        reduce: n0 = max_pool_3x3(c_{k-2}) + max_pool_3x3(c_{k-1})
    """

    normal: tuple[Node, ...]
    reduce: tuple[Node, ...]

    def __post_init__(self) -> None:
        if len(self.normal) != len(self.reduce) or not self.normal:
            raise ConfigError(f"a genotype needs the same number (>= 1) of nodes in both cells, got {len(self.normal)} and {len(self.reduce)}")
        for kind in CELL_TYPES:
            for i, node in enumerate(self.cell(kind)):
                inputs = [j for _, j in node]
                if not node or len(set(inputs)) != len(inputs):
                    raise ConfigError(f"genotype {kind} node {i}: needs >= 1 distinct inputs, got {list(node)}")
                for op, j in node:
                    if op not in OP_NAMES:
                        raise ConfigError(f"genotype {kind} node {i}: unknown operation {op!r}; valid: {', '.join(OP_NAMES)}")
                    if not 0 <= j < 2 + i:
                        raise ConfigError(f"genotype {kind} node {i}: input {j} out of range 0..{i + 1}")

    @property
    def nodes(self) -> int:
        return len(self.normal)

    @property
    def num_kept(self) -> int:
        """Kept edges over both cells (Lambda, the largest possible common-edge count)."""
        return sum(len(node) for kind in CELL_TYPES for node in self.cell(kind))

    def cell(self, kind: str) -> tuple[Node, ...]:
        if kind not in CELL_TYPES:
            raise ConfigError(f"cell type must be one of {CELL_TYPES}, got {kind!r}")
        return self.normal if kind == "normal" else self.reduce

    def edges(self) -> set[tuple[str, int, int, str]]:
        """Kept edges as ``(cell_type, node, input, op)``."""
        return {(kind, i, j, op) for kind in CELL_TYPES for i, node in enumerate(self.cell(kind)) for op, j in node}

    # ----------------------------------------------------------------- forms
    def to_json(self) -> dict[str, Any]:
        """``{"normal": [[[op, input], ...] per node], "reduce": [...]}`` (a model kwarg; no pickle)."""
        return {kind: [[[op, j] for op, j in node] for node in self.cell(kind)] for kind in CELL_TYPES}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any] | str | "Genotype") -> "Genotype":
        """Parse :meth:`to_json`'s form (a dict or its JSON text)."""
        if isinstance(obj, Genotype):
            return obj
        if isinstance(obj, str):
            obj = json.loads(obj)
        if not isinstance(obj, Mapping) or set(obj) != set(CELL_TYPES):
            raise ConfigError(f"a genotype is {{normal: [...], reduce: [...]}}, got {obj!r}")
        try:
            cells = {kind: tuple(_sorted_node((str(op), int(j)) for op, j in node) for node in obj[kind]) for kind in CELL_TYPES}
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"a genotype node is a list of [op, input] pairs: {exc}") from None
        return cls(**cells)

    def key(self) -> str:
        """A canonical string (equal genotypes give equal keys)."""
        return json.dumps(self.to_json(), separators=(",", ":"))

    def text(self) -> str:
        """One readable line per cell: ``n1 = sep_conv_3x3(c_{k-1}) + skip_connect(n0)``."""
        lines = []
        for kind in CELL_TYPES:
            parts = [f"n{i} = " + " + ".join(f"{op}({_state_name(j)})" for op, j in node) for i, node in enumerate(self.cell(kind))]
            lines.append(f"{kind}: " + "; ".join(parts))
        return "\n".join(lines)

    __str__ = text


def _sorted_node(pairs: Iterable[tuple[str, int]]) -> Node:
    return tuple(sorted(pairs, key=lambda p: p[1]))


def _top_inputs(scores: torch.Tensor, keep: int) -> list[int]:
    """Indices of the ``keep`` largest scores, ties to the lower index."""
    order = sorted(range(scores.numel()), key=lambda j: (-float(scores[j]), j))
    return sorted(order[:keep])


def derive_genotype(alpha: torch.Tensor, beta: torch.Tensor, keep: int = 2) -> Genotype:
    """The discrete architecture of logits: per node the ``keep`` inputs with the largest
    beta and the argmax operation on each kept edge.

    With edge normalisation the input weights of node ``i`` are ``softmax(beta_i)``, so
    the kept inputs are its top-``keep`` entries (PC-DARTS ranks by input weight times the
    strongest operation's weight instead; ranking by beta alone keeps the derivation
    consistent with the soft common-edge count, whose zero-temperature limit is the
    discrete count of these very edges). Ties go to the lower index.

    Args:
        alpha: ``(2, E, 7)`` operation logits (normal, reduce).
        beta: ``(2, E)`` input logits.
        keep: inputs kept per node (default 2 as in DARTS; 1 <= keep <= 2).

    Returns:
        A :class:`Genotype`.

    Raises:
        ConfigError: shapes that are not a cell's, or ``keep`` out of range.

    Example:
        >>> alpha, beta = torch.zeros(2, 14, 7), torch.zeros(2, 14)
        >>> derive_genotype(alpha, beta).normal[0]
        (('max_pool_3x3', 0), ('max_pool_3x3', 1))
    """
    if alpha.dim() != 3 or alpha.shape[0] != 2 or alpha.shape[2] != len(OP_NAMES) or tuple(beta.shape) != tuple(alpha.shape[:2]):
        raise ConfigError(f"alpha must be (2, E, {len(OP_NAMES)}) and beta (2, E), got {tuple(alpha.shape)} and {tuple(beta.shape)}")
    nodes = _nodes_of(alpha.shape[1])
    if not 1 <= keep <= 2:
        raise ConfigError(f"keep (inputs per node) must be 1 or 2, got {keep}")
    alpha, beta = alpha.detach().cpu(), beta.detach().cpu()
    cells = {}
    for t, kind in enumerate(CELL_TYPES):
        nodes_out = []
        for i, sl in enumerate(node_slices(nodes)):
            kept = _top_inputs(beta[t, sl], keep)
            nodes_out.append(tuple((OP_NAMES[int(alpha[t, sl.start + j].argmax())], j) for j in kept))
        cells[kind] = tuple(nodes_out)
    return Genotype(**cells)


def _nodes_of(edges: int) -> int:
    for n in range(1, 64):
        if num_edges(n) == edges:
            return n
        if num_edges(n) > edges:
            break
    raise ConfigError(f"{edges} edges is not a cell's edge count (2+3+...: 2, 5, 9, 14, 20, ...)")


def genotype_logits(genotype: Genotype, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot logits of a genotype: ``scale`` on each kept edge's operation and input, 0 elsewhere.

    Returns:
        ``alpha (2, E, 7)``, ``beta (2, E)`` (``derive_genotype`` gives ``genotype`` back).
    """
    e = num_edges(genotype.nodes)
    alpha, beta = torch.zeros(2, e, len(OP_NAMES)), torch.zeros(2, e)
    slices = node_slices(genotype.nodes)
    for t, kind in enumerate(CELL_TYPES):
        for i, node in enumerate(genotype.cell(kind)):
            for op, j in node:
                alpha[t, slices[i].start + j, OP_NAMES.index(op)] = scale
                beta[t, slices[i].start + j] = scale
    return alpha, beta


def common_edges(a: Genotype, b: Genotype) -> int:
    """Kept edges shared by two genotypes: same cell, node, input and operation."""
    return len(a.edges() & b.edges())


def random_genotype(seed: int, nodes: int = 4, keep: int = 2) -> Genotype:
    """A genotype drawn uniformly: per node ``keep`` distinct inputs and an operation for each (NES-RS)."""
    rng = random.Random(int(seed))
    cells = {}
    for kind in CELL_TYPES:
        cells[kind] = tuple(tuple((rng.choice(OP_NAMES), j) for j in sorted(rng.sample(range(2 + i), min(keep, 2 + i)))) for i in range(nodes))
    return Genotype(**cells)


def perturb_genotype(genotype: Genotype, k: int, seed: int) -> Genotype:
    """``genotype`` with ``k`` of its kept edges replaced at random (the random-deviation baseline).

    Each chosen edge ``(input j, op o)`` of node ``i`` becomes a different pair
    ``(j', o')`` with ``j'`` not among the node's other kept inputs, so the result shares
    exactly ``num_kept - k`` edges with ``genotype``.

    Raises:
        ConfigError: ``k`` outside ``0 .. num_kept``.
    """
    if not 0 <= k <= genotype.num_kept:
        raise ConfigError(f"k (edges to change) must be in 0..{genotype.num_kept}, got {k}")
    rng = random.Random(int(seed))
    slots = [(kind, i, s) for kind in CELL_TYPES for i, node in enumerate(genotype.cell(kind)) for s in range(len(node))]
    cells = {kind: [list(node) for node in genotype.cell(kind)] for kind in CELL_TYPES}
    for kind, i, s in rng.sample(slots, k):
        node = cells[kind][i]
        op, j = node[s]
        others = {jj for ss, (_, jj) in enumerate(node) if ss != s}
        choices = [(o2, j2) for j2 in range(2 + i) if j2 not in others for o2 in OP_NAMES if (o2, j2) != (op, j)]
        node[s] = rng.choice(choices)
    return Genotype(**{kind: tuple(_sorted_node(node) for node in cells[kind]) for kind in CELL_TYPES})


def _from_pairs(pairs: Sequence[tuple[str, int]], per_node: int = 2) -> tuple[Node, ...]:
    return tuple(_sorted_node(pairs[i : i + per_node]) for i in range(0, len(pairs), per_node))


# The cell DARTS (second order) found on CIFAR-10 (Liu et al. 2019, "DARTS_V2"), the
# default architecture of the ``darts`` model.
DARTS_V2 = Genotype(
    normal=_from_pairs([("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
                        ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)]),
    reduce=_from_pairs([("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
                        ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)]),
)

