"""The collector daemon: source -> windows -> window files landed in the shared directory.

Library API: ``run_collector(CollectorConfig, stop_event) -> RunSummary``.
Signals are the CLI's business; here a ``threading.Event`` asks us to stop,
and stopping always lands the open window first.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from graphblas import ss as _gb_ss  # loaded here: graphblas loads .ss lazily, and not thread-safely

from netsense import __version__, landing, sharejson, statusdoc, winfile
from netsense.errors import AlreadyLanded, ConfigError, LandingError
from netsense.faults import failpoint
from netsense.layout import Layout, WindowName, check_node, iso
from netsense.lease import NodeLease

from .records import IMPLAUSIBLE_TIME, mark_implausible, tail
from .sources import Source, open_source
from .spool import Pending, Spool
from .window import Window, Windower, to_matrix

log = logging.getLogger("netsense.collector")


@dataclass(frozen=True)
class CollectorConfig:
    shared: Path
    node: str
    source: str
    window_packets: int = 1 << 17
    window_seconds: int = 60
    status_interval: float = 5.0
    max_gap_windows: int = 1440
    spool_bytes: int = 512 << 20
    compression: str = winfile.DEFAULT_COMPRESSION  # GraphBLAS serialization compressor (winfile.COMPRESSIONS)


@dataclass
class RunSummary:
    node: str
    run: str
    state: str = "running"
    records_read: int = 0      # read from the source so far, landed or still in the open window
    windows_landed: int = 0
    windows_already_present: int = 0
    packets: int = 0
    records: int = 0
    skipped: dict = field(default_factory=dict)
    unfilled_gaps: int = 0
    spooled: int = 0              # windows waiting for the shared directory to accept them
    windows_dropped: int = 0      # given up on: past the spool bound, or stopped while spooled
    packets_dropped: int = 0
    lost_previous_records: int = 0  # a crashed live run's open window, which no one can recover
    last_window: dict | None = None


class _Background:
    """``fn(arg)`` on a thread of its own; ``result()`` waits, then returns or raises what it did.

    Where no thread can be started (the interpreter is shutting down), ``fn`` runs right away.
    """

    def __init__(self, fn, arg, name: str):
        self._exc: BaseException | None = None
        self._thread: threading.Thread | None = threading.Thread(target=self._run, args=(fn, arg), name=name,
                                                                 daemon=True)
        try:
            self._thread.start()
        except RuntimeError:
            self._thread = None
            self._run(fn, arg)

    def _run(self, fn, arg) -> None:
        try:
            fn(arg)
        except BaseException as e:  # handed to result(), in the caller's thread
            self._exc = e

    def done(self) -> bool:
        return self._thread is None or not self._thread.is_alive()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def result(self) -> None:
        self.wait()
        exc, self._exc = self._exc, None
        if exc is not None:
            raise exc


class Collector:
    """One node's collector; owns its landing folder and its status file."""

    def __init__(self, cfg: CollectorConfig, source: Source | None = None, anonymizer=None,
                 secret: bytes | None = None):
        """``source`` overrides ``cfg.source`` for in-process (push) sources such as the web
        middleware; a live source must yield a batch, empty if need be, at least every
        second so windows close on the wall clock."""
        check_node(cfg.node)
        self.cfg = cfg
        self.layout = Layout(cfg.shared)
        self.host = socket.gethostname()
        self.windowing = (cfg.window_packets, cfg.window_seconds)
        self.source = source or open_source(cfg.source, node=cfg.node, windowing=self.windowing)
        self.summary = RunSummary(cfg.node, self.source.run)
        self.spool = Spool(cfg.spool_bytes)
        self.anonymizer = anonymizer
        self.secret = secret
        self.started = time.time()
        self._last_status = 0.0
        # The node lease lasts three missed heartbeats (at least 15 s): a collector that died is
        # replaced that soon on another host, at once on this one.
        self.lease_ttl = max(15.0, 3 * cfg.status_interval)
        self._implausible = 0
        self._implausible_logged = -1e9
        self.landing_dir = self.layout.landing(cfg.node)
        # Landing is mostly waiting (write, fsync, rename, fsync of the folder): it runs on one
        # background thread while the next window is read and encoded.  At most one window is
        # in flight, and only while the spool is empty, so windows still land in order.
        self._inflight: tuple[Pending, _Background] | None = None

    # -- landing -------------------------------------------------------------
    def encode(self, w: Window) -> Pending:
        name = WindowName(self.cfg.node, w.start, w.end, self.source.run, w.seq)
        mapping, anon = None, None
        if self.anonymizer is not None:
            # Anonymize the distinct sources and the links, not every packet's two addresses.
            mapping, anon = self.anonymizer.anonymize, self.anonymizer.fingerprint
        header = winfile.window_header(
            name, source=self.cfg.source, records=w.records, packets=w.packets, skipped=w.skipped,
            first_ts_ns=w.first_ts_ns, last_ts_ns=w.last_ts_ns, anonymization=anon,
            created=time.time(), host=self.host)
        a = to_matrix(w.src, w.dst, mapping)
        try:
            data = winfile.encode(header, {"A": a}, secret=self.secret, compression=self.cfg.compression)
        finally:
            # python-graphblas objects sit in reference cycles, freed only when the cyclic GC runs:
            # free the matrix's arrays now, or memory grows by a window's matrix per window until then.
            a.clear()
        info = {"identity": name.identity, "file": name.filename, "start": w.start, "end": w.end, "seq": w.seq,
                "position": w.position, "packets": w.packets, "records": w.records, "skipped": w.skipped}
        return Pending(name.filename, data, info)

    def _write(self, p: Pending) -> None:
        """Put one encoded window on shared storage (raises AlreadyLanded / LandingError)."""
        landing.atomic_write(self.landing_dir / p.filename, p.data)
        failpoint("col.land.done")

    def _landed(self, p: Pending, fresh: bool) -> None:
        """Account for a window that is on shared storage (``fresh``: we wrote it just now)."""
        if fresh:
            self.summary.windows_landed += 1
            log.debug("landed %s (%d packets)", p.filename, p.info["packets"])
        else:
            # Same identity landed before (a restart re-reading a replayable source): the
            # aggregator drops an identical duplicate and quarantines a conflicting one.
            self.summary.windows_already_present += 1
            log.info("%s is already landed; keeping the existing file", p.filename)
        s, i = self.summary, p.info
        s.packets += i["packets"]
        s.records += i["records"]
        for k, v in i["skipped"].items():
            s.skipped[k] = s.skipped.get(k, 0) + v
        s.last_window = {k: i[k] for k in ("identity", "file", "start", "end", "seq", "position")}

    def _land_one(self, p: Pending) -> None:
        """Land one window or raise LandingError; account for it once it is on shared storage."""
        try:
            self._write(p)
        except AlreadyLanded:
            self._landed(p, False)
        else:
            self._landed(p, True)

    def settle(self, stop: threading.Event | None = None) -> None:
        """Wait for the window landing in the background; account for it, or spool it if that failed."""
        if self._inflight is None:
            return
        p, bg = self._inflight
        bg.wait()  # (if interrupted here, the window is still in flight for the next settle)
        self._inflight = None
        try:
            bg.result()
        except AlreadyLanded:
            self._landed(p, False)
        except LandingError as e:
            self.spool.failed()
            log.warning("cannot land %s (%s): spooling locally and retrying with backoff", p.filename, e)
            self._keep(p, stop or threading.Event())
        else:
            self._landed(p, True)

    def drain(self, stop: threading.Event, block: bool) -> None:
        """Land spooled windows in order; with ``block``, wait (backoff) until empty or stopped."""
        self.settle(stop)
        sp = self.spool
        while sp:
            wait = sp.wait_time()
            if wait > 0:
                if not block or stop.wait(wait):
                    return
            try:
                self._land_one(sp.head())
            except LandingError as e:
                sp.failed()
                log.warning("still cannot land (%s); %d window(s) spooled, retrying in %.1fs", e, len(sp),
                            sp.wait_time())
                continue
            sp.pop()
            sp.succeeded()
            if not sp:
                log.info("shared directory is writable again; spool drained")
        self.summary.spooled = len(sp)

    def land(self, w: Window, stop: threading.Event | None = None) -> None:
        """Land ``w`` (in the background: see ``settle``), or spool it behind earlier windows if storage is failing."""
        stop = stop or threading.Event()
        p = self.encode(w)
        self.settle(stop)
        sp = self.spool
        if sp:
            self.drain(stop, block=False)
        if not sp:
            self._inflight = (p, _Background(self._write, p, f"netsense-land-{self.cfg.node}"))
            return
        self._keep(p, stop)

    def _keep(self, p: Pending, stop: threading.Event) -> None:
        """Spool ``p`` (storage is failing), waiting for room if the source can wait, else dropping it."""
        sp = self.spool
        if not sp.fits(p) and not self.source.live:
            # A replayable source can wait: back-pressure instead of loss.
            while sp and not sp.fits(p) and not stop.is_set():
                self.drain(stop, block=False)
                if sp and not sp.fits(p):
                    stop.wait(max(sp.wait_time(), 0.05))
        if sp.fits(p):
            sp.push(p)
        else:
            self.drop(p, "the spool is full")
        self.summary.spooled = len(sp)

    def drop(self, p: Pending, why: str) -> None:
        s = self.summary
        s.windows_dropped += 1
        s.packets_dropped += p.info["packets"]
        log.error("dropping window %s (%d packets): %s (--spool-bytes %d)", p.info["identity"], p.info["packets"],
                  why, self.spool.max_bytes)

    def write_status(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last_status < self.cfg.status_interval:
            return
        self._last_status = now
        fields = asdict(self.summary)
        state = fields.pop("state")
        del fields["node"]
        try:
            statusdoc.write(self.layout, self.cfg.node, state, host=self.host, version=__version__,
                            source=self.cfg.source, live=self.source.live, window_packets=self.cfg.window_packets,
                            window_seconds=self.cfg.window_seconds, started_at=iso(self.started),
                            status_interval=self.cfg.status_interval, **fields)
        except Exception as e:  # status is advisory: never stop collecting because of it
            log.warning("cannot write status: %s", e)

    # -- restarts -----------------------------------------------------------------
    def previous_status(self) -> dict | None:
        return statusdoc.read(self.layout.status(self.cfg.node))

    def resume_point(self, prev: dict | None) -> dict | None:
        """Where an earlier run of the same replayable source left off, if anywhere.

        Window identities of a replayable source are deterministic, so resuming
        right after the last landed window continues the same sequence: windows
        landed but not yet recorded in the (throttled) status are landed again
        with the same identity and content, and the aggregator drops them as
        duplicates.  Nothing is counted twice and nothing is skipped.
        """
        if not prev or self.source.live or prev.get("run") != self.source.run:
            if prev and prev.get("live") and prev.get("state") == "running":
                last = prev.get("last_window") or {}
                log.warning("the previous live run %s of node %s ended without landing its open window "
                            "(about %d records read after its last landed window are lost)", prev.get("run"),
                            self.cfg.node, max(0, prev.get("records_read", 0) - last.get("position", 0)))
                self.summary.lost_previous_records = max(0, prev.get("records_read", 0) - last.get("position", 0))
            return None
        last = prev.get("last_window")
        if last and not self.holds(last.get("file")):
            # The status is advisory; the share is the truth.  A status that names a window the
            # share does not hold (restored from a backup, copied from another share, edited)
            # would make us skip traffic nobody counted: start over instead (windows landed
            # before are landed again with the same identities and dropped as copies).
            log.warning("status/%s.json says window %s was landed, but the share holds no such file: "
                        "not resuming from it; landing this source from the start (copies are dropped)",
                        self.cfg.node, last.get("identity"))
            return None
        for k in ("windows_landed", "windows_already_present", "packets", "records"):
            setattr(self.summary, k, int(prev.get(k, 0)))
        self.summary.skipped = dict(prev.get("skipped") or {})
        self.summary.last_window = prev.get("last_window")
        return prev

    def holds(self, filename) -> bool:
        """The share still has window ``filename`` of this node: landed, archived or quarantined."""
        if not isinstance(filename, str) or WindowName.parse(filename) is None:
            return False
        places = (self.landing_dir, self.layout.archive(self.cfg.node), self.layout.quarantine(self.cfg.node))
        return any((d / filename).exists() for d in places)

    # -- the share's key -------------------------------------------------------------
    def check_anonymization(self) -> None:
        """Refuse at start when this node's anonymization differs from what the share counts.

        The aggregator keeps one anonymization per share and quarantines windows of any other
        (anonymization_mismatch): a plain node on an anonymized share, or another key, would
        otherwise start cleanly, look finished in ``status``, and count nothing.
        """
        doc = sharejson.read_object(self.layout.cumulative_report(), max_bytes=256 << 20) or {}
        gen = doc.get("generation")
        if not (type(gen) is int and gen > 0) or "anonymization" not in doc:
            return  # nothing counted yet: this node's windows will set the share's key
        theirs = doc["anonymization"]
        ours = self.anonymizer.fingerprint if self.anonymizer is not None else None
        if theirs != ours:
            def name(x):
                return f"anonymized with key {x}" if x else "not anonymized"
            raise ConfigError(f"this share's windows are {name(theirs)}, this collector's would be {name(ours)}: "
                              f"the aggregator would quarantine every one of them; "
                              + ("start it with --anonymize and the share's key file" if theirs else
                                 "start it without --anonymize") + ", or use another shared directory")

    # -- time ------------------------------------------------------------------
    def check_times(self, rec):
        """Skip records of implausible time by reason (never counted into a period), and say so."""
        marked = mark_implausible(rec, time.time_ns())
        if marked is not rec:
            n = int((marked.reason == IMPLAUSIBLE_TIME).sum())
            self._implausible += n
            now = time.monotonic()
            if now - self._implausible_logged > 60:
                self._implausible_logged = now
                ts = rec.ts_ns[marked.reason == IMPLAUSIBLE_TIME]
                log.warning("node %s: %d record(s) of %s have implausible timestamps (%s .. %s: before 1990 or more "
                            "than a day ahead of this host's clock); skipped as implausible_time, %d so far",
                            self.cfg.node, n, self.cfg.source, _when(ts.min()), _when(ts.max()), self._implausible)
        return marked

    # -- main loop -------------------------------------------------------------
    def run(self, stop: threading.Event) -> RunSummary:
        _gb_ss.config["nthreads"] = 1  # small matrices: OpenMP threads cost more than they give
        self.layout.ensure(self.landing_dir, self.layout.status_dir())
        # One running collector per node name, on any host: two would land the same traffic twice
        # (or interleave two sources under one name). Held for the whole run, renewed by a thread.
        self.check_anonymization()
        lease = NodeLease(self.layout.node_lease(self.cfg.node), self.cfg.node, self.lease_ttl)
        try:
            lease.acquire()
            lease.start_heartbeat()
        except (LandingError, OSError) as e:
            # The share refuses writes (full, read-only, gone): windows will be spooled and
            # retried as promised; only the guard against a second collector is missing meanwhile.
            log.warning("cannot take the node lease %s (%s); collecting without it", lease.path, e)
            lease = None
        try:
            return self._run(stop)
        finally:
            if lease is not None:
                lease.release()

    def _run(self, stop: threading.Event) -> RunSummary:
        stale = landing.remove_stale_temps(self.landing_dir) + landing.remove_stale_temps(
            self.layout.status_dir(), f"{self.cfg.node}.json.") + landing.remove_stale_temps(
            self.layout.status_dir(), f"{self.cfg.node}.lease.")
        if stale:
            log.info("removed %d temp file(s) left by an earlier run", stale)
        log.info("node %s: source %s (run %s), windows of %d packets / %d s, landing in %s",
                 self.cfg.node, self.cfg.source, self.source.run, self.cfg.window_packets,
                 self.cfg.window_seconds, self.landing_dir)
        # Empty windows for silent slots tell a quiet live node from a dead one; a replay from files
        # makes none (the gaps between captures are not traffic, and thousands of empty windows
        # and period reports would flood the share).
        win = Windower(self.cfg.window_packets, self.cfg.window_seconds, max_gap_windows=self.cfg.max_gap_windows,
                       fill_gaps=self.source.live)
        prev = self.resume_point(self.previous_status())
        skip = 0
        if prev and prev.get("state") == "finished":
            log.info("node %s already landed all %d windows of this source (run %s); nothing to do",
                     self.cfg.node, self.summary.windows_landed + self.summary.windows_already_present,
                     self.source.run)
            self.summary.state = "finished"
            self.summary.records_read = int(prev.get("records_read", 0))
            self.write_status(force=True)
            return self.summary
        if prev and prev.get("last_window"):
            last = prev["last_window"]
            win.resume_after(last["seq"], last["start"], last["position"])
            skip = self.summary.records_read = int(last["position"])
            log.info("resuming run %s after window %d (source position %d)", self.source.run, last["seq"], skip)
        self.write_status(force=True)
        try:
            for rec in self.source.batches(stop.is_set):
                if skip:
                    if skip >= len(rec):
                        skip -= len(rec)
                        continue
                    rec, skip = tail(rec, skip), 0
                self.summary.records_read += len(rec)
                rec = self.check_times(rec)
                for w in win.feed(rec):
                    self.land(w, stop)
                if self.source.live:
                    for w in win.tick(time.time_ns()):
                        self.land(w, stop)
                if self.spool:
                    self.drain(stop, block=False)
                elif self._inflight is not None and self._inflight[1].done():
                    self.settle(stop)  # account for it now: the status must not lag while the source is quiet
                self.write_status()
                if stop.is_set():
                    break
            for w in win.flush():
                self.land(w, stop)
            self.drain(stop, block=True)  # settles the window in flight first
            for p in list(self.spool.items):  # only when stopped while storage is still failing
                self.drop(p, "stopped before the shared directory accepted it")
            self.spool = Spool(self.cfg.spool_bytes)
            self.summary.spooled = 0
            self.summary.state = "stopped" if stop.is_set() else "finished"
        except BaseException:
            self.summary.state = "failed"
            # Land what we have: a partial window is data, and losing it is worse than a short window.
            try:
                halt = threading.Event()
                halt.set()  # never block on a full spool while failing
                for w in win.flush():
                    self.land(w, halt)
                self.settle(halt)
            except Exception:
                log.exception("could not land the open window")
            raise
        finally:
            if self._inflight is not None:  # failed before settling it: account for it (or log why not)
                try:
                    halt = threading.Event()
                    halt.set()
                    self.settle(halt)
                except Exception:
                    log.exception("could not land the window in flight")
            self.summary.unfilled_gaps = win.unfilled_gaps
            self.write_status(force=True)
        if win.unfilled_gaps:
            log.warning("%d time gap(s) longer than %d windows were not filled with empty windows",
                        win.unfilled_gaps, self.cfg.max_gap_windows)
        s = self.summary
        log.info("node %s %s: %d windows landed (%d already present), %d packets counted, %d skipped %s",
                 s.node, s.state, s.windows_landed, s.windows_already_present, s.packets,
                 sum(s.skipped.values()), s.skipped or "")
        return s


def _when(ns) -> str:
    try:
        return iso(int(ns) / 1e9)
    except (OverflowError, ValueError, OSError):
        return f"{int(ns)} ns"


def run_collector(cfg: CollectorConfig, stop: threading.Event | None = None, *, anonymizer=None,
                  secret: bytes | None = None) -> RunSummary:
    return Collector(cfg, anonymizer=anonymizer, secret=secret).run(stop or threading.Event())
