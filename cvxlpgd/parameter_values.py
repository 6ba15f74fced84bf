"""Parameter values (numpy, one array per parameter) checked against the layer's parameters, and
the stages that stack them into theta and take the batch dimension off the outputs.

Front ends hand float64 arrays here; what is specific to their own array types (torch's dtypes,
layouts, transforms) they check themselves first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cvxpy as cp
import numpy as np

from cvxlpgd.errors import ParameterWarning, warn_at_caller

# Parameter values are accepted up to this relative asymmetry / negative eigenvalue, so that
# finite-difference checks (which perturb one entry by ~1e-6) still go through.
ATTRIBUTE_TOLERANCE = 1e-5


def describe(param: cp.Parameter, index: int) -> str:
    return f"parameter {index} ({param.name()!r}, shape {tuple(param.shape)})"


def check_count(values: Sequence[object], parameters: Sequence[cp.Parameter]) -> None:
    if len(values) != len(parameters):
        raise ValueError(
            f"The layer takes {len(parameters)} parameter tensors "
            f"({', '.join(repr(p.name()) for p in parameters)}), got {len(values)}. "
            "A tensor must be provided for each CVXPY parameter."
        )


@dataclass(frozen=True)
class Batching:
    """The batch of a call: its size, and which parameters carry a batch dimension."""

    batch_size: int
    batched_params: tuple[bool, ...]

    @property
    def batched(self) -> bool:
        return any(self.batched_params)


def check_values(
    values: Sequence[np.ndarray], parameters: Sequence[cp.Parameter], positive: frozenset[int] = frozenset()
) -> Batching:
    """Shapes, batch sizes, finite entries and declared attributes of float64 ``values``; the
    parameters at the indices ``positive`` (a geometric program's) must be > 0."""
    batching = check_shapes([v.shape for v in values], parameters)
    each = zip(values, parameters, batching.batched_params, strict=True)
    for i, (value, param, batched) in enumerate(each):
        _check_finite(value, param, i, batching.batch_size if batched else None)
        if i in positive:
            _check_positive(value, param, i)
        _check_attributes(param, i, value, batched)
    return batching


def check_shapes(shapes: Sequence[tuple[int, ...]], parameters: Sequence[cp.Parameter]) -> Batching:
    """The batch that values of these shapes make (what a front end can check before it has the
    values, as JAX does while it traces)."""
    check_count(shapes, parameters)
    each = zip(shapes, parameters, strict=True)
    batch_sizes = [_batch_size(tuple(shape), param, i) for i, (shape, param) in enumerate(each)]
    sizes = {b for b in batch_sizes if b is not None}
    if len(sizes) > 1:
        detail = ", ".join(f"{p.name()!r}: {b}" for p, b in zip(parameters, batch_sizes, strict=True) if b)
        raise ValueError(
            f"Inconsistent batch sizes: batched parameters disagree on the batch size ({detail})."
        )
    return Batching(sizes.pop() if sizes else 1, tuple(b is not None for b in batch_sizes))


def _batch_size(given: tuple[int, ...], param: cp.Parameter, index: int) -> int | None:
    """The batch size of a value of shape ``given``; None when it has the parameter's own shape."""
    shape = tuple(param.shape)
    if given == shape:
        return None
    if len(given) == len(shape) + 1 and given[1:] == shape:
        if given[0] == 0:
            raise ValueError(f"{describe(param, index)} has an empty batch dimension.")
        return int(given[0])
    expected = ", ".join(map(str, ("batch", *shape)))
    kind = "shape" if len(given) in (len(shape), len(shape) + 1) else "dimensionality"
    raise ValueError(
        f"Invalid parameter {kind}: {describe(param, index)} expects shape {shape} or ({expected}); "
        f"got {given}."
    )


def _check_finite(value: np.ndarray, param: cp.Parameter, index: int, batch: int | None) -> None:
    finite = np.isfinite(value)
    if finite.all():
        return
    where = ""
    if batch is not None:
        where = f" at batch item {int(np.flatnonzero(~finite.reshape(batch, -1).all(axis=1))[0])}"
    raise ValueError(f"{describe(param, index)} contains NaN or Inf{where}.")


def _check_positive(value: np.ndarray, param: cp.Parameter, index: int) -> None:
    bad = value <= 0
    if bad.any():
        raise ValueError(
            f"parameter {index} ({param.name()!r}) enters the geometric program through its logarithm, "
            f"so every entry must be > 0; got {value[bad].min()}. Pass a positive value (gp=True takes "
            "no zeros)."
        )


# The declared attributes whose values ``_check_attributes`` checks.
_CHECKED_ATTRIBUTES = ("nonneg", "nonpos", "pos", "neg", "symmetric", "PSD", "NSD")


def _check_attributes(param: cp.Parameter, index: int, value: np.ndarray, batched: bool) -> None:
    """Values must respect the parameter's declared attributes where a violation makes the conic
    program wrong or non-convex (a negative ``nonneg``, a clearly indefinite ``PSD``); where it
    stays well posed (0 for ``pos``, a slightly non-symmetric ``PSD``), warn with the fix."""
    attrs = param.attributes
    if not any(attrs.get(attr) for attr in _CHECKED_ATTRIBUTES):
        return  # most parameters: nothing to check, so no pass over the values
    items = value if batched else value[None]
    tol = ATTRIBUTE_TOLERANCE * max(1.0, float(np.abs(items).max(initial=0.0)))
    flat = items.reshape(items.shape[0], -1)
    for attr, violated in (
        ("nonneg", lambda: flat < -tol),
        ("nonpos", lambda: flat > tol),
        ("pos", lambda: flat < 0),
        ("neg", lambda: flat > 0),
    ):
        if attrs.get(attr) and (bad := violated().any(axis=1)).any():
            _refuse(param, index, attr, bad, batched)
    for attr in ("pos", "neg"):
        if attrs.get(attr) and (flat == 0).any():
            _warn(
                param,
                f"{describe(param, index)} is declared {attr}, but its value has exact zeros; the "
                f"problem stays convex, so cvxlpgd solves it with them (declare it "
                f"{'nonneg' if attr == 'pos' else 'nonpos'} to say so).",
                f"exact zeros for {attr}",
            )
    if any(attrs.get(a) for a in ("symmetric", "PSD", "NSD")):
        _check_symmetric(param, index, items, attrs, tol, batched)


def _check_symmetric(
    param: cp.Parameter, index: int, items: np.ndarray, attrs: Mapping, tol: float, batched: bool
) -> None:
    asym = np.abs(items - np.swapaxes(items, -1, -2)).reshape(items.shape[0], -1).max(axis=1) > tol
    if asym.any():
        kind = next(a for a in ("PSD", "NSD", "symmetric") if attrs.get(a))
        _warn(
            param,
            f"{describe(param, index)} is declared {kind}, but its value is not "
            f"symmetric{_where(asym, batched)}; cvxlpgd uses its symmetric part (Q + Q')/2, and its "
            "gradient is symmetric (cvxpylayers reads one triangle instead). Pass (Q + Q.mT) / 2 to be "
            "exact.",
            f"not symmetric ({kind})",
        )
    for attr, sign in (("PSD", 1.0), ("NSD", -1.0)):
        if attrs.get(attr):
            low = np.linalg.eigvalsh(sign * 0.5 * (items + np.swapaxes(items, -1, -2))).min(axis=1)
            if (low < -tol).any():
                _refuse(param, index, attr, low < -tol, batched)


def _where(bad: np.ndarray, batched: bool) -> str:
    return f" (batch item {int(np.flatnonzero(bad)[0])})" if batched else ""


def _refuse(param: cp.Parameter, index: int, attr: str, bad: np.ndarray, batched: bool) -> None:
    raise ValueError(
        f"{describe(param, index)} is declared {attr}, but its value is not{_where(bad, batched)}."
    )


def _warn(param: cp.Parameter, message: str, what: str) -> None:
    warn_at_caller(ParameterWarning(message, {param.name(): what}))


class Flatten:
    """Stage: one value per parameter -> theta (B, p), each parameter flattened in C order and
    broadcast over the batch; the adjoint sums an unbatched parameter's gradient over the batch."""

    def __init__(self, batching: Batching) -> None:
        self.batching = batching
        self.shapes: list[tuple[int, ...]] = []

    def apply(self, values: Sequence[np.ndarray]) -> np.ndarray:
        batch = self.batching.batch_size
        self.shapes = [v.shape for v in values]
        columns = [
            value.reshape(batch, -1)
            if batched
            else np.broadcast_to(value.reshape(1, -1), (batch, value.size))
            for value, batched in zip(values, self.batching.batched_params, strict=True)
        ]
        if not columns:
            return np.zeros((batch, 0))
        # A copy in C order either way: theta never shares memory with the caller's tensors.
        if len(columns) == 1:
            return np.array(columns[0], order="C")
        return np.ascontiguousarray(np.hstack(columns))

    def adjoint(self, dtheta: np.ndarray) -> list[np.ndarray]:
        grads, offset = [], 0
        for shape, batched in zip(self.shapes, self.batching.batched_params, strict=True):
            size = int(np.prod(shape[1:] if batched else shape))
            block = dtheta[:, offset : offset + size]
            offset += size
            block = block if batched else block.sum(axis=0)
            grads.append(np.ascontiguousarray(block).reshape(shape))
        return grads


class Unbatch:
    """Stage: outputs without their batch dimension when no parameter had one (unbatched in,
    unbatched out); each its own array, not a view into a batch."""

    def __init__(self, batched: bool) -> None:
        self.batched = batched

    def apply(self, outputs: list[np.ndarray]) -> list[np.ndarray]:
        return outputs if self.batched else [np.array(out[0]) for out in outputs]

    def adjoint(self, grads: list[np.ndarray]) -> list[np.ndarray]:
        return grads if self.batched else [g[None] for g in grads]
