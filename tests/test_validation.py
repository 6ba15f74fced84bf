"""Bad input raises a clear exception at the call that caused it, naming the culprit
(docs/design.md, section 4).

Every test asserts the exception type *and* that the message names what is wrong: the
parameter / variable, the expected and given shape, the batch item, the attribute, the setting.
"""

from __future__ import annotations

import inspect
import re
import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch

from cvxlpgd import LPGD, CvxpyLayer, SolverError, SolverWarning
from cvxlpgd.errors import ParameterWarning

N = 3


@pytest.fixture(scope="module")
def lp():
    """minimize c'x  s.t.  A x <= b, 0 <= x <= 1, with parameters c (3,) and b (2,)."""
    x = cp.Variable(N, name="x")
    c = cp.Parameter(N, name="c")
    b = cp.Parameter(2, name="b")
    A = np.array([[1.0, 1.0, 1.0], [1.0, -1.0, 0.0]])
    con = A @ x <= b
    problem = cp.Problem(cp.Minimize(c @ x), [con, x >= 0, x <= 1])
    return problem, c, b, x, con


@pytest.fixture(scope="module")
def layer(lp):
    problem, c, b, x, con = lp
    return CvxpyLayer(problem, [c, b], [x, con.dual_variables[0]], solver="CLARABEL")


def good_inputs(batch: int | None = None, dtype=torch.float64):
    c = torch.tensor([-1.0, 0.5, -0.25], dtype=dtype)
    b = torch.tensor([2.0, 0.5], dtype=dtype)
    if batch is not None:
        c, b = c.repeat(batch, 1), b.repeat(batch, 1)
    return c, b


