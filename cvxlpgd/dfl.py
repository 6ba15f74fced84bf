"""Decision-focused-learning losses on a ``CvxpyLayer``: SPO+, the perturbed Fenchel-Young loss
and the normalized regret, with PyEPO's call signatures.

A layer qualifies when one of its parameters, the *cost* ``c``, enters only the linear part of the
objective as ``<c, w>`` with ``w`` one of its primal outputs, the *decision* (minimize or
maximize; LP, MILP through HiGHS, or a convex program with other terms that do not involve ``c``).
Both losses need nothing of the layer but solves at other costs, and their gradients in the
predicted cost follow in closed form (Danskin's theorem), so they use the layer's solver,
batching, executor, warm starts and failure policy, and never its backward pass.

Which parameter is the cost and which output the decision is read off the compiled objective (the
conic cost vector's dependence on the parameters, against the outputs' recovery map), so a
problem that is not of this form is refused when the loss is built, not trained on wrongly.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import scipy.sparse as sp
import torch

from cvxlpgd.layer import CvxpyLayer

__all__ = ["CostTerm", "PerturbedFenchelYoung", "SPOPlus", "Sense", "regret"]

# PyEPO's guard against a zero denominator in the normalized regret.
_REGRET_EPS = 1e-8


class Sense(enum.IntEnum):
    """The objective's direction, as the sign that turns it into a minimization."""

    MINIMIZE = 1
    MAXIMIZE = -1


@dataclass(frozen=True)
class CostTerm:
    """Where ``<cost, decision>`` sits in a layer: which parameter, which output, which sense."""

    cost: cp.Parameter
    parameter_index: int  # position of the cost among ``layer.cvxpy_parameters``
    output_index: int  # position of the decision among the layer's outputs
    sense: Sense

    @classmethod
    def of(cls, layer: CvxpyLayer, cost: cp.Parameter | None = None, decision=None) -> CostTerm:
        """The layer's cost term; ``cost`` (a ``cp.Parameter``) and ``decision`` (a ``cp.Variable``)
        pick one when several qualify. Raises ``ValueError`` naming what disqualifies the layer."""
        if not isinstance(layer, CvxpyLayer):
            raise TypeError(f"Expected a cvxlpgd.CvxpyLayer, got {type(layer).__name__}.")
        if layer.gp:
            raise ValueError(
                "A gp=True layer's parameters enter through their logarithms, so no parameter is a "
                "linear cost; decision-focused losses need a layer built with gp=False."
            )
        parameters, outputs = list(layer.cvxpy_parameters), list(layer.variables)
        if cost is not None and not any(cost is p for p in parameters):
            raise ValueError(
                f"cost={_name(cost)} is not a parameter of the layer; its parameters are "
                f"{[p.name() for p in parameters]}."
            )
        if decision is not None and not any(decision is v for v in outputs):
            raise ValueError(
                f"decision={_name(decision)} is not an output of the layer; list it in the layer's variables."
            )
        compiled = layer.compiled()
        maps, recovery = compiled.maps, compiled.recovery
        sense = Sense.MAXIMIZE if isinstance(layer.problem.objective, cp.Maximize) else Sense.MINIMIZE
        param_starts = np.cumsum([0] + [p.size for p in parameters])
        output_starts = np.cumsum([0] + [int(np.prod(v.shape)) for v in outputs])
        candidates = [cost] if cost is not None else parameters
        reasons, found = [], []
        for param in candidates:
            i = next(k for k, p in enumerate(parameters) if p is param)
            columns = slice(param_starts[i], param_starts[i + 1])
            entered = [
                block
                for block in ("A", "b", "P")
                if getattr(maps, block) is not None and getattr(maps, block).matrix[:, columns].nnz
            ]
            in_objective = sp.csc_array(maps.c.matrix[:, columns])
            if entered or not in_objective.nnz:
                where = (
                    "the quadratic objective"
                    if entered == ["P"]
                    else "the constraints or a nonlinear objective term"
                )
                reasons.append(
                    f"{param.name()!r} enters {where}"
                    if entered
                    else f"{param.name()!r} multiplies no variable in the objective"
                )
                continue
            for j, var in enumerate(outputs):
                if decision is not None and var is not decision:
                    continue
                rows = recovery.matrix[output_starts[j] : output_starts[j + 1]]
                if tuple(var.shape) != tuple(param.shape) or rows[:, recovery.n :].nnz:
                    continue
                mismatch = in_objective - sense * sp.csc_array(rows[:, : recovery.n]).T
                if not mismatch.nnz or np.abs(mismatch.data).max() <= 1e-12:
                    found.append(cls(cost=param, parameter_index=i, output_index=j, sense=sense))
            if not any(t.cost is param for t in found):
                reasons.append(
                    f"{param.name()!r} is in the objective, but not as <{param.name()}, w> with w "
                    + (f"the output {_name(decision)}" if decision is not None else "an output of the layer")
                )
        if len(found) == 1:
            return found[0]
        if found:
            pairs = ", ".join(f"({t.cost.name()!r}, output {t.output_index})" for t in found)
            raise ValueError(f"Several (cost, decision) pairs qualify: {pairs}; pass cost= and decision=.")
        raise ValueError(
            "The layer has no linear cost term <cost, decision>: "
            + "; ".join(reasons)
            + ". Decision-focused losses need a parameter that enters only the objective, as "
            "cost @ w or cp.sum(cp.multiply(cost, w)) with w a variable among the layer's outputs "
            "(its primal variables, not a dual)."
        )

    def decisions(
        self, layer: CvxpyLayer, costs: torch.Tensor, others: Sequence[torch.Tensor], warm_start: bool
    ) -> torch.Tensor:
        """The layer's decisions at a batch of ``costs``, the other parameters as given (no gradient:
        the losses' gradients are in closed form)."""
        params = [t.detach() for t in others]
        params.insert(self.parameter_index, costs.detach())
        with torch.no_grad():
            return layer(*params, warm_start=warm_start)[self.output_index]

    def value(self, cost: torch.Tensor, decision: torch.Tensor) -> torch.Tensor:
        """``<cost, decision>`` per item: the sums run over the cost's own dimensions."""
        return (cost * decision).flatten(start_dim=cost.dim() - len(self.cost.shape)).sum(-1)

    def check_batch(self, name: str, tensor: torch.Tensor) -> int:
        """The batch size of a (B, *cost shape) tensor; anything else raises, naming the argument."""
        shape = tuple(self.cost.shape)
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}.")
        if tensor.dim() != len(shape) + 1 or tuple(tensor.shape[1:]) != shape:
            raise ValueError(
                f"{name} must have shape (batch, {', '.join(map(str, shape))}) like the cost "
                f"parameter {self.cost.name()!r} with a batch dimension, got {tuple(tensor.shape)}."
            )
        return tensor.shape[0]


