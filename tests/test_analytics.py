"""Unit tests for aggregator/analytics.py: the nine Graph Challenge analytics and top talkers.

Expected values come from hand arithmetic (small cases) or from plain numpy/scipy
(property tests), never from GraphBLAS.
"""
from __future__ import annotations

import graphblas as gb
import numpy as np
import pytest
import scipy.sparse as sp

from netsense.aggregator.analytics import ANALYTICS_KEYS, Analytics, analyze, top_talkers
from netsense.addresses import ip_to_str, str_to_ip
from netsense.winfile import N


def matrix(entries) -> gb.Matrix:
    """entries: [(src, dst, packets)] with dotted quads or ints."""
    ip = lambda a: str_to_ip(a) if isinstance(a, str) else a  # noqa: E731
    r = [ip(s) for s, _, _ in entries]
    c = [ip(d) for _, d, _ in entries]
    v = [p for _, _, p in entries]
    return gb.Matrix.from_coo(r, c, v, nrows=N, ncols=N, dtype="UINT64")


H1, H2, H3, H4 = "10.0.0.1", "192.168.7.2", "255.255.255.254", "0.0.0.4"
SMALL = [(H1, H2, 3), (H1, H3, 1), (H2, H3, 5), (H4, H3, 2), (H4, H1, 1)]


def test_small_matrix_by_hand():
    # A[src, dst]:  H1->H2 3, H1->H3 1, H2->H3 5, H4->H3 2, H4->H1 1
    # valid packets      3+1+5+2+1 = 12
    # unique links       5 entries
    # max link           max(3,1,5,2,1) = 5
    # row sums           H1: 3+1=4, H2: 5, H4: 2+1=3      -> 3 sources, max 5
    # fan-out            H1: 2, H2: 1, H4: 2               -> max 2
    # column sums        H2: 3, H3: 1+5+2=8, H1: 1         -> 3 destinations, max 8
    # fan-in             H2: 1, H3: 3, H1: 1               -> max 3
    got = analyze(matrix(SMALL))
    assert got == Analytics(valid_packets=12, unique_links=5, max_link_packets=5, unique_sources=3,
                            max_source_packets=5, max_source_fanout=2, unique_destinations=3,
                            max_destination_packets=8, max_destination_fanin=3)
    assert list(got.as_dict()) == list(ANALYTICS_KEYS)


def test_self_loop_and_extreme_addresses_by_hand():
    # 0.0.0.0 -> 255.255.255.255: 7, 255.255.255.255 -> 255.255.255.255: 2, 0.0.0.0 -> 0.0.0.0: 1
    # packets 7+2+1=10, links 3, max link 7
    # rows: 0: 7+1=8, 2^32-1: 2          -> 2 sources, max 8; fan-out 0: 2, 2^32-1: 1 -> 2
    # cols: 2^32-1: 7+2=9, 0: 1          -> 2 destinations, max 9; fan-in 2^32-1: 2, 0: 1 -> 2
    A = matrix([(0, 0xFFFFFFFF, 7), (0xFFFFFFFF, 0xFFFFFFFF, 2), (0, 0, 1)])
    assert analyze(A) == Analytics(10, 3, 7, 2, 8, 2, 2, 9, 2)


def test_single_entry_by_hand():
    # one link carrying 4 packets: every count is 1, every packet total/max is 4
    assert analyze(matrix([(H2, H2, 4)])) == Analytics(4, 1, 4, 1, 4, 1, 1, 4, 1)


def test_empty_matrix():
    E = gb.Matrix("UINT64", nrows=N, ncols=N)
    assert analyze(E) == Analytics(0, 0, 0, 0, 0, 0, 0, 0, 0)
    assert analyze(E).as_dict() == dict.fromkeys(ANALYTICS_KEYS, 0)
    t = top_talkers(E, 10)
    assert (t.sources, t.destinations, t.links, t.source_fanout, t.destination_fanin) == ((),) * 5
    assert t.as_dict() == {"sources": [], "destinations": [], "links": [], "source_fanout": [],
                           "destination_fanin": []}


