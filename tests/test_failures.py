"""Solver failures name the item and the status; on_failure="nan" lets the rest of the batch go on.

The problem used throughout:  minimize c'x  s.t.  x_0 <= b,  x >= 0,  x in R^2.
It is feasible iff b >= 0 and bounded iff c_1 >= 0 (x_1 has no upper bound), so single batch
items can be made infeasible (b < 0) or unbounded (c_1 < 0) by construction.
"""

from __future__ import annotations

import re
import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch
from lpgd_formula import lpgd_formula_gradient

from cvxlpgd import LPGD, CvxpyLayer, PerturbedSolveError, SolverError, SolverWarning

SOLVERS = ["SCS", "CLARABEL"]
ARGS = {"SCS": {"eps": 1e-9, "max_iters": 20_000}, "CLARABEL": {}}

GOOD_C = [[-1.0, 1.0], [-2.0, 0.5], [0.5, 1.0], [-1.0, 3.0]]
GOOD_B = [1.0, 2.0, 0.5, 3.0]


@pytest.fixture(scope="module")
def lp():
    x = cp.Variable(2, name="x")
    c = cp.Parameter(2, name="c")
    b = cp.Parameter(name="b")
    con = x[0] <= b
    problem = cp.Problem(cp.Minimize(c @ x), [con, x >= 0])
    return problem, c, b, x, con


def make_layer(lp, solver, **kwargs):
    problem, c, b, x, con = lp
    kwargs.setdefault("solver_args", ARGS[solver])
    return CvxpyLayer(problem, [c, b], [x, con.dual_variables[0]], solver=solver, **kwargs)


def batch(bad_item: int | None = None, kind: str = "infeasible", size: int = 4):
    C = torch.tensor(GOOD_C[:size], dtype=torch.float64)
    B = torch.tensor(GOOD_B[:size], dtype=torch.float64)
    if bad_item is not None:
        if kind == "infeasible":
            B[bad_item] = -1.0
        else:
            C[bad_item, 1] = -1.0
    return C, B


def warnings_matching(record, pattern):
    return [w for w in record if re.search(pattern, str(w.message))]


# --------------------------------------------------------------------------------------------
# on_failure="raise"
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize(("kind", "item"), [("infeasible", 2), ("unbounded", 1), ("infeasible", 0)])
def test_failed_item_raises_naming_item_and_status(lp, solver, kind, item):
    layer = make_layer(lp, solver)
    with pytest.raises(SolverError) as info:
        layer(*batch(item, kind))
    error = info.value
    assert not isinstance(error, PerturbedSolveError)
    assert error.statuses == {item: kind}
    message = str(error)
    assert f"{solver} failed on 1 of 4 batch item(s): item {item}: {kind}" in message, message
    assert "on_failure='nan'" in message
    expected = ["optimal"] * 4
    expected[item] = kind
    assert layer.last_statuses == expected


@pytest.mark.parametrize("solver", SOLVERS)
def test_several_failed_items_are_all_named(lp, solver):
    layer = make_layer(lp, solver)
    C, B = batch()
    B[1] = -1.0
    C[3, 1] = -2.0
    with pytest.raises(SolverError) as info:
        layer(C, B)
    assert info.value.statuses == {1: "infeasible", 3: "unbounded"}
    assert "item 1: infeasible, item 3: unbounded" in str(info.value)
    assert layer.last_statuses == ["optimal", "infeasible", "optimal", "unbounded"]


@pytest.mark.parametrize("solver", SOLVERS)
def test_unbatched_failure(lp, solver):
    layer = make_layer(lp, solver)
    with pytest.raises(SolverError, match="1 of 1 batch item.*item 0: infeasible") as info:
        layer(torch.tensor([-1.0, 1.0], dtype=torch.float64), torch.tensor(-1.0, dtype=torch.float64))
    assert info.value.statuses == {0: "infeasible"}
    assert layer.last_statuses == ["infeasible"]


def test_iteration_limit_is_reported_per_item_clarabel(lp):
    # One iteration: every iterate is far from optimal (after two, item 0's is within 1e-3 and
    # is used as an inaccurate solution: tests/test_iteration_limits.py).
    layer = make_layer(lp, "CLARABEL", solver_args={"max_iters": 1})
    with pytest.raises(SolverError) as info:
        layer(*batch())
    assert info.value.statuses == {i: "iteration_limit" for i in range(4)}
    assert "item 0: iteration_limit, item 1: iteration_limit" in str(info.value)
    assert "MaxIterations" in str(info.value)  # the solver's own word is quoted too
    assert layer.last_statuses == ["iteration_limit"] * 4
    # the same layer with enough iterations (per-call override) is fine
    layer(*batch(), solver_args={"max_iters": 10_000})
    assert layer.last_statuses == ["optimal"] * 4


