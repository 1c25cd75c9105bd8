"""The loops that drive the transaction engine: a daemon that watches, or a one-shot drain.

Library API: ``run_aggregator(cfg, stop) -> dict`` runs the daemon until
``stop`` is set; ``drain_aggregator(cfg, stop=None) -> dict`` consumes what is
landed, reports, and returns.  Both return the final counters.  They share the
start-up, the storage-error handling (roll back to the committed generation
and retry with backoff), the housekeeping and the clean stop; they differ only
in the hooks below, so neither carries a flag that changes what the other does.
"""
from __future__ import annotations

import errno
import logging
import threading
import time

from netsense.errors import LandingError, LeaseLost

from .config import AggregatorConfig
from .daemon import Aggregator
from .ledger import last_epoch
from .retention import enforce
from .sums import warm_up
from .watch import Wakeup, choose_observer

log = logging.getLogger("netsense.aggregator")
MAX_BACKOFF = 30.0
DRAIN_ATTEMPTS = 5     # --once gives up after this many storage errors in a row (about 8 s of backoff)
# Refusals that no retry within a --once run will change: a share mounted read-only, or one this
# user may not write.  --once stops at the first one at start-up (the CLI says it in one line).
REFUSALS = {errno.EROFS, errno.EACCES, errno.EPERM}


def refusal(e: BaseException) -> bool:
    """``e`` (an OSError, or a LandingError raised from one) is the share refusing writes outright."""
    err = e if isinstance(e, OSError) else e.__cause__
    return isinstance(err, OSError) and err.errno in REFUSALS


class _Loop:
    def __init__(self, cfg: AggregatorConfig, stop: threading.Event):
        self.cfg = cfg
        self.stop = stop
        self.agg = Aggregator(cfg)
        self._last_housekeeping = 0.0
        self._last_retention = 0.0

    # -- the hooks -----------------------------------------------------------------
    def start_watching(self) -> None:
        pass

    def stop_watching(self) -> None:
        pass

    def retention_due(self) -> bool:
        raise NotImplementedError

    def more_waiting(self, n: int) -> bool:
        """Go straight on to the next transaction after one that consumed ``n`` files."""
        raise NotImplementedError

    def idle(self, n: int) -> bool:
        """After a transaction that drained what was waiting: wait for more, or return True to finish."""
        raise NotImplementedError

    def upstream_state(self) -> str:
        return "stopped"

    def give_up(self, failures: int) -> bool:
        """After ``failures`` storage errors in a row: stop trying (and exit with the error)."""
        return False

    def refuse_at_start(self, e: BaseException) -> bool:
        """A start-up step failed with ``e``: stop now, without retrying (and exit with the error)."""
        return False

    # -- the shared loop --------------------------------------------------------------
    def run(self) -> dict:
        import graphblas as gb

        agg, cfg, stop = self.agg, self.cfg, self.stop
        gb.ss.config["nthreads"] = cfg.threads
        warm_up()
        self.with_storage_retries(lambda: agg.layout.ensure(agg.layout.aggregator()), "create aggregator/")
        self.with_storage_retries(lambda: agg.lease.acquire(last_epoch(agg.layout.aggregator())), "take the lease")
        if stop.is_set():
            return {}
        agg.lease.start_heartbeat()
        recovered = watching = False
        storage = _StorageTrouble()
        try:
            while not stop.is_set():
                self.wake.clear()
                try:
                    if not recovered:
                        # Start-up, or a rollback: the in-memory state may be ahead of what is
                        # committed, so nothing steps on it until the committed state is reloaded.
                        agg.recover()
                        recovered = True
                    if not watching:
                        self.start_watching()
                        watching = True
                    n = agg.step()
                    self.housekeeping(n)
                    if self.more_waiting(n):
                        storage.ok()
                        continue  # drain before sleeping
                    if not n:  # idle (or done): bring throttled reports up to date
                        agg.publish(force=agg.publisher.behind(agg.state))
                    if not n and agg.checkpoints.idle_due(agg.ledger):
                        agg.commit([], [], checkpoint=True)  # idle: bound the replay of a later restart
                except (LandingError, OSError) as e:
                    # Shared storage refused a read or write (full, read-only, EIO, gone): roll back
                    # to the last committed generation and retry; the batch's files are still in the
                    # landing folders.
                    recovered = False
                    agg.run_counters["storage_errors"] = agg.run_counters.get("storage_errors", 0) + 1
                    delay = storage.failed(e, agg)
                    if self.give_up(storage.failures):
                        raise
                    if stop.wait(delay):
                        break
                    continue
                storage.ok()
                if self.idle(n):
                    break
            if recovered and agg.ledger.replay:  # a clean stop leaves a checkpoint: the next start replays nothing
                try:
                    agg.commit([], [], checkpoint=True)
                    agg.write_status()
                except (LandingError, OSError) as e:
                    log.warning("no checkpoint at exit (%s): the next start replays the ledger", e)
        except LeaseLost as e:
            log.error("stopping without writing anything more: %s", e)
            raise
        finally:
            if agg.checkpoints.thread is not None:
                agg.checkpoints.thread.join()
            self.stop_watching()
            if agg.upstream and hasattr(agg, "state") and not agg.lease.lost:
                try:
                    agg.upstream.write_status(agg.state, self.upstream_state(), force=True)
                except (LandingError, OSError):
                    pass
            agg.lease.release()
        c = ({**agg.state.counters, **agg.run_counters, "generation": agg.ledger.generation}
             if hasattr(agg, "state") else dict(agg.run_counters))
        log.info("aggregator stopping: %s", c)
        return c

    def with_storage_retries(self, fn, what: str) -> None:
        """Start-up steps that only need the storage to work: retried with backoff (or given up)."""
        storage = _StorageTrouble()
        while not self.stop.is_set():
            try:
                fn()
                storage.ok()
                return
            except (LandingError, OSError) as e:
                if self.refuse_at_start(e):
                    raise
                delay = storage.failed(e, None, what)
                if self.give_up(storage.failures):
                    raise
                self.stop.wait(delay)

    def housekeeping(self, n: int) -> None:
        agg = self.agg
        now = time.monotonic()
        if not n or now - self._last_housekeeping >= 1.0:
            # Heartbeat and allocator trim (each several ms) once a second while busy,
            # not once per transaction.
            self._last_housekeeping = now
            release_free_memory()
            agg.write_status()
        agg.lease.assert_held()  # the heartbeat thread renews; this only notices a takeover
        if agg.upstream:
            try:  # a parent share in trouble must not roll back this one: upstream windows wait
                agg.upstream.push(agg.state)  # retries what a failing parent refused
                agg.upstream.write_status(agg.state)
            except (LandingError, OSError) as e:
                self._upstream_trouble(e)
        if self.cfg.retention.active and self.retention_due():
            self._last_retention = time.time()
            try:
                deleted, freed = enforce(agg.layout.root / "archive", self.cfg.retention,
                                         keep=set(agg.ledger.unsnapshotted.values()))
                agg.state.count("archive_files_deleted", deleted)
            except OSError as e:
                log.warning("retention: %s (retried at the next interval)", e)

    def _upstream_trouble(self, e: Exception) -> None:
        msg = str(e)
        if msg != getattr(self, "_upstream_msg", None):
            log.warning("cannot land in the parent share (%s); upstream windows wait and are retried", e)
            self._upstream_msg = msg