class _DecisionLoss(torch.nn.Module):
    """What both losses share: the layer, its cost term, and the checks of their arguments."""

    def __init__(self, layer: CvxpyLayer, cost: cp.Parameter | None, decision, warm_start: bool) -> None:
        super().__init__()
        self.layer = layer
        self.term = CostTerm.of(layer, cost, decision)
        self.warm_start = warm_start

    def _check(self, arguments: dict[str, torch.Tensor], others: Sequence[torch.Tensor]) -> int:
        sizes = {name: self.term.check_batch(name, t) for name, t in arguments.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"Inconsistent batch sizes: {sizes}.")
        expected = len(self.layer.cvxpy_parameters) - 1
        if len(others) != expected:
            names = [p.name() for p in self.layer.cvxpy_parameters if p is not self.term.cost]
            raise ValueError(
                f"After PyEPO's arguments the loss takes the layer's other {expected} parameter "
                f"tensor(s) {names}, in the layer's order; got {len(others)}."
            )
        for tensor, param in zip(others, self._other_parameters(), strict=True):
            if isinstance(tensor, torch.Tensor) and tensor.requires_grad:
                raise ValueError(
                    f"The tensor for {param.name()!r} requires grad, but {type(self).__name__} is "
                    "differentiable only in pred_cost (its gradient is in closed form); pass it "
                    "detached, or train that parameter through the layer's own gradient."
                )
        return next(iter(sizes.values()))

    def _other_parameters(self) -> list[cp.Parameter]:
        return [p for p in self.layer.cvxpy_parameters if p is not self.term.cost]

    @staticmethod
    def _solved_mean(losses: torch.Tensor, solved: torch.Tensor) -> torch.Tensor:
        """The batch mean over the items whose solves succeeded (all of them unless the layer has
        ``on_failure="nan"``, whose failed items give NaN and, here, no gradient)."""
        if bool(solved.all()):
            return losses.mean()
        kept = torch.where(solved, losses, torch.zeros_like(losses))
        return kept.sum() / solved.sum().clamp(min=1)


