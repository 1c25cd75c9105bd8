"""Reports: JSON documents for people and tools, a Parquet history for analysis.

Every file is written with the collector's atomic helper, so a reader sees
the previous complete report or the new one, never half of either.  Report
documents are pure functions of the committed state, so rewriting them after
a crash gives the same bytes' worth of facts.

    reports/cumulative.json            everything consumed so far
    reports/latest.json                the newest period's report
    reports/periods/<ID>.json          a period's current report (ID = UTC start stamp)
    reports/periods/<ID>.v<N>.json     earlier final versions, kept when a period is restated
    reports/history/<ID>.v<N>.parquet  one row per final period version (a pyarrow dataset)
"""
from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from netsense import landing, sharejson
from netsense.layout import (CUMULATIVE_REPORT, HISTORY_DIR, HISTORY_VERSIONS_DIR, LATEST_REPORT,
                             PERIOD_REPORTS_DIR, iso, stamp)

from .analytics import ANALYTICS_KEYS, Analytics, Top

SCHEMA = "netsense.report/1"


def report_doc(*, kind: str, analytics: Analytics, top: Top, nodes: dict, generation: int,
               anonymization: str | None, windows, period=None, final: bool = False, version: int = 0,
               restatement: bool = False, generated: float | None = None) -> dict:
    doc = {
        "schema": SCHEMA,
        "kind": kind,
        "generated_at": iso(generated if generated is not None else time.time()),
        "generation": generation,
        "anonymization": anonymization,
        "analytics": analytics.as_dict(),
        "nodes": nodes,
        "windows": windows,
        "top": top.as_dict(),
    }
    if period is not None:
        doc["period"] = {"id": stamp(period[0]), "start": iso(period[0]), "end": iso(period[1]),
                         "seconds": period[1] - period[0]}
        doc["final"] = final
        doc["version"] = version
        doc["restatement"] = restatement
    else:
        doc["final"] = False  # the cumulative report grows as long as collectors land windows
    return doc


_EXPANDED = ("analytics", "nodes", "top", "period")


def _dump(doc: dict) -> str:
    """JSON with one line per key (and per entry of the small sections people read).

    ``json.dumps(indent=...)`` runs the pure-Python encoder: for a period report
    listing thousands of window files that cost about 20 ms per transaction;
    compact values go through the C encoder.
    """
    enc = json.dumps
    lines = []
    for k, v in doc.items():
        if k in _EXPANDED and isinstance(v, dict) and v:
            inner = ",\n".join(f"  {enc(k2)}: {enc(v2)}" for k2, v2 in v.items())
            lines.append(f" {enc(k)}: {{\n{inner}\n }}")
        else:
            lines.append(f" {enc(k)}: {enc(v)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def write_cumulative(reports: Path, doc: dict) -> None:
    landing.write_text(reports / CUMULATIVE_REPORT, _dump(doc))


def write_period(reports: Path, doc: dict, *, latest: bool) -> None:
    """Write a period report; keep the previous final version when this one restates it."""
    pdir = reports / PERIOD_REPORTS_DIR
    pdir.mkdir(parents=True, exist_ok=True)
    pid = doc["period"]["id"]
    current = pdir / f"{pid}.json"
    if doc["restatement"]:
        prev = sharejson.read_object(current, max_bytes=256 << 20)  # ours, but read as hostile as the rest
        version = prev.get("version") if prev else None
        if prev and prev.get("final") is True and type(version) is int and 0 < version < doc["version"]:
            keep = pdir / f"{pid}.v{version}.json"
            if not keep.exists():
                landing.write_text(keep, _dump(prev))
    landing.write_text(current, _dump(doc))
    if doc["final"]:
        write_history_row(reports, doc)
    if latest:
        landing.write_text(reports / LATEST_REPORT, _dump(doc))


log = logging.getLogger("netsense.aggregator")

HISTORY_SCHEMA = pa.schema(
    [("period_id", pa.string()), ("period_start", pa.timestamp("s", tz="UTC")),
     ("period_end", pa.timestamp("s", tz="UTC")), ("version", pa.int32()), ("restatement", pa.bool_()),
     ("generation", pa.int64()), ("nodes", pa.int32()), ("windows", pa.int64()),
     ("anonymization", pa.string())] + [(k, pa.int64()) for k in ANALYTICS_KEYS]
)


def history_row(doc: dict) -> dict:
    from datetime import datetime

    p = doc["period"]
    return {"period_id": p["id"],
            "period_start": datetime.fromisoformat(p["start"].replace("Z", "+00:00")),
            "period_end": datetime.fromisoformat(p["end"].replace("Z", "+00:00")),
            "version": doc["version"], "restatement": doc["restatement"], "generation": doc["generation"],
            "nodes": len(doc["nodes"]), "windows": len(doc["windows"]), "anonymization": doc["anonymization"],
            **doc["analytics"]}


def _day_file(directory: Path, period_id: str) -> Path:
    return directory / f"{period_id[:8]}.parquet"


def _rows(path: Path) -> list[dict]:
    try:
        return pq.read_table(path, schema=HISTORY_SCHEMA).to_pylist()
    except FileNotFoundError:
        return []
    except (OSError, pa.ArrowException) as e:  # ours, but never trusted blindly: rebuilt from what follows
        log.warning("history file %s is unreadable (%s); rewriting it", path, e)
        return []


def _write_rows(path: Path, rows: list[dict]) -> None:
    rows.sort(key=lambda r: (r["period_id"], r["version"]))
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=HISTORY_SCHEMA), buf)
    landing.atomic_write(path, buf.getvalue(), replace=True)


