"""Independent reference computations for end-to-end checks: plain numpy/scipy, no GraphBLAS."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

KEYS = ("valid_packets", "unique_links", "max_link_packets", "unique_sources", "max_source_packets",
        "max_source_fanout", "unique_destinations", "max_destination_packets", "max_destination_fanin")


def nine(src, dst) -> dict:
    """The nine Graph Challenge analytics of the packets (src[i] -> dst[i])."""
    src = np.asarray(src, np.uint64)
    dst = np.asarray(dst, np.uint64)
    if len(src) == 0:
        return dict.fromkeys(KEYS, 0)
    ids, inv = np.unique(np.concatenate([src, dst]), return_inverse=True)
    r, c = inv[: len(src)], inv[len(src):]
    n = len(ids)
    A = sp.coo_matrix((np.ones(len(src), np.int64), (r, c)), shape=(n, n)).tocsr()
    A.sum_duplicates()
    P = A.copy()
    P.data[:] = 1
    out_p, in_p = np.asarray(A.sum(1)).ravel(), np.asarray(A.sum(0)).ravel()
    return {
        "valid_packets": int(A.sum()), "unique_links": int(A.nnz), "max_link_packets": int(A.data.max()),
        "unique_sources": int((out_p > 0).sum()), "max_source_packets": int(out_p.max()),
        "max_source_fanout": int(np.asarray(P.sum(1)).max()),
        "unique_destinations": int((in_p > 0).sum()), "max_destination_packets": int(in_p.max()),
        "max_destination_fanin": int(np.asarray(P.sum(0)).max()),
    }


def synthetic_packets(spec: str):
    """Regenerate what ``synthetic:SPEC`` produces (the generator is seeded)."""
    from netsense.collector.synthetic import SyntheticSpec, generate

    s, d = [], []
    for rec in generate(SyntheticSpec.parse(spec)):
        s.append(rec.src)
        d.append(rec.dst)
    return np.concatenate(s), np.concatenate(d)
