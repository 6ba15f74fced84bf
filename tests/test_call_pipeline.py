"""The call pipeline (cvxlpgd/pipeline.py, core.py, options.py): each stage's adjoint is the
transpose of its derivative, and a call builds nothing the layer already built."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch

import cvxlpgd
from cvxlpgd import LPGD, CvxpyLayer
from cvxlpgd.dgp import LogLogForm
from cvxlpgd.parameter_values import Batching, Flatten, Unbatch

RNG = np.random.default_rng(0)


def derivative(stage_factory, values, direction, step=1e-6):
    """Central difference of a stage's apply (a fresh stage per evaluation) along ``direction``."""
    plus = stage_factory().apply([v + step * d for v, d in zip(values, direction, strict=True)])
    minus = stage_factory().apply([v - step * d for v, d in zip(values, direction, strict=True)])
    plus, minus = (np.concatenate([np.ravel(a) for a in np.atleast_1d(out)]) for out in (plus, minus))
    return (plus - minus) / (2 * step)


def inner(a, b) -> float:
    return float(sum(np.vdot(x, y) for x, y in zip(a, b, strict=True)))


@pytest.mark.parametrize("batched", [(True, False, True), (False, False, False)])
def test_flatten_adjoint_is_its_transpose(batched):
    """<Flatten(v), w> = <v, Flatten'(w)>: broadcasting forward is summing backward."""
    shapes, batch = [(2, 3), (4,), ()], 5
    values = [RNG.standard_normal((batch, *s) if b else s) for s, b in zip(shapes, batched, strict=True)]
    stage = Flatten(Batching(batch, batched))
    theta = stage.apply(values)
    assert theta.shape == (batch, 6 + 4 + 1) and theta.flags.c_contiguous
    w = RNG.standard_normal(theta.shape)
    assert np.vdot(theta, w) == pytest.approx(inner(values, stage.adjoint(w)), rel=1e-12)
    assert [g.shape for g in stage.adjoint(w)] == [v.shape for v in values]


@pytest.mark.parametrize("batched", [True, False])
def test_unbatch_adjoint_is_its_transpose(batched):
    outputs = [RNG.standard_normal((3 if batched else 1, 2, 2)), RNG.standard_normal((3 if batched else 1,))]
    stage = Unbatch(batched)
    out = stage.apply(outputs)
    w = [RNG.standard_normal(o.shape) for o in out]
    assert inner(out, w) == pytest.approx(inner(outputs, stage.adjoint(w)), rel=1e-12)
    assert all(o.base is None for o in out) or batched  # unbatched: arrays of their own


def test_dgp_stages_adjoints_match_finite_differences():
    """The log stage (a parameter entering through its log and as an exponent) and the exp stage:
    their adjoints against central differences of their apply."""
    x, y = cp.Variable(pos=True, name="x"), cp.Variable(pos=True, name="y")
    a, b = cp.Parameter(pos=True, name="a"), cp.Parameter(pos=True, name="b")
    problem = cp.Problem(cp.Minimize(x**-1 * y**-0.5 + a * y), [x * y == b, y <= 4 * x**a])
    form = LogLogForm(problem, [a, b], [x, y, problem.constraints[0].dual_variables[0]])
    values = [np.array([0.7, 1.3]), np.array([2.0, 1.5])]  # a batch of two
    direction = [RNG.standard_normal(2), RNG.standard_normal(2)]

    log = form.stages()[0]
    images = log.apply(values)
    assert len(images) == 3  # a is fed to log(a) and to the exponent a
    w = [RNG.standard_normal(i.shape) for i in images]
    fd = derivative(lambda: form.stages()[0], values, direction)
    assert np.dot(fd, np.concatenate(w)) == pytest.approx(inner(direction, log.adjoint(w)), rel=1e-8)

    exp = form.stages()[1]
    outputs = [RNG.standard_normal(2), RNG.standard_normal(2), RNG.standard_normal(2)]
    out = exp.apply(outputs)
    np.testing.assert_allclose(out[2], outputs[2])  # a dual is not exponentiated
    w = [RNG.standard_normal(o.shape) for o in out]
    fd = derivative(lambda: form.stages()[1], outputs, w)
    assert inner(exp.adjoint(w), w) == pytest.approx(np.dot(fd, np.concatenate(w)), rel=1e-8)