class Service(_Loop):
    """The daemon: wake on file-system events, rescan as the source of truth, run until stopped."""

    def __init__(self, cfg: AggregatorConfig, stop: threading.Event):
        super().__init__(cfg, stop)
        self.wake = threading.Event()
        self.watcher = None

    def start_watching(self) -> None:
        nodes = self.agg.layout.nodes()
        kind = choose_observer(self.cfg.observer, nodes)
        self.watcher = Wakeup(nodes, kind, self.wake)
        self.watcher.start()
        log.info("watching %s with the %s observer, rescanning every %.1fs", nodes, kind, self.cfg.rescan_seconds)

    def stop_watching(self) -> None:
        if self.watcher:
            self.watcher.stop()

    def retention_due(self) -> bool:
        return time.time() - self._last_retention > self.cfg.retention_interval

    def more_waiting(self, n: int) -> bool:
        return n >= self.cfg.batch_files

    def idle(self, n: int) -> bool:
        if not n:
            self.wake.wait(self.cfg.rescan_seconds)
            self.stop.wait(self.cfg.commit_interval)
        else:
            # Let landings coalesce: every transaction has a fixed cost (checkpoint of the
            # open periods, fsyncs, reports), so under a steady stream fewer, larger batches
            # win; a transaction that took longer than the interval already gathered enough.
            self.stop.wait(max(0.0, self.cfg.commit_interval - (time.perf_counter() - self.agg._step_started)))
        return False


class Drain(_Loop):
    """``--once``: consume everything landed, bring every report up to date, and return."""

    def __init__(self, cfg: AggregatorConfig, stop: threading.Event):
        super().__init__(cfg, stop)
        self.wake = threading.Event()  # never set: nothing watches

    def retention_due(self) -> bool:
        return True

    def give_up(self, failures: int) -> bool:
        return failures >= DRAIN_ATTEMPTS

    def refuse_at_start(self, e: BaseException) -> bool:
        return refusal(e)  # read-only or not ours: retrying for 8 s first would only delay the one line

    def more_waiting(self, n: int) -> bool:
        return n > 0

    def idle(self, n: int) -> bool:
        return True

    def upstream_state(self) -> str:
        st = self.agg.state
        done = not st.upstream_pending and all(p.final for p in st.periods.values())
        return "finished" if done else "stopped"


class _StorageTrouble:
    """Backoff for storage errors, logged once per change of state, reset when storage is back."""

    def __init__(self):
        self.failures = 0
        self.delay = 0.5
        self._last_msg: str | None = None

    def failed(self, e: Exception, agg, what: str = "") -> float:
        self.failures += 1
        msg = f"{type(e).__name__}: {e}"
        if msg != self._last_msg:
            gen = f"rolling back to generation {agg.ledger.generation}, " if agg is not None and \
                hasattr(agg, "ledger") else ""
            log.error("storage error%s (%s): %sretrying with backoff", f" (cannot {what})" if what else "", e, gen)
            self._last_msg = msg
        delay, self.delay = self.delay, min(self.delay * 2, MAX_BACKOFF)
        return delay

    def ok(self) -> None:
        if self.failures:
            log.info("storage works again after %d failed attempt(s)", self.failures)
        self.failures, self.delay, self._last_msg = 0, 0.5, None


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
    """The daemon, until ``stop`` is set (SIGTERM/SIGINT in the CLI)."""
    return Service(cfg, stop or threading.Event()).run()


def drain_aggregator(cfg: AggregatorConfig, stop: threading.Event | None = None) -> dict:
    """Consume what is landed now, report, and return (``run --once``)."""
    return Drain(cfg, stop or threading.Event()).run()
