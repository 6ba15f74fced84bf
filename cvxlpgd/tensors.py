"""PyTorch tensors into and out of the numpy pipeline: the checks only torch needs (type,
functorch transforms, layout, dtype, tracing) and the conversions, keeping dtype and device."""

from __future__ import annotations

from collections.abc import Sequence

import cvxpy as cp
import numpy as np
import torch

from cvxlpgd.parameter_values import check_count, describe


def check_tensors(params: Sequence[object], parameters: Sequence[cp.Parameter]) -> None:
    """What the numpy checks cannot see: each value a dense, real floating-point tensor, not a
    functorch transform's wrapper and not under ``torch.jit.trace``."""
    if torch.jit.is_tracing():
        raise RuntimeError(
            "CvxpyLayer cannot be traced by torch.jit.trace: the solve runs outside torch, so a trace "
            "would record this input's solution as a constant and return it for every later input. "
            "Trace the parts of the model around the layer and call the layer between them, or use "
            "torch.compile, which runs the layer eagerly."
        )
    check_count(params, parameters)
    for i, (value, param) in enumerate(zip(params, parameters, strict=True)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{describe(param, i)} must be a torch.Tensor, got {type(value).__name__}.")
        if torch._C._functorch.is_functorch_wrapped_tensor(value):
            raise RuntimeError(
                f"CvxpyLayer does not support torch.func transforms (vmap, grad, jacrev, ...), which "
                f"reached it through {describe(param, i)}: the solve runs outside torch. Instead of "
                "vmap, give the parameters a leading batch dimension; for Jacobians, use "
                "torch.autograd.functional.jacobian."
            )
        if value.layout != torch.strided or value.is_meta:
            kind = "a meta tensor" if value.is_meta else f"layout {value.layout}"
            raise TypeError(f"{describe(param, i)} must be a dense tensor with data, got {kind}.")
        if value.is_complex() or not value.is_floating_point():
            raise TypeError(
                f"{describe(param, i)} must be a real floating-point tensor, got dtype {value.dtype}."
            )


def check_incoming_gradients(grads: Sequence[torch.Tensor]) -> None:
    """A backward that torch runs batched (``jacobian(..., vectorize=True)``) cannot leave torch."""
    if any(torch._C._functorch.is_legacy_batchedtensor(g) for g in grads):
        raise RuntimeError(
            "CvxpyLayer's backward cannot run batched over several output gradients at once, as "
            "torch.autograd.functional.jacobian(..., vectorize=True) runs it: the gradient is computed "
            "outside torch. Use vectorize=False (the default), which runs one backward per output entry."
        )


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A float64 numpy array on the CPU (a copy where torch needs one)."""
    return tensor.detach().to("cpu", torch.float64).numpy()


def to_tensor(array: np.ndarray, like: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """A tensor of ``dtype`` on ``like``'s device, built from a copy of ``array``."""
    device = None if like is None else like.device
    return torch.from_numpy(np.array(array)).to(dtype=dtype, device=device)


def promoted_dtype(tensors: Sequence[torch.Tensor]) -> torch.dtype:
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype
