"""cvxlpgd.dfl against PyEPO (with Gurobi): SPO+, the perturbed Fenchel-Young loss and the
normalized regret on PyEPO's shortest path (minimize, LP) and knapsack (maximize, MILP and its LP
relaxation), a layer with a feature-dependent constraint, failed items, and the errors."""

from __future__ import annotations

import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch

from cvxlpgd import CvxpyLayer, SolverWarning
from cvxlpgd.dfl import CostTerm, PerturbedFenchelYoung, Sense, SPOPlus, regret
from cvxlpgd.examples import grid_shortest_path

pyepo = pytest.importorskip("pyepo")
pytest.importorskip("gurobipy")
from pyepo.model.grb import knapsackModel, shortestPathModel  # noqa: E402
from pyepo.model.grb.knapsack import knapsackModelRel  # noqa: E402

BATCH = 8
TOL = 1e-6


def _dataset(optmodel, features: np.ndarray, costs: np.ndarray) -> tuple[torch.Tensor, ...]:
    """PyEPO's own true solutions and objective values (Gurobi), as float64 tensors."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = pyepo.data.dataset.optDataset(optmodel, features, costs)
    return tuple(
        torch.as_tensor(np.asarray(a), dtype=torch.float64) for a in (data.costs, data.sols, data.objs)
    )


def _shortest_path():
    features, costs = pyepo.data.shortestpath.genData(BATCH, 5, (5, 5), deg=4, noise_width=0.5, seed=3)
    optmodel = shortestPathModel((5, 5))
    return optmodel, features, _dataset(optmodel, features, costs)


def _knapsack(relaxed: bool):
    weights, features, costs = pyepo.data.knapsack.genData(
        BATCH, 5, 32, dim=2, deg=4, noise_width=0.5, seed=3
    )
    capacity = [20.0, 20.0]
    optmodel = (knapsackModelRel if relaxed else knapsackModel)(weights, capacity)
    value = cp.Parameter(32, name="value")
    pick = cp.Variable(32, name="pick", **({} if relaxed else {"boolean": True}))
    bounds = [pick >= 0, pick <= 1] if relaxed else []
    problem = cp.Problem(cp.Maximize(value @ pick), [weights @ pick <= capacity, *bounds])
    return optmodel, problem, value, pick, _dataset(optmodel, features, costs)


def _prediction(costs: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Predicted costs near the true ones, with no ties among the solves' optima."""
    gen = torch.Generator().manual_seed(seed)
    return (costs + costs.std() * torch.randn(costs.shape, generator=gen, dtype=costs.dtype)).requires_grad_()


def _value_and_grad(loss: torch.Tensor, pred: torch.Tensor) -> tuple[float, torch.Tensor]:
    (grad,) = torch.autograd.grad(loss, pred)
    return float(loss.detach()), grad


def _assert_close(mine: tuple[float, torch.Tensor], ref: tuple[float, torch.Tensor]) -> None:
    assert mine[0] == pytest.approx(ref[0], abs=TOL, rel=TOL)
    torch.testing.assert_close(mine[1], ref[1], atol=TOL, rtol=0.0)


def _cases():
    """(name, PyEPO model, layer, data) for each problem and solver the losses are compared on."""
    optmodel, _, data = _shortest_path()
    path = grid_shortest_path(5)
    for solver in ("CLARABEL", "HIGHS"):
        yield (
            f"path-{solver}",
            optmodel,
            CvxpyLayer(path.problem, [path.cost], [path.flow], solver=solver),
            data,
        )
    for solver in ("CLARABEL", "HIGHS"):
        optmodel, problem, value, pick, data = _knapsack(relaxed=True)
        yield f"knapsack-lp-{solver}", optmodel, CvxpyLayer(problem, [value], [pick], solver=solver), data
    optmodel, problem, value, pick, data = _knapsack(relaxed=False)
    yield "knapsack-milp-HIGHS", optmodel, CvxpyLayer(problem, [value], [pick], solver="HIGHS"), data


