"""Timing primitives: one timed forward/backward call of a torch layer, and medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

Layer = Callable[..., Sequence[torch.Tensor]]


@dataclass
class Samples:
    """Wall-clock samples (seconds per call) of one variant at one batch size."""

    forward: list[float] = field(default_factory=list)
    backward: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)

    def per_item_ms(self, batch: int) -> dict[str, float | None]:
        """Medians per batch item in milliseconds (``None`` where nothing was timed)."""

        def med(xs: list[float]) -> float | None:
            return statistics.median(xs) * 1e3 / batch if xs else None

        return {"forward": med(self.forward), "backward": med(self.backward), "total": med(self.total)}


def time_layer(
    layer: Layer, values: list[np.ndarray], weights: list[torch.Tensor], samples: Samples | None
) -> None:
    """One forward (with autograd) and one backward of ``sum(w * out)``; appended to ``samples``.

    Fresh leaf tensors are made outside the timed region. ``samples=None`` is a warm-up call.
    """
    inputs = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in values]
    t0 = time.perf_counter()
    outputs = layer(*inputs)
    t1 = time.perf_counter()
    loss = sum((out * w).sum() for out, w in zip(outputs, weights, strict=True))
    loss.backward()
    t2 = time.perf_counter()
    if samples is not None:
        samples.forward.append(t1 - t0)
        samples.backward.append(t2 - t1)
        samples.total.append(t2 - t0)


def time_plain(work: Callable[[], object], samples: Samples | None) -> None:
    """Time ``work()`` as a forward-only call (the raw-solver baselines)."""
    t0 = time.perf_counter()
    work()
    elapsed = time.perf_counter() - t0
    if samples is not None:
        samples.forward.append(elapsed)
        samples.total.append(elapsed)
