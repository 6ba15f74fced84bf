"""canon_backend: each backend CVXPY cannot use is refused before canonicalizing, naming it and the
remedy; the backends it can use give the same layer."""

from __future__ import annotations

import importlib.util

import cvxpy as cp
import numpy as np
import pytest
import torch

from cvxlpgd import CvxpyLayer


def _three_dimensional() -> tuple[cp.Problem, cp.Parameter, cp.Variable]:
    """A problem CVXPY's C++ backend refuses (an expression of dimension 3)."""
    X, p = cp.Variable((2, 2, 2)), cp.Parameter((2, 2, 2))
    return cp.Problem(cp.Minimize(cp.sum(cp.multiply(p, X))), [X >= 0, X <= 1]), p, X


def test_unknown_backend_lists_cvxpys() -> None:
    problem, p, X = _three_dimensional()
    message = r"canon_backend='BOGUS' is not a CVXPY.*'SCIPY'.*canon_backend=None"
    with pytest.raises(ValueError, match=message):
        CvxpyLayer(problem, [p], [X], canon_backend="BOGUS")


def test_backend_cvxpy_cannot_use_for_the_problem_is_named() -> None:
    problem, p, X = _three_dimensional()
    with pytest.raises(ValueError, match=r"canon_backend='CPP' cannot canonicalize this problem.*dimension"):
        CvxpyLayer(problem, [p], [X], canon_backend="CPP")


@pytest.mark.skipif(importlib.util.find_spec("cvxpy_rust") is not None, reason="cvxpy_rust is installed")
def test_backend_without_its_package_names_the_package() -> None:
    """CVXPY itself raises a bare ModuleNotFoundError here."""
    problem, p, X = _three_dimensional()
    with pytest.raises(ValueError, match=r"canon_backend='RUST' needs the package 'cvxpy_rust'"):
        CvxpyLayer(problem, [p], [X], canon_backend="RUST")


@pytest.mark.parametrize("backend", ["SCIPY", "COO"])
def test_usable_backends_give_cvxpys_solution(backend: str) -> None:
    problem, p, X = _three_dimensional()
    value = np.arange(8.0).reshape(2, 2, 2) - 3.5
    layer = CvxpyLayer(problem, [p], [X], solver="CLARABEL", canon_backend=backend)
    (solution,) = layer(torch.tensor(value))
    np.testing.assert_allclose(solution.numpy(), (value < 0).astype(float), atol=1e-7)