def test_good_inputs_pass(layer):
    """The baseline the bad inputs below deviate from does work."""
    x, y = layer(*good_inputs())
    assert x.shape == (N,) and y.shape == (2,)
    xb, yb = layer(*good_inputs(4))
    assert xb.shape == (4, N) and yb.shape == (4, 2)
    torch.testing.assert_close(xb[2], x, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------------
# Construction: the problem, parameters and variables
# --------------------------------------------------------------------------------------------


def test_non_dpp_problem_names_the_expression():
    x = cp.Variable(2, name="x")
    p = cp.Parameter(nonneg=True, name="p")
    # p**2 * x is DCP (p**2 is a constant to DCP) but not DPP (p**2 is not parameter-affine).
    problem = cp.Problem(cp.Minimize(cp.sum(x)), [cp.power(p, 2) * x >= 1, x <= 10])
    assert problem.is_dcp() and not problem.is_dpp()
    with pytest.raises(ValueError, match="not DPP") as info:
        CvxpyLayer(problem, [p], [x])
    message = str(info.value)
    assert "constraint 0" in message
    assert str(problem.constraints[0]) in message, message
    assert "PowerApprox(p, 2.0)" in message or "power(p, 2" in message, message


def test_non_dpp_objective_names_the_objective():
    x = cp.Variable(2, name="x")
    p = cp.Parameter(2, name="p")
    q = cp.Parameter(2, name="q")
    problem = cp.Problem(cp.Minimize(cp.multiply(p, q) @ x), [x >= 0, x <= 1])
    assert not problem.is_dpp()
    with pytest.raises(ValueError, match="not DPP") as info:
        CvxpyLayer(problem, [p, q], [x])
    assert f"objective: {problem.objective}" in str(info.value)


def test_parametrized_quad_form_is_rejected_for_implicit_with_a_hint():
    x = cp.Variable(2, name="x")
    Q = cp.Parameter((2, 2), PSD=True, name="Q")
    problem = cp.Problem(cp.Minimize(cp.quad_form(x, Q) + cp.sum(x)), [x >= -1])
    CvxpyLayer(problem, [Q], [x], gradient="lpgd")  # DPP inside quad_form_dpp_scope: fine for LPGD
    with pytest.raises(ValueError, match="not DPP") as info:
        CvxpyLayer(problem, [Q], [x], gradient="implicit")
    assert "quad_form" in str(info.value) and "lpgd" in str(info.value)


def test_parameter_not_in_problem(lp):
    problem, c, b, x, _ = lp
    stranger = cp.Parameter(N, name="stranger")
    with pytest.raises(ValueError, match=r"\['stranger'\] are not in the problem"):
        CvxpyLayer(problem, [c, b, stranger], [x])


def test_variable_not_in_problem(lp):
    problem, c, b, x, _ = lp
    stranger = cp.Variable(N, name="stranger")
    with pytest.raises(ValueError, match=r"variables\[1\] \('stranger'\) is neither a variable"):
        CvxpyLayer(problem, [c, b], [x, stranger])


def test_dual_variable_of_a_foreign_constraint(lp):
    problem, c, b, x, _ = lp
    foreign = x >= -5  # a constraint that is not part of the problem
    with pytest.raises(ValueError, match=r"variables\[0\]"):
        CvxpyLayer(problem, [c, b], [foreign.dual_variables[0]])


def test_parameter_declared_twice(lp):
    problem, c, b, x, _ = lp
    with pytest.raises(ValueError, match="'c' is listed twice"):
        CvxpyLayer(problem, [c, b, c], [x])


def test_missing_parameter(lp):
    problem, c, b, x, _ = lp
    with pytest.raises(ValueError, match=r"\['b'\] are missing from parameters"):
        CvxpyLayer(problem, [c], [x])


@pytest.mark.parametrize(
    ("parameters", "variables", "match"),
    [
        ("c", ["x"], "parameters must be a list or tuple, got Parameter"),
        (["c", "b"], "x", "variables must be a list or tuple, got Variable"),
        (["c", torch.zeros(2)], ["x"], r"parameters\[1\] must be a cvxpy.Parameter, got Tensor"),
        (["c", "b"], ["x[0]"], r"variables\[0\] must be a cvxpy.Variable, got index"),
    ],
)
def test_ill_typed_parameters_or_variables(lp, parameters, variables, match):
    problem, c, b, x, _ = lp
    names = {"c": c, "b": b, "x": x, "x[0]": x[0]}

    def resolve(v):
        if isinstance(v, list):
            return [names.get(e, e) if isinstance(e, str) else e for e in v]
        return names[v]

    with pytest.raises(TypeError, match=match):
        CvxpyLayer(problem, resolve(parameters), resolve(variables))


def test_problem_not_a_problem(lp):
    _, c, b, x, _ = lp
    with pytest.raises(TypeError, match="problem must be a cvxpy.Problem, got Minimize"):
        CvxpyLayer(cp.Minimize(c @ x), [c, b], [x])


def test_empty_variables(lp):
    problem, c, b, _, _ = lp
    with pytest.raises(ValueError, match="variables is empty"):
        CvxpyLayer(problem, [c, b], [])


def test_problem_without_parameters():
    x = cp.Variable(2, name="x")
    problem = cp.Problem(cp.Minimize(cp.sum(x)), [x >= 0])
    with pytest.raises(ValueError, match="no parameters"):
        CvxpyLayer(problem, [], [x])


@pytest.mark.parametrize("kind", ["integer", "boolean"])
def test_problem_with_integer_variables(kind):
    x = cp.Variable(2, name="x")
    z = cp.Variable(2, name="z", **{kind: True})
    c = cp.Parameter(2, name="c")
    problem = cp.Problem(cp.Minimize(c @ x + cp.sum(z)), [x >= 0, x <= 1, z >= 0, z <= 1])
    with pytest.raises(ValueError, match="integer or boolean variables"):
        CvxpyLayer(problem, [c], [x])


def test_non_dcp_problem():
    x = cp.Variable(2, name="x")
    c = cp.Parameter(2, name="c")
    problem = cp.Problem(cp.Maximize(cp.sum_squares(x) + c @ x), [x >= 0, x <= 1])
    with pytest.raises(ValueError, match="not DCP"):
        CvxpyLayer(problem, [c], [x])


# --------------------------------------------------------------------------------------------
# Construction: solver, gradient, settings, failure policy
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["ECOS", "mosek", "", 3])
def test_unknown_solver(lp, solver):
    problem, c, b, x, _ = lp
    with pytest.raises(ValueError, match=re.escape(f"Unknown solver {solver!r}")) as info:
        CvxpyLayer(problem, [c, b], [x], solver=solver)
    assert "CLARABEL" in str(info.value) and "SCS" in str(info.value)


