"""cvxlpgd.jax.CvxpyLayer: the same numbers as the PyTorch layer (outputs and gradients, 1e-12 or
bitwise), under jax.jit, jax.grad, jax.value_and_grad, jax.vmap and jax.jacrev, in float32 and
float64, with the PyTorch layer's errors and warnings."""

from __future__ import annotations

import inspect
import pickle
import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
jax.config.update("jax_enable_x64", True)

from cvxlpgd import LPGD, CvxpyLayer, SolverError, SolverWarning  # noqa: E402
from cvxlpgd.errors import ParameterWarning  # noqa: E402
from cvxlpgd.jax import CvxpyLayer as JaxLayer  # noqa: E402

N, M, BATCH = 6, 3, 4
RNG = np.random.default_rng(0)
A = RNG.standard_normal((M, N))
GRADIENTS = {
    "default": ("lpgd", "CLARABEL"),
    "lpgd": (LPGD(tau=0.5), "CLARABEL"),
    "implicit": ("implicit", "SCS"),
}
SCS_TIGHT = {"eps": 1e-10, "max_iters": 100_000}


def lp():
    """minimize c'x  s.t.  A x <= b, 0 <= x <= 1, with x and the dual of A x <= b as outputs."""
    x, c, b = cp.Variable(N, name="x"), cp.Parameter(N, name="c"), cp.Parameter(M, name="b")
    con = A @ x <= b
    return cp.Problem(cp.Minimize(c @ x), [con, x >= 0, x <= 1]), [c, b], [x, con.dual_variables[0]]


def both(name: str, problem_parts=None, **kwargs):
    gradient, solver = GRADIENTS[name]
    problem, params, outputs = problem_parts or lp()
    args = SCS_TIGHT if solver == "SCS" else None
    return tuple(
        kind(problem, params, outputs, solver=solver, gradient=gradient, solver_args=args, **kwargs)
        for kind in (CvxpyLayer, JaxLayer)
    )


VALUES = [RNG.standard_normal((BATCH, N)), RNG.uniform(1.0, 2.0, M)]  # c batched, b broadcast
WEIGHTS = [RNG.standard_normal((BATCH, N)), RNG.standard_normal((BATCH, M))]


def torch_result(layer, values=VALUES, weights=WEIGHTS):
    tensors = [torch.tensor(v, requires_grad=True) for v in values]
    outputs = layer(*tensors)
    sum((out * torch.tensor(w)).sum() for out, w in zip(outputs, weights, strict=True)).backward()
    return [out.detach().numpy() for out in outputs], [t.grad.numpy() for t in tensors]


def jax_loss(layer, weights=WEIGHTS):
    def loss(*values):
        return sum((out * w).sum() for out, w in zip(layer(*values), weights, strict=True))

    return loss


def assert_close(got, want, atol=1e-12):
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), w, atol=atol, rtol=0)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", GRADIENTS)
@pytest.mark.parametrize("jit", [False, True])
def test_outputs_and_gradients_equal_the_torch_layers(name, jit):
    torch_layer, jax_layer = both(name)
    outputs, grads = torch_result(torch_layer)
    values = [jnp.asarray(v) for v in VALUES]
    forward = jax.jit(jax_layer.__call__) if jit else jax_layer
    assert_close(forward(*values), outputs)
    value_and_grad = jax.value_and_grad(jax_loss(jax_layer), argnums=(0, 1))
    loss, jax_grads = (jax.jit(value_and_grad) if jit else value_and_grad)(*values)
    assert_close(jax_grads, grads)
    expected = sum(float((o * w).sum()) for o, w in zip(outputs, WEIGHTS, strict=True))
    assert float(loss) == pytest.approx(expected, abs=1e-12)
    assert np.abs(grads[0]).max() > 1e-3  # an informative gradient, not zero
    assert jax_layer.last_statuses == ["optimal"] * BATCH


@pytest.mark.timeout(120)
def test_vmap_solves_each_element_as_the_batch_does():
    """vmap runs the host once per element: the outputs and the gradient of a vmapped loss are
    those of the batched call."""
    torch_layer, jax_layer = both("lpgd")
    outputs, grads = torch_result(torch_layer)
    c, b = (jnp.asarray(v) for v in VALUES)
    mapped = jax.vmap(lambda row: jax_layer(row, b))(c)
    assert_close(mapped, outputs, atol=1e-9)

    def loss(c_batch):
        xs, ys = jax.vmap(lambda row: jax_layer(row, b))(c_batch)
        return (xs * WEIGHTS[0]).sum() + (ys * WEIGHTS[1]).sum()

    np.testing.assert_allclose(np.asarray(jax.grad(loss)(c)), grads[0], atol=1e-9, rtol=0)


@pytest.mark.timeout(120)
def test_jacrev_equals_torchs_jacobian():
    """jacrev runs the backward once per output entry for one forward: every one of them equals
    torch's (vectorize=False) Jacobian."""
    x, c = cp.Variable(3, name="x"), cp.Parameter(3, name="c")
    problem = cp.Problem(cp.Minimize(c @ x + 0.05 * cp.sum_squares(x)), [x >= -1, x <= 1])
    torch_layer, jax_layer = (kind(problem, [c], [x], solver="CLARABEL") for kind in (CvxpyLayer, JaxLayer))
    point = np.array([0.01, -0.02, 0.03])
    want = torch.autograd.functional.jacobian(lambda v: torch_layer(v)[0], torch.tensor(point))
    got = jax.jacrev(lambda v: jax_layer(v)[0])(jnp.asarray(point))
    np.testing.assert_allclose(np.asarray(got), want.numpy(), atol=1e-12, rtol=0)
    np.testing.assert_allclose(np.asarray(got), -10 * np.eye(3), atol=1e-5)


