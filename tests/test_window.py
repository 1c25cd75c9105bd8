"""Unit tests for collector/window.py (Windower, to_matrix) and collector/records.py.

Everything is hand-built with ``make_records``; no files, no clocks.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from netsense.addresses import ip_to_str, str_to_ip
from netsense.collector.records import (BAD_IPV4_HEADER, BROADCAST, COUNTED, IMPLAUSIBLE_TIME, LIMITED_BROADCAST,
                                        NOT_IPV4, REASONS,
                                        TRUNCATED, make_records, mark_broadcast)
from netsense.collector.window import NS, Window, Windower, to_matrix

WS = 60  # window_seconds used throughout
T0 = 1_700_000_040  # a UTC second aligned to WS (1_700_000_040 % 60 == 0)
assert T0 % WS == 0


def ts(*seconds) -> list[int]:
    """Nanosecond timestamps from (possibly fractional) seconds after T0."""
    return [int((T0 + s) * NS) for s in seconds]


def recs(seconds, src=None, dst=None, reason=None, **kw):
    n = len(seconds)
    src = list(range(1, n + 1)) if src is None else src
    dst = [0x0A000000 + i for i in range(n)] if dst is None else dst
    return make_records(ts(*seconds), src, dst, reason, **kw)


def run(w: Windower, *batches) -> list[Window]:
    out = []
    for b in batches:
        out += w.feed(b)
    return out + w.flush()


def slot_start(k: int) -> int:
    """Start of the k-th slot after T0's slot."""
    return T0 + k * WS


# --- records.py ----------------------------------------------------------------

def test_make_records_canonical_dtypes_and_length_check():
    r = make_records([1, 2], [3, 4], [5, 6], position=7, extra_skipped={"truncated_record": 1})
    assert (r.ts_ns.dtype, r.src.dtype, r.dst.dtype, r.reason.dtype) == (np.int64, np.uint32, np.uint32, np.uint8)
    assert len(r) == 2 and r.position == 7 and r.extra_skipped == {"truncated_record": 1}
    assert r.reason.tolist() == [0, 0]
    with pytest.raises(ValueError):
        make_records([1, 2], [3], [5, 6])


def test_mark_broadcast_only_limited_broadcast_and_only_counted():
    B = LIMITED_BROADCAST
    r = make_records([0] * 5, [1, B, 2, B, 0xFFFFFFFE], [B, 3, 4, 5, 0x0AFFFFFF], [0, 0, 0, NOT_IPV4, 0])
    reason = mark_broadcast(r)
    # to bcast, from bcast, normal, already-skipped stays not_ipv4, subnet broadcast is counted
    assert reason.tolist() == [BROADCAST, BROADCAST, COUNTED, NOT_IPV4, COUNTED]
    assert r.reason.tolist() == [0, 0, 0, NOT_IPV4, 0]  # the input column is not modified


def test_ip_string_round_trip():
    assert ip_to_str(0x0A000001) == "10.0.0.1"
    assert ip_to_str(0xFFFFFFFF) == "255.255.255.255"
    assert str_to_ip("192.168.1.254") == 0xC0A801FE
    assert str_to_ip("167772161") == 0x0A000001
    for bad in ("1.2.3", "1.2.3.256", "a.b.c.d", "4294967296"):
        with pytest.raises(ValueError):
            str_to_ip(bad)


# --- closing rules ---------------------------------------------------------------

def test_windows_close_at_window_packets():
    w = Windower(window_packets=4, window_seconds=WS)
    out = run(w, recs([0.1 * i for i in range(10)]))
    assert [x.packets for x in out] == [4, 4, 2]
    assert [x.seq for x in out] == [0, 1, 2]
    assert all((x.start, x.end) == (T0, T0 + WS) for x in out)
    assert np.concatenate([x.src for x in out]).tolist() == list(range(1, 11))


