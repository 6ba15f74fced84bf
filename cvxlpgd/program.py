"""The runtime data of a compiled layer: linear maps and the conic data of a batch.

Everything here is plain numpy/scipy and pickles, so a chunk of a batch can be shipped to another
worker. Every linear map names its forward ``apply`` and its transpose ``adjoint``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from cvxlpgd.cone import ConeDims, ConeProgram, Integrality


@dataclass(frozen=True)
class ConicForm:
    """Which conic data a gradient method needs: CVXPY's conventions for ``canon_solver`` (a
    mixed-integer problem: HiGHS's), whether a quadratic objective stays a matrix ``P`` (else
    CVXPY rewrites it as a cone), and the cones the solver ``solver`` accepts (None: all)."""

    canon_solver: str
    quad_obj: bool
    cones: frozenset[str] | None = None
    solver: str = ""


@dataclass(frozen=True)
class SparsePattern:
    """A fixed CSC sparsity pattern; values for it are vectors in CSC order."""

    indices: np.ndarray  # row of each stored entry
    indptr: np.ndarray
    shape: tuple[int, int]

    @property
    def nnz(self) -> int:
        return int(self.indices.size)

    @cached_property
    def columns(self) -> np.ndarray:
        """Column of each stored entry."""
        return np.repeat(np.arange(self.shape[1]), np.diff(self.indptr))

    def matrix(self, values: np.ndarray) -> sp.csc_array:
        return sp.csc_array((values, self.indices, self.indptr), shape=self.shape)

    @classmethod
    def from_flat_positions(cls, flat: np.ndarray, shape: tuple[int, int]) -> SparsePattern:
        """Pattern of the entries at sorted column-major positions ``flat``."""
        rows, cols = flat % shape[0], flat // shape[0]
        indptr = np.zeros(shape[1] + 1, dtype=np.int64)
        np.add.at(indptr, cols + 1, 1)
        return cls(rows.astype(np.int64), np.cumsum(indptr), shape)


@dataclass(frozen=True)
class AffineMap:
    """``values = theta @ matrix.T + offset`` for a batch ``theta`` of shape (B, p)."""

    matrix: sp.csr_array  # (k, p)
    offset: np.ndarray  # (k,)

    @cached_property
    def constant(self) -> bool:
        """True when no parameter enters: every item shares ``offset`` (asked on every call)."""
        return self.matrix.nnz == 0

    def apply(self, theta: np.ndarray) -> np.ndarray:
        """(B, p) -> (B, k), or (1, k) when constant."""
        if self.constant:
            return self.offset[None, :]
        return (self.matrix @ theta.T).T + self.offset

    def adjoint(self, grad: np.ndarray) -> np.ndarray:
        """(B, k) -> (B, p): the transpose of ``apply`` without its offset."""
        return (self._transposed @ grad.T).T

    @cached_property
    def _transposed(self) -> sp.csr_array:
        """Built once, not on every backward."""
        return sp.csr_array(self.matrix.T)


@dataclass(frozen=True)
class ConeStructure:
    """What every item of a batch shares: cone sizes and sparsity patterns."""

    dims: ConeDims
    A: SparsePattern
    P: SparsePattern | None  # upper triangle
    integrality: Integrality | None = None  # only for mixed-integer problems

    @property
    def n(self) -> int:
        return self.A.shape[1]

    @property
    def m(self) -> int:
        return self.A.shape[0]


class Block(str, Enum):
    """A block of conic data, named as ``DataGradient`` and ``ProblemMaps`` name their fields.
    A ``str`` enum, so a block compares and hashes as its field name."""

    A = "A"
    b = "b"
    c = "c"
    P = "P"


BLOCKS = tuple(Block)


@dataclass(frozen=True)
class DataGradient:
    """Gradient w.r.t. the conic data values (on the fixed sparsity patterns), for one item
    (1-D arrays) or stacked for a batch (2-D arrays). A block is ``None`` when no parameter
    enters it (its gradient would only be multiplied by zero) or the problem has none (``P``)."""

    A: np.ndarray | None
    b: np.ndarray | None
    c: np.ndarray | None
    P: np.ndarray | None

    def restricted(self, blocks: frozenset[Block]) -> DataGradient:
        """Only the given blocks: what the parameter gradients need, and what a worker in
        another process has to send back."""
        return DataGradient(**{b.value: getattr(self, b.value) if b in blocks else None for b in BLOCKS})

    def merged(self, other: DataGradient, take: frozenset[Block]) -> DataGradient:
        """This gradient with the blocks ``take`` replaced by ``other``'s."""
        return DataGradient(**{b.value: getattr(other if b in take else self, b.value) for b in BLOCKS})

    def scaled_difference(self, other: DataGradient, scale: float) -> DataGradient:
        """``(self - other) * scale``, block by block (``None`` stays ``None``)."""
        return DataGradient(
            **{
                b.value: None if getattr(self, b.value) is None
                else (getattr(self, b.value) - getattr(other, b.value)) * scale
                for b in BLOCKS
            }
        )

    @classmethod
    def zeros(cls, structure: ConeStructure) -> DataGradient:
        """The zero gradient of one item."""
        s = structure
        P = None if s.P is None else np.zeros(s.P.nnz)
        return cls(A=np.zeros(s.A.nnz), b=np.zeros(s.m), c=np.zeros(s.n), P=P)

    @classmethod
    def stack(
        cls, grads: list[DataGradient | None], structure: ConeStructure, blocks: frozenset[Block]
    ) -> DataGradient:
        """Stack per-item gradients of ``blocks`` into (B, .) arrays; items without one (None)
        get zeros, blocks not listed are ``None``."""
        zero = cls.zeros(structure)
        stacked = {}
        for block in BLOCKS:
            name = block.value
            if block not in blocks or getattr(zero, name) is None:
                stacked[name] = None
                continue
            stacked[name] = np.stack([getattr(zero if g is None else g, name) for g in grads])
        return cls(**stacked)


