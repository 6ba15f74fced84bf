"""Standard decision-focused learning problems, shared by the demo, tutorials and benchmarks.

Shortest path on a k x k grid (the predict-then-optimize benchmark of Elmachtoub & Grigas and
PyEPO): go from the top-left to the bottom-right node, moving right or down; edge costs are a
random polynomial of features, so a linear model is misspecified for degree > 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import cvxpy as cp
import numpy as np


@dataclass(frozen=True)
class ShortestPath:
    """A flow LP:  minimize c'x  s.t.  flow conservation,  0 <= x <= 1."""

    problem: cp.Problem
    cost: cp.Parameter
    flow: cp.Variable
    edges: tuple[tuple[int, int], ...]
    grid: int


def grid_shortest_path(grid: int) -> ShortestPath:
    """The shortest-path LP on a ``grid`` x ``grid`` node lattice with right and down edges."""
    node = lambda r, c: r * grid + c  # noqa: E731
    edges = [(node(r, c), node(r, c + 1)) for r in range(grid) for c in range(grid - 1)]
    edges += [(node(r, c), node(r + 1, c)) for r in range(grid - 1) for c in range(grid)]
    incidence = np.zeros((grid * grid, len(edges)))
    for e, (tail, head) in enumerate(edges):
        incidence[tail, e] -= 1.0
        incidence[head, e] += 1.0
    supply = np.zeros(grid * grid)
    supply[0], supply[-1] = -1.0, 1.0
    cost = cp.Parameter(len(edges), name="cost")
    flow = cp.Variable(len(edges), name="flow")
    problem = cp.Problem(cp.Minimize(cost @ flow), [incidence @ flow == supply, flow >= 0, flow <= 1])
    return ShortestPath(problem=problem, cost=cost, flow=flow, edges=tuple(edges), grid=grid)


def shortest_path_data(
    num: int, num_edges: int, num_features: int = 5, degree: int = 4, noise: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """PyEPO's synthetic data: features ~ N(0, I), costs = ((Bx/sqrt(p) + 3)^deg / 3.5^(deg-1) + 1) * eps."""
    rng = np.random.default_rng(seed)
    B = rng.binomial(1, 0.5, size=(num_edges, num_features))
    features = rng.standard_normal((num, num_features))
    base = (features @ B.T / np.sqrt(num_features) + 3.0) ** degree / 3.5 ** (degree - 1) + 1.0
    costs = base * rng.uniform(1.0 - noise, 1.0 + noise, size=base.shape)
    return features, costs


def normalized_regret(true_costs: np.ndarray, decisions: np.ndarray, optimal_values: np.ndarray) -> float:
    """sum_i (c_i' x_hat_i - z*_i) / sum_i z*_i: how much worse the decisions are than optimal."""
    achieved = np.einsum("ij,ij->i", true_costs, decisions)
    return float((achieved - optimal_values).sum() / np.abs(optimal_values).sum())