CASES = list(_cases())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_spo_plus_equals_pyepo(case) -> None:
    _, optmodel, layer, (costs, sols, objs) = case
    pred = _prediction(costs)
    mine = _value_and_grad(SPOPlus(layer)(pred, costs, sols, objs), pred)
    ref = _value_and_grad(pyepo.func.SPOPlus(optmodel)(pred, costs, sols, objs), pred)
    _assert_close(mine, ref)
    assert mine[1].abs().sum() > 0  # not the trivial zero gradient of w(2 c_hat - c) = w*


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_perturbed_fenchel_young_equals_pyepo_with_the_same_noise(case) -> None:
    """A generator seeded as PyEPO's draws PyEPO's noise; two calls draw the next noise alike."""
    _, optmodel, layer, (costs, sols, _) = case
    pred = _prediction(costs, seed=1)
    sigma = float(costs.std())
    mine = PerturbedFenchelYoung(
        layer, n_samples=3, sigma=sigma, generator=torch.Generator().manual_seed(135)
    )
    ref = pyepo.func.perturbedFenchelYoung(optmodel, n_samples=3, sigma=sigma, seed=135)
    for _ in range(2):
        _assert_close(_value_and_grad(mine(pred, sols), pred), _value_and_grad(ref(pred, sols), pred))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_regret_equals_pyepo(case) -> None:
    _, optmodel, layer, (costs, sols, objs) = case
    pred = _prediction(costs, seed=2).detach()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.zeros(BATCH, 1), costs, sols, objs), batch_size=BATCH
    )
    expected = pyepo.metric.regret(lambda _: pred.numpy(), optmodel, loader)
    assert expected > 0.01  # a prediction far enough from the truth that the regret is informative
    assert regret(layer, pred, costs, objs) == pytest.approx(expected, rel=TOL)
    assert regret(layer, pred, costs) == pytest.approx(expected, rel=TOL)  # optimal values solved
    assert regret(layer, costs, costs) == pytest.approx(0.0, abs=TOL)


@pytest.mark.timeout(120)
def test_feature_dependent_capacity_equals_pyepo_item_by_item() -> None:
    """A batched capacity parameter (what PyEPO's fixed model cannot take) passed after PyEPO's
    arguments: each item's loss equals PyEPO's on a model built with that item's capacity."""
    weights, features, costs = pyepo.data.knapsack.genData(
        BATCH, 5, 32, dim=2, deg=4, noise_width=0.5, seed=4
    )
    capacities = np.random.default_rng(0).uniform(10.0, 40.0, (BATCH, 2))
    value, capacity = cp.Parameter(32, name="value"), cp.Parameter(2, name="capacity", nonneg=True)
    pick = cp.Variable(32, name="pick")
    problem = cp.Problem(cp.Maximize(value @ pick), [weights @ pick <= capacity, pick >= 0, pick <= 1])
    layer = CvxpyLayer(problem, [value, capacity], [pick], solver="HIGHS")
    per_item = [
        _dataset(knapsackModelRel(weights, cap), features[i : i + 1], costs[i : i + 1])
        for i, cap in enumerate(capacities)
    ]
    true_costs, sols, objs = (torch.cat(parts) for parts in zip(*per_item, strict=True))
    pred = _prediction(true_costs)
    cap = torch.tensor(capacities)
    mine = _value_and_grad(SPOPlus(layer)(pred, true_costs, sols, objs, cap), pred)
    pfy_mine = _value_and_grad(
        PerturbedFenchelYoung(layer, n_samples=2, generator=torch.Generator().manual_seed(135))(
            pred, sols, cap
        ),
        pred,
    )
    noise = torch.Generator().manual_seed(135)
    spo_value, spo_grad, pfy_value, pfy_grad = 0.0, torch.zeros_like(pred), 0.0, torch.zeros_like(pred)
    for i, cap_i in enumerate(capacities):
        model = knapsackModelRel(weights, cap_i)
        item = slice(i, i + 1)
        loss = pyepo.func.SPOPlus(model)(pred[item], true_costs[item], sols[item], objs[item]) / BATCH
        spo_value += float(loss.detach())
        spo_grad += torch.autograd.grad(loss, pred)[0]
        pfy = pyepo.func.perturbedFenchelYoung(model, n_samples=2)
        pfy._gen_cache["cpu"] = noise  # the draws continue item after item, as in one batched call
        loss = pfy(pred[item], sols[item]) / BATCH
        pfy_value += float(loss.detach())
        pfy_grad += torch.autograd.grad(loss, pred)[0]
    _assert_close(mine, (spo_value, spo_grad))
    _assert_close(pfy_mine, (pfy_value, pfy_grad))
    # The capacities matter: the same predictions against the shared capacity give other losses.
    assert (
        abs(
            float(SPOPlus(layer)(pred, true_costs, sols, objs, torch.tensor([20.0, 20.0])).detach())
            - spo_value
        )
        > 1e-3
    )
    gaps = [
        pyepo.metric.calRegret(
            knapsackModelRel(weights, cap_i), pred[i].detach(), true_costs[i], float(objs[i])
        )
        for i, cap_i in enumerate(capacities)
    ]
    expected = sum(gaps) / (float(objs.abs().sum()) + 1e-8)
    assert regret(layer, pred.detach(), true_costs, objs, cap) == pytest.approx(expected, rel=TOL)


