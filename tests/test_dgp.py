"""gp=True: disciplined geometric programs, checked against CVXPY's own ``problem.solve(gp=True)``
(variables and dual values), torch's gradcheck (implicit) and central finite differences (LPGD)."""

from __future__ import annotations

import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch

from cvxlpgd import LPGD, CvxpyLayer

SCS_TIGHT = {"eps": 1e-11, "max_iters": 200_000}
REFERENCE = {"solver": "SCS", "solver_args": SCS_TIGHT}
# CVXPY's reference solve: SCS at tight tolerances. (Clarabel through CVXPY leaves duals off by
# up to 2e-6 at its default tolerances and reports "optimal_inaccurate" at tighter ones here.)
CVXPY_TIGHT = {"solver": cp.SCS, "eps_abs": 1e-11, "eps_rel": 1e-11, "max_iters": 200_000}
RTOL, ATOL = 1e-6, 1e-7
LPGD_TAU = {"SCS": 1e-5, "CLARABEL": 1e-4}


def box_problem() -> tuple[cp.Problem, list[cp.Parameter], list[cp.Variable]]:
    """Largest box h x w x d under wall and floor budgets and a height cap h <= r w^k: three active
    constraints; k is an exponent, which CVXPY keeps as is (not in log form)."""
    h, w, d = (cp.Variable(pos=True, name=n) for n in "hwd")
    A_wall, A_flr, r = (cp.Parameter(pos=True, name=n) for n in ("A_wall", "A_flr", "r"))
    k = cp.Parameter(name="k")
    constraints = [2 * (h * w + h * d) <= A_wall, w * d <= A_flr, h <= r * w**k]
    return cp.Problem(cp.Maximize(h * w * d), constraints), [A_wall, A_flr, r, k], [h, w, d]


def mixed_problem() -> tuple[cp.Problem, list[cp.Parameter], list[cp.Variable]]:
    """A posynomial with a monomial equality, an active and an inactive inequality; ``a`` enters
    both through its log (coefficients) and as itself (the exponent of x)."""
    x, y, z = (cp.Variable(pos=True, name=n) for n in "xyz")
    a, b = cp.Parameter(pos=True, name="a"), cp.Parameter(pos=True, name="b")
    constraints = [x * y * z == b, x + a * y <= 3, z <= 4 * x**a]
    return cp.Problem(cp.Minimize(x**-1 * y**-0.5 + a * z + y), constraints), [a, b], [x, y, z]


CASES = {
    "box": (box_problem, [[100.0, 10.0, 1.5, 1.0], [60.0, 8.0, 1.2, 0.8], [80.0, 12.0, 2.0, 0.9]]),
    "mixed": (mixed_problem, [[0.7, 2.0], [1.3, 1.5], [1.0, 2.5]]),
}


def cvxpy_solution(problem: cp.Problem, params: list[cp.Parameter], values: list[float]) -> list[np.ndarray]:
    """Variables, then every constraint's dual value, from ``problem.solve(gp=True)``."""
    for param, value in zip(params, values, strict=True):
        param.value = value
    problem.solve(gp=True, **CVXPY_TIGHT)
    assert problem.status == cp.OPTIMAL
    return [np.asarray(v.value) for v in problem.variables()] + [
        np.asarray(c.dual_value) for c in problem.constraints
    ]


def outputs_of(problem: cp.Problem) -> list[cp.Variable]:
    return list(problem.variables()) + [c.dual_variables[0] for c in problem.constraints]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("solver", ["SCS", "CLARABEL"])
def test_unbatched_matches_cvxpy(case: str, solver: str) -> None:
    make, values = CASES[case]
    problem, params, _ = make()
    solver_args = {"eps": 1e-10, "max_iters": 100_000} if solver == "SCS" else {"eps": 1e-10}
    layer = CvxpyLayer(problem, params, outputs_of(problem), solver=solver, gp=True, solver_args=solver_args)
    expected = cvxpy_solution(problem, params, values[0])
    got = layer(*[torch.tensor(v, dtype=torch.float64) for v in values[0]])
    assert len(got) == len(expected)
    for out, ref in zip(got, expected, strict=True):
        assert out.shape == ref.shape
        np.testing.assert_allclose(out.numpy(), ref, rtol=RTOL, atol=ATOL)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", sorted(CASES))
