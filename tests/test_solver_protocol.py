"""The public solver protocol: a user's object as ``solver=``.

A wrapper around a built-in backend must give that backend's outputs and gradients bitwise; a
plain Python oracle (a brute-force vertex enumerator) must give Clarabel's and train as it does;
objects that break the protocol must fail with a message that names what is wrong.
"""

from __future__ import annotations

import itertools
import threading

import cvxpy as cp
import numpy as np
import pytest
import torch

import cvxlpgd
from cvxlpgd import LPGD, OPTIMAL, ConeProgram, CvxpyLayer, Solution


class Counting:
    """Delegates to a built-in backend and counts its solves (the example in docs/guide/solvers.md)."""

    def __init__(self, base: str = "CLARABEL", settings: dict | None = None):
        self.inner = cvxlpgd.make_solver(base, settings)
        self.name = f"counting-{self.inner.name.lower()}"
        for key in ("canon_solver", "mixed_integer", "cones", "reuses_workspace", "settings",
                    "eps", "tightest_eps"):
            setattr(self, key, getattr(self.inner, key))
        self.solves, self.asked = 0, []
        self._lock = threading.Lock()

    def with_settings(self, args: dict) -> Counting:
        return Counting(self.inner.name, args)

    def solve(self, program, warm_start=None, workspace=None, eps=None):
        with self._lock:
            self.solves += 1
            self.asked.append(eps)
        return self.inner.solve(program, warm_start=warm_start, workspace=workspace, eps=eps)


class VertexEnumerator:
    """An exact LP oracle in plain Python: the best of all vertices of ``Ax + s = b, s in K``
    (zero and nonnegative cones), each the solution of n active rows. No duals (zeros)."""

    name = "vertices"
    cones = frozenset({"zero", "nonneg"})

    def solve(self, program: ConeProgram, warm_start=None, workspace=None) -> Solution:
        A, b, zero = program.A.toarray(), program.b, program.dims.zero
        m, n = A.shape
        best, best_value = None, np.inf
        for rows in itertools.combinations(range(zero, m), n - zero):
            active = [*range(zero), *rows]
            if abs(np.linalg.det(A[active])) < 1e-12:
                continue
            x = np.linalg.solve(A[active], b[active])
            slack = b - A @ x
            if slack[zero:].min() < -1e-9 or np.abs(slack[:zero]).max(initial=0.0) > 1e-9:
                continue
            if program.c @ x < best_value - 1e-12:
                best, best_value = x, program.c @ x
        return Solution(x=best, y=np.zeros(m), s=b - A @ best, status=OPTIMAL, solver_status="enumerated")


def _packing_lp(n: int = 3, m: int = 2, seed: int = 0):
    """maximize value'x s.t. Gx <= h, 0 <= x <= 1, written as minimize c'x with c = -value."""
    rng = np.random.default_rng(seed)
    G = rng.uniform(0.2, 1.0, (m, n))
    h = G.sum(axis=1) * 0.5
    x, c = cp.Variable(n, name="x"), cp.Parameter(n, name="c")
    return cp.Problem(cp.Minimize(c @ x), [G @ x <= h, x >= 0, x <= 1]), c, x


def _outputs_and_grads(layer, values, weights):
    tensors = [torch.tensor(v, requires_grad=True) for v in values]
    outputs = layer(*tensors)
    sum((o * w).sum() for o, w in zip(outputs, weights, strict=True)).backward()
    return [o.detach().numpy() for o in outputs], [t.grad.numpy() for t in tensors]


