"""The aggregator's transaction engine: scan, check, sum, commit, report, exactly once.

One iteration (``Aggregator.step``) consumes a batch of landed files as one
transaction: (sometimes) a checkpoint, the ledger line (the commit point),
reports, then the consumed files move to ``archive/``.  A crash anywhere
leaves either the old generation or the new one: recovery loads the last
checkpoint and sums again the archived windows of the generations committed
after it (see ``recovery``), and the files of an uncommitted batch are still
in the landing folders to be summed again.  The loops that drive the engine,
as a daemon or as a one-shot drain, are in ``loop``.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from netsense.faults import failpoint
from netsense.layout import Layout, checkpoint_file_gen, period_sum_file
from netsense.lease import Lease

from . import recovery
from .checkpointer import Checkpointer
from .config import AggregatorConfig
from .intake import Intake
from .ledger import write_period_file
from .nodes import NodeStatuses
from .publish import Publisher, write_aggregator_status
from .state import Period
from .upstream import Upstream
from .watch import scan

log = logging.getLogger("netsense.aggregator")


class Aggregator:
    def __init__(self, cfg: AggregatorConfig):
        self.cfg = cfg
        self.layout = Layout(cfg.shared)
        self.lease = Lease(self.layout.lease(), cfg.lease_ttl)
        self.run_counters = {"duplicates": 0, "conflicts": 0, "quarantined": 0}
        self.intake = Intake(self.layout, cfg, self.run_counters)
        self.statuses = NodeStatuses(self.layout)
        self.checkpoints = Checkpointer(self.layout.checkpoints(), self.layout.period_sums(),
                                        rebase_min_links=cfg.rebase_min_links, every_seconds=cfg.checkpoint_seconds,
                                        every_windows=cfg.checkpoint_windows)
        self.publisher = Publisher(self.layout, cfg.top_n, cfg.report_seconds)
        self.upstream = (Upstream(cfg.parent, cfg.parent_node or "", f"aggregator:{Path(cfg.shared).resolve()}",
                                  cfg.secret) if cfg.parent else None)
        self.problems_seen: set = set()
        self._step_started = 0.0

    # -- start-up and rollback ----------------------------------------------------
    def recover(self) -> None:
        """Load the last committed generation and republish what it touched."""
        self.checkpoints.abandon()
        if self.lease.epoch:
            self.lease.assert_held()  # a rollback of a holder that was taken over must not touch anything
        self.ledger, self.state, superseded = recovery.recover(self.layout, self.cfg, self.upstream is not None,
                                                               self.lease.epoch)
        if self.ledger.generation:
            self.publish(force=True)
        self.checkpoints.recovered(self.ledger.checkpoint, superseded)

    def load_final(self, p: Period):
        return recovery.load_period_sum(self.layout, p)

    # -- one transaction ---------------------------------------------------------
    def step(self) -> int:
        """Consume up to ``batch_files`` landed files and commit; return the files handled (consumed,
        or quarantined: a step refuses at most ``MAX_QUARANTINES_PER_STEP``, so more may wait)."""
        self._step_started = time.perf_counter()
        cands, problems = scan(self.layout.nodes())
        for msg in problems:
            if msg not in self.problems_seen:
                self.problems_seen.add(msg)
                log.warning("%s", msg)
        batch = self.intake.gather(cands, self.ledger, self.state)
        self.state.apply_batch(batch.items, self.load_final)
        failpoint("agg.sum")
        known, done = self.statuses.known_and_done(self.state.nodes, self.consumed, batch.ids)
        grace = self.cfg.grace_periods * self.cfg.period_seconds
        finalized = self.state.finalize(done, known, grace)
        if batch.consumed or finalized:
            self.commit(batch.consumed, finalized)
            for path, node in batch.to_archive:
                self.intake.archive(path, node)
                failpoint("agg.archive")
        return len(batch.consumed) + batch.refused

    def commit(self, consumed: list, finalized: list[Period], checkpoint: bool = False) -> None:
        """Commit generation N+1: period files, the ledger line (the commit point), reports.

        A checkpoint is written before the line only when asked (idle, exit);
        a due periodic one is written in the background after the reports, and
        the first line after it is complete names it.
        """
        ck = self.checkpoints
        ck.reap()
        self.lease.assert_held()  # fencing: a holder that was taken over writes nothing more
        gen = self.ledger.generation + 1
        st = self.state
        st.generation = gen
        for p in finalized:
            p.version += 1
            if p.file:  # the checkpoint we would recover from may still name it
                ck.superseded.append((gen, p.file))
            p.file, p.evictable = period_sum_file(p.id, gen), True
            write_period_file(self.layout.period_sums(), p.id, gen, p.matrix, meta=p.meta())
        st.queue_upstream(finalized)
        if checkpoint:
            ck.join()
            ck.start(st, gen, background=False, may_write=self.lease.fresh)
        name = ck.ready or self.ledger.checkpoint
        self.lease.assert_held()
        self.ledger.commit(gen, name, consumed, [(p.start, p.version, p.file) for p in finalized],
                           epoch=self.lease.epoch)  # <- the commit point
        ck.ready = None
        log.info("generation %d committed: %d window(s), %d period(s) final (%.3fs since the batch began)", gen,
                 len(consumed), len(finalized), time.perf_counter() - self._step_started)
        if name != ck.referenced:
            ck.referenced = name
            ck.forget_before(checkpoint_file_gen(name), self.ledger, st)
            self.ledger.compact(self.lease.epoch)  # the lines before the checkpoint are history now
        self.publish()
        if self.upstream:
            self.upstream.push(st)
        if not checkpoint and ck.thread is None and ck.due(self.ledger, consumed):
            ck.start(st, gen, background=True, may_write=self.lease.fresh)

    def consumed(self, identity: str) -> bool:
        """Window ``identity`` was consumed: in the ledger's recent lines, or in the state's ranges."""
        return identity in self.ledger.consumed or self.state.covers(identity)

    def join_checkpoint(self) -> None:
        self.checkpoints.join()

    # -- what others read ------------------------------------------------------------
    def publish(self, force: bool = False) -> None:
        if self.lease.epoch:
            self.lease.assert_held()  # reports too: a holder paused past its lease writes nothing
        self.publisher.publish(self.state, self.load_final, force)

    def write_status(self) -> None:
        write_aggregator_status(self.layout, self.lease.host, self.ledger, self.state, self.run_counters,
                                self.problems_seen,
                                heartbeat_interval=max(1.0, self.cfg.rescan_seconds + self.cfg.commit_interval))