def test_window_closes_right_after_the_nth_counted_packet_skips_go_to_next():
    # counted, skipped, counted, skipped, skipped, counted ...
    reason = [0, NOT_IPV4, 0, TRUNCATED, TRUNCATED, 0, 0]
    w = Windower(window_packets=2, window_seconds=WS)
    out = run(w, recs([0, 1, 2, 3, 4, 5, 6], reason=reason))
    assert [(x.packets, x.records, x.skipped) for x in out] == [
        (2, 3, {"not_ipv4": 1}),
        (2, 4, {"truncated": 2}),
    ]


def test_windows_close_at_utc_aligned_boundaries():
    # 59.9 s is still slot 0, 60.0 s is slot 1, 125 s is slot 2
    w = Windower(window_packets=1000, window_seconds=WS)
    out = run(w, recs([0, 30, 59.9, 60.0, 61, 125]))
    assert [(x.start, x.end, x.packets) for x in out] == [
        (slot_start(0), slot_start(1), 3),
        (slot_start(1), slot_start(2), 2),
        (slot_start(2), slot_start(3), 1),
    ]
    assert all(x.start % WS == 0 for x in out)


def test_slots_are_aligned_even_when_traffic_starts_mid_slot():
    w = Windower(window_packets=1000, window_seconds=WS)
    out = run(w, recs([17, 70]))
    assert [(x.start, x.end) for x in out] == [(T0, T0 + WS), (T0 + WS, T0 + 2 * WS)]


def test_count_and_time_whichever_first():
    # slot 0: 5 packets with window_packets=3 -> closes on count (3) then on time (2);
    # slot 1: 1 packet -> closes at flush
    w = Windower(window_packets=3, window_seconds=WS)
    out = run(w, recs([0, 1, 2, 3, 4, 60]))
    assert [(x.start, x.packets) for x in out] == [(slot_start(0), 3), (slot_start(0), 2), (slot_start(1), 1)]
    assert [x.seq for x in out] == [0, 1, 2]


def test_no_spurious_empty_window_after_count_close_when_slot_ends():
    # exactly window_packets packets fill slot 0, then traffic resumes in slot 1
    w = Windower(window_packets=3, window_seconds=WS)
    out = run(w, recs([0, 1, 2, 60]))
    assert [(x.start, x.packets) for x in out] == [(slot_start(0), 3), (slot_start(1), 1)]
    # same across batches, and with tick on the wall clock
    w = Windower(window_packets=3, window_seconds=WS)
    a = w.feed(recs([0, 1, 2]))
    assert [x.packets for x in a] == [3]
    assert w.tick(ts(61)[0]) == []  # slot 0 already has its window; nothing new
    assert [x.packets for x in w.flush()] == [0]  # slot 1 (now open, silent so far) lands as empty
    # ... and nothing at all if the stream simply ends after a count close
    w = Windower(window_packets=3, window_seconds=WS)
    assert [x.packets for x in run(w, recs([0, 1, 2]))] == [3]


def test_skipped_counted_by_reason_in_window_holding_them():
    reason = [0, NOT_IPV4, BAD_IPV4_HEADER, 0, NOT_IPV4, TRUNCATED, 0, 42]
    w = Windower(window_packets=1000, window_seconds=WS)
    out = run(w, recs([0, 1, 2, 3, 61, 62, 63, 64], reason=reason))
    assert [(x.records, x.packets, x.skipped) for x in out] == [
        (4, 2, {"bad_ipv4_header": 1, "not_ipv4": 1}),
        (4, 1, {"not_ipv4": 1, "reason_42": 1, "truncated": 1}),
    ]
    # skipped packets never reach the matrix
    assert out[0].src.tolist() == [1, 4] and out[1].src.tolist() == [7]


def test_limited_broadcast_is_skipped_as_broadcast():
    B = LIMITED_BROADCAST
    w = Windower(window_packets=1000, window_seconds=WS)
    out = run(w, recs([0, 1, 2, 3], src=[1, B, 3, 0xC0A801FF], dst=[2, 9, B, 4]))
    (x,) = out
    assert x.records == 4 and x.packets == 2 and x.skipped == {"broadcast": 2}
    assert x.src.tolist() == [1, 0xC0A801FF] and x.dst.tolist() == [2, 4]