@pytest.mark.timeout(120)
def test_wrapper_gives_the_builtins_outputs_and_gradients_bitwise() -> None:
    """A QP with a parametrized b and a dual output (so LPGD perturbs c and b), and the counts:
    B forward solves, 2B re-solves for central LPGD."""
    rng = np.random.default_rng(1)
    n, m, batch = 6, 4, 5
    G = rng.standard_normal((m, n))
    x, q, h = cp.Variable(n), cp.Parameter(n), cp.Parameter(m)
    con = G @ x <= h
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x) + q @ x), [con])
    values = [rng.standard_normal((batch, n)), rng.uniform(0.1, 1.0, (batch, m))]
    weights = [torch.randn(batch, n, dtype=torch.float64), torch.randn(batch, m, dtype=torch.float64)]
    gradient = LPGD(tau=1e-3, side="central")
    args = {"eps": 1e-9}
    counting = Counting()
    out = [x, con.dual_variables[0]]
    layers = {
        "builtin": CvxpyLayer(problem, [q, h], out, solver="CLARABEL", gradient=gradient, solver_args=args),
        "wrapper": CvxpyLayer(problem, [q, h], out, solver=counting.with_settings(args), gradient=gradient),
    }
    (out_b, grad_b), (out_w, grad_w) = (_outputs_and_grads(lay, values, weights) for lay in layers.values())
    for ours, theirs in zip(out_w + grad_w, out_b + grad_b, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert np.abs(grad_b[1]).max() > 1e-2  # b's gradient is there, not trivially zero
    assert layers["wrapper"].solver.solves == 3 * batch
    assert counting.solves == 0  # with_settings made a new backend; this one stayed unused


@pytest.mark.timeout(120)
def test_a_backend_taking_eps_is_asked_for_the_resolve_accuracy() -> None:
    """One-sided LPGD at tau = 1e-3 on SCS (eps 1e-6): each item's forward point is refined, then
    re-solved, both at 1e-4 * tau * |dx_i|_inf (tighter than the user's eps); the forward solves
    get no eps. A backend whose solve takes no eps (VertexEnumerator) is never passed one."""
    problem, c, x = _packing_lp()
    recording = Counting("SCS", {"eps": 1e-6})
    tau = 1e-3
    layer = CvxpyLayer(problem, [c], [x], solver=recording, gradient=LPGD(tau=tau, side="lower"))
    rng = np.random.default_rng(4)
    w = rng.uniform(0.5, 2.0, (3, 3))
    _outputs_and_grads(layer, [-rng.uniform(0.5, 1.5, (3, 3))], [torch.tensor(w)])
    expected = sorted(2 * [1e-4 * tau * float(np.abs(row).max()) for row in w])
    assert recording.asked[:3] == [None] * 3
    np.testing.assert_allclose(sorted(recording.asked[3:]), expected, rtol=1e-12)


@pytest.mark.timeout(120)
def test_wrapper_of_highs_solves_mixed_integer_problems_as_highs() -> None:
    rng = np.random.default_rng(2)
    x = cp.Variable(5, boolean=True)
    c = cp.Parameter(5)
    weight = rng.uniform(1.0, 2.0, 5)
    problem = cp.Problem(cp.Minimize(c @ x), [weight @ x <= 3.0])
    values = [-rng.uniform(0.5, 1.5, (4, 5))]
    weights = [torch.randn(4, 5, dtype=torch.float64)]
    gradient = LPGD(tau=1.0, side="lower")
    out_h, grad_h = _outputs_and_grads(CvxpyLayer(problem, [c], [x], solver="HIGHS", gradient=gradient),
                                       values, weights)
    wrapper = Counting("HIGHS")
    out_w, grad_w = _outputs_and_grads(CvxpyLayer(problem, [c], [x], solver=wrapper, gradient=gradient),
                                       values, weights)
    np.testing.assert_array_equal(out_w[0], out_h[0])
    np.testing.assert_array_equal(grad_w[0], grad_h[0])
    assert set(np.unique(out_h[0])) <= {0.0, 1.0} and np.abs(grad_h[0]).max() > 0.1
    assert wrapper.solves == 8


@pytest.mark.timeout(120)
def test_vertex_enumerator_matches_clarabel_and_trains() -> None:
    """Outputs and LPGD gradients as Clarabel's; then the same training run with each: the same
    weights at every step, and a regret that falls."""
    problem, c, x = _packing_lp()
    gradient = LPGD(tau=10.0, side="lower")
    oracle = CvxpyLayer(problem, [c], [x], solver=VertexEnumerator(), gradient=gradient)
    clarabel = CvxpyLayer(problem, [c], [x], solver="CLARABEL", gradient=gradient,
                          solver_args={"eps": 1e-10})
    rng = np.random.default_rng(3)
    features = rng.standard_normal((64, 2))
    truth = np.array([[1.0, -0.5], [-0.8, 0.3], [0.2, 1.0]])
    costs = -(features @ truth.T + 1.5 + 0.1 * rng.standard_normal((64, 3)))
    best = clarabel(torch.tensor(costs))[0].numpy()
    np.testing.assert_allclose(oracle(torch.tensor(costs))[0].numpy(), best, atol=1e-7)

    def regret(model: torch.nn.Module, layer: CvxpyLayer) -> float:
        with torch.no_grad():
            decisions = layer(model(torch.tensor(features)))[0].numpy()
        return float(np.einsum("ij,ij->", costs, decisions - best) / -np.einsum("ij,ij->", costs, best))

    trained = {}
    for key, layer in (("oracle", oracle), ("clarabel", clarabel)):
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 3).double()
        start = regret(model, layer)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
        history = []
        for step in range(30):
            batch = slice(16 * (step % 4), 16 * (step % 4) + 16)
            decisions = layer(model(torch.tensor(features[batch])))[0]
            loss = (decisions * torch.tensor(costs[batch])).sum(dim=1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history.append(torch.cat([p.detach().flatten() for p in model.parameters()]).numpy())
        trained[key] = (start, regret(model, layer), np.array(history))
    np.testing.assert_allclose(trained["oracle"][2], trained["clarabel"][2], atol=1e-6)
    start, end, _ = trained["oracle"]
    assert start > 0.5 and end < 0.05 * start, (start, end)  # measured: 0.554 -> 0.004


def _lp_layer(solver, **kwargs) -> CvxpyLayer:
    problem, c, x = _packing_lp()
    return CvxpyLayer(problem, [c], [x], solver=solver, **kwargs)


class _Broken(VertexEnumerator):
    def __init__(self, answer):
        self.answer = answer

    def solve(self, program, warm_start=None, workspace=None):
        return self.answer(program)


@pytest.mark.timeout(60)
def test_bad_solver_objects_fail_clearly() -> None:
    class Nameless:
        def solve(self, program, warm_start=None, workspace=None): ...

    class NoWorkspace(VertexEnumerator):
        def solve(self, program, warm_start=None): ...

    class Impostor(VertexEnumerator):
        name = "Clarabel"

    class WrongCanon(VertexEnumerator):
        canon_solver = "ECOS"

    class WrongCones(VertexEnumerator):
        cones = ("zero", "box")

    class NegativeEps(VertexEnumerator):
        tightest_eps = -1e-9

    cases = [
        (Nameless(), TypeError, "non-empty string attribute 'name'"),
        (VertexEnumerator, TypeError, "got the class VertexEnumerator; pass an instance"),
        (NoWorkspace(), TypeError, r"must accept solve\(program, warm_start=None, workspace=None\)"),
        (Impostor(), ValueError, "named 'Clarabel', a built-in solver's name"),
        (WrongCanon(), ValueError, r"canon_solver must be one of \['CLARABEL', 'SCS'\], got 'ECOS'"),
        (WrongCones(), ValueError, r"unknown cone kinds \['box'\]"),
        (NegativeEps(), ValueError, "tightest_eps must be a finite number >= 0, got -1e-09"),
        (42, ValueError, "Unknown solver 42.*or an object implementing cvxlpgd.ConeSolver"),
    ]
    for solver, error, match in cases:
        with pytest.raises(error, match=match):
            _lp_layer(solver)
    with pytest.raises(ValueError, match=r"solver_args \['eps'\] were given.*no with_settings"):
        _lp_layer(VertexEnumerator(), solver_args={"eps": 1e-6})
    with pytest.raises(ValueError, match="gradient='implicit'.*not 'vertices'"):
        _lp_layer(VertexEnumerator(), gradient="implicit")
    y, g = cp.Variable(2), cp.Parameter(2)
    with pytest.raises(ValueError, match="vertices accepts only zero .equality., nonnegative cones, but this "
                       "problem needs second-order cones"):
        CvxpyLayer(cp.Problem(cp.Minimize(g @ y), [cp.norm(y) <= 1]), [g], [y], solver=VertexEnumerator())
    z = cp.Variable(2, integer=True)
    with pytest.raises(ValueError, match="vertices solves convex problems only.*mixed_integer = True"):
        CvxpyLayer(cp.Problem(cp.Minimize(g @ z), [z >= 0, z <= 3]), [g], [z], solver=VertexEnumerator())


@pytest.mark.timeout(60)
def test_wrong_answers_name_the_backend() -> None:
    c = torch.tensor([-1.0, -2.0, -0.5])
    ok = VertexEnumerator()

    def shape(program):
        solution = ok.solve(program)
        solution.x = solution.x[:-1]
        return solution

    def nan(program):
        solution = ok.solve(program)
        solution.y = np.full_like(solution.y, np.nan)
        return solution

    answers = [
        (lambda program: (np.zeros(3), "optimal"), TypeError, "returned tuple from solve; it must return a "
         "cvxlpgd.Solution"),
        (lambda program: Solution(*(np.zeros(k) for k in (3, 8, 8)), status="done"), ValueError,
         "returned status 'done'"),
        (shape, ValueError, r"returned x of shape \(2,\) for a program with 3 variables and 8 constraint"),
        (nan, ValueError, "returned non-finite entries in y with status 'optimal'"),
    ]
    for answer, error, match in answers:
        with pytest.raises(error, match=f"Solver 'vertices' {match}"):
            _lp_layer(_Broken(answer))(c)
    failing = _lp_layer(_Broken(lambda p: Solution(*(np.full(k, np.nan) for k in (3, 8, 8)), "infeasible")))
    with pytest.raises(cvxlpgd.SolverError, match="vertices failed on 1 of 1 batch item"):
        failing(c)


class _NameReads(VertexEnumerator):
    """Counts how often its name is read (every check of the object reads it) and how often it
    is configured."""

    def __init__(self, label: str = "vertices"):
        self.label, self.reads, self.configured = label, 0, 0

    @property
    def name(self) -> str:
        self.reads += 1
        return self.label

    def with_settings(self, args: dict) -> _NameReads:
        self.configured += 1
        return self


@pytest.mark.timeout(60)
def test_a_solver_object_is_checked_and_configured_once_per_layer() -> None:
    """The layer checks the object (and calls with_settings for its solver_args) when it is
    built, then uses that backend for every call; a call's own solver_args configure another."""
    c = torch.tensor([-1.0, -2.0, -0.5])
    plain, configured = _NameReads(), _NameReads()
    layers = [_lp_layer(plain), _lp_layer(configured, solver_args={"tol": 1.0})]
    for layer in layers:
        for _ in range(3):
            layer(c)
    assert (plain.reads, configured.reads) == (1, 2)  # the object, and what with_settings gave
    assert configured.configured == 1
    layers[1](c, solver_args={"tol": 2.0})
    assert configured.configured == 2


@pytest.mark.timeout(60)
def test_with_settings_cannot_return_a_builtins_name() -> None:
    class Renaming(VertexEnumerator):
        def with_settings(self, args: dict) -> _NameReads:
            return _NameReads("SCS")

    with pytest.raises(ValueError, match="is named 'SCS', a built-in solver's name"):
        _lp_layer(Renaming(), solver_args={"eps": 1e-6})
