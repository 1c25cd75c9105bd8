"""The node status document, ``status/<node>.json``: one writer, one reader.

Every producer of windows (a collector daemon, an in-process sensor, a Graph
Challenge import, a child aggregator landing upstream) keeps one heartbeat
document per node name; the aggregator reads them to learn which nodes exist
and which have finished (so it can finalize periods without waiting out the
grace), and ``status`` reads them to show node health.

The document is advisory: windows are the truth, so a missing, stale or
unreadable status costs only timeliness, never a count.  That is why the
reader returns ``None`` for anything that is not a well-formed document of the
right node instead of raising: a status file is written by another host and is
hostile until checked, and one bad file must never stop a reader.
"""
from __future__ import annotations

import json
import math
import os
import stat
import time
from pathlib import Path

from . import landing
from .layout import NODE_NAME, Layout, WindowName, iso

SCHEMA = "netsense.status/1"
STATES = ("running", "finished", "stopped", "failed")
DONE_STATES = ("finished", "stopped", "failed")  # the node will land nothing more in this run
DEFAULT_INTERVAL = 5.0
MAX_BYTES = 1 << 20  # a status document is a few hundred bytes; anything larger is not one


def last_window(name: WindowName, position: int) -> dict:
    """The ``last_window`` entry for the newest window a node landed."""
    return {"identity": name.identity, "file": name.filename, "start": name.start, "end": name.end,
            "seq": name.seq, "position": position}


def write(layout: Layout, node: str, state: str, **fields) -> dict:
    """Land ``status/<node>.json`` atomically (replacing the previous one) and return it.

    ``heartbeat`` (this host's clock, Unix seconds) is stamped here, so every writer's
    heartbeat means the same thing: the moment just before the write.  Raises
    ``LandingError`` when the shared directory refuses the write.
    """
    if state not in STATES:
        raise ValueError(f"unknown status state {state!r}")
    now = time.time()
    doc = {"schema": SCHEMA, "node": node, "state": state, "heartbeat_at": iso(now), "heartbeat": now,
           "pid": os.getpid(), **fields}
    landing.write_text(layout.status(node), json.dumps(doc, indent=1) + "\n")
    return doc


def parse(text: str | bytes, node: str | None = None) -> dict | None:
    """A status document's fields, checked, or None when ``text`` is not one.

    Checked: a JSON object naming a valid node (``node`` when given, e.g. the file's
    name), a known ``state``, a finite positive ``status_interval`` and a
    ``last_window`` that is absent or an object whose ``identity`` is a string.
    Deeply nested or oversized input is refused without being parsed further.
    """
    if len(text) > MAX_BYTES:
        return None
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    name = doc.get("node")
    if not isinstance(name, str) or not NODE_NAME.match(name) or ".." in name or (node and name != node):
        return None
    if doc.get("state", "running") not in STATES:
        return None
    interval = doc.get("status_interval", DEFAULT_INTERVAL)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not math.isfinite(interval) \
            or interval <= 0:
        return None
    last = doc.get("last_window")
    if last is not None and not (isinstance(last, dict) and isinstance(last.get("identity", ""), str)):
        return None
    for k in ("heartbeat", "windows_landed", "packets", "records", "records_read"):
        v = doc.get(k, 0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None
    return doc


def read(path: Path | str) -> dict | None:
    """``parse`` the status document at ``path`` (named ``<node>.json``); None if absent or bad."""
    path = Path(path)
    try:
        # Non-blocking and not through a symlink: a FIFO or a device swapped in for the file
        # must not hang the reader, and only a regular file is a status document.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks, size = [], 0
        while size <= MAX_BYTES:
            chunk = os.read(fd, MAX_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)
    return parse(data, node=path.name[:-5] if path.name.endswith(".json") else None)