def test_iteration_limit_is_reported_per_item_scs(lp):
    """SCS cut off after 2 iterations: each item fails with SCS's own verdict, never silently
    (SCS's verdicts on 2-iteration iterates vary: max_iters, 'could not determine', unbounded)."""
    layer = make_layer(lp, "SCS", solver_args={"max_iters": 2})
    with pytest.raises(SolverError) as info:
        layer(*batch())
    assert set(info.value.statuses) == {0, 1, 2, 3}
    assert not set(info.value.statuses.values()) & {"optimal", "optimal_inaccurate"}
    assert "iteration_limit" in info.value.statuses.values()
    assert layer.last_statuses == [info.value.statuses[i] for i in range(4)]


def test_scs_iteration_limit_is_never_silent(lp):
    """An SCS iterate cut off by max_iters is a failure per item; with on_failure="nan" one warning."""
    layer = make_layer(lp, "SCS", solver_args={"max_iters": 20, "eps": 1e-14}, on_failure="nan")
    with pytest.warns(UserWarning) as record:
        x, _ = layer(*batch())
    assert layer.last_statuses == ["iteration_limit"] * 4
    assert torch.isnan(x).all()
    assert len(record) == 1, [str(w.message) for w in record]
    assert record[0].message.statuses == dict.fromkeys(range(4), "iteration_limit")
    layer(*batch(), solver_args={"max_iters": 20_000})
    assert layer.last_statuses == ["optimal"] * 4


@pytest.mark.xfail(
    strict=True,
    reason="diffcp reports Clarabel's MaxIterations as 'Failure', so gradient='implicit' can only say "
    "'solver_error' (gradient='lpgd' says 'iteration_limit'); a limitation of diffcp 1.1.9",
)
def test_iteration_limit_implicit_clarabel(lp):
    layer = make_layer(lp, "CLARABEL", gradient="implicit", solver_args={"max_iters": 2})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(SolverError):
            layer(*batch())
    assert layer.last_statuses == ["iteration_limit"] * 4


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("kind", ["infeasible", "unbounded"])
def test_failed_item_status_implicit(lp, solver, kind):
    layer = make_layer(lp, solver, gradient="implicit")
    with pytest.raises(SolverError) as info:
        layer(*batch(1, kind))
    assert info.value.statuses == {1: kind}
    assert f"item 1: {kind}" in str(info.value)