@dataclass
class ProgramBatch:
    """Conic data of a batch; a leading dimension of 1 means shared by all items."""

    structure: ConeStructure
    A_values: np.ndarray  # (B or 1, nnz_A)
    b: np.ndarray  # (B or 1, m)
    c: np.ndarray  # (B or 1, n)
    P_values: np.ndarray | None  # (B or 1, nnz_P)
    batch_size: int
    shared_matrices: bool  # no parameter enters A or P: every item has the same matrices
    parametrized: frozenset[Block] = frozenset()  # the data blocks that parameters enter
    # Those shared matrices where the maps built them already (once per layer, not per call).
    matrices: tuple[sp.csc_array, sp.csc_array | None] | None = None

    def values(self, block: Block) -> np.ndarray | None:
        """The (B or 1, k) values of one block of conic data (None: a problem without ``P``)."""
        return getattr(self, _VALUE_FIELDS[block])

    def item(self, i: int) -> ConeProgram:
        A, P = self._shared_matrices if self.shared_matrices else self._matrices(i)
        return ConeProgram(
            A=A,
            b=_row(self.b, i),
            c=_row(self.c, i),
            dims=self.structure.dims,
            P=P,
            integrality=self.structure.integrality,
        )

    def slice(self, start: int, stop: int) -> ProgramBatch:
        """Items ``start:stop``: the data one chunk of work needs, and nothing more."""

        def part(values: np.ndarray | None) -> np.ndarray | None:
            return values if values is None or values.shape[0] == 1 else values[start:stop]

        return ProgramBatch(
            structure=self.structure,
            A_values=part(self.A_values),
            b=part(self.b),
            c=part(self.c),
            P_values=part(self.P_values),
            batch_size=stop - start,
            shared_matrices=self.shared_matrices,
            parametrized=self.parametrized,
            matrices=self.matrices,
        )

    def _matrices(self, i: int) -> tuple[sp.csc_array, sp.csc_array | None]:
        s = self.structure
        A = s.A.matrix(_row(self.A_values, i))
        P = None if s.P is None else s.P.matrix(_row(self.P_values, i))
        return A, P

    @cached_property
    def _shared_matrices(self) -> tuple[sp.csc_array, sp.csc_array | None]:
        """Built once when every item has the same A and P (unless the maps built them)."""
        return self._matrices(0) if self.matrices is None else self.matrices


