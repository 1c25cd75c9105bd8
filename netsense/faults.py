"""Failpoints: make a daemon crash, or see an I/O error, at a named step, for the fault harnesses.

Production runs never set ``NETSENSE_FAILPOINT`` and pay one ``is None``
test per point.  ``NETSENSE_FAILPOINT=agg.ledger:3`` makes the process
SIGKILL itself the 3rd time it reaches the point named ``agg.ledger`` — a
real, unclean death at an exact step (no atexit, no flush, no finally),
which random outside kills only hit by luck.  ``agg.ledger:3:eio`` raises
``OSError(EIO)`` there instead, as a failing disk or server would; several
specs are separated by commas (``agg.ledger:1:eio,agg.recover:2:eio``).

``NETSENSE_CLOCK_SKEW=SECONDS`` shifts this process's wall clock as seen by
``wall()`` (the lease's notion of "now"), so a test can run a standby whose
clock is ahead without changing the machine's.
"""
from __future__ import annotations

import errno
import os
import signal
import time

_SPEC = os.environ.get("NETSENSE_FAILPOINT")
_POINTS: dict[str, list] = {}
for _part in (_SPEC or "").split(","):
    _name, _, _rest = _part.partition(":")
    if _name:
        _n, _, _mode = _rest.partition(":")
        _POINTS[_name] = [int(_n or 1), _mode or "kill"]
_SKEW = float(os.environ.get("NETSENSE_CLOCK_SKEW", "0") or 0)

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
EIO_POINTS = ("agg.recover",)  # only ever used with :eio (recovery reading the committed state)


def failpoint(name: str) -> None:
    if _SPEC is None:
        return
    p = _POINTS.get(name)
    if p is None:
        return
    p[0] -= 1
    if p[0] == 0:
        if p[1] == "eio":
            raise OSError(errno.EIO, f"injected I/O error at failpoint {name}")
        os.kill(os.getpid(), signal.SIGKILL)


def wall() -> float:
    """The wall clock, shifted by ``NETSENSE_CLOCK_SKEW`` (tests only)."""
    return time.time() + _SKEW
