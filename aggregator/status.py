"""Read-only views for operators: report lookup and node health.

Reads only files the daemons publish (reports, status heartbeats, the
aggregator's status and quarantine reasons), so it is safe to run anywhere
the shared directory is mounted, even while the daemons run.

Every one of those files is on the share and may hold anything: a JSON array,
a string where a count belongs, brackets nested 200,000 deep, a FIFO.  So each
is read through ``netsense.sharejson`` (bounded, non-blocking, never raising),
status documents through ``netsense.statusdoc``, and only fields of the
expected type are shown: ``status`` reports garbage as missing, never with a
traceback; ``report`` refuses a document it cannot show with a one-line error.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

from netsense import sharejson, statusdoc
from netsense.errors import NetsenseError
from netsense.layout import PERIOD_ID, REASON_SUFFIX, Layout

from .reports import format_table

MAX_REASONS_READ = 2000  # reason files read by ``status`` (the newest); more are only counted
SKEW_LIMIT = 5.0   # seconds between a node's clock and the shared file system's before we flag it
STALE_FACTOR = 3   # missed heartbeats before a running node is shown as stale
DOWN_FACTOR = 12   # ... and as down
MAX_REPORT_BYTES = 256 << 20  # a cumulative report lists window ranges per node and run: large, not unbounded
MAX_DOC_BYTES = 16 << 20      # the aggregator's status document (problems are capped at 100 lines)
MAX_REASON_BYTES = 64 << 10   # a reason file is a few hundred bytes


def load_report(shared: Path, period: str) -> dict:
    lay = Layout(shared)
    if period == "cumulative":
        path = lay.cumulative_report()
    elif period == "latest":
        path = lay.latest_report()
    elif PERIOD_ID.match(period):
        path = lay.period_reports() / f"{period}.json"
    else:
        raise NetsenseError(f"--period must be cumulative, latest or a period ID like 20260101T000000Z, "
                            f"not {period!r}")
    try:
        data = sharejson.read_bytes(path, MAX_REPORT_BYTES)
    except FileNotFoundError:
        raise NetsenseError(f"no report at {path}: has the aggregator run on {shared}?") from None
    except OSError as e:
        raise NetsenseError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        doc = sharejson.loads(data, MAX_REPORT_BYTES)
    except ValueError as e:
        raise NetsenseError(f"{path} is not valid JSON: {e}") from None
    # The table renderer reads dozens of nested fields: rendering once is the one definition of
    # the shape it needs, so a report it cannot show is refused here, not with a traceback there.
    try:
        _printable(format_table(doc))
    except Exception as e:  # noqa: BLE001 (any field of any type may be wrong)
        raise NetsenseError(f"{path} is not a netsense report ({type(e).__name__}: {e})") from None
    return doc


def _printable(text: str) -> str:
    text.encode("utf-8")  # a lone surrogate from the share would fail when echoed
    return text


def _num(v, default=None):
    """``v`` if it is a finite number (not a bool), else ``default``."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return default
    return v


def _text(v, limit: int = 200) -> str | None:
    """A string from the share made safe to print: no control or unencodable characters."""
    if v is None:
        return None
    if not isinstance(v, str):
        v = repr(v)
    return "".join(c if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF else "?" for c in v[:limit])


def _aggregator(doc: dict | None) -> dict:
    """The fields of ``aggregator/status.json`` that ``status`` shows, each of its type."""
    if not doc:
        return {}
    counters = doc.get("counters")
    marks = doc.get("watermarks")
    problems = doc.get("problems")
    return {"schema": _text(doc.get("schema")), "host": _text(doc.get("host")), "pid": _num(doc.get("pid")),
            "heartbeat": _num(doc.get("heartbeat"), 0), "generation": _num(doc.get("generation")),
            "windows_consumed": _num(doc.get("windows_consumed"), 0),
            "watermarks": {_text(k): _num(v) for k, v in marks.items()} if isinstance(marks, dict) else {},
            "counters": {_text(k): _num(v, 0) for k, v in counters.items()} if isinstance(counters, dict) else {},
            "problems": [_text(x, 500) for x in problems[:100]] if isinstance(problems, list) else []}


def _consumed(cum: dict | None) -> dict:
    """Per node of the cumulative report: windows and packets consumed (numbers only)."""
    nodes = (cum or {}).get("nodes")
    if not isinstance(nodes, dict):
        return {}
    return {_text(n): {"windows": _num(s.get("windows"), 0), "packets": _num(s.get("packets"), 0)}
            for n, s in nodes.items() if isinstance(s, dict)}


def health(doc: dict, age: float) -> str:
    """``age``: seconds since the status file was last written, by the file system's clock."""
    if doc.get("state") != "running":
        return doc.get("state", "unknown")
    interval = float(doc.get("status_interval", 5.0))
    if age > DOWN_FACTOR * interval:
        return "down"
    if age > STALE_FACTOR * interval:
        return "stale"
    return "up"


