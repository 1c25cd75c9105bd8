"""Hierarchical aggregation: land final period sums in a parent shared directory.

An aggregator with ``--parent DIR --parent-node NAME`` behaves, towards the
parent, exactly like a collector: same window file format, same landing rule,
same identity rules (``NAME/<instance>/<seq>``, where the instance id is
persisted in the checkpoint), and a status heartbeat.  A period's first final
version is landed whole; a restatement is landed as the late windows' sum, so
the parent's totals are the sum of the children's, exactly once: upstream
windows are queued in the same transaction that finalizes the period and
landed after it commits, and re-landing after a crash is idempotent (the
parent drops an identical duplicate by identity).

Every upstream window and status document also carries ``via``: the instance
ids of the aggregators whose sums this share holds (``topology.Lineage``), so
that an aggregator up the chain that finds its own instance there knows the
parents loop and refuses the window (``feedback_loop``).  The status document
is written with a new ``via`` before any window carrying it, so a parent
reading it never sees less lineage than the windows it consumed.
"""
from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

from netsense import landing, statusdoc, winfile
from netsense.errors import AlreadyLanded, LandingError
from netsense.layout import Layout, WindowName, check_node, iso

from .state import State
from .topology import SOURCE_PREFIX, VIA, Lineage

log = logging.getLogger("netsense.aggregator")


class Upstream:
    def __init__(self, parent: Path, node: str, source: str, secret: bytes | None, status_interval: float = 5.0,
                 shared: Path | None = None):
        self.layout = Layout(parent)
        if shared is None and source.startswith(SOURCE_PREFIX):
            shared = Path(source[len(SOURCE_PREFIX):])  # the daemon names this share in the source
        self.lineage = Lineage(shared) if shared is not None else None
        self.via: list | None = None  # the lineage last written to the parent's status document
        self.node = check_node(node)
        self.source = source
        self.secret = secret
        self.host = socket.gethostname()
        self.status_interval = status_interval
        self.landed = 0
        self.packets = 0
        self.last_window: dict | None = None
        self._last_status = 0.0
        self.started = time.time()

    def push(self, st: State) -> int:
        """Land every pending upstream window; stop at the first storage error (retried next time)."""
        if not st.upstream_pending:
            return 0
        n = 0
        self.layout.ensure(self.layout.landing(self.node), self.layout.status_dir())
        via = self._lineage(st)
        if via != self.via and not self._status(st, "running", via):
            return 0  # the status must show the lineage before a window carries it: retried next time
        for u in list(st.upstream_pending):
            name = WindowName(self.node, u["start"], u["end"], st.instance, u["seq"])
            header = winfile.window_header(
                name, source=self.source, records=u["packets"], packets=u["packets"], skipped={},
                first_ts_ns=None, last_ts_ns=None, anonymization=st.anonymization, created=time.time(),
                host=self.host)
            header[VIA] = via
            data = winfile.encode(header, {"A": st.upstream_mats[u["seq"]].to_matrix()}, secret=self.secret)
            try:
                landing.atomic_write(self.layout.landing(self.node) / name.filename, data)
            except AlreadyLanded:
                pass  # landed before a crash: the parent has it (or drops the copy by identity)
            except LandingError as e:
                log.warning("cannot land upstream window %s (%s); will retry", name.filename, e)
                break
            st.upstream_landed(u["seq"])
            self.landed += 1
            self.packets += u["packets"]
            self.last_window = statusdoc.last_window(name, u["seq"] + 1)
            n += 1
        return n

    def write_status(self, st: State, state: str = "running", force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last_status < self.status_interval:
            return
        self._status(st, state)

    def _lineage(self, st: State) -> list:
        return self.lineage.of(st.coverage) if self.lineage is not None else []

    def _status(self, st: State, state: str, via: list | None = None) -> bool:
        self._last_status = time.time()
        via = self._lineage(st) if via is None else via
        try:
            statusdoc.write(self.layout, self.node, state, host=self.host, source=self.source, live=True,
                            run=st.instance, started_at=iso(self.started), status_interval=self.status_interval,
                            windows_landed=self.landed, packets=self.packets, spooled=len(st.upstream_pending),
                            last_window=self.last_window, **{VIA: via})
        except LandingError as e:
            log.warning("cannot write upstream status: %s", e)
            return False
        self.via = via
        return True
