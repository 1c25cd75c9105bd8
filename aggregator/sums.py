"""Running sums of traffic matrices in memory: sorted 64-bit link keys, merged in one pass.

Windows arrive as GraphBLAS matrices and every sum the aggregator saves
(checkpoints, period files, upstream windows) is a GraphBLAS serialization;
``Sums`` is only the in-memory form of the large running sums.  Why not keep
them as GraphBLAS matrices: a 2^32 x 2^32 hypersparse ``ewise_add`` of a batch
into a million-link sum, the complemented-mask extraction of the batch's new
links and the read-back of the touched values each cost 80-100 ms on one core
(per-row work on the hyperlists), and a transaction needs several of them per
running sum.  Here a link is the key ``src << 32 | dst``; a sum is the sorted
unique keys with their counts, so adding a batch is one linear merge that also
yields, in the same pass, the new value of every link the batch touched and
whether the link is new — exactly what the running analytics need.  Measured
on the aggregator bench: about 5 ms to merge a 130,000-link batch into a
3,000,000-link sum.

A ``Sums`` is never modified: every operation returns a new one, so a
snapshot (for a checkpoint) is a reference.
"""
from __future__ import annotations

from dataclasses import dataclass

import graphblas as gb
import numba
import numpy as np

from netsense import matrix

@numba.njit(cache=True, nogil=True)
def _union_size(ak, bk):
    n, m = len(ak), len(bk)
    i = j = k = 0
    while i < n and j < m:
        x = ak[i]
        y = bk[j]
        i += x <= y
        j += y <= x
        k += 1
    return k + (n - i) + (m - j)


@numba.njit(cache=True, nogil=True)
def _merge(ak, av, bk, bv):
    """a + b, plus the new value of each key of b and whether it was absent from a.

    Branch-free inner loop (the comparison outcomes are unpredictable, so
    selects beat branches by about 2x).  ``bnew[j]``/``bfresh[j]`` are written
    on every step and are final once ``j`` moves past them.  Returns buffers of
    the exact size (a first pass over the keys counts the union, cheaper than
    copying a half-empty result of a million links), and that size.
    """
    n, m = len(ak), len(bk)
    size = _union_size(ak, bk)
    ok = np.empty(size, np.uint64)
    ov = np.empty(size, np.uint64)
    bnew = np.empty(m, np.uint64)
    bfresh = np.empty(m, np.bool_)
    zero = np.uint64(0)
    i = j = k = 0
    while i < n and j < m:
        x = ak[i]
        y = bk[j]
        ta = x <= y
        tb = y <= x
        ok[k] = x if ta else y
        v = (av[i] if ta else zero) + (bv[j] if tb else zero)
        ov[k] = v
        bnew[j] = v
        bfresh[j] = not ta
        i += ta
        j += tb
        k += 1
    k = _rest(ak, av, i, ok, ov, k)
    bnew[j:] = bv[j:]
    bfresh[j:] = True
    return ok, ov, bnew, bfresh, _rest(bk, bv, j, ok, ov, k)


@numba.njit(cache=True, nogil=True, inline="always")
def _rest(keys, vals, i, ok, ov, k):
    """Copy what is left of one side once the other is exhausted; return the new length."""
    r = len(keys) - i
    ok[k:k + r] = keys[i:]
    ov[k:k + r] = vals[i:]
    return k + r


def warm_up() -> None:
    """Load every kernel from numba's cache now (about 0.5 s) rather than in the first transaction."""
    a = Sums(np.array([1, 2], np.uint64), np.array([1, 1], np.uint64))
    b = Sums.sum_many([a, a])
    b.merge(a)
    b.row_sums(), b.col_sums()
    Sums.take(b.to_matrix())


@numba.njit(cache=True, nogil=True)
def _add(ak, av, bk, bv):
    """a + b only (the tree sum of a batch needs no touched values): about 25% faster than ``_merge``."""
    n, m = len(ak), len(bk)
    ok = np.empty(n + m, np.uint64)
    ov = np.empty(n + m, np.uint64)
    zero = np.uint64(0)
    i = j = k = 0
    while i < n and j < m:
        x = ak[i]
        y = bk[j]
        ta = x <= y
        tb = y <= x
        ok[k] = min(x, y)
        ov[k] = (av[i] if ta else zero) + (bv[j] if tb else zero)
        i += ta
        j += tb
        k += 1
    k = _rest(ak, av, i, ok, ov, k)
    return ok, ov, _rest(bk, bv, j, ok, ov, k)


@numba.njit(cache=True, nogil=True)
def _runs(ids, vals):
    """Sum ``vals`` over runs of equal ``ids`` (sorted): the unique ids and their sums."""
    n = len(ids)
    out_ids = np.empty(n, np.uint64)
    out_vals = np.empty(n, np.uint64)
    k = -1
    for i in range(n):
        if k < 0 or ids[i] != out_ids[k]:
            k += 1
            out_ids[k] = ids[i]
            out_vals[k] = vals[i]
        else:
            out_vals[k] += vals[i]
    return out_ids[:k + 1].copy(), out_vals[:k + 1].copy()


@numba.njit(cache=True, nogil=True)
def _radix_pass(ids, vals, shift, out_ids, out_vals):
    counts = np.zeros(65537, np.int64)
    for i in range(len(ids)):
        counts[((ids[i] >> shift) & 0xFFFF) + 1] += 1
    for d in range(65536):
        counts[d + 1] += counts[d]
    for i in range(len(ids)):
        d = (ids[i] >> shift) & 0xFFFF
        out_ids[counts[d]] = ids[i]
        out_vals[counts[d]] = vals[i]
        counts[d] += 1