class Counting:
    """A user's backend around Clarabel whose with_settings calls are counted."""

    def __init__(self, counter: list[int], settings: dict | None = None) -> None:
        self.inner = cvxlpgd.make_solver("CLARABEL", settings)
        self.name = "counting-clarabel"
        self.counter = counter

    def with_settings(self, args: dict) -> Counting:
        self.counter[0] += 1
        return Counting(self.counter, args)

    def solve(self, program, warm_start=None, workspace=None):
        return self.inner.solve(program, warm_start=warm_start, workspace=workspace)


def test_a_call_reuses_the_backend_built_with_the_layer():
    """The user's with_settings runs when the layer is built, and again only for a call that
    changes the settings; the outputs do not depend on which."""
    x, c = cp.Variable(3, name="x"), cp.Parameter(3, name="c")
    problem = cp.Problem(cp.Minimize(c @ x + cp.sum_squares(x)), [x >= -1, x <= 1])
    counter = [0]
    layer = CvxpyLayer(
        problem, [c], [x], solver=Counting(counter), solver_args={"tol_gap_abs": 1e-9}, gradient=LPGD()
    )
    built = counter[0]
    cost = torch.tensor([0.3, -1.0, 4.0], dtype=torch.float64, requires_grad=True)
    first = layer(cost)[0]
    first.sum().backward()
    layer(cost)
    assert counter[0] == built
    changed = layer(cost, solver_args={"tol_gap_abs": 1e-10})[0]
    assert counter[0] == built + 1
    torch.testing.assert_close(changed, first, atol=1e-7, rtol=0)
    torch.testing.assert_close(first.detach(), torch.clamp(-cost.detach() / 2, -1, 1), atol=1e-7, rtol=0)


@pytest.mark.parametrize("batched", [True, False])
def test_flatten_of_one_parameter_is_a_contiguous_copy(batched):
    """One parameter: theta is its values row by row (broadcast when unbatched), in memory of
    its own, so the conic data never alias the caller's tensor."""
    value = RNG.standard_normal((5, 3, 2) if batched else (3, 2))
    theta = Flatten(Batching(5, (batched,))).apply([value])
    assert theta.shape == (5, 6) and theta.flags.c_contiguous and not np.shares_memory(theta, value)
    expected = value.reshape(5, 6) if batched else np.tile(value.ravel(), (5, 1))
    assert np.array_equal(theta, expected)


@pytest.mark.parametrize("solver", ["SCS", "CLARABEL"])
def test_constant_matrices_are_built_once_and_no_call_changes_them(solver):
    """A and P that no parameter enters are built with the layer's first call and shared by every
    later call (a call builds nothing the layer already built); solving, re-solving and
    differentiating leave their entries as compiled, and the outputs stay those of a fresh layer."""
    x, c = cp.Variable(4, name="x"), cp.Parameter(4, name="c")
    G = RNG.standard_normal((3, 4))
    problem = cp.Problem(cp.Minimize(c @ x + cp.sum_squares(x)), [G @ x <= 1, x >= -1])
    layer = CvxpyLayer(problem, [c], [x], solver=solver)
    maps = layer.compiled().maps
    first = maps.apply(np.zeros((1, 4))).item(0)
    costs = [torch.tensor(RNG.standard_normal((k, 4)), requires_grad=True) for k in (1, 3)]
    for cost in costs:
        (layer(cost)[0] * torch.arange(4.0, dtype=torch.float64)).sum().backward()
    later = maps.apply(np.ones((2, 4))).item(1)
    assert later.A is first.A and later.P is first.P
    assert np.array_equal(first.A.data, maps.A.offset) and np.array_equal(first.P.data, maps.P.offset)
    fresh = CvxpyLayer(problem, [c], [x], solver=solver)
    torch.testing.assert_close(layer(costs[1])[0], fresh(costs[1])[0], atol=0, rtol=0)