def test_broadcast_does_not_count_towards_window_packets():
    B = LIMITED_BROADCAST
    w = Windower(window_packets=2, window_seconds=WS)
    out = run(w, recs([0, 1, 2, 3], src=[1, B, B, 2], dst=[5, 6, 7, 8]))
    assert [(x.packets, x.records, x.skipped) for x in out] == [(2, 4, {"broadcast": 2})]


def test_extra_skipped_counts_without_records():
    w = Windower(window_packets=1000, window_seconds=WS)
    out = run(w, recs([0, 1]), make_records([], [], [], extra_skipped={"truncated_record": 1}))
    (x,) = out
    assert x.records == 2 and x.packets == 2 and x.skipped == {"truncated_record": 1}
    # unattributable skips only (nothing parsed at all) still land in a window
    w = Windower(window_packets=1000, window_seconds=WS)
    out = run(w, make_records([], [], [], extra_skipped={"truncated_record": 1}))
    assert [(x.records, x.packets, x.skipped) for x in out] == [(0, 0, {"truncated_record": 1})]


# --- gaps ----------------------------------------------------------------------------

def test_empty_windows_for_silent_slots_in_gaps():
    w = Windower(window_packets=1000, window_seconds=WS)
    out = run(w, recs([0, 4 * WS + 1]))  # slots 1, 2, 3 are silent
    assert [(x.start, x.packets, x.records) for x in out] == [
        (slot_start(0), 1, 1), (slot_start(1), 0, 0), (slot_start(2), 0, 0), (slot_start(3), 0, 0),
        (slot_start(4), 1, 1)]
    assert [x.seq for x in out] == [0, 1, 2, 3, 4]
    assert all(x.first_ts_ns is None and x.src.dtype == np.uint32 for x in out[1:4])
    assert w.unfilled_gaps == 0


def test_gap_at_max_gap_windows_is_filled_beyond_is_not():
    w = Windower(window_packets=1000, window_seconds=WS, max_gap_windows=3)
    out = run(w, recs([0, 4 * WS]))  # gap of exactly 3 silent slots
    assert len(out) == 5 and w.unfilled_gaps == 0
    w = Windower(window_packets=1000, window_seconds=WS, max_gap_windows=3)
    out = run(w, recs([0, 5 * WS, 6 * WS, 100 * WS]))  # 4 silent slots, then 0, then 93
    assert [(x.start, x.packets) for x in out] == [
        (slot_start(0), 1), (slot_start(5), 1), (slot_start(6), 1), (slot_start(100), 1)]
    assert w.unfilled_gaps == 2


def test_gap_after_count_closed_window_has_no_duplicate_empty_for_closed_slot():
    w = Windower(window_packets=2, window_seconds=WS)
    out = run(w, recs([0, 1, 2 * WS]))
    # slot 0 closed on count, slot 1 silent -> one empty window, slot 2 has the packet
    assert [(x.start, x.packets) for x in out] == [(slot_start(0), 2), (slot_start(1), 0), (slot_start(2), 1)]


# --- order, positions, batches ---------------------------------------------------------

def test_out_of_order_timestamps_land_in_their_own_slot():
    w = Windower(window_packets=1000, window_seconds=WS)
    out = run(w, recs([0, 61, 30, 62, -500]))  # 30 s and -500 s arrive after slot 1 opened
    assert [(x.start, x.src.tolist()) for x in out] == [
        (slot_start(0), [1]), (slot_start(1), [2]), (slot_start(0), [3]), (slot_start(1), [4]),
        (slot_start(-9), [5])]
    # every window's time range lies inside its slot; no empty window is made going back
    for x in out:
        assert x.start * NS <= x.first_ts_ns <= x.last_ts_ns < x.end * NS


