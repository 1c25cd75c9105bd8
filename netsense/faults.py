"""Failpoints: crash a daemon at a named step, for the crash-safety harness.

Production runs never set ``NETSENSE_FAILPOINT`` and pay one ``is None``
test per point.  ``NETSENSE_FAILPOINT=agg.ledger:3`` makes the process
SIGKILL itself the 3rd time it reaches the point named ``agg.ledger`` — a
real, unclean death at an exact step (no atexit, no flush, no finally),
which random outside kills only hit by luck.
"""
from __future__ import annotations

import os
import signal

_SPEC = os.environ.get("NETSENSE_FAILPOINT")
_NAME, _, _N = (_SPEC or "").partition(":")
_left = int(_N or 1) if _SPEC else 0

POINTS = (
    "col.land.temp",   # collector: temp file written and fsynced, not yet renamed
    "col.land.done",   # collector: window landed, status not yet updated
    "agg.read",        # aggregator: a window file read and validated, not yet summed
    "agg.sum",         # aggregator: a window summed into the in-memory state
    "agg.checkpoint",  # aggregator: checkpoint written, ledger not yet appended
    "agg.ledger",      # aggregator: half of the ledger line written (a torn commit)
    "agg.reports",     # aggregator: committed, some reports written
    "agg.archive",     # aggregator: committed, consumed files partly archived
)


def failpoint(name: str) -> None:
    global _left
    if _SPEC is None or name != _NAME:
        return
    _left -= 1
    if _left <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