# --- property tests against numpy/scipy ---------------------------------------------------

def random_traffic(seed: int, n_links: int = 3000):
    """Heavy-tailed (src, dst, packets) over the full 32-bit range, duplicate links allowed."""
    rng = np.random.default_rng(seed)
    hosts = np.concatenate([[0, 0xFFFFFFFF], rng.integers(0, 1 << 32, 800, dtype=np.uint64)]).astype(np.uint64)
    # Zipf-chosen hosts: a few hubs talk a lot (large fan-in/out), most talk once
    pick = np.minimum(rng.zipf(1.5, (2, n_links)) - 1, len(hosts) - 1)
    mix = rng.random(n_links) < 0.5  # and uniform mixing for the other half
    pick[:, mix] = rng.integers(0, len(hosts), (2, int(mix.sum())))
    src, dst = hosts[pick[0]], hosts[pick[1]]
    packets = np.minimum(rng.pareto(1.2, n_links) * 3 + 1, 1e6).astype(np.uint64)
    return src, dst, packets


def scipy_matrix(src, dst, packets):
    """scipy can't hold 2^32 x 2^32, so compress the addresses first (np.unique)."""
    ids, inv = np.unique(np.concatenate([src, dst]), return_inverse=True)
    r, c = inv[: len(src)], inv[len(src):]
    S = sp.coo_matrix((packets.astype(np.int64), (r, c)), shape=(len(ids), len(ids))).tocsr()
    S.sum_duplicates()
    return ids, S


def expected_nine(S) -> dict:
    P = S.copy()
    P.data[:] = 1
    out_p, in_p = np.asarray(S.sum(1)).ravel(), np.asarray(S.sum(0)).ravel()
    return {"valid_packets": int(S.sum()), "unique_links": int(S.nnz), "max_link_packets": int(S.data.max()),
            "unique_sources": int((out_p > 0).sum()), "max_source_packets": int(out_p.max()),
            "max_source_fanout": int(np.asarray(P.sum(1)).max()),
            "unique_destinations": int((in_p > 0).sum()), "max_destination_packets": int(in_p.max()),
            "max_destination_fanin": int(np.asarray(P.sum(0)).max())}


def gb_matrix(src, dst, packets) -> gb.Matrix:
    return gb.Matrix.from_coo(src, dst, packets, nrows=N, ncols=N, dtype="UINT64", dup_op=gb.binary.plus)


@pytest.mark.parametrize("seed", range(6))
def test_analyze_matches_scipy(seed):
    src, dst, packets = random_traffic(seed)
    ids, S = scipy_matrix(src, dst, packets)
    assert ids.max() > 1 << 31  # addresses really use the upper half of the range
    got = analyze(gb_matrix(src, dst, packets)).as_dict()
    assert got == expected_nine(S)
    assert got["valid_packets"] == int(packets.sum())


def ranked(addresses, values, n):
    """Reference ordering: value descending, then address ascending (plain Python sort)."""
    pairs = sorted(zip(np.asarray(addresses).tolist(), np.asarray(values).tolist()), key=lambda p: (-p[1], p[0]))
    return tuple(p for p in pairs if p[1] > 0)[:n]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n", [1, 5, 37, 100_000])
def test_top_talkers_match_numpy(seed, n):
    src, dst, packets = random_traffic(seed, 1500)
    packets = np.minimum(packets, 4)  # many ties, including at the top-n cut
    ids, S = scipy_matrix(src, dst, packets)
    P = S.copy()
    P.data[:] = 1
    t = top_talkers(gb_matrix(src, dst, packets), n)
    assert t.sources == ranked(ids, np.asarray(S.sum(1)).ravel(), n)
    assert t.destinations == ranked(ids, np.asarray(S.sum(0)).ravel(), n)
    assert t.source_fanout == ranked(ids, np.asarray(P.sum(1)).ravel(), n)
    assert t.destination_fanin == ranked(ids, np.asarray(P.sum(0)).ravel(), n)
    coo = S.tocoo()
    links = sorted(zip(ids[coo.row].tolist(), ids[coo.col].tolist(), coo.data.tolist()),
                   key=lambda x: (-x[2], x[0], x[1]))
    assert t.links == tuple(links[:n])
    if n >= len(ids):
        assert len(t.sources) == int((np.asarray(S.sum(1)).ravel() > 0).sum())
        assert len(t.links) == S.nnz