def test_a_replay_from_files_fills_no_gaps():
    w = Windower(window_packets=1000, window_seconds=WS, fill_gaps=False)
    out = run(w, recs([0, 3 * WS, 10 * WS]))
    assert [(x.start, x.packets) for x in out] == [(slot_start(0), 1), (slot_start(3), 1), (slot_start(10), 1)]
    assert w.unfilled_gaps == 0


def test_first_and_last_ts_are_min_and_max_not_first_and_last_arrival():
    w = Windower(window_packets=1000, window_seconds=WS)
    (x,) = run(w, recs([5, 3, 7, 1, 4]))
    assert (x.first_ts_ns, x.last_ts_ns) == (ts(1)[0], ts(7)[0])


def test_positions_mark_the_end_of_each_window():
    w = Windower(window_packets=4, window_seconds=WS)
    out = run(w, recs([0] * 10, position=100))
    assert [x.position for x in out] == [94, 98, 100]


def test_first_seq_is_respected():
    w = Windower(window_packets=1, window_seconds=WS, first_seq=41)
    assert [x.seq for x in run(w, recs([0, 1]))] == [41, 42]


def test_flush_lands_partial_window_and_is_idempotent():
    w = Windower(window_packets=1000, window_seconds=WS)
    assert w.feed(recs([0, 1, 2])) == []
    (x,) = w.flush()
    assert x.packets == 3 and x.records == 3
    assert w.flush() == []  # nothing left; no second (empty) window for the same slot


def test_flush_without_input_lands_nothing():
    assert Windower().flush() == []


def test_tick_closes_on_wall_clock():
    w = Windower(window_packets=1000, window_seconds=WS)
    assert w.tick(ts(10)[0]) == []  # no slot yet: nothing to close
    assert w.feed(recs([0, 1])) == []
    assert w.tick(ts(59.999)[0]) == []  # slot 0 still running
    out = w.tick(ts(3 * WS + 5)[0])  # wall clock in slot 3: slot 0 closes, 1 and 2 are silent
    assert [(x.start, x.packets) for x in out] == [(slot_start(0), 2), (slot_start(1), 0), (slot_start(2), 0)]
    assert w.tick(ts(3 * WS + 6)[0]) == []
    # traffic that shows up afterwards goes to slot 3, no window for slot 3 was emitted early
    out = w.feed(recs([3 * WS + 7])) + w.flush()
    assert [(x.start, x.packets, x.seq) for x in out] == [(slot_start(3), 1, 3)]


def test_invalid_parameters():
    with pytest.raises(ValueError):
        Windower(window_packets=0)
    with pytest.raises(ValueError):
        Windower(window_seconds=0)


# --- property tests: batch splits and a record-at-a-time reference ------------------------

def random_stream(seed: int, n: int = 3000):
    rng = np.random.default_rng(seed)
    # mostly increasing time with jitter (out-of-order arrivals), a few long silences
    step = rng.exponential(0.4, n)
    gaps = rng.random(n) < 0.004
    step[gaps] += rng.integers(60, 600, int(gaps.sum()))
    t = T0 + 13.7 + np.cumsum(step) + rng.normal(0, 2.0, n) * (rng.random(n) < 0.05)
    t_ns = (t * NS).astype(np.int64)
    src = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    dst = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    src[rng.random(n) < 0.01] = LIMITED_BROADCAST
    dst[rng.random(n) < 0.01] = LIMITED_BROADCAST
    # parser reasons only: implausible_time is given by mark_implausible (tested on its own below)
    reason = np.where(rng.random(n) < 0.1, rng.integers(1, IMPLAUSIBLE_TIME, n), 0).astype(np.uint8)
    return t_ns, src, dst, reason


