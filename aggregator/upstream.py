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

log = logging.getLogger("netsense.aggregator")


class Upstream:
    def __init__(self, parent: Path, node: str, source: str, secret: bytes | None, status_interval: float = 5.0):
        self.layout = Layout(parent)
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
        n = 0
        if st.upstream_pending:
            self.layout.ensure(self.layout.landing(self.node), self.layout.status_dir())
        for u in list(st.upstream_pending):
            name = WindowName(self.node, u["start"], u["end"], st.instance, u["seq"])
            header = winfile.window_header(
                name, source=self.source, records=u["packets"], packets=u["packets"], skipped={},
                first_ts_ns=None, last_ts_ns=None, anonymization=st.anonymization, created=time.time(),
                host=self.host)
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
        self._last_status = now
        try:
            statusdoc.write(self.layout, self.node, state, host=self.host, source=self.source, live=True,
                            run=st.instance, started_at=iso(self.started), status_interval=self.status_interval,
                            windows_landed=self.landed, packets=self.packets, spooled=len(st.upstream_pending),
                            last_window=self.last_window)
        except LandingError as e:
            log.warning("cannot write upstream status: %s", e)