@pytest.mark.timeout(60)
def test_spo_plus_gradient_is_the_derivative_of_its_value() -> None:
    """Danskin's gradient against central differences of the loss value, on the LP (piecewise
    linear: exact away from the kinks, which a step of 1e-6 does not cross)."""
    _, _, (costs, sols, objs) = _shortest_path()
    path = grid_shortest_path(5)
    spo = SPOPlus(CvxpyLayer(path.problem, [path.cost], [path.flow], solver="HIGHS"))
    pred = _prediction(costs)
    (grad,) = torch.autograd.grad(spo(pred, costs, sols, objs), pred)
    h, rng = 1e-6, np.random.default_rng(0)
    for _ in range(5):
        direction = torch.tensor(rng.standard_normal(pred.shape))
        with torch.no_grad():
            step = float(
                spo(pred + h * direction, costs, sols, objs) - spo(pred - h * direction, costs, sols, objs)
            )
        assert step / (2 * h) == pytest.approx(float((grad * direction).sum()), rel=1e-5, abs=1e-8)


@pytest.mark.timeout(60)
def test_failed_items_are_left_out_of_the_mean_with_zero_gradient() -> None:
    """on_failure="nan": an infeasible item (negative capacity) does not spoil the batch."""
    value, capacity = cp.Parameter(4, name="value"), cp.Parameter(name="capacity")
    pick = cp.Variable(4, name="pick")
    problem = cp.Problem(cp.Maximize(value @ pick), [cp.sum(pick) <= capacity, pick >= 0, pick <= 1])
    layer = CvxpyLayer(problem, [value, capacity], [pick], solver="HIGHS", on_failure="nan")
    true_cost = torch.tensor([[4.0, 3.0, 2.0, 1.0]] * 3)
    true_sol = torch.tensor([[1.0, 1.0, 0.0, 0.0]] * 3)
    true_obj = torch.tensor([7.0] * 3)
    pred = torch.tensor([[1.0, 2.0, 3.0, 4.0]] * 3, requires_grad=True)
    caps = torch.tensor([2.0, -1.0, 2.0])
    for loss in (SPOPlus(layer), PerturbedFenchelYoung(layer, n_samples=2, sigma=0.1)):
        args = (pred, true_cost, true_sol, true_obj) if isinstance(loss, SPOPlus) else (pred, true_sol)
        with pytest.warns(SolverWarning):
            value_all = loss(*args, caps)
        (grad,) = torch.autograd.grad(value_all, pred)
        assert torch.isfinite(grad).all() and torch.all(grad[1] == 0)
        good = torch.tensor([0, 2])
        kept_args = tuple(a[good] for a in args)
        if isinstance(loss, SPOPlus):
            expected = float(loss(*kept_args, caps[good]).detach())
            assert float(value_all.detach()) == pytest.approx(expected, rel=1e-12)
            # 2 (w(2 c_hat - c) - w*) / 2 items on the solved items (maximize)
            assert torch.allclose(grad[0], torch.tensor([-1.0, -1.0, 1.0, 1.0]))


