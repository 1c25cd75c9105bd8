"""In-process traffic sensing: a web-service instance records its own requests.

This is the DBOS use case: there is no capture to read, the service itself
knows every client -> server exchange.  ``Sensor`` turns ``record(src, dst)``
calls into the same window files, in the same landing folder and with the same
status file as the collector daemon, because a background thread runs the very
same ``Collector`` loop over a live, push-fed ``Source``::

    sensor = Sensor("/mnt/netsense", "web1-w0").start()
    ...
    sensor.record(request_remote_addr, "10.0.0.5")     # from any thread
    ...
    sensor.close()                                     # lands the open window

Cost model (CPython, GIL build).  ``record`` is one method call, two dict
look-ups (dotted quad -> ``ip << 32`` and dotted quad -> ``ip``, cached) and
one ``array('Q').append`` of the packed ``src << 32 | dst``: no lock, no
allocation that outlives the call.  ``array.append`` and the drain's
``chunk = buf[:n]; del buf[:n]`` are each a single C call under the GIL, and
appends only ever go to the end, so the drain takes exactly the events it
copied and never loses one that a thread appended in between (swapping whole
buffers would: a thread preempted after fetching the old buffer appends to it
later).  On a free-threaded build a ``list`` (whose operations lock per object)
replaces the array.

Threads (each wake-up takes the GIL from the request threads, so there is one
periodic wake-up, every ``drain_interval``):

* ``netsense-sensor-<node>`` runs ``Collector(...).run(stop)`` over a live
  ``Source`` whose generator, every ``drain_interval`` (0.2 s), moves the
  buffer out and yields it as a Records batch (empty if need be, so windows
  close on the wall clock), each event stamped with the wall clock of its drain
  (at most ``drain_interval`` late).  Windowing, landing and status files are
  the daemon's code.  If the collector fails (shared directory unwritable...),
  the failure is logged and a new run (a new random run id) starts after a
  back-off; the web service never sees an exception.
* ``netsense-sensor-watchdog`` wakes every second or so and drains only when the
  collector thread has not (landing blocked on a hung file system, or backing
  off), into a queue bounded by ``max_buffered`` events, so a stalled shared
  file system can never make the web service run out of memory: beyond the
  bound, events are dropped and counted (``stats()["dropped"]``, logged).

Addresses: a dotted-quad ``str`` (also the IPv4-mapped IPv6 form
``::ffff:a.b.c.d`` that dual-stack servers report), an ``int`` in
[0, 2^32), an ``ipaddress.IPv4Address`` or a numpy integer.  Anything else
(IPv6 clients, ``None``, host names, garbage) is counted as a skipped record
with reason ``not_ipv4`` and never raises.  255.255.255.255 is skipped as
``broadcast`` by the windowing code, as for captures.  ``skip(reason)`` counts
an event that cannot be recorded for another reason of ``records.REASONS`` (the
WSGI middleware: ``server_unresolved``), so it is never silently lost.

One Sensor per process, and one node name per Sensor: a node's landing folder
and status file belong to one collector.  With several worker processes per
host, give each worker its own node name (e.g. ``f"{host}-w{worker_id}"``) and
start the Sensor in the worker, after the fork; a Sensor started before a fork
is disabled in the child (its threads do not exist there), with a warning.
"""
from __future__ import annotations

import array
import atexit
import ipaddress
import logging
import operator
import os
import secrets
import sys
import threading
import time
import weakref
from pathlib import Path

import numpy as np

from netsense.layout import check_node

from .records import NOT_IPV4, REASONS, Records
from .run import Collector, CollectorConfig, RunSummary
from .sources import Source

log = logging.getLogger("netsense.sensor")

U32 = 0xFFFFFFFF
_REASON_CODES = {name: code for code, name in REASONS.items()}
_GIL = getattr(sys, "_is_gil_enabled", lambda: True)()
_EMPTY_U64 = np.empty(0, np.uint64)
BATCH_EVENTS = 1 << 20  # at most this many events per Records batch (bounds transient memory)