def reference_windows(t_ns, src, dst, reason, wp, ws, max_gap):
    """Record-at-a-time restatement of the windowing rules (plain Python)."""
    out = []
    state = {"slot": None, "had": False, "cur": None, "seq": 0}

    def new():
        return {"src": [], "dst": [], "records": 0, "skipped": {}, "ts": []}

    def close():
        c = state["cur"]
        out.append((state["seq"], state["slot"] * ws, (state["slot"] + 1) * ws, c["src"], c["dst"], c["records"],
                    dict(sorted(c["skipped"].items())), min(c["ts"], default=None), max(c["ts"], default=None)))
        state["seq"] += 1
        state["had"] = True
        state["cur"] = new()

    state["cur"] = new()
    for t, s, d, r in zip(t_ns.tolist(), src.tolist(), dst.tolist(), reason.tolist()):
        k = t // (ws * NS)
        if state["slot"] is None:
            state["slot"] = k
        if k != state["slot"]:  # time is the packet's own: any change of slot closes the window
            if state["cur"]["records"] or not state["had"]:
                close()
            if k > state["slot"] and k - state["slot"] - 1 <= max_gap:  # only forward gaps are filled
                for g in range(state["slot"] + 1, k):
                    state["slot"] = g
                    close()
            state["slot"], state["had"] = k, False
        c = state["cur"]
        c["records"] += 1
        c["ts"].append(t)
        if r == COUNTED and LIMITED_BROADCAST in (s, d):
            r = BROADCAST
        if r == COUNTED:
            c["src"].append(s)
            c["dst"].append(d)
            if len(c["src"]) == wp:
                close()
        else:
            name = REASONS[r]
            c["skipped"][name] = c["skipped"].get(name, 0) + 1
    if state["slot"] is not None and (state["cur"]["records"] or not state["had"]):
        close()
    return out


def as_tuple(x: Window):
    return (x.seq, x.start, x.end, x.src.tolist(), x.dst.tolist(), x.records, x.skipped, x.first_ts_ns,
            x.last_ts_ns)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("wp", [1, 7, 150])
def test_batch_splits_do_not_change_windows(seed, wp):
    t_ns, src, dst, reason = random_stream(seed)
    n = len(t_ns)
    ref = reference_windows(t_ns, src, dst, reason, wp, WS, max_gap=5)
    whole = run(Windower(wp, WS, max_gap_windows=5), make_records(t_ns, src, dst, reason, position=n))
    assert [as_tuple(x) for x in whole] == ref
    rng = np.random.default_rng(1000 + seed)
    for _ in range(3):
        cuts = np.sort(rng.choice(np.arange(1, n), size=rng.integers(1, 60), replace=False))
        # include some empty batches too
        bounds = [0, *cuts.tolist(), cuts[-1], n]
        batches = [make_records(t_ns[a:b], src[a:b], dst[a:b], reason[a:b], position=b)
                   for a, b in zip(bounds[:-1], bounds[1:])]
        w = Windower(wp, WS, max_gap_windows=5)
        split = run(w, *batches)
        assert [as_tuple(x) for x in split] == [as_tuple(x) for x in whole]
        assert [x.position for x in split] == [x.position for x in whole]


@pytest.mark.parametrize("seed", range(4))
def test_every_record_lands_in_exactly_one_window(seed):
    t_ns, src, dst, reason = random_stream(seed, n=5000)
    wp = 97
    out = run(Windower(wp, WS, max_gap_windows=3), make_records(t_ns, src, dst, reason, position=len(t_ns)))
    eff = mark_broadcast(make_records(t_ns, src, dst, reason))
    counted = eff == COUNTED
    assert sum(x.records for x in out) == len(t_ns)
    assert sum(x.packets for x in out) == int(counted.sum())
    assert sum(x.records - x.packets for x in out) == int((~counted).sum())
    # skip totals by reason match the input exactly
    totals: dict = {}
    for x in out:
        assert x.packets <= wp
        assert x.records == x.packets + sum(x.skipped.values())
        for k, v in x.skipped.items():
            totals[k] = totals.get(k, 0) + v
    expect = {REASONS[c]: int((eff == c).sum()) for c in np.unique(eff[~counted]).tolist()}
    assert totals == expect
    # counted packets come out in input order, each exactly once
    assert np.array_equal(np.concatenate([x.src for x in out]), src[counted])
    assert np.array_equal(np.concatenate([x.dst for x in out]), dst[counted])
    # sequence numbers are consecutive; every record lies in its window's slot
    assert [x.seq for x in out] == list(range(len(out)))
    for x in out:
        if x.first_ts_ns is not None:
            assert x.start * NS <= x.first_ts_ns <= x.last_ts_ns < x.end * NS