def test_cost_term_is_read_off_the_objective() -> None:
    x, y = cp.Variable(3, name="x"), cp.Variable(3, name="y")
    c, d = cp.Parameter(3, name="c"), cp.Parameter(3, name="d")
    problem = cp.Problem(
        cp.Minimize(c @ x + cp.sum_squares(x) + 0.5 * cp.sum(y)), [x >= d, y >= 0, cp.sum(x) <= 5]
    )
    term = CostTerm.of(CvxpyLayer(problem, [d, c], [y, x]))
    assert (term.cost is c, term.parameter_index, term.output_index, term.sense) == (
        True,
        1,
        1,
        Sense.MINIMIZE,
    )
    M, X = cp.Parameter((2, 3), name="M"), cp.Variable((2, 3), name="X")
    problem = cp.Problem(cp.Maximize(cp.sum(cp.multiply(M, X))), [X >= 0, cp.sum(X) <= 1])
    term = CostTerm.of(CvxpyLayer(problem, [M], [X]))
    assert (term.cost is M, term.sense) == (True, Sense.MAXIMIZE)


def _layer(objective, constraints, params, outputs, **kwargs):
    return CvxpyLayer(cp.Problem(objective, constraints), params, outputs, **kwargs)


def test_errors_name_the_culprit() -> None:
    x, c, d = cp.Variable(3, name="x"), cp.Parameter(3, name="c"), cp.Parameter(3, name="d")
    Q = cp.Parameter((3, 3), name="Q", PSD=True)
    box = [x >= 0, x <= 1]
    cases = [
        # the cost enters a constraint too
        (_layer(cp.Minimize(c @ x), [*box, c @ x >= -1], [c], [x]), {}, "'c' enters the constraints"),
        # scaled: not <c, x>
        (_layer(cp.Minimize(2 * c @ x), box, [c], [x]), {}, "not as <c, w>"),
        # the decision is not an output
        (
            _layer(cp.Minimize(c @ x), [*box, cp.sum(x) == 1], [c], [box[0].dual_variables[0]]),
            {},
            "not as <c, w>",
        ),
        # only in the objective's constant
        (_layer(cp.Minimize(cp.sum(x) + cp.sum(d)), box, [d], [x]), {}, "'d' multiplies no variable"),
        # in a nonlinear objective term (a cone in CVXPY's conic form)
        (
            _layer(cp.Minimize(cp.sum_squares(cp.multiply(d, x))), box, [d], [x]),
            {},
            "'d' enters the constraints or a nonlinear objective term",
        ),
        # in the quadratic objective's matrix
        (_layer(cp.Minimize(cp.quad_form(x, Q)), box, [Q], [x]), {}, "'Q' enters the quadratic objective"),
    ]
    for layer, kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            SPOPlus(layer, **kwargs)
    two = _layer(cp.Minimize(c @ x + d @ x), box, [c, d], [x])
    with pytest.raises(ValueError, match="Several .* pass cost= and decision="):
        SPOPlus(two)
    assert SPOPlus(two, cost=d).term.parameter_index == 1
    layer = _layer(cp.Minimize(c @ x), box, [c], [x])
    with pytest.raises(ValueError, match="is not a parameter of the layer"):
        SPOPlus(layer, cost=d)
    with pytest.raises(ValueError, match="is not an output of the layer"):
        SPOPlus(layer, decision=cp.Variable(3))
    with pytest.raises(TypeError, match="Expected a cvxlpgd.CvxpyLayer"):
        SPOPlus(object())
    z, g = cp.Variable(pos=True), cp.Parameter(pos=True)
    with pytest.raises(ValueError, match="gp=True"):
        SPOPlus(CvxpyLayer(cp.Problem(cp.Minimize(g * z), [z >= 1]), [g], [z], gp=True))
    for bad in ({"n_samples": 0}, {"n_samples": 1.5}, {"sigma": 0.0}, {"generator": 1}):
        with pytest.raises((ValueError, TypeError), match=next(iter(bad))):
            PerturbedFenchelYoung(layer, **bad)
    spo, ones = SPOPlus(layer), torch.ones(2, 3)
    with pytest.raises(ValueError, match=r"pred_cost must have shape \(batch, 3\)"):
        spo(torch.ones(3), torch.ones(3), torch.ones(3), torch.ones(1))
    with pytest.raises(ValueError, match="Inconsistent batch sizes"):
        spo(ones, torch.ones(3, 3), ones, torch.ones(2))
    with pytest.raises(ValueError, match=r"true_obj must have shape \(2,\) or \(2, 1\)"):
        spo(ones, ones, ones, torch.ones(3))
    with pytest.raises(ValueError, match=r"other 0 parameter tensor\(s\) \[\], in the layer's order; got 1"):
        spo(ones, ones, ones, torch.ones(2), ones)
    lo = cp.Parameter(3, name="lo")
    shifted = SPOPlus(_layer(cp.Minimize(c @ x), [x >= lo, x <= 1], [c, lo], [x]))
    with pytest.raises(ValueError, match="'lo' requires grad"):
        shifted(ones, ones, ones, torch.ones(2), torch.zeros(3, requires_grad=True))