def test_batched_and_broadcast_match_cvxpy(case: str) -> None:
    """A batch of three (the first parameter broadcast from one value) equals three CVXPY solves."""
    make, values = CASES[case]
    problem, params, _ = make()
    layer = CvxpyLayer(problem, params, outputs_of(problem), gp=True, **REFERENCE)
    rows = [[values[0][0], *v[1:]] for v in values]
    tensors = [torch.tensor(values[0][0], dtype=torch.float64)] + [
        torch.tensor([row[j] for row in rows], dtype=torch.float64) for j in range(1, len(params))
    ]
    got = layer(*tensors)
    for item, row in enumerate(rows):
        for out, ref in zip(got, cvxpy_solution(problem, params, row), strict=True):
            np.testing.assert_allclose(out[item].numpy(), ref, rtol=RTOL, atol=ATOL)


@pytest.mark.timeout(60)
def test_parameters_in_another_order() -> None:
    """The tensors follow the order of ``parameters``, not of ``problem.parameters()``."""
    problem, params, _ = box_problem()
    order = [3, 1, 0, 2]
    layer = CvxpyLayer(problem, [params[i] for i in order], outputs_of(problem), gp=True, **REFERENCE)
    values = CASES["box"][1][1]
    got = layer(*[torch.tensor(values[i], dtype=torch.float64) for i in order])
    for out, ref in zip(got, cvxpy_solution(problem, params, values), strict=True):
        np.testing.assert_allclose(out.numpy(), ref, rtol=RTOL, atol=ATOL)


@pytest.mark.timeout(60)
def test_dual_of_one_constraint_alone() -> None:
    """Asking for one constraint's dual (and no variable) gives CVXPY's dual value of that constraint."""
    problem, params, _ = mixed_problem()
    equality = problem.constraints[0]
    layer = CvxpyLayer(problem, params, [equality.dual_variables[0]], gp=True, **REFERENCE)
    values = CASES["mixed"][1][0]
    cvxpy_solution(problem, params, values)
    (dual,) = layer(*[torch.tensor(v, dtype=torch.float64) for v in values])
    assert abs(float(equality.dual_value)) > 0.1  # an active equality: the check is not vacuous
    np.testing.assert_allclose(dual.numpy(), equality.dual_value, rtol=RTOL)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", sorted(CASES))
def test_implicit_gradcheck(case: str) -> None:
    """Gradients of variables and duals, through log inputs and exp outputs, pass gradcheck."""
    make, values = CASES[case]
    problem, params, _ = make()
    layer = CvxpyLayer(
        problem,
        params,
        outputs_of(problem),
        solver="SCS",
        gradient="implicit",
        gp=True,
        solver_args=SCS_TIGHT,
    )
    tensors = tuple(torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in values[0])
    assert torch.autograd.gradcheck(lambda *t: layer(*t), tensors, eps=1e-6, atol=1e-5, rtol=1e-4)


def _central_differences(loss, values: list[float], step: float = 1e-6) -> np.ndarray:
    grad = np.zeros(len(values))
    for j in range(len(values)):
        plus, minus = list(values), list(values)
        plus[j] += step
        minus[j] -= step
        grad[j] = (loss(plus) - loss(minus)) / (2 * step)
    return grad


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("solver", ["SCS", "CLARABEL"])
def test_lpgd_small_tau_matches_finite_differences(case: str, solver: str) -> None:
    """LPGD at a small tau is the derivative of a random linear loss of variables and duals.

    Clarabel's exponential-cone solutions carry ~1e-11 noise even at eps=1e-12, which a re-solve
    difference divides by tau: at tau=1e-5 that is ~8e-4 relative error here, at 1e-4 ~2e-6."""
    make, values = CASES[case]
    problem, params, _ = make()
    outputs = outputs_of(problem)
    solver_args = SCS_TIGHT if solver == "SCS" else {"eps": 1e-12}
    layer = CvxpyLayer(
        problem,
        params,
        outputs,
        solver=solver,
        gradient=LPGD(tau=LPGD_TAU[solver]),
        gp=True,
        solver_args=solver_args,
    )
    reference = CvxpyLayer(problem, params, outputs, gp=True, **REFERENCE)
    weights = [torch.tensor(w) for w in np.random.default_rng(3).standard_normal(len(outputs))]

    def loss(vals: list[float]) -> float:
        with torch.no_grad():
            got = reference(*[torch.tensor(v, dtype=torch.float64) for v in vals])
        return float(sum(w * o for w, o in zip(weights, got, strict=True)))

    tensors = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in values[0]]
    sum(w * o for w, o in zip(weights, layer(*tensors), strict=True)).backward()
    lpgd = np.array([t.grad.item() for t in tensors])
    fd = _central_differences(loss, values[0])
    error = np.linalg.norm(lpgd - fd) / np.linalg.norm(fd)
    assert error <= 1e-3, f"relative error {error:.2e}: LPGD {lpgd}, finite differences {fd}"


