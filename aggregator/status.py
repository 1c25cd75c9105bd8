"""Read-only views for operators: report lookup and node health.

Reads only files the daemons publish (reports, status heartbeats, the
aggregator's status and quarantine reasons), so it is safe to run anywhere
the shared directory is mounted, even while the daemons run.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from netsense import statusdoc
from netsense.errors import NetsenseError
from netsense.layout import PERIOD_ID, REASON_SUFFIX, Layout

SKEW_LIMIT = 5.0   # seconds between a node's clock and the shared file system's before we flag it
STALE_FACTOR = 3   # missed heartbeats before a running node is shown as stale
DOWN_FACTOR = 12   # ... and as down


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
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise NetsenseError(f"no report at {path}: has the aggregator run on {shared}?") from None
    except ValueError as e:
        raise NetsenseError(f"{path} is not valid JSON: {e}") from None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


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
    agg = _read_json(lay.aggregator_status()) or {}
    cum = _read_json(lay.cumulative_report()) or {}
    consumed = cum.get("nodes", {})
    nodes = {}
    for p in sorted(lay.status_dir().glob("*.json")) if lay.status_dir().exists() else []:
        d = statusdoc.read(p)
        if d is None:
            continue
        n = d["node"]
        # The heartbeat is the node's clock just before the write; the file's mtime is set by
        # the file system (the NFS server's clock on NFS). Their gap is the node's clock skew
        # (plus write latency, well under a second).
        try:
            mtime = p.stat().st_mtime
            skew = round(float(d.get("heartbeat", 0)) - mtime, 1)
        except (OSError, TypeError, ValueError):
            mtime, skew = now, None
        nodes[n] = {"health": health(d, now - mtime), "host": d.get("host"), "source": d.get("source"),
                    "heartbeat_age_s": round(now - mtime, 1),
                    "windows_landed": d.get("windows_landed", 0), "packets_landed": d.get("packets", 0),
                    "windows_consumed": consumed.get(n, {}).get("windows", 0),
                    "packets_consumed": consumed.get(n, {}).get("packets", 0),
                    "watermark": agg.get("watermarks", {}).get(n), "clock_skew_s": skew,
                    "clock_skewed": skew is not None and abs(skew) > SKEW_LIMIT}
    for n, s in consumed.items():
        nodes.setdefault(n, {"health": "no status file", "windows_landed": None, "packets_landed": None,
                             "windows_consumed": s["windows"], "packets_consumed": s["packets"],
                             "watermark": agg.get("watermarks", {}).get(n)})
    quarantine = {}
    qdir = lay.quarantine()
    if qdir.exists():
        for r in qdir.glob(f"*/*{REASON_SUFFIX}"):
            reason = (_read_json(r) or {}).get("reason", "unknown")
            quarantine[reason] = quarantine.get(reason, 0) + 1
    pending = sum(1 for d in lay.nodes().glob("*/*.nsw")) if lay.nodes().exists() else 0
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
        age = time.time() - float(agg.get("heartbeat", 0))
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