# --- top talkers by hand --------------------------------------------------------------------

def test_top_talkers_ordering_by_hand():
    A = matrix(SMALL)
    t = top_talkers(A, 10)
    # row sums H2: 5, H1: 4, H4: 3
    assert t.sources == ((str_to_ip(H2), 5), (str_to_ip(H1), 4), (str_to_ip(H4), 3))
    # column sums H3: 8, H2: 3, H1: 1
    assert t.destinations == ((str_to_ip(H3), 8), (str_to_ip(H2), 3), (str_to_ip(H1), 1))
    # fan-out H1: 2, H4: 2 (tie -> lower address first: 0.0.0.4 < 10.0.0.1), H2: 1
    assert t.source_fanout == ((str_to_ip(H4), 2), (str_to_ip(H1), 2), (str_to_ip(H2), 1))
    # fan-in H3: 3, then H1 and H2 tie at 1 -> 10.0.0.1 before 192.168.7.2
    assert t.destination_fanin == ((str_to_ip(H3), 3), (str_to_ip(H1), 1), (str_to_ip(H2), 1))
    # links by packets: 5, 3, 2, then 1 and 1 tie -> by src (0.0.0.4 < 10.0.0.1)
    ip = str_to_ip
    assert t.links == ((ip(H2), ip(H3), 5), (ip(H1), ip(H2), 3), (ip(H4), ip(H3), 2), (ip(H4), ip(H1), 1),
                       (ip(H1), ip(H3), 1))


def test_top_talkers_ties_at_the_cut_take_lowest_addresses():
    # five sources with 2 packets each, one with 9; top 3 -> the 9, then the two lowest addresses
    A = matrix([(50, 1, 2), (40, 1, 2), (30, 1, 2), (20, 1, 2), (10, 1, 2), (99, 1, 9)])
    assert top_talkers(A, 3).sources == ((99, 9), (10, 2), (20, 2))
    assert top_talkers(A, 1).sources == ((99, 9),)
    assert top_talkers(A, 0).sources == ()


def test_link_ties_break_on_src_then_dst():
    A = matrix([(5, 9, 1), (5, 3, 1), (2, 7, 1), (2, 8, 1)])
    assert top_talkers(A, 10).links == ((2, 7, 1), (2, 8, 1), (5, 3, 1), (5, 9, 1))


def test_n_larger_than_entries():
    A = matrix(SMALL)
    t = top_talkers(A, 1000)
    assert len(t.sources) == 3 and len(t.destinations) == 3 and len(t.links) == 5
    assert len(t.source_fanout) == 3 and len(t.destination_fanin) == 3


def test_as_dict_uses_dotted_quads():
    A = matrix([(H1, H2, 3), (0xFFFFFFFF, 0, 1)])
    d = top_talkers(A, 10).as_dict()
    assert d["sources"] == [{"address": "10.0.0.1", "packets": 3}, {"address": "255.255.255.255", "packets": 1}]
    assert d["destinations"] == [{"address": "192.168.7.2", "packets": 3}, {"address": "0.0.0.0", "packets": 1}]
    assert d["links"] == [{"src": "10.0.0.1", "dst": "192.168.7.2", "packets": 3},
                          {"src": "255.255.255.255", "dst": "0.0.0.0", "packets": 1}]
    assert d["source_fanout"] == [{"address": "10.0.0.1", "fanout": 1}, {"address": "255.255.255.255", "fanout": 1}]
    assert d["destination_fanin"] == [{"address": "0.0.0.0", "fanin": 1}, {"address": "192.168.7.2", "fanin": 1}]
    assert all(type(e["packets"]) is int for e in d["sources"])  # JSON-ready Python ints
    assert ip_to_str(str_to_ip(H3)) == H3