@pytest.mark.timeout(60)
def test_warm_started_solves_give_the_same_losses() -> None:
    """warm_start=True reaches the layer (HiGHS starts each item from the last call's vertex) and
    changes no value or gradient."""
    _, _, (costs, sols, objs) = _shortest_path()
    path = grid_shortest_path(5)
    layer = CvxpyLayer(path.problem, [path.cost], [path.flow], solver="HIGHS")
    cold, warm = SPOPlus(layer), SPOPlus(layer, warm_start=True)
    for seed in range(3):
        pred = _prediction(costs, seed=seed)
        _assert_close(
            _value_and_grad(warm(pred, costs, sols, objs), pred),
            _value_and_grad(cold(pred, costs, sols, objs), pred),
        )
    warm(pred, costs, sols, objs)  # the same solves again: each item starts at its own optimum
    assert layer.last_iterations == [0] * len(costs), layer.last_iterations


@pytest.mark.timeout(60)
def test_a_convex_program_with_a_linear_cost_term() -> None:
    """min <c, w> + 1/2 |w|^2 over the simplex: the decisions are those of the whole objective, and
    the SPO+ gradient is 2 (w* - w(2 c_hat - c)) with w the projection of -(2 c_hat - c) onto the
    simplex, computed here independently by sorting."""

    def simplex_projection(v: np.ndarray) -> np.ndarray:
        u = np.sort(v)[::-1]
        css = np.cumsum(u) - 1
        k = np.nonzero(u - css / np.arange(1, v.size + 1) > 0)[0][-1]
        return np.maximum(v - css[k] / (k + 1), 0)

    c, w = cp.Parameter(5, name="c"), cp.Variable(5, name="w")
    problem = cp.Problem(cp.Minimize(c @ w + 0.5 * cp.sum_squares(w)), [cp.sum(w) == 1, w >= 0])
    spo = SPOPlus(CvxpyLayer(problem, [c], [w], solver="CLARABEL", solver_args={"eps": 1e-10}))
    rng = np.random.default_rng(0)
    true_cost = torch.tensor(rng.normal(size=(4, 5)))
    true_sol = torch.tensor(np.stack([simplex_projection(-v) for v in true_cost.numpy()]))
    pred = torch.tensor(rng.normal(size=(4, 5)), requires_grad=True)
    (grad,) = torch.autograd.grad(spo(pred, true_cost, true_sol, (true_cost * true_sol).sum(1)), pred)
    w_spo = np.stack(
        [
            simplex_projection(-(2 * p - t))
            for p, t in zip(pred.detach().numpy(), true_cost.numpy(), strict=True)
        ]
    )
    expected = 2 * (true_sol.numpy() - w_spo) / 4
    np.testing.assert_allclose(grad.numpy(), expected, atol=1e-7)
    assert np.abs(expected).max() > 1e-2
