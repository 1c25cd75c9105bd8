"""Cutting a packet stream into windows: pure, vectorized, no I/O.

A window closes when it holds ``window_packets`` counted packets (2^17 by
default, the Graph Challenge's N_V) or when packet time crosses a UTC-aligned
``window_seconds`` boundary, whichever comes first.  Every record, counted or
skipped, belongs to exactly one window, so skip counts add up exactly.
A slot that saw no traffic at all still yields an empty window, so the
aggregator can tell a quiet node from a dead one.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from netsense import matrix

from .records import COUNTED, IMPLAUSIBLE_TIME, LIMITED_BROADCAST, REASONS, Records, mark_broadcast

NS = 1_000_000_000
_EMPTY = np.empty(0, np.uint32)
_MIN_BUFFER = 1 << 17   # first allocation of a window's src/dst columns (grown by doubling)


@dataclass(frozen=True)
class Window:
    """A closed window: the counted (src, dst) pairs plus bookkeeping."""

    seq: int
    start: int          # slot start, UTC seconds (aligned to window_seconds)
    end: int            # slot end, exclusive
    src: np.ndarray     # uint32, counted packets only
    dst: np.ndarray
    records: int        # every record seen, counted or not
    skipped: dict       # reason name -> count
    first_ts_ns: int | None
    last_ts_ns: int | None
    position: int       # source position after this window's last record

    @property
    def packets(self) -> int:
        return len(self.src)


@dataclass
class _Open:
    src: np.ndarray = field(default_factory=lambda: _EMPTY)  # counted packets: src[:valid], dst[:valid]
    dst: np.ndarray = field(default_factory=lambda: _EMPTY)  # (allocated and grown by Windower._append)
    records: int = 0
    skipped: Counter = field(default_factory=Counter)
    first: int | None = None
    last: int | None = None
    valid: int = 0


class Windower:
    """Feed ``Records``; get closed ``Window``s back in order.

    Time is the packet's own: a record always lands in a window of the slot its
    own timestamp falls in.  When timestamps go back (captures read in name order
    that are not in time order, a reordering NIC, a source that restarts its
    clock), the open window closes and a window of the earlier slot opens, so
    windows may close out of time order; the aggregator restates a period that
    was already final when one arrives late.  Windows stay disjoint by identity,
    not by slot: one slot may have several windows.

    Empty windows for silent slots (``fill_gaps``, live sources: quiet differs
    from down) are made only when time moves forward, and for gaps of at most
    ``max_gap_windows`` slots (``unfilled_gaps`` counts longer ones).  A replay
    from files fills nothing: the gaps between captures are not traffic.
    """

    def __init__(self, window_packets: int = 1 << 17, window_seconds: int = 60,
                 first_seq: int = 0, max_gap_windows: int = 1440, fill_gaps: bool = True):
        if window_packets < 1 or window_seconds < 1:
            raise ValueError("window_packets and window_seconds must be positive")
        self.window_packets = int(window_packets)
        self.window_seconds = int(window_seconds)
        self.max_gap_windows = int(max_gap_windows)
        self.fill_gaps = bool(fill_gaps)
        self.seq = int(first_seq)
        self.slot: int | None = None      # current slot number (seconds // window_seconds)
        self.slot_had_window = False
        self.open = _Open()
        self.position = 0
        self.unfilled_gaps = 0

    # -- internals -------------------------------------------------------
    def _close(self, out: list) -> None:
        o = self.open
        src, dst = o.src[:o.valid], o.dst[:o.valid]
        if 2 * o.valid < len(o.src):  # most of the buffer unused: do not keep it alive with the window
            src, dst = src.copy(), dst.copy()
        ws = self.window_seconds
        out.append(Window(self.seq, self.slot * ws, (self.slot + 1) * ws, src, dst, o.records,
                          dict(sorted(o.skipped.items())), o.first, o.last, self.position))
        self.seq += 1
        self.slot_had_window = True
        self.open = _Open()

    def _advance(self, new_slot: int, out: list) -> None:
        """Close the current slot and move to ``new_slot`` (earlier or later); when time moves
        forward and gaps are filled, emit empty windows for the silent slots in between."""
        if self.open.records or (self.fill_gaps and not self.slot_had_window):
            self._close(out)
        gap = new_slot - self.slot - 1
        if self.fill_gaps and 0 < gap <= self.max_gap_windows:
            for s in range(self.slot + 1, new_slot):
                self.slot = s
                self._close(out)
        elif self.fill_gaps and gap > self.max_gap_windows:
            self.unfilled_gaps += 1
        self.slot = new_slot
        self.slot_had_window = False

    def _append(self, src: np.ndarray, dst: np.ndarray) -> None:
        """Copy counted packets into the open window's columns (one buffer per window, no lists)."""
        o = self.open
        k = len(src)
        end = o.valid + k
        if end > len(o.src):
            cap = max(end, min(self.window_packets, max(2 * len(o.src), _MIN_BUFFER)))
            grown_src, grown_dst = np.empty(cap, np.uint32), np.empty(cap, np.uint32)
            grown_src[:o.valid] = o.src[:o.valid]
            grown_dst[:o.valid] = o.dst[:o.valid]
            o.src, o.dst = grown_src, grown_dst
        o.src[o.valid:end] = src
        o.dst[o.valid:end] = dst
        o.valid = end

    def _times(self, ts: np.ndarray) -> None:
        # Min/max over the whole chunk, not its first/last record: out-of-order timestamps
        # (which join the open window) otherwise gave last < first, and values that
        # depended on how the stream happened to be split into batches.
        o = self.open
        lo, hi = int(ts.min()), int(ts.max())
        o.first = lo if o.first is None else min(o.first, lo)
        o.last = hi if o.last is None else max(o.last, hi)

    def _take_all(self, rec: Records, i: int, j: int) -> None:
        """Records i..j-1, every one counted (the fast path)."""
        self._append(rec.src[i:j], rec.dst[i:j])
        self.open.records += j - i
        self._times(rec.ts_ns[i:j])

    def _take(self, rec: Records, reason: np.ndarray, valid: np.ndarray, i: int, j: int) -> None:
        if j <= i:
            return
        o = self.open
        v = valid[i:j]
        nv = int(v.sum())
        if nv == j - i:
            self._append(rec.src[i:j], rec.dst[i:j])
        elif nv:
            self._append(rec.src[i:j][v], rec.dst[i:j][v])
        o.records += j - i
        if nv != j - i:
            codes = np.bincount(reason[i:j], minlength=len(REASONS) + 1)
            for code, n in enumerate(codes):
                if code != COUNTED and n:
                    o.skipped[REASONS.get(code, f"reason_{code}")] += int(n)
            if codes[IMPLAUSIBLE_TIME]:  # their times are not this window's
                ts = rec.ts_ns[i:j][reason[i:j] != IMPLAUSIBLE_TIME]
                if len(ts):
                    self._times(ts)
                return
        self._times(rec.ts_ns[i:j])

    # -- API ---------------------------------------------------------------
    def resume_after(self, seq: int, start: int, position: int) -> None:
        """Continue a source right after window ``seq`` (slot ``start``), at source ``position``.

        This is exactly the state the windower was in just after closing that
        window, so the windows that follow are identical to an uninterrupted
        run's and keep their identities.
        """
        self.seq = seq + 1
        self.slot = start // self.window_seconds
        self.slot_had_window = True
        self.position = position

    def feed(self, rec: Records) -> list[Window]:
        out: list[Window] = []
        for name, n in rec.extra_skipped.items():
            self.open.skipped[name] += int(n)
        n = len(rec)
        if n == 0:
            self.position = rec.position
            return out
        slot_ns = self.window_seconds * NS
        if self.slot is None:
            self.slot = int(rec.ts_ns[0]) // slot_ns
        # Fast path, nearly every batch of a busy link: the whole batch is in the open slot and
        # every record counts.  Then windows only close on the packet count: a few reductions and
        # one copy per batch.
        if (int(rec.ts_ns.max()) // slot_ns == self.slot and int(rec.ts_ns.min()) // slot_ns == self.slot
                and not rec.reason.any()
                and int(rec.src.max()) != LIMITED_BROADCAST and int(rec.dst.max()) != LIMITED_BROADCAST):
            i = 0
            while i < n:
                k = min(n, i + self.window_packets - self.open.valid)
                self._take_all(rec, i, k)
                self.position = rec.position - (n - k)
                if self.open.valid == self.window_packets:
                    self._close(out)
                i = k
            self.position = rec.position
            return out
        reason = mark_broadcast(rec)
        valid = reason == COUNTED
        slots = rec.ts_ns // slot_ns
        implausible = reason == IMPLAUSIBLE_TIME
        if implausible.any():
            # Never counted into a period of their own (a 1970 or 2031 period nobody asked for):
            # they are accounted, as skipped, in the window of the record before them.
            idx = np.where(implausible, -1, np.arange(n))
            np.maximum.accumulate(idx, out=idx)
            slots = np.where(idx >= 0, slots[np.maximum(idx, 0)], self.slot)
        # Runs of records in one slot: [bounds[r], bounds[r + 1]).  The slot may go back.
        bounds = np.flatnonzero(slots[1:] != slots[:-1]) + 1
        run_end = np.append(bounds, n)
        cv = np.cumsum(valid)
        i = 0
        r = 0
        while i < n:
            while run_end[r] <= i:
                r += 1
            if int(slots[i]) != self.slot:
                self._advance(int(slots[i]), out)
            j = int(run_end[r])  # end of the current slot's run in the batch
            base = int(cv[i - 1]) if i else 0
            need = self.window_packets - self.open.valid
            if j > i and int(cv[j - 1]) - base >= need:
                k = int(np.searchsorted(cv, base + need)) + 1  # just past the need-th counted packet
                self._take(rec, reason, valid, i, k)
                self.position = rec.position - (n - k)
                self._close(out)
                i = k
                continue
            self._take(rec, reason, valid, i, j)
            self.position = rec.position - (n - j)
            i = j
        self.position = rec.position
        return out

    def tick(self, now_ns: int) -> list[Window]:
        """Close windows whose slot has ended on the wall clock (live sources go quiet)."""
        out: list[Window] = []
        now_slot = int(now_ns // (self.window_seconds * NS))
        if self.slot is None:
            self.slot = now_slot  # a live source silent from the start still lands empty windows
        elif now_slot > self.slot:
            self._advance(now_slot, out)
        return out

    def flush(self) -> list[Window]:
        """Close the open window at end of input; a partial window is landed, never dropped."""
        out: list[Window] = []
        if self.slot is None:
            if self.open.skipped:  # only unattributable skips (e.g. a truncated first record)
                self.slot = 0
                self._close(out)
            return out
        if self.open.records or self.open.skipped or not self.slot_had_window:
            self._close(out)
        return out


def to_matrix(src: np.ndarray, dst: np.ndarray, mapping=None):
    """A[src, dst] = packets from src to dst, a 2^32 x 2^32 hypersparse UINT64 matrix.

    Duplicates are summed by sorting one 64-bit key per packet and counting runs
    straight into the hypersparse CSR arrays GraphBLAS keeps, which are then imported
    (not built): the same matrix, and the same serialized bytes, as ``Matrix.from_coo``
    on sorted unique coordinates, at a fraction of the cost.

    ``mapping`` renames addresses (``Anonymizer.anonymize``: uint32 array -> uint32 array,
    elementwise).  ``to_matrix(src, dst, f)`` equals ``to_matrix(f(src), f(dst))``, but ``f``
    sees only the distinct sources and the links' destinations, not two addresses per
    packet, and only the links are sorted again.
    """
    if len(src) == 0:
        return matrix.empty()
    key = np.asarray(src).astype(np.uint64)
    key <<= matrix.S32
    d = np.asarray(dst)
    key |= d if d.dtype == np.uint32 else d.astype(np.uint64)
    key.sort()
    ah, ap, aj, ax = matrix.hypercsr(key)
    if mapping is not None:
        rows = np.asarray(mapping(ah.astype(np.uint32)), np.uint32).astype(np.uint64)
        rows <<= matrix.S32
        key = np.repeat(rows, np.diff(ap).astype(np.int64))
        key |= np.asarray(mapping(aj.astype(np.uint32)), np.uint32)
        order = np.argsort(key)
        ah, ap, aj, ax = matrix.hypercsr(key[order], ax[order])
    return matrix.from_hypercsr(ah, ap, aj, ax)