@pytest.mark.timeout(120)
def test_float32_in_float32_out():
    _, jax_layer = both("default")
    values32 = [jnp.asarray(v, dtype=jnp.float32) for v in VALUES]
    outputs = jax_layer(*values32)
    grads = jax.grad(jax_loss(jax_layer), argnums=(0, 1))(*values32)
    assert all(a.dtype == jnp.float32 for a in (*outputs, *grads))
    reference = jax_layer(*[jnp.asarray(np.asarray(v), dtype=jnp.float64) for v in values32])
    assert_close(outputs, [np.asarray(r, dtype=np.float32) for r in reference], atol=0)


@pytest.mark.timeout(120)
def test_geometric_program_equals_the_torch_layer():
    h, w = cp.Variable(pos=True, name="h"), cp.Variable(pos=True, name="w")
    area, k = cp.Parameter(pos=True, name="area"), cp.Parameter(name="k")
    problem = cp.Problem(cp.Maximize(h * w), [h + w <= area, h <= 2 * w**k])
    parts = (problem, [area, k], [h, w])
    torch_layer, jax_layer = (
        kind(*parts, gp=True, solver="SCS", solver_args=SCS_TIGHT) for kind in (CvxpyLayer, JaxLayer)
    )
    values, weights = [np.array(3.0), np.array(0.7)], [np.array(1.0), np.array(-0.5)]
    outputs, grads = torch_result(torch_layer, values, weights)
    assert_close(jax_layer(*map(jnp.asarray, values)), outputs)
    assert_close(jax.grad(jax_loss(jax_layer, weights), argnums=(0, 1))(*map(jnp.asarray, values)), grads)


def test_errors_are_the_torch_layers():
    torch_layer, jax_layer = both("default")
    bad = VALUES[0].copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError) as torch_error:
        torch_layer(torch.tensor(bad), torch.tensor(VALUES[1]))
    with pytest.raises(ValueError) as jax_error:
        jax_layer(jnp.asarray(bad), jnp.asarray(VALUES[1]))
    assert str(jax_error.value) == str(torch_error.value) and "batch item 2" in str(jax_error.value)
    with pytest.raises(Exception, match="contains NaN or Inf at batch item 2"):  # jit: JAX's runtime error
        jax.jit(jax_layer.__call__)(jnp.asarray(bad), jnp.asarray(VALUES[1]))
    with pytest.raises(TypeError, match=r"'c'.*real floating-point.*int"):
        jax_layer(jnp.arange(N), jnp.asarray(VALUES[1]))
    with pytest.raises(ValueError, match=r"'c'.*expects shape \(6,\) or \(batch, 6\); got \(5,\)"):
        jax.jit(jax_layer.__call__)(jnp.ones(5), jnp.asarray(VALUES[1]))  # found while tracing
    with pytest.raises(ValueError, match="takes 2 parameter tensors"):
        jax_layer(jnp.ones(N))


def test_failed_items_and_warnings_as_in_the_torch_layer():
    """An infeasible item raises SolverError; with on_failure='nan' it gives NaN and warns at the
    user's line; an attribute warning is a ParameterWarning at the user's line."""
    problem, params, outputs = lp()
    layer = JaxLayer(problem, params, outputs, solver="CLARABEL", on_failure="nan")
    b = np.tile(VALUES[1], (BATCH, 1))
    b[1] = -5.0  # A x <= -5 with 0 <= x <= 1: infeasible for this A
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1
        x, _ = layer(jnp.asarray(VALUES[0]), jnp.asarray(b))
    x = np.asarray(x)
    assert np.isnan(x[1]).all() and np.isfinite(x[[0, 2, 3]]).all()
    assert layer.last_statuses[1] == "infeasible"
    assert [(w.category, w.filename, w.lineno) for w in caught] == [(SolverWarning, __file__, line)]
    strict = JaxLayer(problem, params, outputs, solver="CLARABEL")
    with pytest.raises(SolverError, match="item 1: infeasible"):
        strict(jnp.asarray(VALUES[0]), jnp.asarray(b))

    y, w = cp.Variable(2, name="y"), cp.Parameter(2, pos=True, name="w")
    weighted = JaxLayer(cp.Problem(cp.Minimize(w @ y), [y >= -1, y <= 1]), [w], [y], solver="CLARABEL")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1
        weighted(jnp.array([0.0, 1.0]))
    assert [(w.category, w.filename, w.lineno) for w in caught] == [(ParameterWarning, __file__, line)]
    compiled = jax.jit(weighted.__call__)
    with warnings.catch_warnings(record=True) as caught:  # the host callback runs inside this call
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1
        compiled(jnp.array([0.0, 1.0]))[0].block_until_ready()
    assert [(w.category, w.filename, w.lineno) for w in caught] == [(ParameterWarning, __file__, line)]


def test_pickle_round_trip_gives_the_same_numbers():
    _, jax_layer = both("lpgd")
    loaded = pickle.loads(pickle.dumps(jax_layer))
    values = [jnp.asarray(v) for v in VALUES]
    grad = jax.grad(jax_loss(jax_layer), argnums=(0, 1))
    loaded_grad = jax.grad(jax_loss(loaded), argnums=(0, 1))
    assert_close(loaded_grad(*values), [np.asarray(g) for g in grad(*values)], atol=0)
