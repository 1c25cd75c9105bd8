"""Publishing: the reports and the aggregator's heartbeat, from the committed state.

Final periods are published at once (and their matrices leave memory);
provisional periods and the cumulative report at most every
``report_seconds`` unless forced (at idle, at exit, after recovery), so a busy
aggregator does not recompute the analytics of a large cumulative matrix for
every batch.
"""
from __future__ import annotations

import json
import logging
import os
import time

from netsense import landing
from netsense.errors import LandingError
from netsense.faults import failpoint
from netsense.layout import Layout, iso

from . import reports
from .ledger import Ledger
from .profile import Profile
from .state import State

log = logging.getLogger("netsense.aggregator")


class Publisher:
    def __init__(self, layout: Layout, top_n: int, report_seconds: float):
        self.layout = layout
        self.top_n = top_n
        self.report_seconds = report_seconds
        self.cumulative_gen = -1   # the generation the cumulative report shows
        self._last_report = 0.0

    def behind(self, st: State) -> bool:
        """The cumulative report lags the committed state (throttled while busy)."""
        return self.cumulative_gen != st.generation

    def publish(self, st: State, load_final, force: bool = False) -> None:
        """Write the reports the committed state has changed."""
        now = time.time()
        due = force or now - self._last_report >= self.report_seconds
        newest = max(st.periods, default=None)
        todo = [p for p in st.periods.values() if p.dirty and (p.final or due)]
        for p in sorted(todo, key=lambda p: p.start):
            if p.matrix is not None:
                prof = st.profile(p.start, p.matrix)
            else:  # a final period being republished after a restart
                prof = Profile.of(load_final(p), self.top_n)
            doc = reports.report_doc(kind="period", analytics=prof.analytics(), top=prof.top(),
                                     nodes=p.nodes, generation=st.generation, anonymization=st.anonymization,
                                     windows=p.windows, period=(p.start, p.end), final=p.final,
                                     version=p.version, restatement=p.version > 1, generated=now)
            reports.write_period(self.layout.reports(), doc, latest=p.start == newest)
            failpoint("agg.reports")
            p.dirty = False
            if p.final:
                p.matrix = None  # its sum lives in aggregator/periods/; memory stays flat
                st.forget(p.start)
                st.evict(p)      # ... and so does its bookkeeping: the checkpoint stays small
        if not (due and (self.behind(st) or force)):
            return
        prof = st.profile("cumulative", st.cumulative)
        doc = reports.report_doc(kind="cumulative", analytics=prof.analytics(), top=prof.top(), nodes=st.nodes,
                                 generation=st.generation, anonymization=st.anonymization,
                                 windows=st.coverage, generated=now)
        doc["periods"] = {"count": len(st.periods), "final": sum(p.final for p in st.periods.values())}
        reports.write_cumulative(self.layout.reports(), doc)
        self.cumulative_gen = st.generation
        self._last_report = now


def write_aggregator_status(layout: Layout, host: str, ledger: Ledger, st: State, counters: dict,
                            problems: set, heartbeat_interval: float | None = None) -> None:
    """The aggregator's heartbeat and counters (``aggregator/status.json``); advisory, never fatal.

    ``heartbeat_interval``: the longest the daemon normally goes between two of these writes
    while idle (``status --check`` reads the aggregator as down after three of them, 30 s at least)."""
    doc = {"schema": "netsense.aggregator-status/1", "host": host, "pid": os.getpid(),
           "heartbeat_at": iso(time.time()), "heartbeat": time.time(), "generation": ledger.generation,
           **({} if heartbeat_interval is None else {"heartbeat_interval": round(float(heartbeat_interval), 3)}),
           "windows_consumed": st.counters.get("windows_consumed", 0), "watermarks": st.watermarks,
           "counters": {**st.counters, **counters},
           "problems": sorted(problems)[:100]}  # entries of nodes/ that are never read
    try:
        landing.write_text(layout.aggregator_status(), json.dumps(doc, indent=1) + "\n")
    except LandingError as e:
        log.warning("cannot write aggregator status: %s", e)