_VALUE_FIELDS = {Block.A: "A_values", Block.b: "b", Block.c: "c", Block.P: "P_values"}


def _row(values: np.ndarray, i: int) -> np.ndarray:
    """Item ``i``'s row of a (B, k) or shared (1, k) array."""
    return values[min(i, values.shape[0] - 1)]


@dataclass(frozen=True)
class ProblemMaps:
    """Affine maps from the flat user parameters to the conic data."""

    structure: ConeStructure
    A: AffineMap
    b: AffineMap
    c: AffineMap
    P: AffineMap | None

    def apply(self, theta: np.ndarray) -> ProgramBatch:
        shared = self.A.constant and (self.P is None or self.P.constant)
        return ProgramBatch(
            structure=self.structure,
            A_values=self.A.apply(theta),
            b=self.b.apply(theta),
            c=self.c.apply(theta),
            P_values=None if self.P is None else self.P.apply(theta),
            batch_size=theta.shape[0],
            shared_matrices=shared,
            parametrized=self.varying,
            matrices=self._constant_matrices if shared else None,
        )

    @cached_property
    def _constant_matrices(self) -> tuple[sp.csc_array, sp.csc_array | None]:
        """A and P where no parameter enters them: the same in every call, so built once (read
        only, like every item's matrices: the solvers copy what they change)."""
        A = self.structure.A.matrix(self.A.offset)
        P = None if self.structure.P is None else self.structure.P.matrix(self.P.offset)
        return A, P

    @cached_property
    def varying(self) -> frozenset[Block]:
        """The blocks of conic data that some parameter enters: the only ones whose gradient
        reaches the parameters."""
        return frozenset(
            b for b in BLOCKS if getattr(self, b.value) is not None and not getattr(self, b.value).constant
        )

    def adjoint(self, grad: DataGradient, batch_size: int | None = None) -> np.ndarray:
        """Gradients w.r.t. the conic data of a batch (stacked) -> (B, p) w.r.t. the parameters;
        blocks that are ``None`` contribute nothing (``batch_size`` is needed only if all are)."""
        terms = [
            affine.adjoint(values)
            for values, affine in ((getattr(grad, b.value), getattr(self, b.value)) for b in BLOCKS)
            if values is not None and affine is not None
        ]
        if not terms:
            return np.zeros((batch_size, self.c.matrix.shape[1]))
        return sum(terms[1:], terms[0])


@dataclass(frozen=True)
class Recovery:
    """Linear map from a conic solution ``z = (x, y)`` to the requested outputs."""

    matrix: sp.csr_array  # (sum of output sizes, n + m)
    shapes: tuple[tuple[int, ...], ...]
    n: int

    def apply(self, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
        """(B, n), (B, m) -> one (B, *shape) array per requested output (C order)."""
        flat = (self.matrix @ np.hstack([x, y]).T).T
        batch = x.shape[0]
        return [
            flat[:, start:stop].reshape((batch, *shape))
            for (start, stop), shape in zip(self._columns, self.shapes, strict=True)
        ]

    @cached_property
    def _columns(self) -> list[tuple[int, int]]:
        """Each output's range of columns in the flat outputs (the same in every call)."""
        ends = np.cumsum([int(np.prod(s)) for s in self.shapes]).tolist()
        return list(zip([0, *ends[:-1]], ends, strict=True))

    def adjoint(self, grads: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One (B, *shape) gradient per output -> (dx (B, n), dy (B, m))."""
        batch = grads[0].shape[0]
        flat = np.hstack([g.reshape(batch, -1) for g in grads])
        dz = (self._transposed @ flat.T).T
        return dz[:, : self.n], dz[:, self.n :]

    @cached_property
    def _transposed(self) -> sp.csr_array:
        """Built once, not on every backward."""
        return sp.csr_array(self.matrix.T)

    @cached_property
    def uses_duals(self) -> bool:
        """Whether any output reads ``y``: only then does LPGD perturb ``b``."""
        return bool(self.matrix[:, self.n :].nnz)


@dataclass(frozen=True)
class CompiledProblem:
    """A problem compiled for one conic form: parameters -> data, and solution -> outputs."""

    maps: ProblemMaps
    recovery: Recovery
