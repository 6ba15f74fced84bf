"""The CVXPY side: canonicalize a problem once and build its maps (the types live in program.py).

``compile_problem`` canonicalizes a DPP problem with CVXPY and turns its parametrized cone
program into the pieces that the layer applies to a whole batch at once. Products of a large
parameter matrix with a variable bypass CVXPY's parameter tensor: ``matrix_products`` replaces
them by variables before CVXPY sees the problem, and their entries are placed into ``A`` here.


* ``ProblemMaps``: parameters -> conic data (values of ``P``, ``A`` on fixed sparsity
  patterns, and ``b``, ``c``), an affine map, and its adjoint for the backward pass;
* ``Recovery``: conic solution ``(x, y)`` -> requested variables and dual variables, a linear
  map, and its adjoint;
* the ``ConeStructure`` shared by every item (cone sizes and sparsity patterns).

No CVXPY work happens after compilation.
"""

from __future__ import annotations

import contextlib
import importlib.util
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import scipy.sparse as sp
from cvxpy.atoms.affine.upper_tri import upper_tri_to_full
from cvxpy.constraints import PSD, SOC, ExpCone, PowCone3D
from cvxpy.reductions.solvers.solving_chain_utils import get_canon_backend
from cvxpy.utilities import scopes
from cvxpy.utilities.psd_utils import tri_to_full

from cvxlpgd import matrix_products
from cvxlpgd.cone import ConeDims, Integrality
from cvxlpgd.integrality import check_mixed_integer_data, integrality, problem_data
from cvxlpgd.matrix_products import MatrixProduct
from cvxlpgd.program import (
    AffineMap,
    CompiledProblem,
    ConeStructure,
    ConicForm,
    ProblemMaps,
    Recovery,
    SparsePattern,
)

try:  # cvxpy >= 1.9 hands PSD constraints to Clarabel as SvecPSD cones (a scaled triangle)
    from cvxpy.constraints.psd import SvecPSD

    _PSD_CONES: tuple[type, ...] = (PSD, SvecPSD)
except ImportError:  # cvxpy < 1.9: PSD only
    _PSD_CONES = (PSD,)

_SYMMETRIC_ATTRIBUTES = ("symmetric", "PSD", "NSD")

# CVXPY's canonicalization backends are the values of its settings named *_CANON_BACKEND.
_CANON_BACKENDS = frozenset(
    getattr(cp.settings, name)
    for name in dir(cp.settings)
    if name.endswith("_CANON_BACKEND") and name != "DEFAULT_CANON_BACKEND"
)
# Backends that live in a package of their own, which CVXPY imports only when asked for them.
_CANON_BACKEND_PACKAGES = {"RUST": "cvxpy_rust"}


def _c_to_f_permutation(shape: tuple[int, ...]) -> np.ndarray:
    """Index into the C-order flattening for each position of the F-order flattening."""
    return np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape).flatten(order="F")


def _parameter_lowering(param: cp.Parameter, lowered_size: int) -> sp.csr_array:
    """Sparse map: the C-order flat value a user passes -> CVXPY's internal parameter vector."""
    size = param.size
    if lowered_size == size:  # stored as is (also a 1 x 1 symmetric parameter)
        perm = _c_to_f_permutation(param.shape)
        return sp.csr_array((np.ones(size), (np.arange(size), perm)), shape=(size, size))
    n = param.shape[-1]
    if any(param.attributes.get(a) for a in _SYMMETRIC_ATTRIBUTES):
        # CVXPY keeps the upper triangle; use the symmetric part so gradients are symmetric.
        rows, cols = np.triu_indices(n)
        k = np.arange(rows.size)
        upper, lower = rows * n + cols, cols * n + rows
        return sp.csr_array(
            (np.full(2 * k.size, 0.5), (np.concatenate([k, k]), np.concatenate([upper, lower]))),
            shape=(k.size, size),
        )
    if param.attributes.get("diag"):
        k = np.arange(n)
        return sp.csr_array((np.ones(n), (k, k * n + k)), shape=(n, size))
    raise NotImplementedError(
        f"Parameter {param.name()!r} has an attribute that changes its stored size "
        f"({[a for a, v in param.attributes.items() if v is True]}); cvxlpgd supports "
        "symmetric, PSD, NSD and diag parameters among those."
    )


