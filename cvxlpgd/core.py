"""What every front end (PyTorch's ``CvxpyLayer``, JAX's) shares, in numpy: the problem checked
and compiled once per conic form, the layer's options, and each call's chain of stages.

A front end checks its own array type, converts to float64 numpy, and runs ``LayerCore.call``'s
chain forward and, in its backward, in reverse (pipeline.py lists the stages).
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, replace

import cvxpy as cp
import numpy as np

from cvxlpgd.compile import compile_problem
from cvxlpgd.cone import Solution
from cvxlpgd.dgp import LogLogForm
from cvxlpgd.errors import PickleWarning, warn_at_caller
from cvxlpgd.gradients import GradientMethod, lookup_gradient
from cvxlpgd.options import Options
from cvxlpgd.parameter_values import Flatten, Unbatch, check_values
from cvxlpgd.pipeline import Chain, ConicData, Recover, Solve
from cvxlpgd.problem_checks import check_problem
from cvxlpgd.program import CompiledProblem, ConicForm
from cvxlpgd.solvers import ConeSolver


class LayerCore:
    """A problem ready to be solved and differentiated for batches of parameter values.

    ``parameters`` and ``variables`` are the compiled problem's (for ``gp=True``, the log-log
    DCP problem's); ``user_parameters`` are those the caller passes values for."""

    def __init__(
        self,
        problem: cp.Problem,
        parameters: Sequence[cp.Parameter],
        variables: Sequence[cp.Variable],
        options: Options,
        gp: bool = False,
        canon_backend: str | None = None,
    ) -> None:
        self.options = options
        self.dgp = LogLogForm(problem, parameters, variables) if gp else None
        if self.dgp is not None:
            problem, parameters, variables = self.dgp.problem, self.dgp.parameters, self.dgp.variables
        self._backend = backend = options.backend()  # validates the settings
        form = options.gradient.conic_form(backend)
        self.parameters, self.variables = check_problem(
            problem, parameters, variables, allow_param_quad_form=form.quad_obj, backend=backend
        )
        self.user_parameters = self.parameters if self.dgp is None else self.dgp.user_parameters
        self.problem, self.canon_backend = problem, canon_backend
        # Checked just above for this form; other forms are checked when first compiled.
        compiled = compile_problem(problem, self.parameters, self.variables, form, canon_backend)
        self._compiled = {form: compiled}
        # The parameter of each entry of theta, for messages.
        self.entry_names = tuple(name for p in self.parameters for name in [p.name()] * p.size)
        self._warm_starts: dict[ConicForm, list[Solution]] = {}
        self.last_statuses: list[str] = []  # per item of the last call: the normalized status
        self.last_iterations: list[int] = []  # and the solver's iteration count

    def compiled(self, gradient: GradientMethod | str | None = None) -> CompiledProblem:
        """The conic maps used with the layer's (or the given) gradient method."""
        method = self.options.gradient if gradient is None else lookup_gradient(gradient)
        backend = self.backend(self.options)
        return self._compiled_for(method.conic_form(backend), backend)

    def backend(self, options: Options) -> ConeSolver:
        """The solver backend for ``options``: the one built (and checked) with the layer, unless
        a call changes the solver or its settings."""
        unchanged = options.solver is self.options.solver and options.settings == self.options.settings
        return self._backend if unchanged else options.backend()

    def _compiled_for(self, form: ConicForm, backend: ConeSolver) -> CompiledProblem:
        """The problem compiled in the conic form a gradient method needs; built on first use."""
        if form not in self._compiled:
            check_problem(self.problem, self.parameters, self.variables, form.quad_obj, backend)
            self._compiled[form] = compile_problem(
                self.problem, self.parameters, self.variables, form, self.canon_backend
            )
        return self._compiled[form]

    def call(self, options: Options, differentiable: bool, warm_start: bool) -> Call:
        """One call with ``options`` (the layer's, updated by the call's arguments);
        ``differentiable``: a backward may follow."""
        backend = self.backend(options)
        form = options.gradient.conic_form(backend)
        solve = Solve(
            solver=backend,
            method=options.gradient,
            on_failure=options.on_failure,
            executor=options.forward_executor(),
            backward_executor=options.backward_executor(),
            chunks=options.chunks,
            differentiable=differentiable,
            warm_starts=self._warm_starts.get(form) if warm_start else None,
        )
        return Call(self, self._compiled_for(form, backend), solve, form, warm_start)

    def finish(self, call: Call) -> None:
        """Keep what the call leaves for the user (statuses) and for the next call (warm starts),
        also when it raised."""
        solutions = call.solve.solutions
        self.last_statuses = [s.status for s in solutions]
        self.last_iterations = [s.iterations for s in solutions]
        if call.warm_start:
            self._warm_starts[call.form] = solutions

    def __getstate__(self) -> dict:
        """Without the warm starts (a cache of the last call), and without an executor that does
        not pickle (a thread pool does not): the loaded layer then uses the default pool."""
        state = {**self.__dict__, "_warm_starts": {}}
        executor = self.options.executor
        if executor is not None and not _pickles(executor):
            warn_at_caller(
                PickleWarning(
                    f"The layer's executor ({type(executor).__name__}) cannot be pickled, so the "
                    "pickled layer has none and will run on cvxlpgd's default thread pool. After "
                    "loading, set layer.executor = ... to give it one again."
                )
            )
            state["options"] = replace(self.options, executor=None)
        return state

    def __deepcopy__(self, memo: dict) -> LayerCore:
        """A copy that shares the executor (a pool of workers is a resource, not a value to
        copy) and starts without warm starts."""
        if self.options.executor is not None:
            memo[id(self.options.executor)] = self.options.executor
        clone = object.__new__(LayerCore)
        memo[id(self)] = clone
        for key, value in self.__dict__.items():
            clone.__dict__[key] = {} if key == "_warm_starts" else copy.deepcopy(value, memo)
        return clone


@dataclass
class Call:
    """One call of a layer: the values checked against the user's parameters, then the chain of
    stages of pipeline.py, forward; the backward runs it in reverse."""

    core: LayerCore
    compiled: CompiledProblem
    solve: Solve
    form: ConicForm
    warm_start: bool
    chain: Chain | None = None

    def forward(self, values: Sequence[np.ndarray]) -> list[np.ndarray]:
        """float64 values, one per user parameter -> one array per requested output."""
        dgp = self.core.dgp
        batching = check_values(
            values, self.core.user_parameters, positive=frozenset() if dgp is None else dgp.log_indices
        )
        log, exp = (None, None) if dgp is None else dgp.stages()
        flattened = batching if dgp is None else dgp.dcp_batching(batching)
        stages = [
            log,
            Flatten(flattened),
            ConicData(self.compiled.maps, self.core.entry_names),
            self.solve,
            Recover(self.compiled.recovery),
            exp,
            Unbatch(batching.batched),
        ]
        self.chain = Chain([stage for stage in stages if stage is not None])
        return self.chain.forward(list(values))

    def backward(self, output_grads: Sequence[np.ndarray]) -> list[np.ndarray]:
        """float64 gradients, one per output -> one per user parameter (its shape)."""
        return self.chain.backward(list(output_grads))


def _pickles(value: object) -> bool:
    try:
        pickle.dumps(value)
    except Exception:
        return False
    return True
