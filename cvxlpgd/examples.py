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
    """The shortest-path LP on a ``grid`` x ``grid`` node lattice with right and down edges.

    Edges are numbered as PyEPO numbers its grid's arcs, so that cost vectors from
    ``shortest_path_data`` (or from PyEPO itself) mean the same edges: row by row, first the
    row's rightward edges from left to right, then (except on the last row) its downward edges.
    """
    edges = []
    for r in range(grid):
        edges += [(r * grid + c, r * grid + c + 1) for c in range(grid - 1)]
        if r < grid - 1:
            edges += [(r * grid + c, (r + 1) * grid + c) for c in range(grid)]
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
    """Features and edge costs as PyEPO 2.2.5's ``pyepo.data.shortestpath.genData`` makes them.

    Same generator, same draws in the same order, so a seed gives PyEPO's numbers (PyEPO's own
    default seed is 135): ``B`` in {0, 1}^(edges x p), Bernoulli(1/2); features x ~ N(0, I_p);
    costs ``c = ((B x / sqrt(p) + 3)^deg + 1) / 3.5^deg``, each times an independent factor
    uniform on [1 - noise, 1 + noise]. PyEPO rounds the costs to float32; these stay float64.
    """
    rng = np.random.RandomState(seed)
    B = rng.binomial(1, 0.5, (num_edges, num_features))
    features = rng.normal(0.0, 1.0, (num, num_features))
    costs = ((features @ B.T / np.sqrt(num_features) + 3.0) ** degree + 1.0) / 3.5**degree
    costs *= rng.uniform(1.0 - noise, 1.0 + noise, (num, num_edges))
    return features, costs


def normalized_regret(true_costs: np.ndarray, decisions: np.ndarray, optimal_values: np.ndarray) -> float:
    """sum_i (c_i' x_hat_i - z*_i) / sum_i z*_i: how much worse the decisions are than optimal."""
    achieved = np.einsum("ij,ij->i", true_costs, decisions)
    return float((achieved - optimal_values).sum() / np.abs(optimal_values).sum())
