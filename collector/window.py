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

from .records import COUNTED, REASONS, Records, mark_broadcast

NS = 1_000_000_000


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
    src: list = field(default_factory=list)
    dst: list = field(default_factory=list)
    records: int = 0
    skipped: Counter = field(default_factory=Counter)
    first: int | None = None
    last: int | None = None
    valid: int = 0


class Windower:
    """Feed ``Records``; get closed ``Window``s back in order.

    Out-of-order timestamps never reopen a past slot: a late record joins the
    open window (time only moves forward), which keeps windows disjoint.
    Gaps longer than ``max_gap_windows`` slots (e.g. two captures taken years
    apart) are not filled with empty windows; ``unfilled_gaps`` counts them.
    """

    def __init__(self, window_packets: int = 1 << 17, window_seconds: int = 60,
                 first_seq: int = 0, max_gap_windows: int = 1440):
        if window_packets < 1 or window_seconds < 1:
            raise ValueError("window_packets and window_seconds must be positive")
        self.window_packets = int(window_packets)
        self.window_seconds = int(window_seconds)
        self.max_gap_windows = int(max_gap_windows)
        self.seq = int(first_seq)
        self.slot: int | None = None      # current slot number (seconds // window_seconds)
        self.slot_had_window = False
        self.open = _Open()
        self.position = 0
        self.unfilled_gaps = 0

    # -- internals -------------------------------------------------------
    def _close(self, out: list) -> None:
        o = self.open
        src = np.concatenate(o.src) if len(o.src) > 1 else (o.src[0] if o.src else np.empty(0, np.uint32))
        dst = np.concatenate(o.dst) if len(o.dst) > 1 else (o.dst[0] if o.dst else np.empty(0, np.uint32))
        ws = self.window_seconds
        out.append(Window(self.seq, self.slot * ws, (self.slot + 1) * ws, src, dst, o.records,
                          dict(sorted(o.skipped.items())), o.first, o.last, self.position))
        self.seq += 1
        self.slot_had_window = True
        self.open = _Open()

    def _advance(self, new_slot: int, out: list) -> None:
        """Close the current slot and emit empty windows for silent slots up to ``new_slot``."""
        if self.open.records or not self.slot_had_window:
            self._close(out)
        gap = new_slot - self.slot - 1
        if 0 < gap <= self.max_gap_windows:
            for s in range(self.slot + 1, new_slot):
                self.slot = s
                self._close(out)
        elif gap > self.max_gap_windows:
            self.unfilled_gaps += 1
        self.slot = new_slot
        self.slot_had_window = False

    def _take(self, rec: Records, reason: np.ndarray, valid: np.ndarray, i: int, j: int) -> None:
        if j <= i:
            return
        o = self.open
        v = valid[i:j]
        o.src.append(rec.src[i:j][v])
        o.dst.append(rec.dst[i:j][v])
        nv = int(v.sum())
        o.valid += nv
        o.records += j - i
        if nv != j - i:
            codes = np.bincount(reason[i:j], minlength=len(REASONS) + 1)
            for code, n in enumerate(codes):
                if code != COUNTED and n:
                    o.skipped[REASONS.get(code, f"reason_{code}")] += int(n)
        # Min/max over the whole chunk, not its first/last record: out-of-order timestamps
        # (which join the open window) otherwise gave last < first, and values that
        # depended on how the stream happened to be split into batches.
        ts = rec.ts_ns[i:j]
        lo, hi = int(ts.min()), int(ts.max())
        o.first = lo if o.first is None else min(o.first, lo)
        o.last = hi if o.last is None else max(o.last, hi)

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
        reason = mark_broadcast(rec)
        valid = reason == COUNTED
        slots = rec.ts_ns // (self.window_seconds * NS)
        if self.slot is None:
            self.slot = int(slots[0])
        slots = np.maximum.accumulate(np.maximum(slots, self.slot))
        cv = np.cumsum(valid)
        i = 0
        while i < n:
            j = int(np.searchsorted(slots, self.slot, side="right"))  # end of current slot in batch
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
            if j < n:
                self._advance(int(slots[j]), out)
        self.position = rec.position
        return out

    def tick(self, now_ns: int) -> list[Window]:
        """Close windows whose slot has ended on the wall clock (live sources go quiet)."""
        out: list[Window] = []
        if self.slot is not None:
            now_slot = now_ns // (self.window_seconds * NS)
            if now_slot > self.slot:
                self._advance(int(now_slot), out)
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


def to_matrix(src: np.ndarray, dst: np.ndarray):
    """A[src, dst] = packets from src to dst, a 2^32 x 2^32 hypersparse UINT64 matrix.

    Duplicates are summed by sorting one 64-bit key per packet and counting
    runs; handing GraphBLAS sorted, unique coordinates is cheaper than its own
    duplicate handling.
    """
    import graphblas as gb

    from .winfile import N

    if len(src) == 0:
        return gb.Matrix("UINT64", nrows=N, ncols=N)
    key = (src.astype(np.uint64) << np.uint64(32)) | dst.astype(np.uint64)
    key.sort()
    edges = np.flatnonzero(np.diff(key)) + 1
    starts = np.concatenate(([0], edges))
    counts = np.diff(np.concatenate((starts, [len(key)]))).astype(np.uint64)
    uk = key[starts]
    rows = uk >> np.uint64(32)
    cols = uk & np.uint64(0xFFFFFFFF)
    return gb.Matrix.from_coo(rows, cols, counts, nrows=N, ncols=N, dtype="UINT64")
