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
matrix changes.  The merge in ``Sums.merge`` hands back the touched values and
the batch's new links in the same pass that adds the batch.  A property test
checks ``grow`` against ``of`` and against GraphBLAS on random batches.
"""
from __future__ import annotations

import numpy as np

from .analytics import Analytics, Top, _top
from .sums import Sums

_KEYS = ("out", "inn", "fanout", "fanin")


def _top_merge(n: int, prev: tuple, idx: np.ndarray, vals: np.ndarray) -> tuple:
    """Top-n of the previous top list and fresh (idx, vals); fresh values win for equal keys.

    ``idx`` is sorted, so membership of the few previous keys is a binary
    search, not a hash of the whole batch.  Values only grow, so when the old
    list is full only fresh values reaching its smallest can enter.
    """
    if len(prev) >= n > 0:
        sel = np.flatnonzero(vals >= prev[-1][1])
        idx, vals = idx[sel], vals[sel]
    if len(prev):
        pk = np.array([p[0] for p in prev], np.uint64)
        pv = np.array([p[1] for p in prev], np.uint64)
        if len(idx):
            pos = np.minimum(np.searchsorted(idx, pk), len(idx) - 1)
            keep = idx[pos] != pk
        else:
            keep = np.ones(len(pk), bool)
        idx = np.concatenate([idx, pk[keep]])
        vals = np.concatenate([vals, pv[keep]])
    return _top(vals, n, idx)


def _split_links(top: tuple) -> tuple:
    """((key, v), ...) -> ((src, dst, v), ...); key order is (src, dst) order."""
    return tuple((k >> 32, k & 0xFFFFFFFF, v) for k, v in top)


class BatchStats:
    """Reductions of one batch sum, computed once however many running sums it grows."""

    def __init__(self, s: Sums):
        self.packets = s.total()
        self.out = s.row_sums()
        self.inn = s.col_sums()

    @classmethod
    def of(cls, s: Sums) -> "BatchStats":
        return cls(s)


class Profile:
    """Reductions, maxima and top-N lists of one matrix, kept current as it grows."""

    def __init__(self, n: int):
        self.n = n
        self.vec = dict.fromkeys(_KEYS, Sums.empty())
        self.valid = self.links = self.max_link = 0
        self.maxima = dict.fromkeys(_KEYS, 0)
        self.tops = dict.fromkeys(_KEYS, ())
        self.top_links: tuple = ()  # ((src << 32 | dst, packets), ...): the keys of ``Sums``

    @classmethod
    def of(cls, a: Sums, n: int) -> "Profile":
        p = cls(n)
        if a.nvals == 0:
            return p
        p.vec = {"out": a.row_sums(), "inn": a.col_sums(), "fanout": a.row_counts(), "fanin": a.col_counts()}
        p.valid = a.total()
        p.links = a.nvals
        p.max_link = int(a.vals.max())
        for k, v in p.vec.items():
            p.maxima[k] = int(v.vals.max())
            p.tops[k] = _top(v.vals, n, v.keys)
        p.top_links = _top(a.vals, n, a.keys)
        return p

    def grow(self, acc: Sums, s: Sums, stats: BatchStats | None = None) -> Sums:
        """Return ``acc + s`` and update the profile from ``s`` and the entries it touched.

        ``stats``: the batch's own reductions, when the same ``s`` grows several
        running sums (a period and the cumulative sum).
        """
        if s.nvals == 0:
            return acc
        b = stats or BatchStats.of(s)
        new_acc, touched, fresh = acc.merge(s)
        self.valid += b.packets
        self.links = new_acc.nvals
        self.max_link = max(self.max_link, int(touched.max()))
        self.top_links = _top_merge(self.n, self.top_links, s.keys, touched)
        # fan-out/fan-in grow by the batch's new links only (usually far fewer than its entries)
        deltas = {"out": b.out, "inn": b.inn,
                  "fanout": s.row_counts(fresh), "fanin": s.col_counts(fresh)}
        for k, d in deltas.items():
            if not d.nvals:
                continue
            self.vec[k], new_vals, _ = self.vec[k].merge(d)
            self.maxima[k] = max(self.maxima[k], int(new_vals.max()))
            self.tops[k] = _top_merge(self.n, self.tops[k], d.keys, new_vals)
        return new_acc

    def analytics(self) -> Analytics:
        return Analytics(
            valid_packets=self.valid, unique_links=self.links, max_link_packets=self.max_link,
            unique_sources=self.vec["out"].nvals, max_source_packets=self.maxima["out"],
            max_source_fanout=self.maxima["fanout"], unique_destinations=self.vec["inn"].nvals,
            max_destination_packets=self.maxima["inn"], max_destination_fanin=self.maxima["fanin"])

    def top(self) -> Top:
        return Top(sources=self.tops["out"], destinations=self.tops["inn"], links=_split_links(self.top_links),
                   source_fanout=self.tops["fanout"], destination_fanin=self.tops["fanin"])
