"""Gradient methods behind one protocol (gradients/base.py); ``lookup_gradient`` picks one.

A new method is one module with a frozen config class implementing ``GradientMethod``, plus
one line in ``GRADIENTS``.
"""

from __future__ import annotations

from cvxlpgd.gradients.adaptive import AdaptiveLPGD
from cvxlpgd.gradients.base import GradientMethod
from cvxlpgd.gradients.implicit import Implicit
from cvxlpgd.gradients.lpgd import LPGD

# The shorthand strings a user may pass as ``gradient=``, each for its method's defaults:
# "lpgd" is the scale-free default; an explicit LPGD(tau, rho, side) is the fixed-step formula.
GRADIENTS: dict[str, type] = {"lpgd": AdaptiveLPGD, "implicit": Implicit}


def lookup_gradient(gradient: object) -> GradientMethod:
    """A method object as is; a shorthand string (any case) as its method's defaults."""
    if isinstance(gradient, str) and gradient.lower() in GRADIENTS:
        return GRADIENTS[gradient.lower()]()
    if not isinstance(gradient, str) and isinstance(gradient, GradientMethod):
        return gradient
    names = ", ".join(repr(name) for name in GRADIENTS)
    raise ValueError(
        f"gradient must be one of {names} or a method object such as LPGD(...) or Implicit(...), "
        f"got {gradient!r}."
    )


__all__ = ["GRADIENTS", "AdaptiveLPGD", "GradientMethod", "Implicit", "LPGD", "lookup_gradient"]