# --------------------------------------------------------------------------------------------
# on_failure="nan"
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gradient", ["lpgd", "implicit"])
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize(("kind", "item"), [("infeasible", 2), ("unbounded", 0)])
def test_nan_policy_isolates_the_failed_item(lp, solver, gradient, kind, item):
    layer = make_layer(lp, solver, gradient=gradient, on_failure="nan")
    C, B = batch(item, kind)
    C.requires_grad_(True)
    B.requires_grad_(True)
    with pytest.warns(UserWarning) as record:
        x, y = layer(C, B)
    failures = warnings_matching(record, "failed on 1 of 4 batch item")
    assert len(failures) == 1, [str(w.message) for w in record]
    assert list(failures[0].message.statuses) == [item]
    assert layer.last_statuses[item] != "optimal"
    if gradient == "lpgd" or solver == "CLARABEL":
        assert layer.last_statuses[item] == kind
    good = [i for i in range(4) if i != item]
    assert all(layer.last_statuses[i] == "optimal" for i in good)

    # failed item: NaN; the others: what a clean solve of just those items gives
    assert torch.isnan(x[item]).all() and torch.isnan(y[item]).all()
    assert torch.isfinite(x[good]).all() and torch.isfinite(y[good]).all()
    clean = make_layer(lp, solver, gradient=gradient)
    Cg = C.detach()[good].clone().requires_grad_(True)
    Bg = B.detach()[good].clone().requires_grad_(True)
    x_clean, y_clean = clean(Cg, Bg)
    torch.testing.assert_close(x[good], x_clean, atol=1e-6, rtol=0)
    torch.testing.assert_close(y[good], y_clean, atol=1e-6, rtol=0)

    # gradients: zero for the failed item, finite and equal to the clean ones elsewhere
    # (chosen so that no perturbed LP c +- tau dx has a zero cost entry: unique solutions)
    weights = torch.tensor([0.3, -0.25], dtype=torch.float64)
    (x @ weights).sum().backward()  # NaN loss value; the incoming gradient is still finite
    (x_clean @ weights).sum().backward()
    assert torch.equal(C.grad[item], torch.zeros(2, dtype=torch.float64))
    assert B.grad[item] == 0.0
    assert torch.isfinite(C.grad).all() and torch.isfinite(B.grad).all()
    torch.testing.assert_close(C.grad[good], Cg.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(B.grad[good], Bg.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("solver", SOLVERS)
def test_nan_policy_with_nan_incoming_gradient(lp, solver):
    """A loss that propagates the NaN of the failed item back must not poison the others."""
    layer = make_layer(lp, solver, on_failure="nan")
    C, B = batch(1, "infeasible")
    C.requires_grad_(True)
    with pytest.warns(SolverWarning, match="failed on 1 of 4") as record:
        x, y = layer(C, B)
    assert record[0].message.statuses == {1: "infeasible"}
    ((x - 0.3) ** 2).sum().backward()  # d/dx is NaN for item 1
    assert torch.equal(C.grad[1], torch.zeros(2, dtype=torch.float64))
    assert torch.isfinite(C.grad).all()


@pytest.mark.parametrize("solver", SOLVERS)
def test_nan_policy_all_items_fail(lp, solver):
    layer = make_layer(lp, solver, on_failure="nan")
    C, B = batch()
    B = torch.full_like(B, -1.0).requires_grad_(True)
    with pytest.warns(SolverWarning, match="failed on 4 of 4") as record:
        x, y = layer(C, B)
    assert record[0].message.statuses == dict.fromkeys(range(4), "infeasible")
    assert torch.isnan(x).all() and torch.isnan(y).all()
    assert layer.last_statuses == ["infeasible"] * 4
    x.sum().backward()
    assert torch.equal(B.grad, torch.zeros(4, dtype=torch.float64))


def test_nan_policy_iteration_limit(lp):
    layer = make_layer(lp, "CLARABEL", on_failure="nan", solver_args={"max_iters": 1})
    with pytest.warns(SolverWarning, match="failed on 4 of 4") as record:
        x, _ = layer(*batch())
    assert set(record[0].message.statuses.values()) == {"iteration_limit"}
    assert torch.isnan(x).all()
    assert layer.last_statuses == ["iteration_limit"] * 4


# --------------------------------------------------------------------------------------------
# Inaccurate solves warn, once per call
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inaccurate_setup():
    """Clarabel asked for 1e-16 gaps stalls and ends 'AlmostSolved' (optimal_inaccurate)."""
    rng = np.random.default_rng(0)
    n, m = 6, 8
    x = cp.Variable(n, name="x")
    c = cp.Parameter(n, name="c")
    b = cp.Parameter(m, name="b")
    A = rng.standard_normal((m, n))
    problem = cp.Problem(cp.Minimize(c @ x + 0.5 * cp.sum_squares(x)), [A @ x <= b, cp.norm(x, 2) <= 3])
    C = torch.tensor(rng.standard_normal((5, n)))
    B = torch.tensor(A @ rng.uniform(-0.5, 0.5, (n, 5)) + 1.0).T.contiguous()
    return problem, [c, b], [x], C, B


def test_inaccurate_solves_warn_once_per_call(inaccurate_setup):
    problem, params, variables, C, B = inaccurate_setup
    tight = {"tol_gap_abs": 1e-16, "tol_gap_rel": 1e-16, "tol_feas": 1e-16}
    layer = CvxpyLayer(problem, params, variables, solver="CLARABEL", solver_args=tight)
    for _ in range(2):  # every call warns again, but only once
        with pytest.warns(UserWarning) as record:
            (x,) = layer(C, B)
        assert layer.last_statuses == ["optimal_inaccurate"] * 5
        inaccurate = warnings_matching(record, "inaccurate")
        assert len(inaccurate) == 1, [str(w.message) for w in record]
        assert "5 batch item(s) only inaccurately" in str(inaccurate[0].message)
        assert torch.isfinite(x).all()  # inaccurate points are still returned
    # an accurate call does not warn
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer(C, B, solver_args={"tol_gap_abs": 1e-8, "tol_gap_rel": 1e-8, "tol_feas": 1e-8})
    assert layer.last_statuses == ["optimal"] * 5


def test_warning_points_at_the_callers_line(lp):
    layer = make_layer(lp, "CLARABEL", on_failure="nan")
    with pytest.warns(UserWarning) as record:
        layer(*batch(1))
    assert [w.filename for w in record] == [__file__]


# --------------------------------------------------------------------------------------------
# LPGD re-solves that fail
# --------------------------------------------------------------------------------------------
# Item 1 has cost 0.1 on the unbounded direction x_1. With loss -x_1 (dx_1 = -1) the +tau solve
# has cost 0.1 - tau on x_1: unbounded for tau > 0.1 ("lower" side). With loss +x_1 the -tau
# solve is the unbounded one ("upper" side).

UNBOUNDED_C = [[-1.0, 3.0], [-1.0, 0.1], [-1.0, 2.5]]


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize(
    ("side", "sign", "failing_side"),
    [("central", -1.0, "lower"), ("lower", -1.0, "lower"), ("upper", 1.0, "upper")],
)
def test_perturbed_solve_unbounded_names_item_side_tau(lp, solver, side, sign, failing_side):
    layer = make_layer(lp, solver, gradient=LPGD(tau=2.0, side=side))
    C = torch.tensor(UNBOUNDED_C, dtype=torch.float64, requires_grad=True)
    B = torch.ones(3, dtype=torch.float64)
    x, _ = layer(C, B)
    assert layer.last_statuses == ["optimal"] * 3  # the forward itself is fine
    with pytest.raises(PerturbedSolveError) as info:
        (sign * x[:, 1]).sum().backward()
    error = info.value
    assert isinstance(error, SolverError)
    assert error.statuses == {1: "unbounded"}
    assert error.side == failing_side
    assert error.tau == 2.0
    message = str(error)
    assert "tau=2.0" in message
    assert f"item 1, {failing_side} ({'+' if failing_side == 'lower' else '-'}tau) side: unbounded" in message
    assert "smaller tau" in message and "rho > 0" in message


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("remedy", [LPGD(tau=0.05), LPGD(tau=2.0, rho=1.0)])
def test_perturbed_solve_remedies_work(lp, solver, remedy):
    """A smaller tau or rho > 0 keeps every re-solve bounded, and the gradient is LPGD's formula."""
    layer = make_layer(lp, solver, gradient=remedy)
    C = torch.tensor(UNBOUNDED_C, dtype=torch.float64, requires_grad=True)
    x, _ = layer(C, torch.ones(3, dtype=torch.float64))
    (-x[:, 1]).sum().backward()
    assert torch.isfinite(C.grad).all()
    out_grads = [np.array([0.0, -1.0]), np.array(0.0)]
    items = [[np.array(c), np.array(1.0)] for c in UNBOUNDED_C]
    expected = np.stack([lpgd_formula_gradient(layer, item, out_grads, remedy)[0] for item in items])
    np.testing.assert_allclose(C.grad.numpy(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("solver", SOLVERS)
def test_perturbed_solve_infeasible(lp, solver):
    """A perturbed right-hand side b - tau dy < 0 makes x_0 <= b infeasible."""
    layer = make_layer(lp, solver, gradient=LPGD(tau=1.0, side="lower"))
    C = torch.tensor([[-1.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)
    B = torch.tensor([5.0, 1.0], dtype=torch.float64, requires_grad=True)
    _, y = layer(C, B)
    with pytest.raises(PerturbedSolveError) as info:
        (2.0 * y).sum().backward()  # b' = b - 2 tau: item 0 -> 3 (fine), item 1 -> -1 (infeasible)
    assert info.value.statuses == {1: "infeasible"}
    assert info.value.side == "lower" and info.value.tau == 1.0
    assert "item 1, lower (+tau) side: infeasible" in str(info.value)


@pytest.mark.parametrize("solver", SOLVERS)
def test_perturbed_solve_failure_with_nan_policy(lp, solver):
    layer = make_layer(lp, solver, gradient=LPGD(tau=2.0, side="lower"), on_failure="nan")
    C = torch.tensor(UNBOUNDED_C, dtype=torch.float64, requires_grad=True)
    x, _ = layer(C, torch.ones(3, dtype=torch.float64))
    assert torch.isfinite(x).all()
    with pytest.warns(UserWarning) as record:
        (-x[:, 1]).sum().backward()
    relevant = warnings_matching(record, "LPGD re-solve")
    assert len(relevant) == 1
    assert relevant[0].message.statuses == {(1, 1): "unbounded"}
    assert "zero gradient" in str(relevant[0].message)
    assert torch.equal(C.grad[1], torch.zeros(2, dtype=torch.float64))
    assert torch.isfinite(C.grad).all()


# --------------------------------------------------------------------------------------------
# last_statuses
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS)
def test_last_statuses_follow_each_call(lp, solver):
    layer = make_layer(lp, solver, on_failure="nan")
    assert layer.last_statuses == []
    layer(*batch())
    assert layer.last_statuses == ["optimal"] * 4
    with pytest.warns(UserWarning):
        layer(*batch(3, "unbounded"))
    assert layer.last_statuses == ["optimal", "optimal", "optimal", "unbounded"]
    layer(torch.tensor([-1.0, 1.0], dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    assert layer.last_statuses == ["optimal"]
    layer(*batch(size=2))
    assert layer.last_statuses == ["optimal"] * 2