@pytest.mark.timeout(60)
def test_exponent_parameter_gradient_is_not_zero() -> None:
    """k enters only as an exponent: its gradient must come through, and match finite differences
    of CVXPY's own solution (h = r w^k is active)."""
    problem, params, (h, _, _) = box_problem()
    layer = CvxpyLayer(
        problem, params, [h], gp=True, gradient="implicit", solver="SCS", solver_args=SCS_TIGHT
    )
    values = CASES["box"][1][0]
    tensors = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in values]
    layer(*tensors)[0].backward()
    step = 1e-5
    plus = cvxpy_solution(problem, params, [*values[:3], values[3] + step])[0]
    minus = cvxpy_solution(problem, params, [*values[:3], values[3] - step])[0]
    fd = float(plus - minus) / (2 * step)
    assert abs(fd) > 0.1
    assert tensors[3].grad.item() == pytest.approx(fd, rel=1e-4)


@pytest.mark.timeout(60)
def test_float32_in_float32_out() -> None:
    problem, params, _ = mixed_problem()
    layer = CvxpyLayer(problem, params, outputs_of(problem), gp=True, **REFERENCE)
    values = CASES["mixed"][1][0]
    got = layer(*[torch.tensor(v, dtype=torch.float32) for v in values])
    assert all(out.dtype == torch.float32 for out in got)
    for out, ref in zip(got, cvxpy_solution(problem, params, values), strict=True):
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_non_positive_log_parameter_raises(bad: float) -> None:
    """log(0) has no value: a positive parameter of a geometric program must be > 0."""
    problem, params, variables = mixed_problem()
    layer = CvxpyLayer(problem, params, variables, gp=True)
    with pytest.raises(ValueError, match="'b'"):
        layer(torch.tensor(1.0), torch.tensor(bad))


@pytest.mark.timeout(60)
def test_zero_for_a_log_parameter_raises_without_warning_first() -> None:
    """A 0 for a ``pos`` parameter that enters through its log is refused once, with no earlier
    "solved anyway" warning (the DCP layer's attribute check used to warn before the gp check)."""
    problem, params, variables = mixed_problem()
    layer = CvxpyLayer(problem, params, variables, gp=True)
    with warnings.catch_warnings(record=True) as caught, pytest.raises(ValueError, match="'b'.*> 0"):
        warnings.simplefilter("always")
        layer(torch.tensor(1.0), torch.tensor(0.0))
    assert [str(w.message) for w in caught] == []


@pytest.mark.timeout(60)
def test_gp_gradient_of_the_log_and_exp_stages_matches_finite_differences() -> None:
    """The log of the inputs and the exp of the outputs are numpy stages with adjoints: the
    gradient through both agrees with central differences of the layer itself."""
    problem, params, variables = box_problem()
    layer = CvxpyLayer(problem, params, variables, gp=True, gradient="implicit", **REFERENCE)
    values = torch.tensor(CASES["box"][1][1], dtype=torch.float64)
    weights = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)

    def loss(v: torch.Tensor) -> torch.Tensor:
        return sum(w * out for w, out in zip(weights, layer(*v), strict=True))

    tensors = values.clone().requires_grad_(True)
    loss(tensors).backward()
    step = 1e-5
    for i in range(3):  # the positive parameters, which enter through their logs
        e = torch.zeros(4, dtype=torch.float64)
        e[i] = step * values[i]
        fd = (loss(values + e) - loss(values - e)).item() / (2 * e[i].item())
        assert tensors.grad[i].item() == pytest.approx(fd, rel=1e-4, abs=1e-8)


@pytest.mark.timeout(60)
def test_construction_errors_name_the_culprit() -> None:
    problem, params, variables = mixed_problem()
    with pytest.raises(ValueError, match="'b'.*missing"):
        CvxpyLayer(problem, params[:1], variables, gp=True)
    stranger = cp.Variable(pos=True, name="stranger")
    with pytest.raises(ValueError, match="stranger"):
        CvxpyLayer(problem, params, [*variables, stranger], gp=True)
    x = cp.Variable(name="x_dcp")
    c = cp.Parameter(name="c")
    dcp_problem = cp.Problem(cp.Minimize(cp.square(x - c)))
    with pytest.raises(ValueError, match="drop gp=True"):
        CvxpyLayer(dcp_problem, [c], [x], gp=True)


@pytest.mark.timeout(60)
def test_wrong_tensor_count_is_reported_in_user_terms() -> None:
    problem, params, variables = box_problem()
    layer = CvxpyLayer(problem, params, variables, gp=True)
    with pytest.raises(ValueError, match="takes 4 parameter tensors"):
        layer(torch.tensor(1.0))
