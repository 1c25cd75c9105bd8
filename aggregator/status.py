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


def list_periods(shared: Path) -> list[tuple[str, list[int]]]:
    """(period ID, [final versions kept, current last]) of every period report, oldest first."""
    pdir = Layout(shared).period_reports()
    out: dict = {}
    for f in pdir.glob("*.json") if pdir.is_dir() else []:
        pid, _, ver = f.stem.partition(".v")
        if PERIOD_ID.match(pid):
            out.setdefault(pid, []).append(int(ver) if ver.isdigit() else 0)
    return [(pid, sorted(v)) for pid, v in sorted(out.items())]


def period_id(text: str) -> str:
    """A period ID from an ID (20260101T000000Z) or ISO 8601 (2026-01-01T00:00:00Z, 2026-01-01 00:00)."""
    from datetime import datetime, timezone

    if PERIOD_ID.match(text):
        return text
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise NetsenseError(f"--period {text!r} is neither cumulative, latest, list, a period ID like "
                            f"20260101T000000Z nor an ISO 8601 time like 2026-01-01T00:00:00Z") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def load_report(shared: Path, period: str) -> dict:
    lay = Layout(shared)
    if period == "cumulative":
        path = lay.cumulative_report()
    elif period == "latest":
        path = lay.latest_report()
    else:
        pid = period_id(period)
        path = lay.period_reports() / f"{pid}.json"
        if not path.exists() and lay.period_reports().is_dir():
            known = [p for p, _ in list_periods(shared)]
            before = [p for p in known if p < pid][-1:]
            after = [p for p in known if p > pid][:1]
            near = ", ".join(before + after) or "none"
            raise NetsenseError(f"no period starts at {pid} ({len(known)} periods reported; nearest: {near}; "
                                f"see --period list)")
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
    interval = _num(doc.get("heartbeat_interval"))
    return {"schema": _text(doc.get("schema")), "host": _text(doc.get("host")), "pid": _num(doc.get("pid")),
            "heartbeat": _num(doc.get("heartbeat"), 0), "generation": _num(doc.get("generation")),
            "heartbeat_interval": interval if interval is not None and interval > 0 else None,
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


def _run_consumed(cum: dict | None, node: str, run) -> int:
    """Windows of ``node``'s run ``run`` in the cumulative report (its ``windows``: per node and run,
    ranges ``[first_seq, last_seq]``); 0 when absent or not of that shape."""
    try:
        ranges = cum["windows"][node][run]
        return sum(int(b) - int(a) + 1 for a, b in ranges
                   if type(a) is int and type(b) is int and 0 <= a <= b)
    except Exception:  # noqa: BLE001 (anything from the share may be of any shape)
        return 0


def _run_landed(d: dict) -> int:
    """Windows the node's current run has on the share, by its status document: window numbers of
    a run start at 0 and follow each other, so the newest one's ``seq`` + 1 (a resumed run
    included); without a ``last_window``, the run's counters."""
    last = d.get("last_window")
    if isinstance(last, dict) and type(last.get("seq")) is int:
        return last["seq"] + 1
    return int(_num(d.get("windows_landed"), 0) + _num(d.get("windows_already_present"), 0))


def _mtime_age(path: Path, now: float) -> float | None:
    try:
        return round(now - path.lstat().st_mtime, 1)
    except (OSError, OverflowError, ValueError):
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
    agg = _aggregator(sharejson.read_object(lay.aggregator_status(), MAX_DOC_BYTES))
    if agg:
        # By the file system's clock, like the nodes' heartbeats: no skew between hosts.
        agg["heartbeat_age_s"] = _mtime_age(lay.aggregator_status(), now)
    cum = sharejson.read_object(lay.cumulative_report(), MAX_REPORT_BYTES)
    consumed = _consumed(cum)
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
        run = d.get("run")
        nodes[n] = {"health": health(d, now - mtime), "host": _text(d.get("host")), "source": _text(d.get("source")),
                    "heartbeat_age_s": round(now - mtime, 1),
                    "windows_landed": d.get("windows_landed", 0), "packets_landed": d.get("packets", 0),
                    # Landed and consumed on the same basis: the windows of the node's current run.
                    "run": _text(run), "run_windows_landed": _run_landed(d),
                    "run_windows_consumed": _run_consumed(cum, n, run) if isinstance(run, str) else 0,
                    "windows_consumed": consumed.get(n, {}).get("windows", 0),
                    "packets_consumed": consumed.get(n, {}).get("packets", 0),
                    "watermark": marks.get(n), "clock_skew_s": skew,
                    "clock_skewed": skew is not None and abs(skew) > SKEW_LIMIT}
    for n, s in consumed.items():
        nodes.setdefault(n, {"health": "no status file", "windows_landed": None, "packets_landed": None,
                             "run": None, "run_windows_landed": None, "run_windows_consumed": None,
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
    # A node whose windows are being refused must never look healthy: count its quarantined files
    # (listing only) and say so in its health.
    if qdir.is_dir():
        for d in qdir.iterdir():
            if d.is_dir() and not d.is_symlink():
                n = sum(1 for r in d.glob(f"*{REASON_SUFFIX}"))
                if n:
                    s = nodes.setdefault(d.name, {"health": "no status file", "windows_landed": None,
                                                  "packets_landed": None, "run": None, "run_windows_landed": None,
                                                  "run_windows_consumed": None, "windows_consumed": 0,
                                                  "packets_consumed": 0, "watermark": None})
                    s["quarantined"] = n
    pending, oldest = 0, None
    for f in lay.nodes().glob("*/*.nsw") if lay.nodes().is_dir() else ():
        if f.name.startswith("."):
            continue
        pending += 1
        age = _mtime_age(f, now)
        if age is not None and (oldest is None or age > oldest):
            oldest = age
    return {"nodes": nodes, "aggregator": agg, "quarantine": quarantine, "pending_files": pending,
            "oldest_pending_age_s": oldest}


def format_status(doc: dict) -> str:
    # "landed" and "consumed" count the same windows, those of the node's current run (its status
    # document and the cumulative report's ranges); "all runs" and the packets are every run's.
    lines = [f"{'node':<20} {'health':<10} {'hb age':>7} {'landed':>8} {'consumed':>9} {'all runs':>9} "
             f"{'packets consumed':>17}",
             f"{'':<20} {'':<10} {'':>7} {'(this run)':>19} {'(windows)':>9}"]
    for n, s in sorted(doc["nodes"].items()):
        age = s.get("heartbeat_age_s")
        landed, used = s.get("run_windows_landed"), s.get("run_windows_consumed")
        lines.append(f"{n:<20} {s['health']:<10} {'' if age is None else f'{age:.0f}s':>7} "
                     f"{'' if landed is None else landed:>8} {'' if used is None else used:>9} "
                     f"{s['windows_consumed']:>9} {s['packets_consumed']:>17,}")
    refused = [f"{n} ({s['quarantined']} files)" for n, s in sorted(doc["nodes"].items()) if s.get("quarantined")]
    if refused:
        lines.append("windows of these nodes are being quarantined (see quarantine/<node>/*.reason.json): "
                     + ", ".join(refused))
    skewed = [f"{n} ({s['clock_skew_s']:+.0f}s)" for n, s in sorted(doc["nodes"].items()) if s.get("clock_skewed")]
    if skewed:
        lines.append(f"clock skew against the shared file system above {SKEW_LIMIT:.0f}s: " + ", ".join(skewed))
    agg = doc["aggregator"]
    lines.append("")
    if agg:
        age = agg.get("heartbeat_age_s")
        age = time.time() - agg.get("heartbeat", 0) if age is None else age
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


# --------------------------------------------------------------------------- status --check
# The monitoring-plugin convention (Nagios, Icinga, Sensu, ...): exit 0/1/2, one summary line first.
OK, WARNING, CRITICAL = 0, 1, 2
STATES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL"}
MIN_STALE_SECONDS = 30.0   # the aggregator's default threshold never goes below this
NODE_LEVEL = {"up": OK, "finished": OK, "stopped": OK, "no status file": OK,
              "stale": WARNING, "down": CRITICAL, "failed": CRITICAL}


def stale_threshold(doc: dict, stale_seconds: float | None = None) -> float:
    """``--stale-seconds``, else 3 of the aggregator's heartbeat intervals (``heartbeat_interval`` in
    its status.json), never less than 30 s (30 s when it records none)."""
    if stale_seconds is not None:
        return float(stale_seconds)
    interval = doc["aggregator"].get("heartbeat_interval")
    return max(MIN_STALE_SECONDS, 3 * interval) if interval else MIN_STALE_SECONDS


def check(doc: dict, stale_seconds: float | None = None) -> dict:
    """The health of the whole share as one monitoring result: ``code`` (0 OK, 1 WARNING,
    2 CRITICAL), ``state``, the ``summary`` line and the ``problems`` behind the code.

    CRITICAL: the aggregator is down (no status.json, or its heartbeat older than the stale
    threshold) or a node is down or failed.  WARNING: a node is stale, the quarantine holds
    files, or a landed window has waited longer than the stale threshold."""
    limit = stale_threshold(doc, stale_seconds)
    problems: list[tuple[int, str]] = []
    agg = doc["aggregator"]
    age = agg.get("heartbeat_age_s") if agg else None
    if not agg:
        agg_state = "down"
        problems.append((CRITICAL, "aggregator: no readable aggregator/status.json (has it run on this directory?)"))
    elif age is None or age > limit:
        agg_state = "down"
        problems.append((CRITICAL, f"aggregator: down, last heartbeat {'?' if age is None else f'{age:.0f}s'} ago "
                                   f"(threshold {limit:.0f}s; host {agg.get('host')} pid {agg.get('pid')})"))
    else:
        agg_state = "up"
    counts: dict = {}
    for n, s in sorted(doc["nodes"].items()):
        h = s["health"]
        counts[h] = counts.get(h, 0) + 1
        level = NODE_LEVEL.get(h, WARNING)
        if level:
            hb = s.get("heartbeat_age_s")
            problems.append((level, f"node {n}: {h}" + (f", last heartbeat {hb:.0f}s ago" if hb is not None else "")))
    quarantined = sum(v for v in doc["quarantine"].values() if isinstance(v, int))
    if quarantined:
        problems.append((WARNING, "quarantine: " + ", ".join(f"{k} {v}" for k, v in sorted(doc["quarantine"].items()))))
    oldest = doc.get("oldest_pending_age_s")
    if oldest is not None and oldest > limit:
        problems.append((WARNING, f"pending: {doc['pending_files']} window file(s) waiting, the oldest for "
                                  f"{oldest:.0f}s (threshold {limit:.0f}s)"))
    code = max((lvl for lvl, _ in problems), default=OK)
    order = ["up", "stale", "down", "failed", "finished", "stopped", "no status file"]
    parts = [f"{counts.get('up', 0)} node{'' if counts.get('up', 0) == 1 else 's'} up"]
    parts += [f"{counts[h]} {h}" for h in order[1:] + sorted(set(counts) - set(order)) if counts.get(h)]
    summary = f"NETSENSE {STATES[code]} - " + ", ".join(parts) + f", aggregator {agg_state}, {quarantined} quarantined"
    if doc["pending_files"]:
        summary += f", {doc['pending_files']} pending"
    perf = (f"nodes_up={counts.get('up', 0)} nodes_stale={counts.get('stale', 0)} "
            f"nodes_down={counts.get('down', 0) + counts.get('failed', 0)} quarantined={quarantined} "
            f"pending={doc['pending_files']}")
    return {"code": code, "state": STATES[code], "summary": summary, "perfdata": perf,
            "stale_seconds": limit, "problems": [f"{STATES[lvl]}: {text}" for lvl, text in problems]}


def format_check(doc: dict, result: dict) -> str:
    """The summary line (with perfdata after ``|``), then one line per node, then the problems."""
    lines = [f"{result['summary']} | {result['perfdata']}"]
    for n, s in sorted(doc["nodes"].items()):
        hb = s.get("heartbeat_age_s")
        line = f"{n}: {s['health']}" + (f", heartbeat {hb:.0f}s ago" if hb is not None else "")
        if s.get("run"):
            line += (f", run {s['run']}: {s['run_windows_landed']} windows landed, "
                     f"{s['run_windows_consumed']} consumed")
        line += f" (all runs: {s['windows_consumed']} windows, {s['packets_consumed']:,} packets consumed)"
        if s.get("quarantined"):
            line += f"; {s['quarantined']} file(s) quarantined"
        lines.append(line)
    agg = doc["aggregator"]
    if agg:
        age = agg.get("heartbeat_age_s")
        lines.append(f"aggregator: host {agg.get('host')} pid {agg.get('pid')}, last heartbeat "
                     f"{'?' if age is None else f'{age:.0f}s'} ago, {agg.get('windows_consumed', 0)} windows consumed")
    lines.extend(result["problems"])
    return "\n".join(lines) + "\n"
