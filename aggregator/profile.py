"""Running analytics of a growing traffic matrix: reports in O(batch), not O(matrix).

Recomputing the nine analytics means reducing the whole matrix by rows and by
columns; for a period or cumulative sum with millions of links that costs far
more than the batch that changed it.  But a traffic matrix only grows: every
entry, row sum, column sum, fan-out and fan-in can only increase.  So:

* sums and counts are updated with the batch's own reductions;
* each maximum is the larger of the old maximum and the new values of the
  entries the batch touched;
* a top-N list can only change through touched entries: an untouched entry
  outside the old top N still has N entries ranked ahead of it, and those only
  grew.  The new top N is the top N of (old top N + touched entries).

``Profile.of(A)`` computes everything from scratch (after a restart, or for a
final period restated by a late window); ``grow`` is the only way a profiled
matrix changes.  A property test checks ``grow`` against ``of`` on random
batches.
"""
from __future__ import annotations

import graphblas as gb
import numpy as np
from graphblas import agg, binary, monoid

from .analytics import Analytics, Top, _top

_KEYS = ("out", "inn", "fanout", "fanin")


def _top_merge(n: int, prev: tuple, idx: np.ndarray, vals: np.ndarray) -> tuple:
    """Top-n of the previous top list and fresh (idx, vals); fresh values win for equal keys.

    ``idx`` is sorted (GraphBLAS returns indices in order), so membership of the
    few previous keys is a binary search, not a hash of the whole batch.
    """
    if len(prev):
        pk = np.array([p[0] for p in prev], np.uint64)
        pv = np.array([p[1] for p in prev], np.uint64)
        idx = idx.astype(np.uint64)
        pos = np.minimum(np.searchsorted(idx, pk), max(len(idx) - 1, 0))
        keep = ~((len(idx) > 0) & (idx[pos] == pk)) if len(idx) else np.ones(len(pk), bool)
        idx = np.concatenate([idx.astype(np.uint64), pk[keep]])
        vals = np.concatenate([vals.astype(np.uint64), pv[keep]])
    return _top(vals, n, idx)


def _top_merge_links(n: int, prev: tuple, rows, cols, vals) -> tuple:
    """As ``_top_merge`` for links, keyed by row << 32 | col (the same order as (row, col))."""
    keys = (rows.astype(np.uint64) << np.uint64(32)) | cols.astype(np.uint64)
    prev_keys = tuple(((r << 32) | c, v) for r, c, v in prev)
    return tuple((k >> 32, k & 0xFFFFFFFF, v) for k, v in _top_merge(n, prev_keys, keys, vals))


class BatchStats:
    """Reductions of one batch sum, computed once however many matrices it grows."""

    def __init__(self, s: gb.Matrix):
        self.packets = int(s.reduce_scalar(monoid.plus).new().value or 0) if s.nvals else 0
        self.out = s.reduce_rowwise(monoid.plus).new()
        self.inn = s.reduce_columnwise(monoid.plus).new()

    @classmethod
    def of(cls, s: gb.Matrix) -> "BatchStats":
        return cls(s)


class Profile:
    """Reductions, maxima and top-N lists of one matrix, kept current as it grows."""

    def __init__(self, n: int):
        self.n = n
        self.vec: dict = {}  # created on first growth: an empty 2^32 vector is not free
        self.valid = self.links = self.max_link = 0
        self.maxima = dict.fromkeys(_KEYS, 0)
        self.tops = dict.fromkeys(_KEYS, ())
        self.top_links: tuple = ()

    @classmethod
    def of(cls, a: gb.Matrix, n: int) -> "Profile":
        p = cls(n)
        if a.nvals == 0:
            return p
        p.vec = {"out": a.reduce_rowwise(monoid.plus).new(), "inn": a.reduce_columnwise(monoid.plus).new(),
                 "fanout": a.reduce_rowwise(agg.count).new(dtype="UINT64"),
                 "fanin": a.reduce_columnwise(agg.count).new(dtype="UINT64")}
        p.valid = int(a.reduce_scalar(monoid.plus).new().value)
        p.links = int(a.nvals)
        p.max_link = int(a.reduce_scalar(monoid.max).new().value)
        for k, v in p.vec.items():
            idx, vals = v.to_coo()
            p.maxima[k] = int(vals.max()) if len(vals) else 0
            p.tops[k] = _top(vals, n, idx)
        rows, cols, vals = a.to_coo()
        p.top_links = _top(vals, n, rows, cols)
        return p

    def grow(self, acc: gb.Matrix, s: gb.Matrix, stats: "BatchStats | None" = None) -> gb.Matrix:
        """Return ``acc + s`` and update the profile from ``s`` and the entries it touched.

        ``stats``: the batch's own reductions, when the same ``s`` grows several
        matrices (a period and the cumulative sum).
        """
        if s.nvals == 0:
            return acc
        b = stats or BatchStats.of(s)
        fresh = s.dup(mask=~acc.S)  # links of the batch not yet in acc: they raise fan-out/fan-in
        new_acc = acc.ewise_add(s, binary.plus).new()
        touched = s.ewise_mult(new_acc, binary.second).new()  # their values after the add
        self.valid += b.packets
        self.links = int(new_acc.nvals)
        rows, cols, vals = touched.to_coo()
        self.max_link = max(self.max_link, int(vals.max()))
        self.top_links = _top_merge_links(self.n, self.top_links, rows, cols, vals)
        count = agg.count
        deltas = {
            "out": b.out,
            "inn": b.inn,
            # fan-out/fan-in grow by the batch's new links only (usually far fewer than its entries)
            "fanout": fresh.reduce_rowwise(count).new(dtype="UINT64"),
            "fanin": fresh.reduce_columnwise(count).new(dtype="UINT64"),
        }
        for k, d in deltas.items():
            old = self.vec.get(k)
            v = d.dup() if old is None else old.ewise_add(d, binary.plus).new()
            self.vec[k] = v
            idx, vals = d.ewise_mult(v, binary.second).new().to_coo()
            if len(vals):
                self.maxima[k] = max(self.maxima[k], int(vals.max()))
                self.tops[k] = _top_merge(self.n, self.tops[k], idx, vals)
        return new_acc

    def _nvals(self, k: str) -> int:
        v = self.vec.get(k)
        return int(v.nvals) if v is not None else 0

    def analytics(self) -> Analytics:
        return Analytics(
            valid_packets=self.valid, unique_links=self.links, max_link_packets=self.max_link,
            unique_sources=self._nvals("out"), max_source_packets=self.maxima["out"],
            max_source_fanout=self.maxima["fanout"], unique_destinations=self._nvals("inn"),
            max_destination_packets=self.maxima["inn"], max_destination_fanin=self.maxima["fanin"])

    def top(self) -> Top:
        return Top(sources=self.tops["out"], destinations=self.tops["inn"], links=self.top_links,
                   source_fanout=self.tops["fanout"], destination_fanin=self.tops["fanin"])
