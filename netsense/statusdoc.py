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
import time
from pathlib import Path

from . import landing, sharejson
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


def _count(v) -> bool:
    return type(v) is int and v >= 0


def parse(text: str | bytes, node: str | None = None) -> dict | None:
    """A status document's fields, checked, or None when ``text`` is not one.

    Checked: a JSON object naming a valid node (``node`` when given, e.g. the file's
    name), a known ``state``, a finite positive ``status_interval``, numeric counters, a
    ``skipped`` object of counts, and a ``last_window`` that is absent or null or an object
    of the six fields ``last_window()`` writes with their types (a collector resumes from
    its ``seq``, ``start`` and ``position``).  Oversized or deeply nested input is refused
    before it is parsed (``sharejson.loads``), so no input raises.
    """
    try:
        doc = sharejson.loads(text, MAX_BYTES)
    except ValueError:
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
    if last is not None and not (isinstance(last, dict)
                                 and all(isinstance(last.get(k), str) for k in ("identity", "file"))
                                 and all(_count(last.get(k)) for k in ("start", "end", "seq", "position"))):
        return None
    for k in ("heartbeat", "windows_landed", "windows_already_present", "packets", "records", "records_read"):
        v = doc.get(k, 0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            return None
    skipped = doc.get("skipped", {})
    if not isinstance(skipped, dict) or not all(isinstance(k, str) and _count(v) for k, v in skipped.items()):
        return None
    for k in ("host", "source", "run"):
        if doc.get(k) is not None and not isinstance(doc[k], str):
            return None
    return doc


def read(path: Path | str) -> dict | None:
    """``parse`` the status document at ``path`` (named ``<node>.json``); None if absent or bad.

    Read through ``sharejson.read_bytes``: non-blocking and not through a symlink, so a FIFO
    or device swapped in for the file cannot hang the reader, and at most 1 MiB.
    """
    path = Path(path)
    try:
        data = sharejson.read_bytes(path, MAX_BYTES)
    except OSError:
        return None
    return parse(data, node=path.name[:-5] if path.name.endswith(".json") else None)
