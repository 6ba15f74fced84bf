"""Built-in backends whose solver package is an optional dependency (``"GUROBI"``: gurobipy):
registered only where the package is installed, so that cvxlpgd works without it, and asking for
one that is missing says what to install."""

from __future__ import annotations


def optional_solvers() -> dict[str, type]:
    """The optional backends whose package imports, by name."""
    try:
        import gurobipy  # noqa: F401
    except ImportError:
        return {}
    from cvxlpgd.solvers.gurobi import GurobiSolver

    return {"GUROBI": GurobiSolver}


def check_installed(solver: object) -> None:
    """An ImportError naming what to install when ``solver`` names an optional backend whose package
    is missing; any other name is left to the caller."""
    if isinstance(solver, str) and solver.upper() == "GUROBI" and not optional_solvers():
        raise ImportError(
            f"solver={solver!r} needs gurobipy, which is not installed: pip install gurobipy "
            "(or pip install 'cvxlpgd[gurobi]'), or use solver='HIGHS'."
        )