def gather_status(shared: Path) -> dict:
    lay = Layout(shared)
    now = time.time()
    agg = _aggregator(sharejson.read_object(lay.aggregator_status(), MAX_DOC_BYTES))
    consumed = _consumed(sharejson.read_object(lay.cumulative_report(), MAX_REPORT_BYTES))
    marks = agg.get("watermarks", {})
    nodes = {}
    for p in sorted(lay.status_dir().glob("*.json")) if lay.status_dir().is_dir() else []:
        d = statusdoc.read(p)
        if d is None:
            continue
        n = d["node"]
        # The heartbeat is the node's clock just before the write; the file's mtime is set by
        # the file system (the NFS server's clock on NFS). Their gap is the node's clock skew
        # (plus write latency, well under a second).
        try:
            mtime = p.lstat().st_mtime
            skew = round(float(d.get("heartbeat", 0)) - mtime, 1)
        except (OSError, TypeError, ValueError, OverflowError):
            mtime, skew = now, None
        nodes[n] = {"health": health(d, now - mtime), "host": _text(d.get("host")), "source": _text(d.get("source")),
                    "heartbeat_age_s": round(now - mtime, 1),
                    "windows_landed": d.get("windows_landed", 0), "packets_landed": d.get("packets", 0),
                    "windows_consumed": consumed.get(n, {}).get("windows", 0),
                    "packets_consumed": consumed.get(n, {}).get("packets", 0),
                    "watermark": marks.get(n), "clock_skew_s": skew,
                    "clock_skewed": skew is not None and abs(skew) > SKEW_LIMIT}
    for n, s in consumed.items():
        nodes.setdefault(n, {"health": "no status file", "windows_landed": None, "packets_landed": None,
                             "windows_consumed": s["windows"], "packets_consumed": s["packets"],
                             "watermark": marks.get(n)})
    quarantine = {}
    qdir = lay.quarantine()
    if qdir.is_dir():
        # Listing is cheap; reading is not (100,000 junk files took 15 s): the reasons come from
        # the newest MAX_REASONS_READ reason files, the rest are counted as "not read".
        found = [r for r in qdir.glob(f"*/*{REASON_SUFFIX}")]
        if len(found) > MAX_REASONS_READ:
            found.sort(key=lambda r: r.stat().st_mtime if r.exists() else 0, reverse=True)
            quarantine["(not read)"] = len(found) - MAX_REASONS_READ
        for r in found[:MAX_REASONS_READ]:
            doc = sharejson.read_object(r, MAX_REASON_BYTES) or {}
            reason = doc.get("reason") if isinstance(doc.get("reason"), str) else "unknown"
            reason = _text(reason, 64)
            quarantine[reason] = quarantine.get(reason, 0) + 1
    pending = sum(1 for d in lay.nodes().glob("*/*.nsw")) if lay.nodes().is_dir() else 0
    return {"nodes": nodes, "aggregator": agg, "quarantine": quarantine, "pending_files": pending}


def format_status(doc: dict) -> str:
    lines = [f"{'node':<20} {'health':<10} {'hb age':>7} {'landed':>8} {'consumed':>9} {'packets consumed':>17}"]
    for n, s in sorted(doc["nodes"].items()):
        age = s.get("heartbeat_age_s")
        lines.append(f"{n:<20} {s['health']:<10} {'' if age is None else f'{age:.0f}s':>7} "
                     f"{'' if s['windows_landed'] is None else s['windows_landed']:>8} {s['windows_consumed']:>9} "
                     f"{s['packets_consumed']:>17,}")
    skewed = [f"{n} ({s['clock_skew_s']:+.0f}s)" for n, s in sorted(doc["nodes"].items()) if s.get("clock_skewed")]
    if skewed:
        lines.append(f"clock skew against the shared file system above {SKEW_LIMIT:.0f}s: " + ", ".join(skewed))
    agg = doc["aggregator"]
    lines.append("")
    if agg:
        age = time.time() - agg.get("heartbeat", 0)
        lines.append(f"aggregator: host {agg.get('host')} pid {agg.get('pid')}, generation {agg.get('generation')}, "
                     f"last seen {age:.0f}s ago, {agg.get('windows_consumed', 0)} windows consumed")
        c = agg.get("counters", {})
        lines.append(f"  duplicates dropped {c.get('duplicates', 0)}, conflicts {c.get('conflicts', 0)}, "
                     f"quarantined this run {c.get('quarantined', 0)}")
    else:
        lines.append("aggregator: has not run on this directory yet")
    lines.append(f"pending window files: {doc['pending_files']}")
    for problem in agg.get("problems", []):
        lines.append(f"ignored: {problem}")
    if doc["quarantine"]:
        lines.append("quarantine: " + ", ".join(f"{k} {v}" for k, v in sorted(doc["quarantine"].items())))
    return "\n".join(lines) + "\n"