def parse_address(x) -> int | None:
    """An IPv4 address as a big-endian uint32, or None when ``x`` is not one (never raises)."""
    try:
        if type(x) is str:
            try:
                return int(ipaddress.IPv4Address(x))
            except ValueError:
                if ":" in x:  # IPv4-mapped IPv6 (dual-stack listeners): an IPv4 client really
                    m = ipaddress.IPv6Address(x).ipv4_mapped
                    return None if m is None else int(m)
                return None
        if isinstance(x, bool) or x is None:
            return None
        if isinstance(x, ipaddress.IPv4Address):
            return int(x)
        if isinstance(x, ipaddress.IPv6Address):
            return None if x.ipv4_mapped is None else int(x.ipv4_mapped)
        if isinstance(x, (bytes, bytearray)):
            return parse_address(x.decode("ascii"))
        if isinstance(x, str):  # a str subclass
            return parse_address(str(x))
        v = operator.index(x)  # int, numpy integers
        return v if 0 <= v <= U32 else None
    except Exception:  # ValueError, TypeError, UnicodeDecodeError, anything odd: not an address
        return None


class Sensor:
    """Record client -> server events from any thread; windows land in ``shared``/nodes/``node``."""

    def __init__(self, shared, node: str, *, window_packets: int = 1 << 17, window_seconds: int = 60,
                 status_interval: float = 5.0, drain_interval: float = 0.2, max_buffered: int = 1 << 23,
                 cache_size: int = 1 << 16, secret: bytes | None = None, anonymizer=None):
        check_node(node)  # a bad name is a configuration error: raise now, not in a thread
        if window_packets < 1 or window_seconds < 1:
            raise ValueError("window_packets and window_seconds must be positive")
        if drain_interval <= 0 or max_buffered < 1:
            raise ValueError("drain_interval and max_buffered must be positive")
        self.shared = Path(shared)
        self.node = node
        self.spec = f"sensor:{node}"
        self.config = CollectorConfig(shared=self.shared, node=node, source=self.spec,
                                      window_packets=int(window_packets), window_seconds=int(window_seconds),
                                      status_interval=float(status_interval))
        # Passed to Collector only when given: the HMAC secret of a directory whose aggregator runs
        # with --secret, and an address anonymizer, exactly as for the daemon.
        self._collector_options = {k: v for k, v in (("secret", secret), ("anonymizer", anonymizer))
                                   if v is not None}
        self.drain_interval = float(drain_interval)
        self.max_buffered = int(max_buffered)
        self.cache_size = int(cache_size)

        # Hot-path state: read by record() without locks.
        self._buf = array.array("Q") if _GIL else []
        self._append = self._buf.append
        self._src_cache: dict = {}   # address -> ip << 32
        self._dst_cache: dict = {}   # address -> ip
        self._bad_keys: dict = {}    # str addresses known not to be IPv4 (host names, IPv6)
        self._bad = []               # counts of not_ipv4 events, appended by record()/record_many()
        self._other = []             # (reason code, count) of events skipped for other reasons, by skip()

        # Drain -> collector hand-off.
        self._cond = threading.Lock()        # guards the queue and the counters below
        self._drain_lock = threading.Lock()  # one drain at a time (collector thread or watchdog)
        self._last_drain = time.monotonic()
        self._queue: list = []       # (ts_ns, keys uint64 array, n skipped, ((code, n), ...) not not_ipv4)
        self._queued = 0
        self._final = False          # the last drain after close() is in the queue
        self._drained = 0            # events moved out of the buffer (counted or skipped)
        self._not_ipv4 = 0
        self._skipped: dict = {}     # reason name -> events skipped by skip() (not_ipv4 is _not_ipv4)
        self._dropped = 0
        self._last_drop_log = 0.0

        self._closing = threading.Event()
        self._started = False
        self._closed = False
        self._disabled = False       # set in a forked child
        self._lifecycle = threading.Lock()
        self._watchdog: threading.Thread | None = None
        self._runner: threading.Thread | None = None
        self._collector: Collector | None = None
        self.summaries: list[RunSummary] = []   # one per collector run, the last one current
        self.failures = 0                        # collector runs that ended with an exception

    # -- hot path --------------------------------------------------------------
    def record(self, src, dst) -> None:
        """Record one ``src -> dst`` event (one "packet"); thread-safe, never raises."""
        try:
            self._append(self._src_cache[src] | self._dst_cache[dst])
        except Exception:  # first sight of an address (KeyError), unhashable or odd input
            self._record_slow(src, dst)

    def _record_slow(self, src, dst) -> None:
        try:
            s = self._lookup(src, self._src_cache, 32)
            d = self._lookup(dst, self._dst_cache, 0)
            if s is None or d is None:
                self._bad.append(1)
            else:
                self._append(s | d)
        except Exception:  # e.g. MemoryError: still never into the web app
            self._bad.append(1)

    def _lookup(self, x, cache: dict, shift: int) -> int | None:
        try:
            return cache[x]
        except Exception:
            pass
        t = type(x)
        if t is str and x in self._bad_keys:
            return None
        ip = parse_address(x)
        if t is str or t is int:  # cache only plain keys: equal keys of other types would alias
            if ip is None:
                if t is str:
                    if len(self._bad_keys) >= self.cache_size:
                        self._bad_keys.clear()
                    self._bad_keys[x] = True
            else:
                if len(cache) >= self.cache_size:
                    cache.clear()  # bounded: a scan from many clients must not grow it forever
                cache[x] = ip << shift
        return None if ip is None else ip << shift

    def record_many(self, src_array, dst_array) -> None:
        """Record ``len(src_array)`` events; integer numpy arrays take a vectorized path.

        Raises ValueError only for mismatched lengths (a programming error);
        bad addresses are counted as skipped like in ``record``.
        """
        if not hasattr(src_array, "__len__"):
            src_array = list(src_array)
        if not hasattr(dst_array, "__len__"):
            dst_array = list(dst_array)
        if len(src_array) != len(dst_array):
            raise ValueError(f"record_many: {len(src_array)} sources but {len(dst_array)} destinations")
        if isinstance(src_array, np.ndarray) and isinstance(dst_array, np.ndarray) \
                and src_array.dtype.kind in "iu" and dst_array.dtype.kind in "iu":
            try:
                s = src_array.ravel()
                d = dst_array.ravel()
                ok = (s >= 0) & (s <= U32) & (d >= 0) & (d <= U32)
                nbad = len(s) - int(np.count_nonzero(ok))
                if nbad:
                    s, d = s[ok], d[ok]
                keys = (s.astype(np.uint64) << np.uint64(32)) | d.astype(np.uint64)
                if _GIL:
                    self._buf.frombytes(keys.tobytes())   # one C call: atomic under the GIL
                else:
                    self._buf.extend(keys.tolist())
                if nbad:
                    self._bad.append(nbad)
            except Exception:
                log.exception("record_many: could not record %d events", len(src_array))
            return
        rec = self.record
        for s, d in zip(src_array, dst_array):
            rec(s, d)

    def skip(self, reason: str, n: int = 1) -> None:
        """Count ``n`` events that happened but cannot be recorded, under the skip ``reason`` (a
        name of ``records.REASONS``, e.g. ``server_unresolved``); thread-safe, never raises.
        An unknown reason is counted as ``not_ipv4``."""
        try:
            n = operator.index(n)
            if n <= 0:
                return
            code = _REASON_CODES.get(reason, NOT_IPV4)
            if code == NOT_IPV4:
                self._bad.append(n)
            else:
                self._other.append((code, n))
        except Exception:
            pass

    def _disabled_record(self, src, dst) -> None:
        pass

    def _disabled_skip(self, reason, n=1) -> None:
        pass

    def _disabled_record_many(self, src_array, dst_array) -> None:
        pass

    # -- draining --------------------------------------------------------------
    def _drain_once(self, final: bool = False, watchdog: bool = False) -> None:
        """Move the buffer into the queue (bounded by ``max_buffered``); ``final``: the last one."""
        with self._drain_lock:
            if self._final or (watchdog and self._closing.is_set()):
                return  # nothing may follow the final drain
            self._last_drain = time.monotonic()
            buf = self._buf
            n = len(buf)
            if n:
                chunk = buf[:n]
                del buf[:n]     # appends made since len() stay, at the front now
                keys = np.frombuffer(chunk, dtype=np.uint64) if _GIL else np.array(chunk, dtype=np.uint64)
            else:
                keys = _EMPTY_U64
            bad = self._bad
            m = len(bad)
            nbad = sum(bad[:m]) if m else 0
            if m:
                del bad[:m]
            other = self._other
            m = len(other)
            others: dict = {}
            if m:
                for code, k in other[:m]:
                    others[code] = others.get(code, 0) + k
                del other[:m]
            nother = sum(others.values())
            ts = time.time_ns()
            with self._cond:
                total = n + nbad + nother
                self._drained += total
                self._not_ipv4 += nbad
                for code, k in others.items():
                    self._skipped[REASONS[code]] = self._skipped.get(REASONS[code], 0) + k
                if total and self._queued + total > self.max_buffered:
                    self._dropped += total
                    now = time.monotonic()
                    if now - self._last_drop_log > 60:
                        self._last_drop_log = now
                        log.warning("sensor %s: the collector is not keeping up (shared directory stalled?); "
                                    "dropped %d events so far", self.node, self._dropped)
                elif total:
                    self._queue.append((ts, keys, nbad + nother, tuple(others.items())))
                    self._queued += total
                if final:
                    self._final = True

    def _watchdog_loop(self) -> None:
        """Drain (into the bounded queue) only while the collector thread cannot: blocked landing
        on a hung file system, or backing off after a failure.  Normally it finds a recent drain
        and goes back to sleep, so the process has one periodic wake-up, not two: each wake-up
        takes the GIL from the request threads, which costs most when CPUs are oversubscribed."""
        period = max(1.0, 4 * self.drain_interval)
        while not self._closing.wait(period):
            if time.monotonic() - self._last_drain > period:
                try:
                    self._drain_once(watchdog=True)
                except Exception:
                    log.exception("sensor %s: drain failed", self.node)

    def _batches(self, stop: threading.Event):
        """The live source: every ``drain_interval``, drain and yield a Records batch (empty if
        need be); after ``close()``, a final drain and then the end."""
        position = 0
        while True:
            if not self._queue and not self._final:
                self._closing.wait(self.drain_interval)
            if not self._final:
                self._drain_once(final=self._closing.is_set())
            with self._cond:
                chunks, n = [], 0
                while self._queue and (not chunks or n + len(self._queue[0][1]) <= BATCH_EVENTS):
                    c = self._queue.pop(0)
                    chunks.append(c)
                    n += len(c[1]) + c[2]
                self._queued -= n
                final = self._final and not self._queue
            rec = _to_records(chunks, position)
            position = rec.position
            if final:
                # Everything recorded before close() is in ``rec``; setting the collector's stop
                # now makes it land the open window after this batch (state "stopped").
                stop.set()
            yield rec
            if final:
                return

    def _new_collector(self) -> tuple[Collector, threading.Event]:
        stop = threading.Event()
        source = Source(self.spec, secrets.token_hex(6), True, lambda _stop: self._batches(stop))
        return Collector(self.config, source=source, **self._collector_options), stop

    def _run_loop(self, first: tuple[Collector, threading.Event]) -> None:
        backoff = 1.0
        while True:
            closing_at_start = self._closing.is_set()
            col = None
            began = time.monotonic()
            try:
                col, stop = first or self._new_collector()
                first = None
                self._collector = col
                self.summaries.append(col.summary)
                col.run(stop)
                return  # the generator ends only after the final drain: everything is landed
            except Exception:
                self.failures += 1
                if col is not None and col.summary.state == "running":
                    col.summary.state = "failed"  # it failed before its run loop began
                if time.monotonic() - began > 60:
                    backoff = 1.0  # a long healthy run before this failure: retry quickly
                log.exception("sensor %s: collector run %s failed%s", self.node, col.source.run if col else "-",
                              "" if closing_at_start else f"; starting a new run in {backoff:.0f} s")
            if closing_at_start:
                with self._cond:
                    lost = self._queued + len(self._buf)
                    self._queue, self._queued = [], 0
                log.error("sensor %s: closing with a failing collector; %d queued events not landed",
                          self.node, lost)
                return
            self._closing.wait(backoff)
            backoff = min(backoff * 2, 60.0)

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> "Sensor":
        with self._lifecycle:
            if self._closed:
                raise RuntimeError("Sensor is closed")
            if self._started:
                return self
            first = self._new_collector()  # configuration errors surface here, in the caller
            _warm_up()
            self._started = True
            self._watchdog = threading.Thread(target=self._watchdog_loop, name="netsense-sensor-watchdog",
                                              daemon=True)
            self._runner = threading.Thread(target=self._run_loop, args=(first,), name=f"netsense-sensor-{self.node}", daemon=True)
            self._watchdog.start()
            self._runner.start()
            _LIVE.add(self)
        return self

    def close(self, timeout: float | None = None) -> None:
        """Land everything recorded so far and stop; idempotent.  Events recorded after
        ``close`` returns are ignored."""
        with self._lifecycle:
            if self._closed:
                return
            self._closed = True
            self._closing.set()
            _LIVE.discard(self)
            if not self._started or self._disabled:
                self.record = self._disabled_record
                self.record_many = self._disabled_record_many
                self.skip = self._disabled_skip
                return
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in (self._runner, self._watchdog):
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                log.warning("sensor %s: %s did not finish within %s s", self.node, t.name, timeout)
        self.record = self._disabled_record
        self.record_many = self._disabled_record_many
        self.skip = self._disabled_skip

    def __enter__(self) -> "Sensor":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _after_fork_in_child(self) -> None:
        self._disabled = True
        self.record = self._disabled_record
        self.record_many = self._disabled_record_many
        self.skip = self._disabled_skip
        self._lifecycle = threading.Lock()
        self._cond = threading.Lock()
        self._drain_lock = threading.Lock()
        self._closing = threading.Event()
        log.warning("sensor %s was started before fork(); it is disabled in child process %d: "
                    "start one Sensor per worker, with its own node name, after the fork", self.node, os.getpid())

    # -- observability -----------------------------------------------------------
    @property
    def run(self) -> str | None:
        """The current collector run id (window file names carry it)."""
        c = self._collector
        return c.source.run if c else None

    def stats(self) -> dict:
        """Counters for health checks: events drained, skipped, dropped, windows landed."""
        with self._cond:
            d = {"node": self.node, "drained": self._drained, "not_ipv4": self._not_ipv4,
                 "skipped": dict(self._skipped), "dropped": self._dropped, "queued": self._queued}
        d["buffered"] = len(self._buf)
        d["runs"] = len(self.summaries)
        d["failures"] = self.failures
        d["windows_landed"] = sum(s.windows_landed for s in self.summaries)
        d["packets"] = sum(s.packets for s in self.summaries)
        d["state"] = self.summaries[-1].state if self.summaries else ("closed" if self._closed else "new")
        return d


