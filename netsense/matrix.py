"""Sorted link keys -> the 2^32 x 2^32 hypersparse matrix GraphBLAS keeps, imported, not built.

Both wings turn link keys (``src << 32 | dst``, one uint64 per packet or per
link) into matrices: the collector for every window it lands and for every
Graph Challenge member it imports, the aggregator for its running sums when
they are checkpointed or handed upstream.  Sorting one 64-bit key in numpy and
counting runs straight into the hypersparse CSR arrays, then importing them,
gives the same matrix, and the same serialized bytes, as ``Matrix.from_coo``
on sorted unique coordinates at a fraction of the cost.
"""
from __future__ import annotations

import graphblas as gb
import numpy as np

N = 1 << 32  # matrix dimension: the IPv4 address space
S32 = np.uint64(32)
U32 = np.uint64(0xFFFFFFFF)


def empty(dtype: str = "UINT64") -> gb.Matrix:
    """The empty 2^32 x 2^32 matrix."""
    return gb.Matrix(dtype, nrows=N, ncols=N)


def hypercsr(key: np.ndarray, weight: np.ndarray | None = None):
    """Sorted 64-bit keys (row << 32 | col) -> the hypersparse CSR arrays GraphBLAS keeps.

    Equal keys are summed: each counts 1, or its ``weight``.  Returns uint64 (Ah: the non-empty
    rows, Ap: row pointers, Aj: column per entry, Ax: value per entry), every one a new array.
    """
    n = len(key)
    new = np.empty(n, bool)
    new[0] = True
    np.not_equal(key[1:], key[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    nu = len(starts)
    if weight is None:
        ax = np.diff(starts, append=n).astype(np.uint64)
    else:
        ax = weight.copy() if nu == n else np.add.reduceat(weight, starts).astype(np.uint64)
    uk = key[starts]
    rows = uk >> S32
    first = np.empty(nu, bool)
    first[0] = True
    np.not_equal(rows[1:], rows[:-1], out=first[1:])
    rs = np.flatnonzero(first)
    ap = np.empty(len(rs) + 1, np.uint64)
    ap[:-1] = rs
    ap[-1] = nu
    return rows[rs], ap, uk & U32, ax


def from_hypercsr(ah, ap, aj, ax) -> gb.Matrix:
    """Import hypersparse CSR arrays (as ``hypercsr`` returns them) as a UINT64 matrix.

    GrB_Matrix_build makes a matrix whose values are all equal iso (one value stored); so
    does this, so the serialized bytes equal a build's.
    """
    iso = bool((ax == ax[0]).all())
    return gb.Matrix.ss.import_hypercsr(nrows=N, ncols=N, rows=ah, indptr=ap, col_indices=aj,
                                        values=ax[:1].copy() if iso else ax, is_iso=iso, nvec=len(ah),
                                        sorted_cols=True, take_ownership=True, dtype="UINT64")


def from_sorted_keys(key: np.ndarray, weight: np.ndarray | None = None) -> gb.Matrix:
    """Sorted 64-bit keys (row << 32 | col) -> the UINT64 matrix; equal keys are summed.

    Each key counts 1, or its ``weight``.  The aggregator's running sums (sorted unique
    keys with counts) become matrices this way too.
    """
    if len(key) == 0:
        return empty()
    return from_hypercsr(*hypercsr(key, weight))


def from_unique_pairs(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> gb.Matrix:
    """A matrix of ``vals``' dtype from unique (row, col) pairs (uint64) in any order.

    Unlike ``from_sorted_keys`` the values keep their dtype and are stored one per entry
    (never iso), as a Graph Challenge member's matrix is.
    """
    if len(vals) == 0:
        return gb.Matrix(vals.dtype, nrows=N, ncols=N)
    key = (rows << S32) | cols
    order = np.argsort(key)
    key = key[order]
    r = key >> S32
    starts = np.flatnonzero(np.concatenate(([True], r[1:] != r[:-1])))
    return gb.Matrix.ss.import_hypercsr(
        nrows=N, ncols=N, rows=r[starts], indptr=np.append(starts, len(key)).astype(np.uint64),
        col_indices=key & U32, values=np.ascontiguousarray(vals[order]),
        sorted_cols=True, take_ownership=True)
