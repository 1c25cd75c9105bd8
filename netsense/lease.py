"""One writer per role: a lease file with an epoch, a heartbeat and fencing.

Two roles hold one: the aggregator of a shared directory (``aggregator/lease.json``) and the
collector of each node name (``status/<node>.lease``), so a second aggregator, or a second
collector started with the same ``--node``, on any host, refuses instead of counting twice.

A local lock would not stop a second aggregator on another host, so the guard
lives in the shared directory itself.  The lease is created with O_EXCL and
rewritten atomically by a heartbeat thread every ttl/3.  Every acquisition
takes a new **epoch** (one more than the last holder's and than any epoch in
the ledger), and the epoch is written into every ledger line, so a reader can
tell lines of two holders apart.

Fencing: a holder that was paused (SIGSTOP, a long step, a stuck mount) may
have been taken over without knowing it.  ``assert_held`` is called at every
commit point and before every file a commit depends on: it fails when the
heartbeat has seen another owner, and when the last successful renewal is
older than ttl/2 by this process's *monotonic* clock it first re-reads the
lease, so a holder that slept through its expiry finds out before it writes.
(The ledger's own append check, same inode and size as last written, closes
the rest of the window: see ``ledger``.)

Takeover does not trust clocks either: a lease that looks expired by the wall
clock (a standby's clock may run ahead) is taken only after watching it not
change for half a ttl of the newcomer's monotonic clock, or at once when it
names a dead process on this host.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from . import landing
from .errors import AggregatorBusy, LandingError, LeaseLost, NodeBusy
from .faults import wall

log = logging.getLogger("netsense.aggregator")
MAX_LEASE_BYTES = 64 << 10


class Lease:
    """The aggregator's lease (``path``: ``Layout.lease()``); ``NodeLease`` is a collector's."""

    def __init__(self, path: Path, ttl: float = 30.0):
        self.path = Path(path)
        self.ttl = ttl
        self.owner = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.epoch = 0
        self.beat = 0
        self.lost: str | None = None      # why the lease is no longer ours (set by the heartbeat)
        self._renewed = 0.0               # monotonic time of the last successful write
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._storage_error: str | None = None

    # -- the lease document --------------------------------------------------------
    def _doc(self) -> str:
        now = wall()
        self.beat += 1
        return json.dumps({"owner": self.owner, "epoch": self.epoch, "beat": self.beat, "host": self.host,
                           "pid": os.getpid(), "renewed": now, "expires": now + self.ttl})

    def holder(self) -> dict | None:
        """The lease document as it is on disk; None if absent, {} if unreadable or garbage."""
        try:
            with open(self.path, "rb") as f:
                raw = f.read(MAX_LEASE_BYTES)
        except FileNotFoundError:
            return None
        except OSError:
            return {}
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError):
            return {}
        return doc if isinstance(doc, dict) else {}

    @staticmethod
    def _epoch_of(doc: dict | None) -> int:
        e = (doc or {}).get("epoch", 0)
        return e if type(e) is int and e >= 0 else 0

    def _holder_dead_here(self, doc: dict) -> bool:
        pid = doc.get("pid")
        if doc.get("host") != self.host or type(pid) is not int or pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except (PermissionError, OverflowError):
            pass
        return False

    def _looks_expired(self, doc: dict) -> bool:
        exp = doc.get("expires", 0)
        return not isinstance(exp, (int, float)) or exp < wall()

    # -- acquisition -----------------------------------------------------------------------
    def acquire(self, floor_epoch: int = 0) -> None:
        """Take the lease with an epoch above ``floor_epoch`` (the ledger's newest) and every earlier holder's."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.epoch = floor_epoch + 1
            landing.atomic_write(self.path, self._doc().encode(), replace=False)
            self._renewed = time.monotonic()
            return
        except landing.AlreadyLanded:
            pass
        doc = self.holder() or {}
        if not self._holder_dead_here(doc):
            if not self._looks_expired(doc):
                raise self._busy(doc)
            self._watch_for_life(doc)  # expired by the clock; make sure by watching it
        log.warning("taking over the expired lease %s of host %s pid %s (epoch %s)", self.path.name, doc.get("host"),
                    doc.get("pid"), doc.get("epoch"))
        self.epoch = max(floor_epoch, self._epoch_of(doc)) + 1
        landing.write_text(self.path, self._doc())
        self._renewed = time.monotonic()
        now = self.holder() or {}
        if now.get("owner") != self.owner:  # lost a takeover race
            raise self._busy(now)

    def _busy(self, doc: dict) -> Exception:
        return AggregatorBusy(f"another aggregator holds {self.path} ({self._who(doc)}); stop it first, or wait "
                              f"{self.ttl:.0f}s after it died")

    def _who(self, doc: dict) -> str:
        renewed = doc.get("renewed")
        ago = f"{wall() - renewed:.0f}s ago" if isinstance(renewed, (int, float)) else "at an unknown time"
        return f"host {doc.get('host', '?')}, pid {doc.get('pid', '?')}, lease renewed {ago}"

    def _watch_for_life(self, seen: dict) -> None:
        """Refuse if the lease changes within ttl/2 (its holder is alive, whatever the clocks say)."""
        deadline = time.monotonic() + self.ttl / 2
        while time.monotonic() < deadline:
            time.sleep(min(0.25, self.ttl / 20))  # polling the shared file; bounded by the deadline
            now = self.holder()
            if now is None:
                return  # released meanwhile
            if now != seen:
                raise self._busy(now)

    # -- holding -----------------------------------------------------------------------
    def start_heartbeat(self) -> None:
        """Renew every ttl/3 from a thread of its own, so recovery and long steps never outlive the lease."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeat, name="lease", daemon=True)
        self._thread.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.renew()
            except LeaseLost:
                return
            except (LandingError, OSError) as e:  # storage trouble: retried on the next beat
                msg = str(e)
                if msg != self._storage_error:
                    log.warning("cannot renew the lease (%s); retrying", msg)
                    self._storage_error = msg

    def renew(self) -> None:
        """Rewrite the lease if it is still ours; mark it lost (and raise ``LeaseLost``) if not."""
        with self._lock:
            if self.lost:
                raise LeaseLost(self.lost)
            doc = self.holder()
            if doc is not None and (doc.get("owner") != self.owner or self._epoch_of(doc) != self.epoch) \
                    and doc != {}:
                self.lost = (f"the lease was taken over by host {doc.get('host', '?')} pid {doc.get('pid', '?')} "
                             f"(epoch {doc.get('epoch', '?')}; ours was {self.epoch})")
                raise LeaseLost(self.lost)
            landing.write_text(self.path, self._doc())
            self._renewed = time.monotonic()
            if self._storage_error:
                log.info("lease renewed again")
                self._storage_error = None

    def assert_held(self) -> None:
        """Raise ``LeaseLost`` unless this process may still write: see the module docstring."""
        if self.lost:
            raise LeaseLost(self.lost)
        if time.monotonic() - self._renewed > self.ttl / 2:
            self.renew()  # LeaseLost if taken over; LandingError (a storage error) if it cannot tell

    def fresh(self) -> bool:
        """No I/O: held, and renewed within ttl/2 (for the background checkpoint thread)."""
        return not self.lost and time.monotonic() - self._renewed <= self.ttl / 2

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with self._lock:
            doc = self.holder() or {}
            if not self.lost and doc.get("owner") == self.owner:
                try:
                    self.path.unlink()
                except OSError:
                    pass


class NodeLease(Lease):
    """A collector's hold on its node name: ``status/<node>.lease``."""

    def __init__(self, path: Path, node: str, ttl: float = 30.0):
        super().__init__(path, ttl)
        self.node = node

    def _busy(self, doc: dict) -> Exception:
        return NodeBusy(f"node {self.node} is already being collected ({self._who(doc)}): give this collector "
                        f"another --node, or stop the other one first")