# --- to_matrix ------------------------------------------------------------------------------

def scipy_reference(src, dst):
    """(row addr, col addr, count) of the duplicate-summed coo->csr matrix on compressed indices."""
    ids, inv = np.unique(np.concatenate([src, dst]).astype(np.uint64), return_inverse=True)
    r, c = inv[: len(src)], inv[len(src):]
    m = sp.coo_matrix((np.ones(len(src), np.int64), (r, c)), shape=(len(ids), len(ids))).tocsr()
    m.sum_duplicates()
    coo = m.tocoo()
    order = np.lexsort((coo.col, coo.row))
    return ids[coo.row[order]], ids[coo.col[order]], coo.data[order]


@pytest.mark.parametrize("seed", range(4))
def test_to_matrix_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    n = 4000
    # heavy-tailed: a few hosts (including 0 and 2^32-1) carry most traffic, duplicates are common
    hosts = np.concatenate([[0, 0xFFFFFFFF, 0x80000000], rng.integers(0, 1 << 32, 300, dtype=np.uint64)])
    pick = np.minimum(rng.zipf(1.6, (2, n)) - 1, len(hosts) - 1)
    src = hosts[pick[0]].astype(np.uint32)
    dst = hosts[pick[1]].astype(np.uint32)
    A = to_matrix(src, dst)
    assert (A.nrows, A.ncols, str(A.dtype)) == (1 << 32, 1 << 32, "UINT64")
    rows, cols, vals = A.to_coo()  # row-major order
    er, ec, ev = scipy_reference(src, dst)
    assert np.array_equal(rows, er) and np.array_equal(cols, ec) and np.array_equal(vals, ev)
    assert int(vals.sum()) == n


def test_to_matrix_small_by_hand_and_empty():
    A = to_matrix(np.array([1, 1, 2, 1], np.uint32), np.array([5, 5, 5, 0xFFFFFFFF], np.uint32))
    assert sorted(zip(*(x.tolist() for x in A.to_coo()))) == [(1, 5, 2), (1, 0xFFFFFFFF, 1), (2, 5, 1)]
    E = to_matrix(np.empty(0, np.uint32), np.empty(0, np.uint32))
    assert (E.nvals, E.nrows, E.ncols, str(E.dtype)) == (0, 1 << 32, 1 << 32, "UINT64")


def test_tick_lands_empty_windows_for_a_live_source_silent_from_the_start():
    w = Windower(window_packets=10, window_seconds=2)
    assert w.tick(100 * 10**9) == []          # starts the clock in slot 50
    out = w.tick(106 * 10**9)                 # slots 50, 51, 52 ended without traffic
    assert [(x.start, x.records) for x in out] == [(100, 0), (102, 0), (104, 0)]


def test_implausible_times_are_skipped_in_the_window_of_the_record_before_them():
    from netsense.collector.records import IMPLAUSIBLE_TIME, mark_implausible

    t = ts(0, 1, 2) + [0, 3 * 10**18] + ts(3)  # 1970 and 2065 among 2023 packets
    rec = mark_implausible(make_records(t, [1, 2, 3, 4, 5, 6], [9] * 6, position=6), now_ns=ts(10)[0])
    assert rec.reason.tolist() == [0, 0, 0, IMPLAUSIBLE_TIME, IMPLAUSIBLE_TIME, 0]
    out = run(Windower(window_packets=1000, window_seconds=WS, fill_gaps=False), rec)
    assert [(x.start, x.src.tolist(), x.skipped) for x in out] == [(slot_start(0), [1, 2, 3, 6],
                                                                     {"implausible_time": 2})]
    assert out[0].first_ts_ns == ts(0)[0] and out[0].last_ts_ns == ts(3)[0]