class SPOPlus(_DecisionLoss):
    """SPO+ (Elmachtoub & Grigas): a convex surrogate of the regret, one solve per item.

    ``spo(pred_cost, true_cost, true_sol, true_obj, *other_params)`` returns the batch mean of

        max_w {<c - 2 c_hat, w>} + 2 <c_hat, w*(c)> - z*(c)     (minimize; mirrored for maximize)

    whose maximizer is the layer's decision at ``2 c_hat - c`` and whose gradient in ``c_hat`` is
    ``2 (w*(c) - w(2 c_hat - c))``. ``true_sol`` and ``true_obj`` are the decisions and values
    ``<c, w*(c)>`` at the true costs (PyEPO's dataset gives them; ``true_obj`` of shape (B,) or
    (B, 1)); ``other_params`` are the layer's other parameters in its order (e.g. constraints
    that depend on features), batched or not as the layer allows, and treated as data.
    ``cost`` / ``decision`` name the cost parameter and decision variable when the layer has
    several candidates; ``warm_start`` is passed to the layer's solves.

    Where the objective has terms besides the cost (``<c, w> + f(w)``), the decision is that of the
    whole objective, so the gradient is Danskin's gradient of SPO+ with ``f`` included; the value
    counts the cost term only (``f(w)`` is not an output of the layer).
    """

    def __init__(
        self, layer: CvxpyLayer, *, cost: cp.Parameter | None = None, decision=None, warm_start: bool = False
    ) -> None:
        super().__init__(layer, cost, decision, warm_start)

    def forward(
        self,
        pred_cost: torch.Tensor,
        true_cost: torch.Tensor,
        true_sol: torch.Tensor,
        true_obj: torch.Tensor,
        *other_params: torch.Tensor,
    ) -> torch.Tensor:
        batch = self._check(
            {"pred_cost": pred_cost, "true_cost": true_cost, "true_sol": true_sol}, other_params
        )
        true_obj = _per_item("true_obj", true_obj, batch)
        term, sign = self.term, float(self.term.sense)
        true_cost, true_sol = true_cost.detach(), true_sol.detach()
        w_spo = term.decisions(self.layer, 2 * pred_cost.detach() - true_cost, other_params, self.warm_start)
        solved = _finite_items(w_spo)
        w_spo = w_spo.nan_to_num(nan=0.0)  # a NaN would leak into the gradient even where masked
        losses = sign * (
            -term.value(2 * pred_cost - true_cost, w_spo) + 2 * term.value(pred_cost, true_sol) - true_obj
        )
        return self._solved_mean(losses, solved)