@pytest.mark.parametrize("solver", ["scs", "Clarabel", cp.SCS, cp.CLARABEL])
def test_solver_names_are_case_insensitive(lp, solver):
    problem, c, b, x, _ = lp
    assert CvxpyLayer(problem, [c, b], [x], solver=solver).solver == str(solver).upper()


@pytest.mark.parametrize(
    ("solver", "args", "error", "match"),
    [
        ("SCS", {"tolerance": 1e-6}, ValueError, "Unknown SCS setting 'tolerance'"),
        ("CLARABEL", {"eps_abs": 1e-6}, ValueError, "Unknown CLARABEL setting 'eps_abs'"),
        ("SCS", {"max_iters": "many"}, TypeError, "SCS setting 'max_iters' must be of type int, got str"),
        ("CLARABEL", {"max_iters": "many"}, TypeError, "'max_iters' must be of type int, got str"),
        ("SCS", {"max_iters": 2.5}, TypeError, "'max_iters' must be of type int, got float"),
        ("SCS", {"verbose": 1}, TypeError, "'verbose' must be of type bool, got int"),
        ("SCS", {"eps_abs": True}, TypeError, "'eps_abs' must be of type float, got bool"),
        ("CLARABEL", {"tol_feas": "tight"}, TypeError, "'tol_feas' must be of type float, got str"),
    ],
)
def test_bad_solver_settings_at_construction(lp, solver, args, error, match):
    problem, c, b, x, _ = lp
    with pytest.raises(error, match=match):
        CvxpyLayer(problem, [c, b], [x], solver=solver, solver_args=args)


def test_bad_solver_settings_at_call(layer):
    with pytest.raises(ValueError, match="Unknown CLARABEL setting 'bogus'"):
        layer(*good_inputs(), solver_args={"bogus": 1})
    with pytest.raises(TypeError, match="'max_iters' must be of type int, got str"):
        layer(*good_inputs(), solver_args={"max_iters": "many"})


def test_ill_typed_eps_is_reported_as_eps(lp):
    problem, c, b, x, _ = lp
    with pytest.raises(TypeError, match="'eps'"):
        CvxpyLayer(problem, [c, b], [x], solver="SCS", solver_args={"eps": "tight"})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tau": 0.0}, "tau must be a finite number > 0, got 0.0"),
        ({"tau": -1.0}, "tau must be a finite number > 0, got -1.0"),
        ({"tau": float("nan")}, "tau must be a finite number > 0, got nan"),
        ({"tau": float("inf")}, "tau must be a finite number > 0, got inf"),
        ({"tau": "1"}, "tau must be a finite number > 0, got '1'"),
        ({"rho": -1e-3}, "rho must be a finite number >= 0, got -0.001"),
        ({"rho": float("inf")}, "rho must be a finite number >= 0, got inf"),
        ({"side": "both"}, "side must be one of .* got 'both'"),
        ({"side": "Central"}, "side must be one of .* got 'Central'"),
    ],
)
def test_bad_lpgd_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LPGD(**kwargs)


@pytest.mark.parametrize("gradient", ["LPGD2", "finite_differences", "", 1.0])
def test_unknown_gradient(lp, layer, gradient):
    problem, c, b, x, _ = lp
    with pytest.raises(ValueError, match=re.escape(f"got {gradient!r}")) as info:
        CvxpyLayer(problem, [c, b], [x], gradient=gradient)
    assert "'lpgd'" in str(info.value) and "'implicit'" in str(info.value)
    with pytest.raises(ValueError, match=re.escape(f"got {gradient!r}")):
        layer(*good_inputs(), gradient=gradient)


@pytest.mark.parametrize("policy", ["NaN", "ignore", None, True])
def test_bad_on_failure(lp, policy):
    problem, c, b, x, _ = lp
    expected = f"on_failure must be one of ('raise', 'nan'), got {policy!r}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        CvxpyLayer(problem, [c, b], [x], on_failure=policy)


