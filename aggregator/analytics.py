"""Graph Challenge analytics of a traffic matrix: pure functions, frozen results.

For A[src, dst] = packets (1 = all-ones vector, |A|_0 = pattern of A):
valid packets 1'A1, unique links nnz(A), max link packets max(A), unique
sources nnz(A1), max source packets max(A1), max source fan-out max(|A|_0 1),
unique destinations nnz(1'A), max destination packets max(1'A), max
destination fan-in max(1'|A|_0).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import graphblas as gb
import numpy as np
from graphblas import agg, monoid

from netsense.addresses import ip_to_str

ANALYTICS_KEYS = ("valid_packets", "unique_links", "max_link_packets", "unique_sources", "max_source_packets",
                  "max_source_fanout", "unique_destinations", "max_destination_packets", "max_destination_fanin")


@dataclass(frozen=True)
class Analytics:
    valid_packets: int
    unique_links: int
    max_link_packets: int
    unique_sources: int
    max_source_packets: int
    max_source_fanout: int
    unique_destinations: int
    max_destination_packets: int
    max_destination_fanin: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Top:
    """Top-N talkers; every list is sorted by value descending, then address ascending."""

    sources: tuple            # ((address, packets), ...)
    destinations: tuple
    links: tuple              # ((src, dst, packets), ...)
    source_fanout: tuple      # ((address, distinct destinations), ...)
    destination_fanin: tuple  # ((address, distinct sources), ...)

    def as_dict(self) -> dict:
        q = ip_to_str
        return {
            "sources": [{"address": q(a), "packets": v} for a, v in self.sources],
            "destinations": [{"address": q(a), "packets": v} for a, v in self.destinations],
            "links": [{"src": q(s), "dst": q(d), "packets": v} for s, d, v in self.links],
            "source_fanout": [{"address": q(a), "fanout": v} for a, v in self.source_fanout],
            "destination_fanin": [{"address": q(a), "fanin": v} for a, v in self.destination_fanin],
        }


def _max(v) -> int:
    return int(v.reduce(monoid.max).new().value) if v.nvals else 0


@dataclass(frozen=True)
class _Reductions:
    out_packets: gb.Vector  # A1
    in_packets: gb.Vector   # 1'A
    fanout: gb.Vector       # |A|_0 1
    fanin: gb.Vector        # 1'|A|_0


def _reduce(A: gb.Matrix) -> _Reductions:
    # Column reductions of a hypersparse matrix cost a transpose; do each once per report.
    return _Reductions(A.reduce_rowwise(monoid.plus).new(), A.reduce_columnwise(monoid.plus).new(),
                       A.reduce_rowwise(agg.count).new(), A.reduce_columnwise(agg.count).new())


def _analytics(A: gb.Matrix, r: _Reductions) -> Analytics:
    if A.nvals == 0:
        return Analytics(0, 0, 0, 0, 0, 0, 0, 0, 0)
    return Analytics(
        valid_packets=int(A.reduce_scalar(monoid.plus).new().value),
        unique_links=int(A.nvals),
        max_link_packets=int(A.reduce_scalar(monoid.max).new().value),
        unique_sources=int(r.out_packets.nvals),
        max_source_packets=_max(r.out_packets),
        max_source_fanout=_max(r.fanout),
        unique_destinations=int(r.in_packets.nvals),
        max_destination_packets=_max(r.in_packets),
        max_destination_fanin=_max(r.fanin),
    )


def _top_vector(v: gb.Vector, n: int) -> tuple:
    idx, vals = v.to_coo()
    return _top(vals, n, idx)


def _top(vals: np.ndarray, n: int, *keys: np.ndarray) -> tuple:
    if len(vals) == 0 or n <= 0:
        return ()
    k = min(n, len(vals))
    # argpartition keeps this O(nnz); ties at the cut are resolved by the stable sort below.
    cut = np.partition(vals, len(vals) - k)[len(vals) - k]
    sel = np.flatnonzero(vals >= cut)
    order = np.lexsort(tuple(reversed([kk[sel] for kk in keys])) + (-vals[sel].astype(np.int64),))
    sel = sel[order][:k]
    return tuple(tuple(int(kk[i]) for kk in keys) + (int(vals[i]),) for i in sel)


def _top_talkers(A: gb.Matrix, r: _Reductions, n: int) -> Top:
    if A.nvals == 0:
        return Top((), (), (), (), ())
    rows, cols, vals = A.to_coo()
    return Top(
        sources=_top_vector(r.out_packets, n),
        destinations=_top_vector(r.in_packets, n),
        links=_top(vals, n, rows, cols),
        source_fanout=_top_vector(r.fanout, n),
        destination_fanin=_top_vector(r.fanin, n),
    )


def analyze(A: gb.Matrix) -> Analytics:
    """The nine Graph Challenge analytics of ``A``."""
    return _analytics(A, _reduce(A))


def top_talkers(A: gb.Matrix, n: int = 10) -> Top:
    """Top-N sources/destinations by packets, links by packets, and by fan-out/fan-in."""
    return _top_talkers(A, _reduce(A), n)


def summarize(A: gb.Matrix, n: int = 10) -> tuple[Analytics, Top]:
    """``(analyze(A), top_talkers(A, n))`` computing each reduction of ``A`` once."""
    r = _reduce(A)
    return _analytics(A, r), _top_talkers(A, r, n)
