"""Parameter matrices multiplying a variable, placed straight into the conic matrix
(cvxlpgd/matrix_products.py): the same outputs and gradients as CVXPY's path, gradients against
finite differences of CVXPY's own solves, the cases left to CVXPY, and memory in proportion to
the parameter's entries."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cvxpy as cp
import numpy as np
import pytest
import torch
from problems import finite_difference

from cvxlpgd import LPGD, CvxpyLayer, matrix_products

EPS = {"eps": 1e-10}


@dataclass
class Case:
    problem: cp.Problem
    parameters: list[cp.Parameter]
    outputs: list  # variables and dual variables
    values: list[np.ndarray]


def norm_with_equalities(n: int = 5, rows: int = 2, seed: int = 0) -> Case:
    """cvxpylayers #109 in small: 0.5 ||A x||_2 + 0.1 ||x||^2 with parametrized C x = d."""
    rng = np.random.default_rng(seed)
    x, A = cp.Variable(n), cp.Parameter((n, n))
    C, d = cp.Parameter((rows, n)), cp.Parameter(rows)
    equality = C @ x == d
    problem = cp.Problem(cp.Minimize(0.5 * cp.pnorm(A @ x, 2) + 0.1 * cp.sum_squares(x)), [equality])
    values = [rng.standard_normal((n, n)), rng.standard_normal((rows, n)), rng.standard_normal(rows)]
    return Case(problem, [A, C, d], [x, equality.dual_variables[0]], values)


def factor_quadratic(n: int = 5, seed: int = 1) -> Case:
    """cvxpylayers #66 in small: ||L' x||^2 - p'x (a quadratic objective: P for LPGD) on a box."""
    rng = np.random.default_rng(seed)
    x, L, p = cp.Variable(n), cp.Parameter((n, n)), cp.Parameter(n)
    box = x <= 1
    problem = cp.Problem(cp.Minimize(cp.sum_squares(L.T @ x) - p.T @ x), [box])
    values = [np.eye(n) + 0.3 * rng.standard_normal((n, n)), rng.standard_normal(n) * 2]
    return Case(problem, [L, p], [x, box.dual_variables[0]], values)


def transposed_forms(n: int = 4, k: int = 3, seed: int = 2) -> Case:
    """x @ A in a norm, A.T @ x in a second-order cone constraint, A @ (x - 1) in an inequality,
    one parameter in two products, and a maximization."""
    rng = np.random.default_rng(seed)
    x, A, B = cp.Variable(n), cp.Parameter((n, k)), cp.Parameter((k, n))
    b = cp.Parameter(k)
    cone = cp.SOC(cp.Constant(3.0), A.T @ x)
    bound = B @ (x - 1) <= b
    objective = cp.Maximize(cp.sum(x) - cp.norm(x @ A - b) - cp.sum_squares(B @ x))
    problem = cp.Problem(objective, [cone, bound])
    values = [rng.standard_normal((n, k)), rng.standard_normal((k, n)), rng.uniform(1, 2, k)]
    return Case(problem, [A, B, b], [x, cone.dual_variables[0], bound.dual_variables[0]], values)


def constraint_forms(n: int = 5, k: int = 2, seed: int = 6) -> Case:
    """cp.norm(A @ x) in the objective, x @ C in an inequality, B.T @ x in an equality, on a
    nonnegative variable (an operand with attributes: the products get their own copy of it)."""
    rng = np.random.default_rng(seed)
    x = cp.Variable(n, nonneg=True)
    A, B, C = cp.Parameter((k + 1, n)), cp.Parameter((n, k)), cp.Parameter((n, k))
    e, d = cp.Parameter(k), cp.Parameter(k)
    inequality, equality = x @ C <= d, B.T @ x == e
    objective = cp.Minimize(cp.norm(A @ x - 1) + 0.5 * cp.sum_squares(x))
    problem = cp.Problem(objective, [inequality, equality])
    x0 = rng.uniform(0.2, 0.8, n)
    B_value, C_value = rng.standard_normal((n, k)), rng.standard_normal((n, k))
    values = [rng.standard_normal((k + 1, n)), B_value, C_value, B_value.T @ x0, C_value.T @ x0 + 0.1]
    duals = [inequality.dual_variables[0], equality.dual_variables[0]]
    return Case(problem, [A, B, C, e, d], [x, *duals], values)