@numba.njit(cache=True, nogil=True)
def _radix_by_id(ids, vals):
    """(id < 2^32, value) pairs sorted by id, as new arrays: a two-pass 16-bit LSD radix sort.

    (Three passes of 11 bits measured about 30% slower on a million entries.)
    """
    i1, v1 = np.empty_like(ids), np.empty_like(vals)
    i2, v2 = np.empty_like(ids), np.empty_like(vals)
    _radix_pass(ids, vals, 0, i1, v1)
    _radix_pass(i1, v1, 16, i2, v2)
    return i2, v2


@numba.njit(cache=True, nogil=True)
def _hypercsr_keys(rows, indptr, cols):
    keys = np.empty(len(cols), np.uint64)
    for r in range(len(rows)):
        hi = np.uint64(rows[r]) << np.uint64(32)
        for p in range(indptr[r], indptr[r + 1]):
            keys[p] = hi | np.uint64(cols[p])
    return keys


@dataclass(frozen=True)
class Sums:
    """Sorted unique uint64 keys with uint64 values: a traffic matrix (key src<<32|dst) or a vector."""

    keys: np.ndarray
    vals: np.ndarray

    @classmethod
    def empty(cls) -> "Sums":
        return cls(np.empty(0, np.uint64), np.empty(0, np.uint64))

    @property
    def nvals(self) -> int:
        return len(self.keys)

    def total(self) -> int:
        return int(self.vals.sum()) if len(self.vals) else 0

    def add(self, other: "Sums") -> "Sums":
        s = Sums.sum_many([self, other])
        return Sums(s.keys.copy(), s.vals.copy()) if s.keys.base is not None else s  # long-lived: no slack

    def merge(self, other: "Sums") -> tuple["Sums", np.ndarray, np.ndarray]:
        """``(self + other, new value of each key of other, key of other was new)``."""
        if not len(other.keys):
            return self, other.vals, np.zeros(0, bool)
        k, v, new, fresh, _ = _merge(self.keys, self.vals, other.keys, other.vals)
        return Sums(k, v), new, fresh

    @staticmethod
    def sum_many(parts: list["Sums"]) -> "Sums":
        """Pairwise (tree) sum: every entry is merged O(log k) times, not once per part.

        The result may be a view of a larger buffer (a batch sum lives for one
        transaction); ``add`` compacts what it returns.
        """
        level = [(p.keys, p.vals) for p in parts if len(p.keys)]
        if not level:
            return Sums.empty()
        while len(level) > 1:
            nxt = []
            for (ak, av), (bk, bv) in zip(level[0::2], level[1::2]):
                k, v, used = _add(ak, av, bk, bv)
                nxt.append((k[:used], v[:used]))  # intermediate: slack is freed with it
            if len(level) % 2:
                nxt.append(level[-1])
            level = nxt
        return Sums(*level[0])

    def isequal(self, other: "Sums") -> bool:
        return np.array_equal(self.keys, other.keys) and np.array_equal(self.vals, other.vals)

    # -- the matrix's reductions (for a traffic matrix) -----------------------------
    def _reduce(self, mask, count: bool, rows: bool) -> "Sums":
        keys, vals = (self.keys, self.vals) if mask is None else (self.keys[mask], self.vals[mask])
        if count:
            vals = np.ones(len(keys), np.uint64)
        if rows:  # keys are sorted, so rows come in runs
            return Sums(*_runs(keys >> np.uint64(32), vals))
        return Sums(*_runs(*_radix_by_id((keys & np.uint64(0xFFFFFFFF)).astype(np.uint32), vals)))

    def row_sums(self, mask: np.ndarray | None = None) -> "Sums":
        """A1 over the entries selected by ``mask`` (all by default)."""
        return self._reduce(mask, False, True)

    def row_counts(self, mask: np.ndarray | None = None) -> "Sums":
        """|A|_0 1 (fan-out) over the entries selected by ``mask``."""
        return self._reduce(mask, True, True)

    def col_sums(self, mask: np.ndarray | None = None) -> "Sums":
        """1'A over the entries selected by ``mask``."""
        return self._reduce(mask, False, False)

    def col_counts(self, mask: np.ndarray | None = None) -> "Sums":
        """1'|A|_0 (fan-in) over the entries selected by ``mask``."""
        return self._reduce(mask, True, False)

    # -- GraphBLAS at the edges --------------------------------------------------------
    @classmethod
    def from_matrix(cls, a: gb.Matrix) -> "Sums":
        return cls._from_export(a, False)

    @classmethod
    def take(cls, a: gb.Matrix) -> "Sums":
        """``from_matrix`` without copying ``a`` first: ``a`` is unusable afterwards."""
        return cls._from_export(a, True)

    @classmethod
    def _from_export(cls, a: gb.Matrix, own: bool) -> "Sums":
        if a.nvals == 0:
            return cls.empty()
        d = a.ss.export("hypercsr", sort=True, give_ownership=own)
        keys = _hypercsr_keys(d["rows"], d["indptr"], d["col_indices"])
        vals = d["values"].astype(np.uint64, copy=False)
        if d.get("is_iso"):
            vals = np.full(len(keys), vals[0], np.uint64)
        return cls(keys, vals)

    def to_matrix(self) -> gb.Matrix:
        """The GraphBLAS matrix, imported the way the collector builds windows: the keys are
        already in row-major order, so this is a copy, not the sort ``from_coo`` does."""
        return matrix.from_sorted_keys(self.keys, self.vals)