# --------------------------------------------------------------------------------------------
# Call: count, shape, batch, dtype, finiteness
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 3])
def test_wrong_number_of_tensors(layer, count):
    tensors = [*good_inputs(), torch.zeros(1)][:count]
    with pytest.raises(ValueError, match=rf"takes 2 parameter tensors \('c', 'b'\), got {count}"):
        layer(*tensors)


@pytest.mark.parametrize(
    ("c_shape", "b_shape", "culprit", "given"),
    [
        ((N + 1,), (2,), "c", (N + 1,)),
        ((N, 1), (2,), "c", (N, 1)),
        ((), (2,), "c", ()),
        ((N,), (3,), "b", (3,)),
        ((N,), (2, 2, 2), "b", (2, 2, 2)),
        ((2, 2, N), (2,), "c", (2, 2, N)),
        ((1, N, 1), (2,), "c", (1, N, 1)),
    ],
)
def test_wrong_shape_names_parameter_and_shapes(layer, c_shape, b_shape, culprit, given):
    c, b = torch.ones(c_shape, dtype=torch.float64), torch.ones(b_shape, dtype=torch.float64)
    expected = {"c": (N,), "b": (2,)}[culprit]
    index = {"c": 0, "b": 1}[culprit]
    with pytest.raises(ValueError) as info:
        layer(c, b)
    message = str(info.value)
    assert f"parameter {index} ('{culprit}'" in message, message
    assert f"expects shape {expected}" in message, message
    assert f"got {given}" in message, message


def test_empty_batch(layer):
    c, b = good_inputs()
    with pytest.raises(ValueError, match="'c'.*empty batch dimension"):
        layer(c[None][:0], b)


def test_inconsistent_batch_sizes(layer):
    c, _ = good_inputs(3)
    _, b = good_inputs(2)
    with pytest.raises(ValueError, match="disagree on the batch size") as info:
        layer(c, b)
    assert "'c': 3" in str(info.value) and "'b': 2" in str(info.value)


def test_batched_and_unbatched_broadcast(layer):
    """Not an error: one batched parameter, the other broadcast."""
    c, b = good_inputs()
    x, _ = layer(c.repeat(3, 1), b)
    assert x.shape == (3, N)


@pytest.mark.parametrize(
    "dtype", [torch.complex64, torch.complex128, torch.int64, torch.int32, torch.bool, torch.uint8]
)
@pytest.mark.parametrize("culprit", ["c", "b"])
def test_non_real_float_dtypes(layer, dtype, culprit):
    c, b = good_inputs()
    tensors = {"c": c, "b": b}
    tensors[culprit] = tensors[culprit].to(dtype)
    with pytest.raises(TypeError, match=rf"'{culprit}'.*real floating-point.*{re.escape(str(dtype))}"):
        layer(tensors["c"], tensors["b"])


@pytest.mark.parametrize("value", [[1.0, 2.0, 3.0], np.ones(3), 1.0])
def test_non_tensor_input(layer, value):
    _, b = good_inputs()
    with pytest.raises(TypeError, match=r"parameter 0 \('c'.*must be a torch.Tensor"):
        layer(value, b)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_inf_unbatched(layer, bad):
    c, b = good_inputs()
    b = b.clone()
    b[1] = bad
    with pytest.raises(ValueError, match=r"parameter 1 \('b', shape \(2,\)\) contains NaN or Inf") as info:
        layer(c, b)
    assert "batch item" not in str(info.value)


@pytest.mark.parametrize("item", [0, 2, 4])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_inf_names_the_batch_item(layer, item, bad):
    c, b = good_inputs(5)
    c = c.clone()
    c[item, 1] = bad
    c[4, 2] = bad  # a later item also bad: the first one is named
    with pytest.raises(ValueError, match=rf"'c'.*contains NaN or Inf at batch item {item}\b"):
        layer(c, b)


def test_nan_in_input_that_requires_grad(layer):
    c, b = good_inputs(2)
    c = c.clone()
    c[1, 0] = float("nan")
    c.requires_grad_(True)
    with pytest.raises(ValueError, match="at batch item 1"):
        layer(c, b)


# --------------------------------------------------------------------------------------------
# Call: values must respect the parameters' declared attributes
# --------------------------------------------------------------------------------------------


