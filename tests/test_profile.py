"""Running analytics (Profile.grow) equal a from-scratch computation after every batch."""
from __future__ import annotations

import graphblas as gb
import numpy as np
import pytest

from netsense.aggregator.analytics import summarize
from netsense.aggregator.profile import Profile
from netsense.aggregator.sums import Sums
from netsense.winfile import N


def batch(rng, n, pool):
    src = pool[(rng.zipf(1.4, n) - 1) % len(pool)]
    dst = pool[(rng.zipf(1.4, n) - 1) % len(pool)]
    key, counts = np.unique((src.astype(np.uint64) << np.uint64(32)) | dst, return_counts=True)
    return Sums(key, counts.astype(np.uint64))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n_top", [1, 3, 10])
def test_grow_matches_full_recomputation(seed, n_top):
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 2**32 - 1, 300, dtype=np.uint64).astype(np.uint32)
    acc = Sums.empty()
    prof = Profile(n_top)
    for _ in range(12):
        s = batch(rng, int(rng.integers(1, 400)), pool)
        acc = prof.grow(acc, s)
        analytics, top = summarize(acc.to_matrix(), n_top)  # GraphBLAS from scratch: the reference
        assert prof.analytics() == analytics
        assert prof.top() == top
    assert Profile.of(acc, n_top).analytics() == prof.analytics()


def test_ties_keep_address_order_across_batches():
    prof = Profile(2)
    acc = Sums.empty()
    for s, d in ((5, 1), (3, 1), (4, 1), (3, 2)):  # every link once: ties everywhere
        acc = prof.grow(acc, Sums.from_matrix(gb.Matrix.from_coo([s], [d], [1], nrows=N, ncols=N, dtype="UINT64")))
    assert prof.top() == summarize(acc.to_matrix(), 2)[1]
    assert [a for a, _ in prof.top().sources] == [3, 4]


def test_empty_batch_changes_nothing():
    prof = Profile(3)
    acc = Sums.empty()
    assert prof.grow(acc, Sums.empty()) is acc
    assert prof.analytics() == summarize(acc.to_matrix(), 3)[0]