def lp(n: int = 8, m_ub: int = 3, m_eq: int = 2, seed: int = 3) -> Case:
    """cvxpylayers #75 in small: an LP with parametrized inequality and equality matrices."""
    rng = np.random.default_rng(seed)
    x = cp.Variable(n)
    A_ub, b_ub = cp.Parameter((m_ub, n)), cp.Parameter(m_ub)
    A_eq, b_eq = cp.Parameter((m_eq, n)), cp.Parameter(m_eq)
    c = cp.Parameter(n)
    inequality, equality = A_ub @ x <= b_ub, A_eq @ x == b_eq
    problem = cp.Problem(cp.Minimize(c @ x), [inequality, equality, x >= 0, x <= 1])
    x0 = rng.uniform(0.2, 0.8, n)
    G, H = rng.standard_normal((m_ub, n)), rng.standard_normal((m_eq, n))
    values = [G, G @ x0 + rng.uniform(0.1, 0.5, m_ub), H, H @ x0, rng.standard_normal(n)]
    return Case(problem, [A_ub, b_ub, A_eq, b_eq, c], [x, inequality.dual_variables[0]], values)


CASES: dict[str, Callable[[], Case]] = {
    f.__name__: f for f in (norm_with_equalities, factor_quadratic, transposed_forms, constraint_forms, lp)
}


