"""Sums (the aggregator's in-memory running sums) agree with GraphBLAS on random matrices."""
from __future__ import annotations

import graphblas as gb
import numpy as np
import pytest
from graphblas import agg, binary, monoid

from netsense.aggregator.sums import Sums
from netsense.winfile import N


def random_matrix(rng, n, hosts=50) -> gb.Matrix:
    pool = rng.integers(0, 2**32, hosts, dtype=np.uint64)
    src, dst = pool[rng.integers(0, hosts, n)], pool[rng.integers(0, hosts, n)]
    return gb.Matrix.from_coo(src, dst, rng.integers(1, 1000, n, dtype=np.uint64), nrows=N, ncols=N,
                              dtype="UINT64", dup_op=binary.plus)


def same(s: Sums, a: gb.Matrix) -> bool:
    return s.to_matrix().isequal(a) and Sums.from_matrix(a).isequal(s)


def same_vec(s: Sums, v: gb.Vector) -> bool:
    idx, vals = v.to_coo()
    return np.array_equal(s.keys, idx.astype(np.uint64)) and np.array_equal(s.vals, vals.astype(np.uint64))


@pytest.mark.parametrize("seed", range(6))
def test_merge_sum_many_and_reductions_match_graphblas(seed):
    rng = np.random.default_rng(seed)
    mats = [random_matrix(rng, int(rng.integers(0, 300))) for _ in range(int(rng.integers(1, 9)))]
    total = mats[0].dup()
    for m in mats[1:]:
        total(binary.plus) << m
    parts = [Sums.from_matrix(m) for m in mats]
    s = Sums.sum_many(parts)
    assert same(s, total)
    assert s.total() == (int(total.reduce_scalar(monoid.plus).new().value or 0))
    # merge: the sum, the new value of each key of b, and which keys of b were absent from a
    a, b = Sums.sum_many(parts[:-1]), parts[-1]
    merged, new, fresh = a.merge(b)
    assert same(merged, total)
    assert np.array_equal(new, np.array([merged.vals[np.searchsorted(merged.keys, k)] for k in b.keys],
                                        np.uint64).reshape(-1))
    assert np.array_equal(fresh, ~np.isin(b.keys, a.keys))
    assert same_vec(s.row_sums(), total.reduce_rowwise(monoid.plus).new())
    assert same_vec(s.col_sums(), total.reduce_columnwise(monoid.plus).new())
    assert same_vec(s.row_counts(), total.reduce_rowwise(agg.count).new(dtype="UINT64"))
    assert same_vec(s.col_counts(), total.reduce_columnwise(agg.count).new(dtype="UINT64"))
    assert same(s, total)  # the reductions left the sum untouched (they sort copies)
    mask = rng.random(s.nvals) < 0.5
    sub = Sums(s.keys[mask], s.vals[mask])
    assert sub.col_counts().isequal(s.col_counts(mask)) and sub.row_sums().isequal(s.row_sums(mask))


def test_extreme_addresses_and_empty():
    a = gb.Matrix.from_coo([0, 2**32 - 1, 2**32 - 1], [2**32 - 1, 0, 2**32 - 1], [1, 2, 3], nrows=N, ncols=N,
                           dtype="UINT64")
    s = Sums.from_matrix(a)
    assert same(s, a) and s.col_sums().keys.tolist() == [0, 2**32 - 1]
    e = Sums.empty()
    assert same(e, gb.Matrix("UINT64", N, N)) and Sums.sum_many([]).nvals == 0
    assert e.add(s).isequal(s) and s.add(e).isequal(s)
    iso = gb.Matrix.from_coo([1, 2], [3, 4], 7, nrows=N, ncols=N, dtype="UINT64")  # iso-valued
    assert Sums.from_matrix(iso).vals.tolist() == [7, 7]