def _attribute_layer(**attributes):
    x = cp.Variable(2, name="x")
    if any(a in attributes for a in ("PSD", "symmetric", "NSD")):
        p = cp.Parameter((2, 2), name="M", **attributes)
        objective = cp.sum(p @ x)
    else:
        p = cp.Parameter(2, name="w", **attributes)
        objective = p @ x
    problem = cp.Problem(cp.Minimize(objective), [x >= -1, x <= 1])
    return CvxpyLayer(problem, [p], [x], solver="CLARABEL")


@pytest.mark.parametrize(
    ("attribute", "good", "bad"),
    [
        ("nonneg", [0.0, 1.0], [1.0, -0.5]),
        ("pos", [1e-3, 1.0], [1.0, -2.0]),
        ("nonpos", [0.0, -1.0], [0.0, 0.5]),
        ("neg", [-1.0, -2.0], [-1.0, 0.5]),
        ("PSD", [[2.0, 1.0], [1.0, 2.0]], [[1.0, 2.0], [2.0, 1.0]]),
        ("NSD", [[-2.0, 1.0], [1.0, -2.0]], [[1.0, 0.0], [0.0, -1.0]]),
    ],
)
def test_attribute_violations(attribute, good, bad):
    layer = _attribute_layer(**{attribute: True})
    name = "M" if attribute in ("PSD", "symmetric", "NSD") else "w"
    layer(torch.tensor(good, dtype=torch.float64))
    with pytest.raises(ValueError, match=rf"'{name}'.*is declared {attribute}, but its value is not\.$"):
        layer(torch.tensor(bad, dtype=torch.float64))
    batch = torch.tensor([good, good, bad], dtype=torch.float64)
    expected = rf"'{name}'.*is declared {attribute}, but its value is not \(batch item 2\)"
    with pytest.raises(ValueError, match=expected):
        layer(batch)


@pytest.mark.parametrize("attribute", ["PSD", "symmetric"])
def test_non_symmetric_value_uses_the_symmetric_part_and_warns(attribute):
    """A slightly non-symmetric PSD value (a trained tensor drifts) keeps the program convex: the
    layer solves with (Q + Q')/2, says so once, and returns a symmetric gradient."""
    layer = _attribute_layer(**{attribute: True})
    Q = torch.tensor([[2.0, 1.0], [0.0, 2.0]], dtype=torch.float64, requires_grad=True)
    with pytest.warns(UserWarning, match="'M'.*not symmetric.*symmetric part"):
        out = layer(Q)[0]
    out.sum().backward()
    sym = (0.5 * (Q + Q.mT)).detach().requires_grad_(True)
    ref = layer(sym)[0]
    ref.sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(Q.grad, sym.grad)
    torch.testing.assert_close(Q.grad, Q.grad.mT)


@pytest.mark.parametrize(("attribute", "value"), [("pos", [0.0, 1.0]), ("neg", [-1.0, 0.0])])
def test_exact_zero_for_pos_or_neg_is_solved_with_a_warning(attribute, value):
    """A regularization weight swept from exactly 0: still a convex problem, so solved (warned)."""
    layer = _attribute_layer(**{attribute: True})
    with pytest.warns(UserWarning, match=f"'w'.*declared {attribute}.*exact zeros"):
        out = layer(torch.tensor(value, dtype=torch.float64))[0]
    # the problem with the zero in it, solved by CVXPY with the attribute dropped: the same optimal
    # value, and the same entry where the cost is not zero (the other one is not unique)
    x = cp.Variable(2)
    problem = cp.Problem(cp.Minimize(np.array(value) @ x), [x >= -1, x <= 1])
    problem.solve(solver=cp.CLARABEL)
    assert float(np.array(value) @ out.numpy()) == pytest.approx(problem.value, abs=1e-6)
    unique = np.array(value) != 0
    np.testing.assert_allclose(out.numpy()[unique], x.value[unique], atol=1e-6)