def _lifting(param_prob, param_id_map: dict[int, int], user_params) -> sp.csr_array:
    """(p_cvxpy, p_user) map from the stacked C-order user parameters to CVXPY's vector."""
    data, rows, cols = [], [], []
    col = 0
    for p in user_params:
        cvx_id = param_id_map.get(p.id, p.id)
        if cvx_id in param_prob.param_id_to_col:  # else the parameter was eliminated
            start = param_prob.param_id_to_col[cvx_id]
            lowered = _parameter_lowering(p, param_prob.param_id_to_size[cvx_id]).tocoo()
            data.append(lowered.data)
            rows.append(lowered.row + start)
            cols.append(lowered.col + col)
        col += p.size
    if not data:
        return sp.csr_array((param_prob.total_param_size, col))
    return sp.csr_array(
        (np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))),
        shape=(param_prob.total_param_size, col),
    )


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` of integers by one sort (numpy 2's hashing ``unique`` takes ~10x longer on
    the millions of positions of a large parameter matrix)."""
    ordered = np.sort(values)
    if ordered.size == 0:
        return ordered
    return ordered[np.concatenate([[True], ordered[1:] != ordered[:-1]])]


@dataclass(frozen=True)
class _TallTensor:
    """A CVXPY data tensor: one row per entry of a flattened matrix (m (n + 1) rows for A: too
    many for a CSR row pointer at scale), one column per parameter entry plus a constant.
    Kept as COO triplets; rows are picked by binary search, so memory grows with nnz."""

    row: np.ndarray
    col: np.ndarray
    data: np.ndarray
    ncols: int

    @classmethod
    def of(cls, tensor) -> _TallTensor:
        coo = sp.coo_array(tensor)
        keep = coo.data != 0
        row, col = coo.row[keep].astype(np.int64), coo.col[keep].astype(np.int64)
        return cls(row, col, coo.data[keep], coo.shape[1])

    def nonzero_rows(self) -> np.ndarray:
        return _sorted_unique(self.row)

    def rows(self, selected: np.ndarray) -> sp.csr_array:
        """Rows ``selected`` (unique, any order) as a (len(selected), ncols) matrix."""
        order = np.argsort(selected)
        ordered = selected[order]
        if ordered.size == 0:
            return sp.csr_array((0, self.ncols))
        position = np.minimum(np.searchsorted(ordered, self.row), ordered.size - 1)
        hit = ordered[position] == self.row
        return sp.csr_array(
            (self.data[hit], (order[position[hit]], self.col[hit])), shape=(selected.size, self.ncols)
        )


def _affine_from_tensor(tensor: _TallTensor, rows: np.ndarray, lift: sp.csr_array) -> AffineMap:
    """Rows ``rows`` of a CVXPY data tensor (last column = constant) as a map on user params."""
    picked = tensor.rows(rows)
    matrix = sp.csr_array(picked[:, :-1] @ lift)
    matrix.eliminate_zeros()
    offset = np.asarray(picked[:, [-1]].todense()).ravel()
    return AffineMap(matrix, offset)


def _scale(amap: AffineMap, factor: float) -> AffineMap:
    return AffineMap(sp.csr_array(amap.matrix * factor), amap.offset * factor)


@dataclass(frozen=True)
class _PlacedEntries:
    """Entries of CVXPY's ``A`` (its sign) that come straight from the user parameters, not
    through CVXPY's tensor: ``A_cvx[position] += coefficient * theta[column]``."""

    positions: np.ndarray  # column-major flat positions in (m, n)
    columns: np.ndarray  # index into the stacked C-order user parameters
    coefficients: np.ndarray

    @classmethod
    def of(
        cls, products: tuple[MatrixProduct, ...], param_prob, chain, parameters, A_tensor: _TallTensor, m: int
    ) -> _PlacedEntries:
        """``-M`` into each product's placeholder rows at its operand's columns, scaled by the
        sign CVXPY gave the output variable there, so that the rows read ``output = M operand``."""
        var_id_map = {k: v[0] for k, v in chain.compose_var_id_map().items()}
        constr_id_map = chain.compose_constr_id_map()
        offsets = _cone_offsets(param_prob)
        starts = np.cumsum([0] + [p.size for p in parameters[:-1]])
        first_column = {p.id: int(start) for p, start in zip(parameters, starts, strict=True)}
        positions, columns, coefficients = [], [], []
        for product in products:
            start = offsets[constr_id_map.get(product.placeholder.id, product.placeholder.id)][0]
            rows = start + np.arange(product.output.size)
            output_col = param_prob.var_id_to_col[var_id_map.get(product.output.id, product.output.id)]
            operand_col = param_prob.var_id_to_col[var_id_map.get(product.operand.id, product.operand.id)]
            output_positions = (output_col + np.arange(product.output.size)) * m + rows
            sign = A_tensor.rows(output_positions)[:, [-1]].toarray().ravel()
            operand_cols = operand_col + np.arange(product.operand.size)
            positions.append((operand_cols[None, :] * m + rows[:, None]).ravel())
            columns.append(first_column[product.parameter.id] + product.entries.ravel())
            coefficients.append(np.repeat(-sign, product.operand.size))
        return cls(np.concatenate(positions), np.concatenate(columns), np.concatenate(coefficients))

    def added_to(self, amap: AffineMap, rows: np.ndarray, positions: np.ndarray) -> AffineMap:
        """``amap`` (over the sorted ``rows``) plus these entries, over the sorted union ``positions``."""
        coo = amap.matrix.tocoo()
        at = np.searchsorted(positions, rows)
        matrix = sp.csr_array(
            (
                np.concatenate([coo.data, self.coefficients]),
                (
                    np.concatenate([at[coo.row], np.searchsorted(positions, self.positions)]),
                    np.concatenate([coo.col, self.columns]),
                ),
            ),
            shape=(positions.size, amap.matrix.shape[1]),
        )
        offset = np.zeros(positions.size)
        offset[at] = amap.offset
        return AffineMap(matrix, offset)


def _structure_and_maps(
    param_prob,
    A_tensor: _TallTensor,
    dims: ConeDims,
    lift: sp.csr_array,
    integer: Integrality | None,
    placed: _PlacedEntries | None,
) -> ProblemMaps:
    """The conic maps from CVXPY's tensors, plus the entries ``placed`` directly (if any)."""
    n = param_prob.x.size
    m = dims.size
    nonzero_rows = A_tensor.nonzero_rows()
    in_A = nonzero_rows < m * n  # column-major positions of [A | b]; column n holds b
    # CVXPY's form is  A_cvx x + b_cvx in K, so SCS's is  (-A_cvx) x + s = b_cvx.
    A_cvx = _affine_from_tensor(A_tensor, nonzero_rows[in_A], lift)
    if placed is None:
        positions = nonzero_rows[in_A]
    else:
        positions = _sorted_unique(np.concatenate([nonzero_rows[in_A], placed.positions]))
        A_cvx = placed.added_to(A_cvx, nonzero_rows[in_A], positions)
    A_pattern = SparsePattern.from_flat_positions(positions, (m, n))
    A_map = _scale(A_cvx, -1.0)
    b_map = _affine_from_tensor(A_tensor, m * n + np.arange(m), lift)
    c_map = _affine_from_tensor(_TallTensor.of(param_prob.q), np.arange(n), lift)

    P_pattern, P_map = None, None
    if param_prob.P is not None:
        P_tensor = _TallTensor.of(param_prob.P)
        flat = P_tensor.nonzero_rows()
        i, j = flat % n, flat // n
        upper = np.unique(np.minimum(i, j) + n * np.maximum(i, j))
        if upper.size:
            ui, uj = upper % n, upper // n
            # Symmetric part of P, upper triangle: (P_ij + P_ji) / 2.
            sym = _affine_from_tensor(P_tensor, upper, lift)
            mirror = _affine_from_tensor(P_tensor, uj + n * ui, lift)
            P_map = AffineMap(
                sp.csr_array((sym.matrix + mirror.matrix) * 0.5), (sym.offset + mirror.offset) * 0.5
            )
            P_pattern = SparsePattern.from_flat_positions(upper, (n, n))
    structure = ConeStructure(dims=dims, A=A_pattern, P=P_pattern, integrality=integer)
    return ProblemMaps(structure=structure, A=A_map, b=b_map, c=c_map, P=P_map)


def _primal_rows(var: cp.Variable, start: int, stored_size: int) -> sp.csr_array:
    """Rows of the recovery matrix (over x only) for a primal variable, in C order."""
    if var.attributes.get("diag"):
        n = var.shape[0]
        full_f = sp.csr_array((np.ones(n), (np.arange(n) * (n + 1), np.arange(n))), shape=(n * n, n))
    elif stored_size != var.size:
        full_f = sp.csr_array(upper_tri_to_full(var.shape[-1]))
    else:
        full_f = sp.identity(var.size, format="csr")
    # F-order rows -> C-order rows.
    c_rows = full_f[np.argsort(_c_to_f_permutation(var.shape))]
    return sp.hstack([sp.csr_array((var.size, start)), c_rows]).tocsr()


def _dual_rows(dual_var, constraint, cone_constraint, offset: int, psd_triangle, psd_sqrt2) -> sp.csr_array:
    """Rows of the recovery matrix (over y only) for a dual variable, in C order.

    The map from the conic dual slice to CVXPY's dual value is read off CVXPY itself: index
    labels are pushed through the constraint's own ``save_dual_value`` (restored afterwards).
    """
    size = cone_constraint.size
    if isinstance(cone_constraint, _PSD_CONES):
        side = constraint.shape[-1]
        basis = np.eye(size)
        cols = np.stack(
            [tri_to_full(basis[k], side, psd_triangle, psd_sqrt2).ravel() for k in range(size)], axis=1
        )
        block = sp.csr_array(cols)
        return sp.hstack([sp.csr_array((block.shape[0], offset)), block]).tocsr()
    labels = np.arange(1, size + 1, dtype=float)
    if isinstance(constraint, (SOC, ExpCone, PowCone3D)):
        value = labels
    elif constraint.shape == ():
        value = labels[0]
    else:
        value = labels.reshape(constraint.shape, order="F")
    saved = [dv.value for dv in constraint.dual_variables]
    try:
        constraint.save_dual_value(value)
        picked = np.asarray(dual_var.value, dtype=float).ravel(order="C")
    finally:
        for dv, old in zip(constraint.dual_variables, saved, strict=True):
            dv.save_value(old)
    source = picked.astype(np.int64) - 1
    k = source.size
    return sp.csr_array((np.ones(k), (np.arange(k), offset + source)), shape=(k, offset + size))


def _cone_offsets(param_prob) -> dict[int, tuple[int, object]]:
    """Row offset in ``A`` (and ``y``) of each cone constraint, by constraint id."""
    offsets, row = {}, 0
    for con in param_prob.constraints:
        offsets[con.id] = (row, con)
        row += con.size
    return offsets


def _recovery(problem, variables, param_prob, chain, n: int, m: int) -> Recovery:
    var_id_map = {k: v[0] for k, v in chain.compose_var_id_map().items()}
    constr_id_map = chain.compose_constr_id_map()
    dual_owner = {dv.id: con for con in problem.constraints for dv in con.dual_variables}
    offsets = _cone_offsets(param_prob)
    context = next(
        (
            r.solver_context
            for r in chain.reductions
            if getattr(r, "solver_context", None) is not None
            and hasattr(r.solver_context, "psd_triangle_kind")
        ),
        None,
    )
    blocks, shapes = [], []
    for var in variables:
        if var.id in dual_owner:
            con = dual_owner[var.id]
            start, cone_con = offsets[constr_id_map.get(con.id, con.id)]
            rows = _dual_rows(
                var,
                con,
                cone_con,
                start,
                getattr(context, "psd_triangle_kind", None),
                getattr(context, "psd_sqrt2_scaling", True),
            )
            rows.resize((rows.shape[0], m))
            blocks.append(sp.hstack([sp.csr_array((rows.shape[0], n)), rows]))
        else:
            cvx_id = var_id_map.get(var.id, var.id)
            start = param_prob.var_id_to_col[cvx_id]
            stored = param_prob.id_to_var[cvx_id].size
            rows = _primal_rows(var, start, stored)
            rows.resize((rows.shape[0], n))
            blocks.append(sp.hstack([rows, sp.csr_array((rows.shape[0], m))]))
        shapes.append(tuple(var.shape))
    return Recovery(matrix=sp.vstack(blocks).tocsr(), shapes=tuple(shapes), n=n)


def _check_canon_backend(problem: cp.Problem, canon_backend: str | None) -> None:
    """Refuse, before canonicalizing, a backend CVXPY does not know, cannot import, or cannot use
    for this problem (its own rule, ``get_canon_backend``), naming the backend and the remedy."""
    if canon_backend is None:
        return
    remedy = "pass canon_backend=None and CVXPY picks one that fits the problem"
    if canon_backend not in _CANON_BACKENDS:
        raise ValueError(
            f"canon_backend={canon_backend!r} is not a CVXPY canonicalization backend (CVXPY "
            f"{cp.__version__} has {sorted(_CANON_BACKENDS)}); {remedy}."
        )
    package = _CANON_BACKEND_PACKAGES.get(canon_backend)
    if package is not None and importlib.util.find_spec(package) is None:
        raise ValueError(
            f"canon_backend={canon_backend!r} needs the package {package!r}, which is not installed; "
            f"install it, or {remedy}."
        )
    try:
        get_canon_backend(problem, canon_backend)
    except ValueError as error:  # the only error CVXPY's rule raises: this backend cannot
        raise ValueError(
            f"canon_backend={canon_backend!r} cannot canonicalize this problem ({error}); {remedy}."
        ) from error


def compile_problem(
    problem: cp.Problem,
    parameters: list[cp.Parameter],
    variables: list[cp.Variable],
    form: ConicForm,
    canon_backend: str | None = None,
) -> CompiledProblem:
    """Canonicalize ``problem`` once in the conic ``form`` a gradient method asks for, with
    CVXPY's ``canon_backend`` (None: CVXPY's default).

    The caller has validated DPP and membership of parameters and variables.
    """
    _check_canon_backend(problem, canon_backend)
    rewritten = matrix_products.rewrite(problem, matrix_products.MIN_ENTRIES)
    scope = scopes.quad_form_dpp_scope() if form.quad_obj else contextlib.nullcontext()
    with scope:
        data, chain = problem_data(rewritten.problem, form, {"use_quad_obj": form.quad_obj}, canon_backend)
    param_prob = data[cp.settings.PARAM_PROB]
    dims = ConeDims.from_cvxpy(data["dims"])
    param_id_map = {k: v[0] for k, v in chain.compose_param_id_map().items()}
    lift = _lifting(param_prob, param_id_map, parameters)
    integer = integrality(data, param_prob.x.size)
    A_tensor = _TallTensor.of(param_prob.A)
    placed = (
        _PlacedEntries.of(rewritten.products, param_prob, chain, parameters, A_tensor, dims.size)
        if rewritten.products
        else None
    )
    maps = _structure_and_maps(param_prob, A_tensor, dims, lift, integer, placed)
    if integer is not None:
        check_mixed_integer_data(maps.A.constant and maps.b.constant, quadratic=maps.P is not None)
    recovery = _recovery(problem, variables, param_prob, chain, maps.structure.n, maps.structure.m)
    return CompiledProblem(maps=maps, recovery=recovery)