@pytest.fixture
def direct(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every parameter matrix takes the direct path, however small."""
    monkeypatch.setattr(matrix_products, "MIN_ENTRIES", 1)


def _outputs_and_gradients(case: Case, gradient: str, solver: str) -> list[np.ndarray]:
    layer = CvxpyLayer(
        case.problem, case.parameters, case.outputs, solver=solver, gradient=gradient, solver_args=EPS
    )
    tensors = [torch.tensor(v, requires_grad=True) for v in case.values]
    outputs = layer(*tensors)
    weights = np.random.default_rng(9)
    loss = sum((o * torch.tensor(weights.standard_normal(o.shape))).sum() for o in outputs)
    loss.backward()
    return [o.detach().numpy() for o in outputs] + [t.grad.numpy() for t in tensors]


def _products(case: Case) -> int:
    return len(matrix_products.rewrite(case.problem, matrix_products.MIN_ENTRIES).products)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("name", "gradient", "solver", "output_tol", "gradient_tol"),
    [
        ("norm_with_equalities", "lpgd", "SCS", 1e-9, 1e-8),
        ("norm_with_equalities", "implicit", "SCS", 1e-9, 1e-8),
        ("factor_quadratic", "lpgd", "CLARABEL", 1e-12, 1e-12),  # the same conic program
        ("factor_quadratic", "implicit", "SCS", 1e-9, 1e-8),
        ("transposed_forms", "lpgd", "SCS", 1e-9, 1e-7),
        ("transposed_forms", "implicit", "SCS", 1e-9, 1e-8),
        ("constraint_forms", "lpgd", "SCS", 1e-9, 1e-7),
        ("constraint_forms", "implicit", "SCS", 1e-9, 1e-8),
        # On an LP the default's finite step measures the costs without their part in the row
        # space of the conic program's equality rows, and the direct path adds rows z = A x: its
        # step differs from CVXPY's path by design. A fixed LPGD step is the same computation.
        ("lp", LPGD(tau=1.0), "HIGHS", 1e-12, 1e-12),
        ("lp", LPGD(tau=1.0), "CLARABEL", 1e-9, 1e-7),
        ("lp", "implicit", "SCS", 1e-9, 1e-8),
    ],
)
def test_direct_path_matches_cvxpys_path(
    name: str,
    gradient: str | LPGD,
    solver: str,
    output_tol: float,
    gradient_tol: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Outputs (primal and dual) and gradients w.r.t. every parameter: the direct program and
    CVXPY's differ by the product variables only, so they agree to the solvers' accuracy (SCS
    at eps 1e-10 for the cones: Clarabel's second-order cones are accurate to ~1e-6 only)."""
    reference_case = CASES[name]()
    assert _products(reference_case) == 0  # small matrices: CVXPY's own path
    reference = _outputs_and_gradients(reference_case, gradient, solver)
    monkeypatch.setattr(matrix_products, "MIN_ENTRIES", 1)
    case = CASES[name]()
    assert _products(case) >= 1
    ours = _outputs_and_gradients(case, gradient, solver)
    for k, (mine, theirs) in enumerate(zip(ours, reference, strict=True)):
        tolerance = output_tol if k < len(case.outputs) else gradient_tol
        np.testing.assert_allclose(mine, theirs, atol=tolerance * max(1.0, np.abs(theirs).max()), rtol=0)


def test_conic_data_of_a_factor_quadratic_are_cvxpys(monkeypatch: pytest.MonkeyPatch) -> None:
    """||L' x||^2 with P kept as a matrix: CVXPY's own path already introduces t = L' x, so the
    direct path must produce the same conic data, entry for entry, up to the sign of each
    equality row (which flips only that row's dual)."""
    case = factor_quadratic()
    theta = np.concatenate([v.ravel() for v in case.values])[None, :]
    data = []
    for min_entries in (matrix_products.MIN_ENTRIES, 1):
        monkeypatch.setattr(matrix_products, "MIN_ENTRIES", min_entries)
        layer = CvxpyLayer(case.problem, case.parameters, case.outputs, solver="CLARABEL")
        data.append((layer.compiled().maps.structure, layer.compiled().maps.apply(theta)))
    (cvxpy_structure, cvxpy_batch), (direct_structure, direct_batch) = data
    assert direct_structure.dims == cvxpy_structure.dims
    cvxpy_A = cvxpy_structure.A.matrix(cvxpy_batch.A_values[0]).toarray()
    direct_A = direct_structure.A.matrix(direct_batch.A_values[0]).toarray()
    zero = cvxpy_structure.dims.zero
    signs = np.ones(cvxpy_A.shape[0])
    signs[:zero] = np.sign(np.sum(direct_A[:zero] * cvxpy_A[:zero], axis=1))
    np.testing.assert_allclose(direct_A, signs[:, None] * cvxpy_A, atol=1e-15, rtol=0)
    np.testing.assert_allclose(direct_batch.b, signs * cvxpy_batch.b, atol=1e-15, rtol=0)
    np.testing.assert_allclose(direct_batch.c, cvxpy_batch.c, atol=1e-15, rtol=0)
    np.testing.assert_allclose(direct_batch.P_values, cvxpy_batch.P_values, atol=1e-15, rtol=0)


def _cvxpy_loss(case: Case, weights: np.ndarray) -> Callable[[list[np.ndarray]], float]:
    """The loss w'x on CVXPY's own solution: an oracle independent of the layer's compilation
    (SCS: Clarabel at such tolerances reports inaccurate second-order cone solutions)."""

    def loss(values: list[np.ndarray]) -> float:
        for p, v in zip(case.parameters, values, strict=True):
            p.value = v
        case.problem.solve(solver="SCS", eps_abs=1e-12, eps_rel=1e-12, max_iters=100_000)
        return float(weights @ case.outputs[0].value)

    return loss


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.usefixtures("direct")
def test_matrix_gradients_match_finite_differences(name: str) -> None:
    """Gradients w.r.t. the parameter matrices (direct path, default gradient) against central
    differences of CVXPY's solves: every form of product (``A @ x`` in a norm, a square, a cone
    and the constraints, ``x @ A``, ``A.T @ x``), and the LP, whose x is piecewise linear in its
    matrices (the default gradient's small step there)."""
    case = CASES[name]()
    assert _products(case) >= 1
    weights = np.random.default_rng(5).standard_normal(case.outputs[0].shape)
    layer = CvxpyLayer(case.problem, case.parameters, case.outputs[:1], solver="SCS", solver_args=EPS)
    tensors = [torch.tensor(v, requires_grad=True) for v in case.values]
    (layer(*tensors)[0] @ torch.tensor(weights)).backward()
    loss = _cvxpy_loss(case, weights)
    for index, param in enumerate(case.parameters):
        if param.ndim != 2:
            continue
        fd = finite_difference(loss, case.values, index, symmetric=False, step=1e-5)
        np.testing.assert_allclose(tensors[index].grad.numpy(), fd, atol=1e-5 * max(1.0, np.abs(fd).max()))


def test_cases_left_to_cvxpy() -> None:
    """Only an attribute-free parameter matrix of MIN_ENTRIES entries or more, times a
    parameter-free vector with a variable, takes the direct path."""
    n = 100
    x, X = cp.Variable(n), cp.Variable((n, 2))
    A = cp.Parameter((n, n))
    nonneg = cp.Parameter((n, n), nonneg=True)
    small = cp.Parameter((n, n // 2 - 1))
    q = cp.Parameter(n)

    def products(expr: cp.Expression, constraints: list | None = None) -> int:
        return len(matrix_products.rewrite(cp.Problem(cp.Minimize(expr), constraints)).products)

    assert products(cp.norm(A @ x)) == 1
    assert products(cp.norm(x @ A) + cp.norm(A.T @ x)) == 2
    assert products(cp.sum_squares(A @ x - 1) + cp.norm(A @ x[::-1], 1)) == 2
    assert products(cp.sum(x), [x @ A <= 1, A.T @ x == 0, cp.SOC(cp.sum(x), A @ x)]) == 3
    assert products(cp.sum(cp.Variable(n, nonneg=True) @ A)) == 1  # via a copy of the variable
    assert products(cp.norm(x @ A.T) + cp.norm(cp.matmul(A, 2 * x + X[:, 0]))) == 2
    assert products(cp.norm(nonneg @ x)) == 0  # CVXPY checks and lowers attributes
    assert products(cp.norm(small @ x[: n // 2 - 1])) == 0  # below MIN_ENTRIES
    assert products(cp.norm(A @ X)) == 0  # a matrix operand
    assert products(cp.norm((2 * A) @ x)) == 0  # not a bare parameter
    assert products(cp.norm(A[:, : n // 2] @ x[: n // 2]) + cp.norm((A + nonneg) @ x)) == 0
    assert products(cp.norm(A @ q)) == 0  # no variable (and not DPP)


@pytest.mark.timeout(120)
def test_fallback_cases_still_solve() -> None:
    """Cases left to CVXPY next to direct products in one layer give CVXPY's solution."""
    rng = np.random.default_rng(4)
    n = 100
    x = cp.Variable(n)
    A, W = cp.Parameter((n, n)), cp.Parameter((n, n), nonneg=True)
    problem = cp.Problem(cp.Minimize(cp.norm(A @ x - 1) + cp.norm((0.5 * W) @ x) + cp.sum_squares(x)))
    values = [rng.standard_normal((n, n)), rng.uniform(0, 1, (n, n))]
    assert len(matrix_products.rewrite(problem).products) == 1
    (ours,) = CvxpyLayer(problem, [A, W], [x], solver="SCS", solver_args=EPS)(*map(torch.tensor, values))
    A.value, W.value = values
    problem.solve(solver="SCS", eps_abs=1e-10, eps_rel=1e-10, max_iters=100_000)
    np.testing.assert_allclose(ours.numpy(), x.value, atol=1e-7)


_BUILD_UNDER_A_CAP = textwrap.dedent(
    """
    import resource, sys
    import cvxpy as cp
    from cvxlpgd import CvxpyLayer
    n = int(sys.argv[1])
    x, A = cp.Variable(n), cp.Parameter((n, n))
    C, d = cp.Parameter((12, n)), cp.Parameter(12)
    problem = cp.Problem(cp.Minimize(0.5 * cp.pnorm(A @ x, 2)), [C @ x == d])
    with open("/proc/self/statm") as statm:
        used = int(statm.read().split()[0]) * resource.getpagesize()
    cap = used + int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    CvxpyLayer(problem, [A, C, d], [x], solver="CLARABEL")
    print("built")
    """
)


@pytest.mark.timeout(120)
def test_memory_grows_with_the_entries_not_their_product_with_the_size() -> None:
    """cvxpylayers #109 at n = 700: CVXPY's path needs an n^3 workspace (2.7 GB) for its cone
    reordering; the direct path builds within 1 GiB more address space than the imports took."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", _BUILD_UNDER_A_CAP, "700", str(2**30)],
        capture_output=True, text=True, env=env, timeout=110, check=False,
    )
    assert done.returncode == 0 and "built" in done.stdout, done.stderr[-2000:]