_warm = False
_warm_lock = threading.Lock()


def _warm_up() -> None:
    """Run the windowing and matrix code once, in ``start()``: their first call in a process
    loads compiled code (numba, GraphBLAS) for about half a second while holding the GIL, which
    the collector thread would otherwise do while the web service is already serving requests."""
    global _warm
    with _warm_lock:
        if _warm:
            return
        _warm = True
        try:
            _warm_up_once()
        except Exception:  # only an optimization
            log.debug("warm-up failed", exc_info=True)


def _warm_up_once() -> None:
    import graphblas as gb

    gb.ss.config  # noqa: B018 - graphblas loads submodules lazily, and not thread-safely: load it here
    from .window import NS, Windower, to_matrix

    w = Windower(window_packets=2, window_seconds=1)
    w.feed(Records(np.array([NS, NS, 2 * NS], np.int64), np.array([1, 2, 3], np.uint32),
                   np.array([4, 5, 6], np.uint32), np.array([0, 0, NOT_IPV4], np.uint8), 3))
    w.tick(3 * NS)
    w.flush()
    to_matrix(np.array([1, 2], np.uint32), np.array([3, 4], np.uint32))


def _to_records(chunks: list, position: int) -> Records:
    if not chunks:
        e = np.empty(0, np.int64)
        return Records(e, np.empty(0, np.uint32), np.empty(0, np.uint32), np.empty(0, np.uint8), position)
    keys = [c[1] for c in chunks]
    bad = [c[2] for c in chunks]
    counts = [len(c[1]) + c[2] for c in chunks]
    n = sum(counts)
    ts = np.repeat(np.array([c[0] for c in chunks], np.int64), counts)
    src = np.zeros(n, np.uint32)
    dst = np.zeros(n, np.uint32)
    reason = np.zeros(n, np.uint8)
    i = 0
    for k, nb, others in zip(keys, bad, (c[3] for c in chunks)):
        j = i + len(k)
        src[i:j] = k >> np.uint64(32)
        dst[i:j] = k & np.uint64(U32)
        end = j + nb
        reason[j:end] = NOT_IPV4
        for code, m in others:  # the chunk's last skipped events: reasons other than not_ipv4
            reason[end - m:end] = code
            end -= m
        i = j + nb
    return Records(ts, src, dst, reason, position + n)


# Sensors started in this process: closed at interpreter exit (their threads are daemons, so a
# forgotten close() cannot hang the exit, and atexit runs while they are still alive) and
# disabled in a forked child.
_LIVE: "weakref.WeakSet[Sensor]" = weakref.WeakSet()


def _close_all_at_exit() -> None:
    for s in list(_LIVE):
        try:
            s.close(timeout=30)
        except Exception:
            log.exception("closing sensor %s at exit", s.node)


def _after_fork_in_child() -> None:
    for s in list(_LIVE):
        s._after_fork_in_child()
    _LIVE.clear()


atexit.register(_close_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
