"""Unit tests for aggregator/ledger.py (commit log, checkpoints) and aggregator/state.py (sums, coverage,
watermarks, finality, restatements).  Real files in tmp_path; matrices built by hand."""
from __future__ import annotations

import json
import os

import graphblas as gb
import pytest

from netsense.aggregator import ledger as L
from netsense.layout import checkpoint_file
from netsense.aggregator.ledger import Ledger, prune_checkpoints, read_checkpoint, write_checkpoint, \
    write_period_file
from netsense.aggregator.state import Period, State, add_range, empty
from netsense.aggregator.sums import Sums
from netsense.errors import LedgerDamaged, StateError
from netsense.winfile import N

P = 3600  # period seconds
T = 1_700_002_800  # a period start (T % 3600 == 0)
assert T % P == 0


def m(*entries) -> Sums:
    """A running sum of the UINT64 2^32 x 2^32 matrix with entries (src, dst, packets)."""
    if not entries:
        return empty()
    r, c, v = zip(*entries)
    return Sums.from_matrix(gb.Matrix.from_coo(list(r), list(c), list(v), nrows=N, ncols=N, dtype="UINT64"))


def coo(A: Sums) -> list:
    return sorted(zip(*(x.tolist() for x in A.to_matrix().to_coo())))


def hdr(node, seq, start, packets, *, run="0123456789ab", records=None, skipped=None, width=60) -> dict:
    skipped = skipped or {}
    return {"node": node, "run": run, "seq": seq, "start": start, "end": start + width, "packets": packets,
            "records": packets + sum(skipped.values()) if records is None else records, "skipped": skipped}


def no_load(p):
    raise AssertionError(f"load_final called for {p.id}")


# --- ledger ---------------------------------------------------------------------------------

def test_empty_ledger(tmp_path):
    led = Ledger.load(tmp_path)
    assert (led.generation, led.checkpoint, led.consumed) == (0, None, {})
    assert not (tmp_path / "ledger.jsonl").exists()


