"""The aggregator daemon: scan, validate, sum, commit, report — exactly once.

Library API: ``run_aggregator(AggregatorConfig, stop_event) -> dict`` (final counters).
One iteration (``Aggregator.step``) consumes a batch of landed files as one
transaction: (sometimes) a checkpoint, the ledger line (the commit point),
reports, then the consumed files move to ``archive/``.  A crash anywhere
leaves either the old generation or the new one: recovery loads the last
checkpoint and sums again the archived windows of the generations committed
after it (see ``ledger``), and the files of an uncommitted batch are still in
the landing folders to be summed again.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from netsense import landing, statusdoc, winfile
from netsense.errors import BadWindowFile, LandingError, NetsenseError, StateError
from netsense.faults import failpoint
from netsense.layout import REASON_SUFFIX, STATE_SUFFIX, Layout, WindowName, checkpoint_file, checkpoint_file_gen, iso

from . import reports
from .lease import Lease
from .ledger import Ledger, prune_checkpoints, read_checkpoint, write_checkpoint, write_period_file
from .profile import Profile
from .retention import RetentionPolicy, enforce
from .state import Period, State
from .sums import Sums, warm_up
from .upstream import Upstream
from .watch import Wakeup, choose_observer, scan

log = logging.getLogger("netsense.aggregator")


@dataclass(frozen=True)
class AggregatorConfig:
    shared: Path
    once: bool = False
    observer: str = "auto"          # auto | inotify | polling
    period_seconds: int = 60
    grace_periods: int = 3
    rescan_seconds: float = 2.0
    batch_files: int = 256
    top_n: int = 10
    max_file_bytes: int = 1 << 30
    lease_ttl: float = 30.0
    secret: bytes | None = None       # require a valid HMAC on every window
    report_seconds: float = 0.0       # provisional and cumulative reports at most this often while busy
    rebase_min_links: int = 1 << 20   # never rewrite the cumulative base for a smaller delta
    retention: RetentionPolicy = RetentionPolicy()
    retention_interval: float = 300.0
    commit_interval: float = 0.25     # seconds to gather landings into one transaction
    checkpoint_seconds: float = 30.0  # checkpoint at least this often while windows arrive ...
    checkpoint_windows: int = 4096    # ... or after this many windows (bounds the replay on restart)
    threads: int = 1                  # GraphBLAS threads (1: a busy shared host is the norm)
    parent: Path | None = None        # land final period sums as windows in this shared directory
    parent_node: str | None = None    # ... under this node name


class Aggregator:
    def __init__(self, cfg: AggregatorConfig):
        self.cfg = cfg
        self.layout = Layout(cfg.shared)
        self.agg_dir = self.layout.aggregator()
        self.ckpt_dir = self.layout.checkpoints()
        self.period_dir = self.layout.period_sums()
        self.reports_dir = self.layout.reports()
        self.lease = Lease(self.agg_dir, cfg.lease_ttl)
        self.run_counters = {"duplicates": 0, "conflicts": 0, "quarantined": 0}
        self._status_cache: dict = {}
        self._problems_seen: set = set()
        self._last_report = 0.0
        self._step_started = 0.0
        self._last_retention = 0.0
        self.upstream = (Upstream(cfg.parent, cfg.parent_node or "", f"aggregator:{Path(cfg.shared).resolve()}",
                                  cfg.secret) if cfg.parent else None)
        self._cumulative_gen = -1
        self._last_checkpoint = time.monotonic()
        self._last_housekeeping = 0.0
        self._checkpointer: threading.Thread | None = None  # writing a checkpoint in the background
        self._checkpoint_error: Exception | None = None
        self._checkpoint_written: str | None = None
        self._ready_checkpoint: str | None = None       # written after a commit, named by the next line
        self._referenced_checkpoint: str | None = None  # named by the last committed line
        self._superseded: list = []                     # (generation, period file) replaced by a restatement

    # -- start-up -------------------------------------------------------------
    def recover(self) -> None:
        """Load the last committed generation and republish what it touched."""
        if self._checkpointer is not None:  # a rollback: let the in-flight checkpoint finish first
            self._checkpointer.join()
        self._checkpointer = self._checkpoint_error = self._checkpoint_written = None
        self.layout.ensure()
        self.layout.ensure(self.ckpt_dir, self.period_dir, self.layout.period_reports())
        reports = self.reports_dir
        qdirs = [p for p in self.layout.quarantine().iterdir() if p.is_dir()] if self.layout.quarantine().exists() else []
        for d in (self.agg_dir, self.ckpt_dir, self.period_dir, reports, self.layout.period_reports(), self.layout.history(),
                  *qdirs):
            landing.remove_stale_temps(d)  # only the lease holder writes these: every temp is stale
        self.ledger = Ledger.load(self.agg_dir)
        if self.ledger.checkpoint:
            header, mats = read_checkpoint(self.ckpt_dir, self.ledger.checkpoint)
            base = read_checkpoint(self.ckpt_dir, header["base_file"])[1]["cumulative"] if header["base_file"] else None
            self.state = State.from_checkpoint(self.ledger.generation, header, mats, base)
            if self.state.period_seconds != self.cfg.period_seconds:
                raise NetsenseError(f"this shared directory aggregates {self.state.period_seconds}s periods; "
                                    f"restart with --period-seconds {self.state.period_seconds}")
            prune_checkpoints(self.ckpt_dir, self.ledger.checkpoint, self.state.base_file)
            log.info("recovered generation %d: %d windows consumed so far", self.ledger.generation,
                     len(self.ledger.consumed))
            for s in self.state.unpublished:  # reports may lag the committed state: bring them up to date
                if s in self.state.periods:
                    self.state.periods[s].dirty = True
        else:
            self.state = State(self.cfg.period_seconds)
            prune_checkpoints(self.ckpt_dir, "")
        self.state.upstream = self.upstream is not None
        self.state.top_n = self.cfg.top_n
        in_checkpoint = {p.file for p in self.state.periods.values() if p.file}
        if self.ledger.replay:
            self.replay()
        self.tidy_period_files(in_checkpoint)
        if self.ledger.generation:
            self.publish(force=True)
        self._last_checkpoint = time.monotonic()
        self._ready_checkpoint = None
        self._referenced_checkpoint = self.ledger.checkpoint

    def tidy_period_files(self, in_checkpoint: set) -> None:
        """Delete period files no committed state names (a crash before their ledger line); keep the
        ones the loaded checkpoint names until a newer checkpoint replaces it."""
        current = {p.file for p in self.state.periods.values() if p.file}
        self._superseded = [(self.ledger.generation, f) for f in sorted(in_checkpoint - current)]
        for f in self.period_dir.glob(f"period-*{STATE_SUFFIX}"):
            if f.name not in current and f.name not in in_checkpoint:
                f.unlink(missing_ok=True)

    def replay(self) -> None:
        """Sum again the windows of the generations committed after the checkpoint.

        Their files are in ``archive/`` (or still in ``nodes/`` after a crash
        between the commit and the archive step); each must have the content
        the ledger recorded.  The periods a generation made final are taken
        from its line, not decided again (node status has moved on since), so
        the rebuilt state is exactly the committed one.
        """
        t0, n = time.perf_counter(), 0
        for gen, windows, final in self.ledger.replay:
            items = []
            for ident, sha, filename in windows:
                name = WindowName.parse(filename)
                if name is None or name.identity != ident:
                    raise StateError(f"ledger generation {gen}: {filename!r} is not the file of window {ident}")
                parsed = None
                for path in (self.layout.archive(name.node) / filename, self.layout.landing(name.node) / filename):
                    try:
                        cand = winfile.read(path, self.cfg.max_file_bytes)
                    except (OSError, BadWindowFile):
                        continue
                    if cand.header["payload"]["sha256"][:16] == sha:
                        parsed = cand
                        break
                if parsed is None:
                    raise StateError(f"cannot recover generation {gen}: window file {filename} (consumed after "
                                     f"the last checkpoint) is missing from archive/ and nodes/, or its content "
                                     f"differs from what the ledger recorded")
                items.append((parsed.header, Sums.take(winfile.check_window(parsed, name)), filename))
                self.state.anonymization = parsed.header["anonymization"]
            self.state.apply_batch(items, self.load_final)
            done = []
            for start, version, file in final:
                p = self.state.periods[start]
                p.final, p.version, p.file, p.dirty = True, version, file, True
                done.append(p)
            self.state.queue_upstream(done)
            self.state.generation = gen
            n += len(items)
        log.info("replayed %d window(s) of %d generation(s) committed after the checkpoint (%.2fs)", n,
                 len(self.ledger.replay), time.perf_counter() - t0)

    # -- helpers ----------------------------------------------------------------
    def quarantine(self, path: Path, node_dir: str, reason: str, detail: str = "") -> None:
        """Move a refused file to quarantine/<node>/, its reason file written first.

        Reason before rename: a crash in between leaves an orphan reason file
        (reused by the next attempt), never a quarantined file without a reason.
        """
        qdir = self.layout.quarantine(node_dir)
        qdir.mkdir(parents=True, exist_ok=True)
        target = qdir / path.name
        n = 1
        while target.exists():
            target = qdir / f"{path.name}.{n}"
            n += 1
        info = {"file": path.name, "node_folder": node_dir, "reason": reason, "detail": detail,
                "quarantined_at": iso(time.time())}
        landing.write_text(target.with_name(target.name + REASON_SUFFIX), json.dumps(info, indent=1) + "\n")
        try:
            os.rename(path, target)
        except FileNotFoundError:
            return
        except OSError as e:
            log.error("cannot quarantine %s: %s", path, e)
            return
        self.run_counters["quarantined"] += 1
        self.run_counters[f"quarantined:{reason}"] = self.run_counters.get(f"quarantined:{reason}", 0) + 1
        log.warning("quarantined %s: %s %s", path.name, reason, detail)

    def archive(self, path: Path, node: str) -> None:
        adir = self.layout.archive(node)
        adir.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(path, adir / path.name)
        except OSError as e:
            log.warning("cannot archive %s (%s); it will be recognised as consumed on the next scan", path, e)

    def load_final(self, p: Period):
        header, mats = read_checkpoint(self.period_dir, p.file)
        return mats["period"]

    def node_status(self, consuming: dict | None = None) -> tuple[set, set]:
        """(known nodes, done nodes) from status/*.json, cached by mtime."""
        known, done = set(self.state.nodes), set()
        sdir = self.layout.status_dir()
        try:
            entries = list(os.scandir(sdir))
        except FileNotFoundError:
            entries = []
        for e in entries:
            if not e.name.endswith(".json") or e.name.startswith("."):
                continue
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            key = (st.st_mtime_ns, st.st_size)
            cached = self._status_cache.get(e.name)
            if cached is None or cached[0] != key:
                cached = (key, statusdoc.read(e.path))
                self._status_cache[e.name] = cached
            doc = cached[1]
            if doc is None:
                continue
            node = doc["node"]
            known.add(node)
            last = doc.get("last_window") or {}
            ident = last.get("identity")
            if doc.get("state") in statusdoc.DONE_STATES and (not last or ident in self.ledger.consumed
                                                    or ident in (consuming or {})):
                done.add(node)
        return known, done

    # -- one transaction ---------------------------------------------------------
    def step(self) -> int:
        """Consume up to ``batch_files`` landed files and commit; return files consumed."""
        self._step_started = time.perf_counter()
        cands, problems = scan(self.layout.nodes())
        for msg in problems:
            if msg not in self._problems_seen:
                self._problems_seen.add(msg)
                log.warning("%s", msg)
        consumed: list[tuple[str, str]] = []
        batch_ids: dict = {}
        to_archive: list = []
        items: list = []
        for c in cands:
            if len(consumed) >= self.cfg.batch_files:
                break
            if c.name is None:
                self.quarantine(c.path, c.node_dir, "bad_name", "not a window file name")
                continue
            if c.name.node != c.node_dir:
                self.quarantine(c.path, c.node_dir, "wrong_folder", f"node {c.name.node} in nodes/{c.node_dir}")
                continue
            try:
                if not c.path.is_file() or c.path.is_symlink():
                    raise BadWindowFile("not_regular_file", "symlinks and special files are never read")
                size = c.path.stat().st_size
                if size > self.cfg.max_file_bytes:
                    raise BadWindowFile("too_large", f"{size} bytes > --max-file-bytes {self.cfg.max_file_bytes}")
                parsed = winfile.read(c.path, self.cfg.max_file_bytes)
                failpoint("agg.read")
                if self.cfg.secret is not None:
                    winfile.verify_hmac(parsed, self.cfg.secret)
                sha = parsed.header["payload"]["sha256"][:16]
                ident = c.name.identity
                seen = self.ledger.consumed.get(ident) or batch_ids.get(ident)
                if seen is not None:
                    if seen == sha:
                        self.run_counters["duplicates"] += 1
                        if ident in self.ledger.unsnapshotted:  # recovery may need to read it: keep a copy
                            log.info("archiving %s: window %s was already consumed", c.path.name, ident)
                            self.archive(c.path, c.name.node)
                        else:
                            log.info("dropping %s: window %s was already consumed", c.path.name, ident)
                            c.path.unlink()
                    else:
                        self.run_counters["conflicts"] += 1
                        self.quarantine(c.path, c.node_dir, "conflict",
                                        f"window {ident} was consumed with different content")
                    continue
                a = winfile.check_window(parsed, c.name)
                anon = parsed.header["anonymization"]
                if (self.state.nodes or items) and anon != self.state.anonymization:
                    raise BadWindowFile("anonymization_mismatch",
                                        f"window key {anon}, this directory's reports use {self.state.anonymization}")
                self.state.anonymization = anon
            except FileNotFoundError:
                continue  # moved away between scan and read (another tool); the rescan decides
            except BadWindowFile as e:
                self.quarantine(c.path, c.node_dir, e.reason, e.detail)
                continue
            except OSError as e:
                log.warning("cannot read %s now (%s); will retry", c.path, e)
                continue
            items.append((parsed.header, Sums.take(a), c.path.name))
            batch_ids[ident] = sha
            consumed.append((ident, sha, c.path.name))
            to_archive.append((c.path, c.name.node))
        self.state.apply_batch(items, self.load_final)
        failpoint("agg.sum")
        known, done = self.node_status(batch_ids)
        grace = self.cfg.grace_periods * self.cfg.period_seconds
        finalized = self.state.finalize(done, known, grace)
        if consumed or finalized:
            self.commit(consumed, finalized)
            for path, node in to_archive:
                self.archive(path, node)
                failpoint("agg.archive")
        return len(consumed)

    def checkpoint_due(self, consumed: list) -> bool:
        """Often enough to bound the replay after a restart."""
        return bool(consumed) and (
            time.monotonic() - self._last_checkpoint >= self.cfg.checkpoint_seconds
            or self.ledger.windows_since_checkpoint + len(consumed) >= self.cfg.checkpoint_windows)

    def commit(self, consumed: list, finalized: list[Period], checkpoint: bool = False) -> None:
        """Commit generation N+1: period files, the ledger line (the commit point), reports.

        A checkpoint is written before the line only when asked (idle, exit);
        a due periodic one is written by a background thread after the
        reports, and the first line after it is complete names it.
        """
        self.reap_checkpoint()
        gen = self.ledger.generation + 1
        st = self.state
        st.generation = gen
        for p in finalized:
            p.version += 1
            if p.file:  # the checkpoint we would recover from may still name it
                self._superseded.append((gen, p.file))
            p.file = write_period_file(self.period_dir, p.id, gen, p.matrix)
        st.queue_upstream(finalized)
        if checkpoint:
            self.join_checkpoint()
            self._start_checkpoint(gen, background=False)
        name = self._ready_checkpoint or self.ledger.checkpoint
        self.ledger.commit(gen, name, consumed, [(p.start, p.version, p.file) for p in finalized])  # <- commit point
        self._ready_checkpoint = None
        log.info("generation %d committed: %d window(s), %d period(s) final (%.3fs since the batch began)", gen,
                 len(consumed), len(finalized), time.perf_counter() - self._step_started)
        if name != self._referenced_checkpoint:
            self._referenced_checkpoint = name
            self.forget_before(checkpoint_file_gen(name))
        self.publish()
        if self.upstream:
            self.upstream.push(st)
        if not checkpoint and self._checkpointer is None and self.checkpoint_due(consumed):
            self._start_checkpoint(gen, background=True)

    def _start_checkpoint(self, gen: int, background: bool) -> None:
        """Checkpoint the state of generation ``gen`` (what the ledger says up to line ``gen``).

        The snapshot is taken here, in the daemon's thread: the sums are
        immutable, so references suffice; the bookkeeping is copied. Writing it
        (serializing million-link sums, about 0.5 s) happens on a background
        thread — GraphBLAS, zstd and the writes release the GIL — so the next
        transactions do not wait for it. A failure is raised by the next commit
        as a storage error (the daemon then rolls back to the ledger's state).
        """
        st = self.state
        base = None
        if st.delta.nvals > max(self.cfg.rebase_min_links, st.cumulative.nvals // 4):
            # Rewrite the cumulative base only when the delta has grown to a quarter of it:
            # each checkpoint then costs O(delta), and rebasing adds O(1) amortized per entry.
            base = st.cumulative
            st.rebase(checkpoint_file(gen, "cumulative"))
        header, mats = st.to_checkpoint()
        header = json.loads(json.dumps(header))  # a copy: the period tables keep changing

        def write() -> None:
            if background:
                try:  # Linux: a thread id lowers only this thread; the transactions keep the CPU
                    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
                except (OSError, AttributeError):
                    pass
            try:
                if base is not None:
                    write_checkpoint(self.ckpt_dir, gen, {"base": True}, {"cumulative": base}, prefix="cumulative")
                name = write_checkpoint(self.ckpt_dir, gen, header, mats)
                failpoint("agg.checkpoint")
                self._checkpoint_written = name
            except Exception as e:  # noqa: BLE001 - handed to the daemon's thread
                self._checkpoint_error = e

        self._last_checkpoint = time.monotonic()
        if background:
            self._checkpointer = threading.Thread(target=write, name="checkpoint", daemon=True)
            self._checkpointer.start()
        else:
            write()
            self.reap_checkpoint()

    def reap_checkpoint(self) -> None:
        """Collect a finished background checkpoint; raise its failure as a storage error."""
        if self._checkpointer is not None:
            if self._checkpointer.is_alive():
                return
            self._checkpointer = None
        if self._checkpoint_written:  # complete on disk: the next ledger line names it
            self._ready_checkpoint, self._checkpoint_written = self._checkpoint_written, None
        err, self._checkpoint_error = self._checkpoint_error, None
        if err is not None:
            self._ready_checkpoint = None
            raise LandingError(f"checkpoint failed: {err}") from err

    def join_checkpoint(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.join()
        self.reap_checkpoint()

    def forget_before(self, upto: int) -> None:
        """A checkpoint of generation ``upto`` is now the recovery point: drop what only older ones needed."""
        prune_checkpoints(self.ckpt_dir, self.ledger.checkpoint, self.state.base_file)
        keep = []
        for gen, f in self._superseded:
            if gen <= upto:
                try:
                    (self.period_dir / f).unlink()
                except OSError:
                    pass
            else:
                keep.append((gen, f))
        self._superseded = keep

    # -- reports -----------------------------------------------------------------
    def publish(self, force: bool = False) -> None:
        """Write the reports the committed state has changed.

        Final periods are published at once (and their matrices leave memory);
        provisional periods and the cumulative report at most every
        ``report_seconds`` unless ``force`` — at idle, at exit, after recovery —
        so a busy aggregator does not recompute analytics of a large
        cumulative matrix for every batch.
        """
        st = self.state
        now = time.time()
        due = force or now - self._last_report >= self.cfg.report_seconds
        newest = max(st.periods, default=None)
        todo = [p for p in st.periods.values() if p.dirty and (p.final or due)]
        for p in sorted(todo, key=lambda p: p.start):
            if p.matrix is not None:
                prof = st.profile(p.start, p.matrix)
                analytics, top = prof.analytics(), prof.top()
            else:  # a final period being republished after a restart
                prof = Profile.of(self.load_final(p), self.cfg.top_n)
                analytics, top = prof.analytics(), prof.top()
            doc = reports.report_doc(kind="period", analytics=analytics, top=top,
                                     nodes=p.nodes, generation=st.generation, anonymization=st.anonymization,
                                     windows=p.windows, period=(p.start, p.end), final=p.final,
                                     version=p.version, restatement=p.version > 1, generated=now)
            reports.write_period(self.reports_dir, doc, latest=p.start == newest)
            failpoint("agg.reports")
            p.dirty = False
            if p.final:
                p.matrix = None  # its sum lives in aggregator/periods/; memory stays flat
                st.forget(p.start)
        if not (due and (self._cumulative_gen != st.generation or force)):
            return
        prof = st.profile("cumulative", st.cumulative)
        analytics, top = prof.analytics(), prof.top()
        doc = reports.report_doc(kind="cumulative", analytics=analytics, top=top, nodes=st.nodes,
                                 generation=st.generation, anonymization=st.anonymization,
                                 windows=st.coverage, generated=now)
        doc["periods"] = {"count": len(st.periods), "final": sum(p.final for p in st.periods.values())}
        reports.write_cumulative(self.reports_dir, doc)
        self._cumulative_gen = st.generation
        self._last_report = now

    def write_status(self) -> None:
        doc = {"schema": "netsense.aggregator-status/1", "host": self.lease.host, "pid": os.getpid(),
               "heartbeat_at": iso(time.time()), "heartbeat": time.time(), "generation": self.ledger.generation,
               "windows_consumed": len(self.ledger.consumed), "watermarks": self.state.watermarks,
               "counters": {**self.state.counters, **self.run_counters},
               "problems": sorted(self._problems_seen)[:100]}  # entries of nodes/ that are never read
        try:
            landing.write_text(self.layout.aggregator_status(), json.dumps(doc, indent=1) + "\n")
        except LandingError as e:
            log.warning("cannot write aggregator status: %s", e)

    # -- main loop -------------------------------------------------------------------
    def run(self, stop: threading.Event) -> dict:
        import graphblas as gb

        gb.ss.config["nthreads"] = self.cfg.threads
        warm_up()
        self.layout.ensure(self.agg_dir)
        self.lease.acquire()
        wake = threading.Event()
        watcher = None
        try:
            self.recover()
            if not self.cfg.once:
                kind = choose_observer(self.cfg.observer, self.layout.nodes())
                watcher = Wakeup(self.layout.nodes(), kind, wake)
                watcher.start()
                log.info("watching %s with the %s observer, rescanning every %.1fs", self.layout.nodes(), kind,
                         self.cfg.rescan_seconds)
            backoff = 0.5
            while not stop.is_set():
                wake.clear()
                try:
                    n = self.step()
                except (LandingError, OSError) as e:
                    # Shared storage refused a write (full, read-only, EIO). The in-memory state may
                    # be ahead of what is committed: roll back to the last committed generation and
                    # retry later; the batch's files are still in the landing folders.
                    log.error("storage error (%s): rolling back to generation %d, retrying in %.1fs", e,
                              self.ledger.generation, backoff)
                    self.run_counters["storage_errors"] = self.run_counters.get("storage_errors", 0) + 1
                    if stop.wait(backoff):
                        break
                    backoff = min(backoff * 2, 30.0)
                    try:
                        self.recover()
                    except (LandingError, OSError) as e2:
                        log.error("still cannot recover (%s)", e2)
                    continue
                backoff = 0.5
                now = time.monotonic()
                if not n or now - self._last_housekeeping >= 1.0:
                    # Heartbeat and allocator trim (each several ms) once a second while busy,
                    # not once per transaction.
                    self._last_housekeeping = now
                    release_free_memory()
                    self.write_status()
                self.lease.renew()
                if self.upstream:
                    self.upstream.push(self.state)  # retries what a failing parent refused
                    self.upstream.write_status(self.state)
                if self.cfg.retention.active and (self.cfg.once or
                                                  time.time() - self._last_retention > self.cfg.retention_interval):
                    self._last_retention = time.time()
                    deleted, freed = enforce(self.layout.root / "archive", self.cfg.retention,
                                             keep=set(self.ledger.unsnapshotted.values()))
                    self.state.count("archive_files_deleted", deleted)
                if n >= self.cfg.batch_files or (self.cfg.once and n):
                    continue  # more may be waiting: drain before sleeping
                if not n or self.cfg.once:  # idle (or done): bring throttled reports up to date
                    self.publish(force=self._cumulative_gen != self.state.generation)
                if not n and self.ledger.replay and \
                        time.monotonic() - self._last_checkpoint >= self.cfg.checkpoint_seconds:
                    self.commit([], [], checkpoint=True)  # idle: bound the replay of a later restart
                if self.cfg.once:
                    break
                if not n:
                    wake.wait(self.cfg.rescan_seconds)
                    stop.wait(self.cfg.commit_interval)
                else:
                    # Let landings coalesce: every transaction has a fixed cost (checkpoint of the
                    # open periods, fsyncs, reports), so under a steady stream fewer, larger batches
                    # win; a transaction that took longer than the interval already gathered enough.
                    stop.wait(max(0.0, self.cfg.commit_interval - (time.perf_counter() - self._step_started)))
            if self.ledger.replay:  # a clean stop leaves a checkpoint: the next start replays nothing
                try:
                    self.commit([], [], checkpoint=True)
                    self.write_status()
                except (LandingError, OSError) as e:
                    log.warning("no checkpoint at exit (%s): the next start replays the ledger", e)
        finally:
            if self._checkpointer is not None:
                self._checkpointer.join()
            if watcher:
                watcher.stop()
            if self.upstream and hasattr(self, "state"):
                done = self.cfg.once and not self.state.upstream_pending and all(
                    p.final for p in self.state.periods.values())
                self.upstream.write_status(self.state, "finished" if done else "stopped", force=True)
            self.lease.release()
        c = {**self.state.counters, **self.run_counters, "generation": self.ledger.generation}
        log.info("aggregator stopping: %s", c)
        return c


def release_free_memory() -> None:
    """Give freed GraphBLAS buffers back to the OS after each batch.

    glibc keeps freed blocks of the many ~MB matrices of a batch in its arenas,
    so RSS would sit at the high-water mark of the largest batch ever seen;
    malloc_trim returns them (about half of RSS in the memory benchmark).
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to do


def run_aggregator(cfg: AggregatorConfig, stop: threading.Event | None = None) -> dict:
    return Aggregator(cfg).run(stop or threading.Event())