class PerturbedFenchelYoung(_DecisionLoss):
    """The perturbed Fenchel-Young loss (Berthet et al., 2020): ``n_samples`` solves per item.

    ``pfy(pred_cost, true_sol, *other_params)`` returns the batch mean of

        <c_hat, w*> - mean_s <c_hat + sigma xi_s, w(c_hat + sigma xi_s)>    (minimize; mirrored for maximize)

    with standard normal noise ``xi`` of shape (batch, n_samples, *cost shape), drawn from
    ``generator`` (None: torch's global generator) in that order, so a generator seeded as
    PyEPO's (``torch.Generator().manual_seed(135)``) draws PyEPO's noise. Its gradient in
    ``c_hat`` is ``w* - mean_s w(c_hat + sigma xi_s)``. The samples of a batch are solved in one
    layer call of batch * n_samples items. Other arguments, and objectives with terms besides the
    cost, as in ``SPOPlus``.
    """

    def __init__(
        self,
        layer: CvxpyLayer,
        n_samples: int = 10,
        sigma: float = 1.0,
        generator: torch.Generator | None = None,
        *,
        cost: cp.Parameter | None = None,
        decision=None,
        warm_start: bool = False,
    ) -> None:
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma!r}.")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}.")
        super().__init__(layer, cost, decision, warm_start)
        self.n_samples, self.sigma, self.generator = n_samples, float(sigma), generator

    def forward(
        self, pred_cost: torch.Tensor, true_sol: torch.Tensor, *other_params: torch.Tensor
    ) -> torch.Tensor:
        batch = self._check({"pred_cost": pred_cost, "true_sol": true_sol}, other_params)
        term, samples = self.term, self.n_samples
        noise = torch.randn(
            (batch, samples, *pred_cost.shape[1:]),
            generator=self.generator,
            dtype=pred_cost.dtype,
            device=pred_cost.device,
        )
        perturbed = pred_cost.detach().unsqueeze(1) + self.sigma * noise
        repeated = [
            self._repeat(t, param, samples)
            for t, param in zip(other_params, self._other_parameters(), strict=True)
        ]
        flat = perturbed.reshape(batch * samples, *pred_cost.shape[1:])
        w = term.decisions(self.layer, flat, repeated, self.warm_start).reshape(perturbed.shape)
        solved = _finite_items(w.flatten(start_dim=1))
        w = w.nan_to_num(nan=0.0)  # a NaN would leak into the gradient even where masked
        # <c_hat + sigma xi, w>: c_hat keeps its graph, so the gradient is w* - mean_s w_s.
        sampled = term.value(pred_cost.unsqueeze(1) + self.sigma * noise, w).mean(1)
        losses = float(term.sense) * (term.value(pred_cost, true_sol.detach()) - sampled)
        return self._solved_mean(losses, solved)

    @staticmethod
    def _repeat(tensor: torch.Tensor, param: cp.Parameter, samples: int) -> torch.Tensor:
        """A batched parameter repeated for each noise sample of its item; a shared one as is."""
        batched = isinstance(tensor, torch.Tensor) and tensor.dim() == len(param.shape) + 1
        return tensor.repeat_interleave(samples, dim=0) if batched else tensor


def regret(
    layer: CvxpyLayer,
    pred_cost: torch.Tensor,
    true_cost: torch.Tensor,
    true_obj: torch.Tensor | None = None,
    *other_params: torch.Tensor,
    cost: cp.Parameter | None = None,
    decision=None,
) -> float:
    """PyEPO's normalized regret: ``sum_i (<c_i, w(c_hat_i)> - z*_i) / sum_i |z*_i|`` (sign-flipped
    for maximize), ``w`` the layer's decision at the predicted costs. ``true_obj`` (the optimal
    values ``<c_i, w*(c_i)>``) is solved with the layer when not given; ``other_params`` and
    ``cost`` / ``decision`` as in ``SPOPlus``."""
    term = CostTerm.of(layer, cost, decision)
    batch = term.check_batch("pred_cost", pred_cost)
    if term.check_batch("true_cost", true_cost) != batch:
        raise ValueError(
            f"pred_cost and true_cost have different batch sizes ({batch}, {true_cost.shape[0]})."
        )
    true_cost = true_cost.detach()
    if true_obj is None:
        true_obj = term.value(true_cost, term.decisions(layer, true_cost, other_params, False))
    true_obj = _per_item("true_obj", true_obj, batch).detach().double()
    achieved = term.value(true_cost, term.decisions(layer, pred_cost, other_params, False)).double()
    gaps = float(term.sense) * (achieved - true_obj)
    return float(gaps.sum() / (true_obj.abs().sum() + _REGRET_EPS))


def _per_item(name: str, tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """A (B,) or (B, 1) tensor as (B,), PyEPO's ``true_obj`` being (B, 1)."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}.")
    if tuple(tensor.shape) not in ((batch,), (batch, 1)):
        raise ValueError(f"{name} must have shape ({batch},) or ({batch}, 1), got {tuple(tensor.shape)}.")
    return tensor.reshape(batch)


def _finite_items(decisions: torch.Tensor) -> torch.Tensor:
    """Items whose solve succeeded: with ``on_failure="nan"`` a failed item's decision is NaN."""
    return torch.isfinite(decisions.flatten(start_dim=1)).all(dim=1)


def _name(obj: object) -> str:
    return repr(obj.name()) if hasattr(obj, "name") else repr(obj)
