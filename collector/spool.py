"""A bounded, in-memory FIFO of finished windows the shared directory refused.

When the shared directory is unavailable, read-only or full (EIO, EACCES,
ENOSPC, a stale NFS handle), the collector keeps encoded windows here and
retries the oldest one with exponential backoff, so windows still land in
order once storage is back.  In memory on purpose: a replayable source
resumes after its last *landed* window, so a crash loses nothing a restart
cannot re-read; a live source loses at most what the bound allows, and the
collector counts and logs every window it drops.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Pending:
    """An encoded window waiting to be landed, with what the status needs once it is."""

    filename: str
    data: bytes
    info: dict  # identity, seq, start, end, position, packets, records, skipped


class Spool:
    def __init__(self, max_bytes: int, base_delay: float = 0.5, max_delay: float = 30.0):
        self.max_bytes = max_bytes
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.items: deque[Pending] = deque()
        self.bytes = 0
        self.delay = base_delay
        self.next_try = 0.0

    def __len__(self) -> int:
        return len(self.items)

    def fits(self, p: Pending) -> bool:
        return self.bytes + len(p.data) <= self.max_bytes

    def push(self, p: Pending) -> None:
        self.items.append(p)
        self.bytes += len(p.data)

    def head(self) -> Pending:
        return self.items[0]

    def pop(self) -> Pending:
        p = self.items.popleft()
        self.bytes -= len(p.data)
        return p

    def wait_time(self) -> float:
        return max(0.0, self.next_try - time.monotonic())

    def failed(self) -> None:
        self.next_try = time.monotonic() + self.delay
        self.delay = min(self.delay * 2, self.max_delay)

    def succeeded(self) -> None:
        self.delay = self.base_delay
        self.next_try = 0.0