@pytest.mark.parametrize(
    ("attribute", "value", "gp"),
    [("pos", [0.0, 1.0], False), ("neg", [-1.0, 0.0], False), ("PSD", [[2.0, 1.0], [0.0, 2.0]], False)]
    + [("pos", 0.0, True)],
)
def test_attribute_warnings_name_the_users_line(attribute, value, gp):
    """Attribute warnings are ParameterWarnings (SolverWarnings) reported at the line that called
    the layer, not inside torch or cvxlpgd, also with gp=True (here the pos parameter enters as an
    exponent, not through its log, so a zero is allowed)."""
    if gp:
        x = cp.Variable(pos=True, name="x")
        w = cp.Parameter(pos=True, name="w")
        problem = cp.Problem(cp.Minimize(x**w + 1 / x), [x <= 2])
        layer = CvxpyLayer(problem, [w], [x], gp=True, solver="CLARABEL")
    else:
        layer = _attribute_layer(**{attribute: True})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1
        layer(torch.tensor(value, dtype=torch.float64))
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert issubclass(caught[0].category, ParameterWarning) and issubclass(ParameterWarning, SolverWarning)
    assert (caught[0].filename, caught[0].lineno) == (__file__, line)


# --------------------------------------------------------------------------------------------
# The exception comes from the call that caused it, and a bad call leaves the layer usable
# --------------------------------------------------------------------------------------------


def test_input_errors_are_not_solver_errors(layer):
    c, b = good_inputs(2)
    c = c.clone()
    c[0, 0] = float("nan")
    with pytest.raises(ValueError) as info:
        layer(c, b)
    assert not isinstance(info.value, SolverError)


def test_layer_still_works_after_a_rejected_call(layer):
    expected = layer(*good_inputs())
    with pytest.raises(ValueError):
        layer(torch.ones(7, dtype=torch.float64), torch.ones(2, dtype=torch.float64))
    for got, want in zip(layer(*good_inputs()), expected, strict=True):
        torch.testing.assert_close(got, want, atol=0, rtol=0)


# --------------------------------------------------------------------------------------------
# Gaps found while probing, since fixed
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tau", [np.float32(0.5), np.int64(1), torch.tensor(0.5)])
def test_lpgd_accepts_numeric_scalars(tau):
    assert LPGD(tau=tau, rho=np.float64(0.1)).tau == float(tau)


@pytest.mark.parametrize(
    ("solver", "args", "iterations"),
    [("SCS", {"max_iters": np.int64(5)}, 5), ("CLARABEL", {"eps": np.float32(1e-3)}, None)],
)
def test_numpy_scalar_settings_are_accepted(lp, solver, args, iterations):
    """A numpy scalar setting acts as the Python number it holds: the same outputs and iteration
    counts, bitwise (and SCS stops at the 5 iterations asked for)."""
    problem, c, b, x, _ = lp
    as_python = {key: value.item() for key, value in args.items()}
    layers = [
        CvxpyLayer(problem, [c, b], [x], solver=solver, solver_args=given, on_failure="nan")
        for given in (args, as_python)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SolverWarning)  # SCS's 5 iterations: an iteration limit
        outputs = [layer(*good_inputs())[0] for layer in layers]
    torch.testing.assert_close(outputs[0], outputs[1], atol=0, rtol=0, equal_nan=True)
    assert layers[0].last_iterations == layers[1].last_iterations
    if iterations is not None:
        assert layers[0].last_iterations == [iterations]


@pytest.mark.parametrize(
    ("solver", "args", "culprit"),
    [
        ("CLARABEL", {"max_iters": -5}, "max_iter"),
        ("CLARABEL", {"eps": -1.0}, "'eps'"),
        ("SCS", {"max_iters": 0}, "max_iters"),
        ("SCS", {"eps": -1.0}, "eps"),
        ("SCS", {"linear_solver": "bogus"}, "linear_solver"),
    ],
)
def test_out_of_range_settings_rejected_at_construction(lp, solver, args, culprit):
    problem, c, b, x, _ = lp
    with pytest.raises(ValueError, match=culprit):
        CvxpyLayer(problem, [c, b], [x], solver=solver, solver_args=args)


def test_sparse_tensor_input_names_the_parameter(layer):
    c, b = good_inputs()
    with pytest.raises((TypeError, ValueError), match=r"parameter 0 \('c'"):
        layer(c.to_sparse(), b)