def test_commit_and_reload(tmp_path):
    led = Ledger.load(tmp_path)
    led.commit(1, checkpoint_file(1), [("a/r/0", "s0"), ("a/r/1", "s1")])
    led.commit(2, checkpoint_file(2), [("b/r/0", "t0")])
    led.commit(3, checkpoint_file(3), [])  # a generation may consume nothing (finality only)
    assert (led.generation, led.checkpoint) == (3, "checkpoint-0000000003.nsc")
    again = Ledger.load(tmp_path)
    assert again.generation == 3 and again.checkpoint == checkpoint_file(3)
    assert again.consumed == {"a/r/0": "s0", "a/r/1": "s1", "b/r/0": "t0"} == led.consumed
    lines = (tmp_path / "ledger.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 4  # one line per generation, newline-terminated
    assert [json.loads(x)["gen"] for x in lines[:-1]] == [1, 2, 3]


def test_write_ahead_log_keeps_what_the_named_checkpoint_lacks(tmp_path):
    led = Ledger.load(tmp_path)
    led.commit(1, None, [("a/r/0", "s0", "a0.nsw")])                       # no checkpoint yet
    led.commit(2, None, [("a/r/1", "s1", "a1.nsw")], [(3600, 1, "period-x-g2.nsc")])
    assert [r[0] for r in led.replay] == [1, 2] and led.replay[1][2] == [(3600, 1, "period-x-g2.nsc")]
    led.commit(3, None, [("a/r/2", "s2", "a2.nsw")])                       # checkpoint-2 written after it ...
    led.commit(4, checkpoint_file(2), [("a/r/3", "s3", "a3.nsw")])         # ... and named by the next line
    assert [r[0] for r in led.replay] == [3, 4]
    assert led.unsnapshotted == {"a/r/2": "a2.nsw", "a/r/3": "a3.nsw"} and led.windows_since_checkpoint == 2
    again = Ledger.load(tmp_path)
    assert (again.replay, again.unsnapshotted, again.checkpoint) == (led.replay, led.unsnapshotted,
                                                                     checkpoint_file(2))
    led.commit(5, checkpoint_file(5), [])                                  # its own checkpoint: nothing to replay
    assert led.replay == [] and led.unsnapshotted == {} and Ledger.load(tmp_path).replay == []
    assert len(Ledger.load(tmp_path).consumed) == 4


def _two_good_lines(tmp_path) -> int:
    led = Ledger.load(tmp_path)
    led.commit(1, checkpoint_file(1), [("a/r/0", "s0")])
    led.commit(2, checkpoint_file(2), [("a/r/1", "s1")])
    return (tmp_path / "ledger.jsonl").stat().st_size


def _third_line() -> bytes:
    """A valid generation-3 line, built the way ``Ledger.commit`` builds it."""
    rec = {"gen": 3, "checkpoint": checkpoint_file(3), "windows": [["a/r/2", "s2"]]}
    rec["crc"] = L._crc(rec)
    return (json.dumps(rec, separators=(",", ":")) + "\n").encode()


@pytest.mark.parametrize("tail", [
    pytest.param(lambda line: line[: len(line) // 2], id="partial-write"),
    pytest.param(lambda line: line[:1], id="one-byte"),
    pytest.param(lambda line: line[:-1], id="missing-newline"),
    pytest.param(lambda line: line.replace(b'"s2"', b'"s3"'), id="bad-crc"),
    pytest.param(lambda line: line.replace(b'"gen":3', b'"gen":4'), id="gen-gap-and-bad-crc"),
    pytest.param(lambda line: b"\x00" * len(line), id="zero-filled"),
    pytest.param(lambda line: b"\n", id="empty-line"),
    pytest.param(lambda line: b"null\n", id="json-not-an-object"),
    pytest.param(lambda line: b"[3]\n", id="json-list"),
])
def test_torn_last_line_is_ignored_and_truncated(tmp_path, tail):
    good = _two_good_lines(tmp_path)
    path = tmp_path / "ledger.jsonl"
    with open(path, "ab") as f:
        f.write(tail(_third_line()))
    assert path.stat().st_size > good
    led = Ledger.load(tmp_path)
    assert (led.generation, led.checkpoint) == (2, checkpoint_file(2))
    assert led.consumed == {"a/r/0": "s0", "a/r/1": "s1"}
    assert path.stat().st_size == good  # the torn tail was cut
    # the next commit appends on a clean line and survives a reload
    led.commit(3, checkpoint_file(3), [("a/r/2", "s2")])
    again = Ledger.load(tmp_path)
    assert again.generation == 3 and again.consumed == {"a/r/0": "s0", "a/r/1": "s1", "a/r/2": "s2"}
    assert all(json.loads(x)["gen"] == i + 1 for i, x in enumerate(path.read_bytes().splitlines()))


def test_a_gap_with_a_valid_crc_stops_the_load_and_cuts_nothing(tmp_path):
    good = _two_good_lines(tmp_path)
    rec = {"gen": 5, "checkpoint": checkpoint_file(5), "windows": []}
    rec["crc"] = L._crc(rec)
    with open(tmp_path / "ledger.jsonl", "ab") as f:
        f.write((json.dumps(rec) + "\n").encode())
    size = (tmp_path / "ledger.jsonl").stat().st_size
    assert size > good
    with pytest.raises(LedgerDamaged, match="skips to generation 5 after generation 2.*repair"):
        Ledger.load(tmp_path)
    assert (tmp_path / "ledger.jsonl").stat().st_size == size  # nothing was cut


def test_valid_last_line_is_kept(tmp_path):
    good = _two_good_lines(tmp_path)
    with open(tmp_path / "ledger.jsonl", "ab") as f:
        f.write(_third_line())
    led = Ledger.load(tmp_path)
    assert led.generation == 3 and led.consumed["a/r/2"] == "s2"
    assert (tmp_path / "ledger.jsonl").stat().st_size > good


# --- checkpoints ------------------------------------------------------------------------------

def test_checkpoint_write_read_round_trip(tmp_path):
    A, B = m((1, 2, 3), (0xFFFFFFFF, 0, 7)), m((5, 5, 1))
    name = write_checkpoint(tmp_path, 7, {"period_seconds": P, "nodes": {"a": {"packets": 11}}},
                            {"cumulative": A, "period:0": B, "empty": empty()})
    assert name == "checkpoint-0000000007.nsc" and (tmp_path / name).is_file()
    header, mats = read_checkpoint(tmp_path, name)
    assert header["kind"] == "checkpoint" and header["gen"] == 7
    assert header["period_seconds"] == P and header["nodes"] == {"a": {"packets": 11}}
    assert set(mats) == {"cumulative", "period:0", "empty"}
    assert mats["cumulative"].isequal(A) and mats["period:0"].isequal(B) and mats["empty"].nvals == 0
    # rewriting the same generation replaces it (an uncommitted attempt may have left one)
    write_checkpoint(tmp_path, 7, {"x": 1}, {"cumulative": B})
    header, mats = read_checkpoint(tmp_path, name)
    assert header["x"] == 1 and mats["cumulative"].isequal(B)


def test_unreadable_checkpoint_is_state_error(tmp_path):
    with pytest.raises(StateError):
        read_checkpoint(tmp_path, checkpoint_file(1))  # missing
    name = write_checkpoint(tmp_path, 1, {}, {"cumulative": m((1, 2, 3))})
    data = bytearray((tmp_path / name).read_bytes())
    data[-5] ^= 0xFF
    (tmp_path / name).write_bytes(bytes(data))
    with pytest.raises(StateError):
        read_checkpoint(tmp_path, name)


def test_period_file_round_trip(tmp_path):
    A = m((9, 8, 2))
    name = write_period_file(tmp_path, "20231114T230000Z", 4, A)
    assert name == "period-20231114T230000Z-g0000000004.nsc"
    header, mats = read_checkpoint(tmp_path, name)
    assert header["kind"] == "period" and header["period"] == "20231114T230000Z" and header["gen"] == 4
    assert mats["period"].isequal(A)


def test_prune_checkpoints_keeps_only_the_committed_one(tmp_path):
    for g in (1, 2, 3):
        write_checkpoint(tmp_path, g, {}, {"cumulative": empty()})
    (tmp_path / "ledger.jsonl").write_bytes(b"")
    (tmp_path / "period-x-g0000000001.nsc").write_bytes(b"")
    prune_checkpoints(tmp_path, checkpoint_file(2))
    assert sorted(os.listdir(tmp_path)) == [checkpoint_file(2), "ledger.jsonl", "period-x-g0000000001.nsc"]


# --- state: add_range -----------------------------------------------------------------------

def test_add_range_merging():
    cov: dict = {}
    for s in (5, 3, 4):  # out of order, touching
        add_range(cov, "a", "r1", s)
    assert cov == {"a": {"r1": [[3, 5]]}}
    add_range(cov, "a", "r1", 10)
    add_range(cov, "a", "r1", 0)
    assert cov["a"]["r1"] == [[0, 0], [3, 5], [10, 10]]
    add_range(cov, "a", "r1", 4)  # duplicate inside a range: no change
    assert cov["a"]["r1"] == [[0, 0], [3, 5], [10, 10]]
    for s in (7, 8, 9):
        add_range(cov, "a", "r1", s)
    assert cov["a"]["r1"] == [[0, 0], [3, 5], [7, 10]]
    add_range(cov, "a", "r1", 6)  # bridges two ranges
    assert cov["a"]["r1"] == [[0, 0], [3, 10]]
    add_range(cov, "a", "r1", 2)
    add_range(cov, "a", "r1", 1)
    assert cov["a"]["r1"] == [[0, 10]]
    add_range(cov, "a", "r2", 1)
    add_range(cov, "b", "r1", 1)
    assert cov == {"a": {"r1": [[0, 10]], "r2": [[1, 1]]}, "b": {"r1": [[1, 1]]}}


@pytest.mark.parametrize("seed", range(5))
def test_add_range_matches_set_of_seqs(seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    seqs = rng.integers(0, 200, 300).tolist()
    cov: dict = {}
    for s in seqs:
        add_range(cov, "n", "r", s)
    ranges = cov["n"]["r"]
    covered = {x for a, b in ranges for x in range(a, b + 1)}
    assert covered == set(seqs)
    # disjoint, sorted, not touching (maximally merged)
    assert all(ranges[i][1] + 1 < ranges[i + 1][0] for i in range(len(ranges) - 1))


# --- state: apply ---------------------------------------------------------------------------

def test_apply_sums_and_tracks_coverage_and_watermarks():
    st = State(P)
    st.apply(hdr("a", 0, T, 4, skipped={"not_ipv4": 2}), m((1, 2, 3), (1, 3, 1)), "a0.nsw", no_load)
    st.apply(hdr("a", 1, T + 60, 2), m((1, 2, 2)), "a1.nsw", no_load)
    st.apply(hdr("b", 0, T + 60, 5, run="bbbbbbbbbbbb", skipped={"not_ipv4": 1, "broadcast": 4}),
             m((7, 8, 5)), "b0.nsw", no_load)
    st.apply(hdr("a", 3, T + P, 1), m((1, 2, 1)), "a3.nsw", no_load)  # next period, seq 2 missing
    # cumulative: (1,2): 3+2+1=6, (1,3): 1, (7,8): 5
    assert coo(st.cumulative) == [(1, 2, 6), (1, 3, 1), (7, 8, 5)]
    assert sorted(st.periods) == [T, T + P]
    p0, p1 = st.periods[T], st.periods[T + P]
    assert (p0.start, p0.end, p1.start, p1.end) == (T, T + P, T + P, T + 2 * P)
    assert coo(p0.matrix) == [(1, 2, 5), (1, 3, 1), (7, 8, 5)] and coo(p1.matrix) == [(1, 2, 1)]
    assert p0.windows == ["a0.nsw", "a1.nsw", "b0.nsw"] and p1.windows == ["a3.nsw"]
    assert p0.dirty and p1.dirty and not p0.final
    assert p0.nodes == {"a": {"packets": 6, "records": 8, "windows": 2, "skipped": {"not_ipv4": 2}},
                        "b": {"packets": 5, "records": 10, "windows": 1,
                              "skipped": {"not_ipv4": 1, "broadcast": 4}}}
    assert st.nodes["a"] == {"packets": 7, "records": 9, "windows": 3, "skipped": {"not_ipv4": 2}}
    assert st.coverage == {"a": {"0123456789ab": [[0, 1], [3, 3]]}, "b": {"bbbbbbbbbbbb": [[0, 0]]}}
    assert st.watermarks == {"a": T + P + 60, "b": T + 120}
    assert st.counters == {"windows_consumed": 4, "packets_consumed": 12}
    assert p0.id == "20231114T230000Z" and st.period_of(T + P - 1) == T


def test_watermark_never_goes_back():
    st = State(P)
    st.apply(hdr("a", 5, T + 600, 1), m((1, 1, 1)), "x", no_load)
    st.apply(hdr("a", 4, T, 1), m((1, 1, 1)), "y", no_load)  # an older window consumed later
    assert st.watermarks == {"a": T + 660}


def test_apply_does_not_alias_the_window_matrix():
    st = State(P)
    a = m((1, 2, 3))
    st.apply(hdr("a", 0, T, 3), a, "a0", no_load)
    st.apply(hdr("a", 1, T, 3), a, "a1", no_load)
    assert coo(a) == [(1, 2, 3)]  # the input is untouched
    assert coo(st.cumulative) == [(1, 2, 6)] and coo(st.periods[T].matrix) == [(1, 2, 6)]


# --- state: finalize ------------------------------------------------------------------------

def _two_nodes_in_first_period() -> State:
    st = State(P)
    st.apply(hdr("a", 0, T, 1), m((1, 2, 1)), "a0", no_load)
    st.apply(hdr("b", 0, T, 1), m((3, 4, 1)), "b0", no_load)
    return st


def test_finalize_by_watermark():
    st = _two_nodes_in_first_period()
    known = {"a", "b"}
    assert st.finalize(set(), known, grace_seconds=10 * P) == []
    st.apply(hdr("a", 1, T + P, 1), m((1, 2, 1)), "a1", no_load)  # a moves past the period, b does not
    assert st.finalize(set(), known, 10 * P) == []
    assert not st.periods[T].final
    # b's window ending exactly at the period end is enough
    st.apply(hdr("b", 1, T + P - 60, 1), m((3, 4, 1)), "b1", no_load)
    assert st.watermarks["b"] == T + P
    out = st.finalize(set(), known, 10 * P)
    assert [p.start for p in out] == [T]
    assert st.periods[T].final and not st.periods[T + P].final


def test_finalize_returns_each_period_once_after_publishing():
    st = _two_nodes_in_first_period()
    st.apply(hdr("a", 1, T + P, 1), m((1, 2, 1)), "a1", no_load)
    st.apply(hdr("b", 1, T + P, 1), m((1, 2, 1)), "b1", no_load)
    assert [p.start for p in st.finalize(set(), {"a", "b"}, 10 * P)] == [T]
    p = st.periods[T]
    p.dirty, p.matrix = False, None  # what publishing does
    assert st.finalize(set(), {"a", "b"}, 10 * P) == []


def test_finalize_by_done_nodes():
    st = _two_nodes_in_first_period()
    st.apply(hdr("a", 1, T + P, 1), m((1, 2, 1)), "a1", no_load)
    # b is silent but finished (its capture ended): it does not hold the period back
    out = st.finalize({"b"}, {"a", "b"}, 10 * P)
    assert [p.start for p in out] == [T]
    st.periods[T].dirty, st.periods[T].matrix = False, None  # published
    # all known nodes done: every period is final, including the newest
    out = st.finalize({"a", "b"}, {"a", "b"}, 10 * P)
    assert [p.start for p in out] == [T + P]


def test_finalize_waits_for_a_known_node_that_sent_nothing_yet():
    st = State(P)
    st.apply(hdr("a", 0, T, 1), m((1, 2, 1)), "a0", no_load)
    st.apply(hdr("a", 60, T + P, 1), m((1, 2, 1)), "a60", no_load)
    assert st.finalize(set(), {"a", "c"}, 10 * P) == []  # c has a status file but no window yet
    assert [p.start for p in st.finalize(set(), {"a"}, 10 * P)] == [T]


def test_finalize_by_grace():
    st = _two_nodes_in_first_period()
    grace = 2 * P
    # a runs ahead, b stays silent and is not done
    st.apply(hdr("a", 1, T + 2 * P, 1), m((1, 2, 1)), "a1", no_load)  # newest end = T + 2P + 60
    assert st.finalize(set(), {"a", "b"}, grace) == []  # needs newest >= T + P + 2P
    st.apply(hdr("a", 2, T + 3 * P - 60, 1), m((1, 2, 1)), "a2", no_load)  # newest end = T + 3P exactly
    out = st.finalize(set(), {"a", "b"}, grace)
    assert [p.start for p in out] == [T]
    assert not st.periods[T + 2 * P].final


def test_late_window_into_final_period_is_a_restatement():
    st = _two_nodes_in_first_period()
    st.apply(hdr("a", 1, T + P, 1), m((1, 2, 1)), "a1", no_load)
    st.apply(hdr("b", 1, T + P, 1), m((1, 2, 1)), "b1", no_load)
    (p,) = st.finalize(set(), {"a", "b"}, 10 * P)
    saved = p.matrix  # sums are immutable: a reference is a snapshot
    p.version, p.file = 1, "period-x.nsc"
    p.dirty, p.matrix = False, None  # published: the sum lives in a file now
    loads = []

    def load_final(period: Period):
        loads.append(period.start)
        assert period.file == "period-x.nsc"
        return saved

    # a window from node c (restarted late) for the final period
    st.apply(hdr("c", 0, T + 120, 4), m((1, 2, 4), (9, 9, 1)), "c0", load_final)
    assert loads == [T]
    assert p.final and p.dirty
    # (1,2): 1 + 4 = 5, (3,4): 1, (9,9): 1
    assert coo(p.matrix) == [(1, 2, 5), (3, 4, 1), (9, 9, 1)]
    assert p.windows == ["a0", "b0", "c0"] and set(p.nodes) == {"a", "b", "c"}
    out = st.finalize(set(), {"a", "b", "c"}, 10 * P)
    assert out == [p] and p.final
    # a second late window in the same generation sums into the loaded matrix (no reload)
    st.apply(hdr("c", 1, T + 180, 1), m((1, 2, 1)), "c1", load_final)
    assert loads == [T] and coo(p.matrix)[0] == (1, 2, 6)


# --- state: checkpoint round trip --------------------------------------------------------------

def test_state_checkpoint_round_trip(tmp_path):
    st = _two_nodes_in_first_period()
    st.apply(hdr("a", 1, T + P, 2), m((1, 2, 2)), "a1", no_load)
    st.apply(hdr("b", 1, T + P, 1), m((5, 6, 1)), "b1", no_load)
    st.anonymization = "key-1"
    (p0,) = st.finalize(set(), {"a", "b"}, 10 * P)
    p0.version, p0.file = 1, write_period_file(tmp_path, p0.id, 1, p0.matrix)
    p0.dirty, p0.matrix = False, None
    st.generation = 1
    header, mats = st.to_checkpoint()
    assert set(mats) == {"delta", f"period:{T + P}"}  # final periods live in their own file
    assert st.unpublished == [T + P]  # the open period's report may lag the state
    name = write_checkpoint(tmp_path, 1, header, mats)
    h2, mats2 = read_checkpoint(tmp_path, name)
    back = State.from_checkpoint(1, h2, mats2)
    assert back.generation == 1 and back.period_seconds == P and back.anonymization == "key-1"
    assert back.cumulative.isequal(st.cumulative)
    assert (back.nodes, back.coverage, back.watermarks, back.counters, back.unpublished) == (
        st.nodes, st.coverage, st.watermarks, st.counters, st.unpublished)
    assert sorted(back.periods) == [T, T + P]
    b0, b1 = back.periods[T], back.periods[T + P]
    assert b0.matrix is None and b0.final and b0.version == 1 and b0.file == p0.file
    assert b0.windows == ["a0", "b0"] and b0.nodes == p0.nodes
    assert b1.matrix.isequal(st.periods[T + P].matrix) and not b1.final
    # the restored state keeps working: a late window restates the final period from its file
    back.apply(hdr("c", 0, T, 1), m((1, 2, 1)), "c0", lambda p: read_checkpoint(tmp_path, p.file)[1]["period"])
    assert coo(back.periods[T].matrix) == [(1, 2, 2), (3, 4, 1)]
    assert [p.start for p in back.finalize(set(), {"a", "b", "c"}, 10 * P)] == [T]


def test_cumulative_base_plus_delta_round_trip(tmp_path):
    """After a rebase the checkpoint holds only the delta; base + delta restores the cumulative sum."""
    st = _two_nodes_in_first_period()
    base_name = write_checkpoint(tmp_path, 1, {"base": True}, {"cumulative": st.cumulative}, prefix="cumulative")
    st.rebase(base_name)
    assert st.delta.nvals == 0
    st.apply(hdr("a", 1, T + P, 2), m((1, 2, 2)), "a1", no_load)
    header, mats = st.to_checkpoint()
    assert mats["delta"].nvals == 1 and header["base_file"] == base_name
    name = write_checkpoint(tmp_path, 2, header, mats)
    h2, mats2 = read_checkpoint(tmp_path, name)
    base = read_checkpoint(tmp_path, h2["base_file"])[1]["cumulative"]
    back = State.from_checkpoint(2, h2, mats2, base)
    assert back.cumulative.isequal(st.cumulative) and back.delta.isequal(st.delta)
