"""One aggregator per shared directory: a lease file with a heartbeat and an expiry.

A local lock would not stop a second aggregator on another host, so the
guard lives in the shared directory itself.  The lease is created with
O_EXCL; the holder rewrites it atomically every few seconds.  A newcomer
refuses to start while the lease is fresh, and takes it over once it has
expired (its holder crashed) or when it names a dead process on this host.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path

from netsense import landing
from netsense.errors import AggregatorBusy
from netsense.layout import LEASE_FILE

log = logging.getLogger("netsense.aggregator")


class Lease:
    def __init__(self, directory: Path, ttl: float = 30.0):
        self.path = directory / LEASE_FILE
        self.ttl = ttl
        self.owner = uuid.uuid4().hex
        self.host = socket.gethostname()
        self._last = 0.0

    def _doc(self) -> bytes:
        now = time.time()
        return json.dumps({"owner": self.owner, "host": self.host, "pid": os.getpid(), "renewed": now,
                           "expires": now + self.ttl}).encode()

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # half-visible or garbage: treat as expired only by mtime below

    def _expired(self, doc: dict) -> bool:
        if doc.get("host") == self.host and isinstance(doc.get("pid"), int):
            try:
                os.kill(doc["pid"], 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                pass
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True
        return doc.get("expires", 0) < time.time() and age > self.ttl

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            landing.atomic_write(self.path, self._doc(), replace=False)
            self._last = time.time()
            return
        except landing.AlreadyLanded:
            pass
        doc = self._holder() or {}
        if not self._expired(doc):
            raise AggregatorBusy(
                f"another aggregator holds {self.path} (host {doc.get('host', '?')}, pid {doc.get('pid', '?')}, "
                f"lease renewed {time.time() - doc.get('renewed', time.time()):.0f}s ago); "
                f"stop it first, or wait {self.ttl:.0f}s after it died")
        log.warning("taking over the expired lease of host %s pid %s", doc.get("host"), doc.get("pid"))
        landing.write_text(self.path, self._doc().decode())
        self._last = time.time()
        if (self._holder() or {}).get("owner") != self.owner:  # lost a takeover race
            raise AggregatorBusy("another aggregator took the lease at the same moment")

    def renew(self, force: bool = False) -> None:
        if force or time.time() - self._last > self.ttl / 3:
            holder = self._holder()
            if holder is not None and holder.get("owner") not in (None, self.owner):
                raise AggregatorBusy(f"lease taken over by host {holder.get('host')} pid {holder.get('pid')}")
            landing.write_text(self.path, self._doc().decode())
            self._last = time.time()

    def release(self) -> None:
        if (self._holder() or {}).get("owner") == self.owner:
            try:
                self.path.unlink()
            except OSError:
                pass