def write_history_row(reports: Path, doc: dict) -> Path:
    """Record a final period version in the two history datasets (one Parquet file per UTC day).

    ``history/``: each period once, its latest final version, so reading the folder plainly (as
    the README shows) sums correctly; ``history-versions/``: every final version. Writing is
    idempotent (a version already there is replaced, not added), so a republication after a
    crash never adds a row twice.
    """
    migrate_history(reports)
    row = history_row(doc)
    pid = row["period_id"]
    vdir, hdir = reports / HISTORY_VERSIONS_DIR, reports / HISTORY_DIR
    vdir.mkdir(parents=True, exist_ok=True)
    hdir.mkdir(parents=True, exist_ok=True)
    vpath = _day_file(vdir, pid)
    versions = [r for r in _rows(vpath) if (r["period_id"], r["version"]) != (pid, row["version"])]
    _write_rows(vpath, versions + [row])
    hpath = _day_file(hdir, pid)
    latest = [r for r in _rows(hpath) if r["period_id"] != pid]
    prev = [r for r in versions if r["period_id"] == pid and r["version"] > row["version"]]
    _write_rows(hpath, latest + [max(prev, key=lambda r: r["version"]) if prev else row])
    return hpath


def migrate_history(reports: Path) -> None:
    """Fold the per-version files of earlier releases (``history/<ID>.v<N>.parquet``) into day files."""
    hdir = reports / HISTORY_DIR
    old = sorted(hdir.glob("*.v*.parquet")) if hdir.is_dir() else []
    if not old:
        return
    by_day: dict = {}
    for f in old:
        for r in _rows(f):
            by_day.setdefault(r["period_id"][:8], []).append(r)
    vdir = reports / HISTORY_VERSIONS_DIR
    vdir.mkdir(parents=True, exist_ok=True)
    for day, rows in by_day.items():
        vpath, hpath = vdir / f"{day}.parquet", hdir / f"{day}.parquet"
        have = {(r["period_id"], r["version"]): r for r in _rows(vpath) + rows}
        _write_rows(vpath, list(have.values()))
        newest: dict = {}
        for r in have.values():
            if r["version"] > newest.get(r["period_id"], {"version": 0})["version"]:
                newest[r["period_id"]] = r
        _write_rows(hpath, list(newest.values()))
    for f in old:
        f.unlink(missing_ok=True)
    log.info("history: %d per-version file(s) folded into %d day file(s)", len(old), len(by_day))


def format_table(doc: dict) -> str:
    """Human-readable rendering of a report, as nfdump's summary lines are."""
    lines = []
    if "period" in doc:
        p = doc["period"]
        state = "final" if doc["final"] else "provisional"
        if doc.get("restatement"):
            state += f", restated (version {doc['version']})"
        lines.append(f"Period {p['start']} .. {p['end']} ({state})")
    else:
        lines.append("Cumulative report")
    lines.append(f"generated {doc['generated_at']}, generation {doc['generation']}, "
                 f"anonymization: {doc['anonymization'] or 'none'}")
    lines.append("")
    width = max(len(k) for k in ANALYTICS_KEYS)
    for k in ANALYTICS_KEYS:
        lines.append(f"  {k.replace('_', ' '):<{width}}  {doc['analytics'][k]:>14,}")
    lines.append("")
    lines.append(f"  {'node':<20} {'windows':>8} {'packets':>14} {'skipped':>10}")
    for node, s in sorted(doc["nodes"].items()):
        lines.append(f"  {node:<20} {s['windows']:>8,} {s['packets']:>14,} {sum(s['skipped'].values()):>10,}")
    top = doc["top"]
    for title, key, val in (("Top sources", "sources", "packets"), ("Top destinations", "destinations", "packets"),
                            ("Top source fan-out", "source_fanout", "fanout"),
                            ("Top destination fan-in", "destination_fanin", "fanin")):
        if top[key]:
            lines.append("")
            lines.append(f"  {title}:")
            for e in top[key]:
                lines.append(f"    {e['address']:<18} {e[val]:>14,}")
    if top["links"]:
        lines.append("")
        lines.append("  Top links:")
        for e in top["links"]:
            lines.append(f"    {e['src']:>15} -> {e['dst']:<15} {e['packets']:>14,}")
    return "\n".join(lines) + "\n"
