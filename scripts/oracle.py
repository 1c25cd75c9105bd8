"""The independent truth: what netsense must report, computed without netsense.

One place for every oracle the tests, the crash harness and the benchmarks compare against,
so there is one reading of the counting rule, not three:

* ``nine``: the nine Graph Challenge analytics of (src, dst) packet lists, in numpy/scipy
  (no GraphBLAS);
* ``synthetic_packets`` / ``synthetic_traffic``: what a seeded ``synthetic:`` source produces;
* ``tshark_frames`` / ``tshark_traffic`` / ``counted_pairs``: what Wireshark's dissection of a
  capture holds, reduced to the documented rule (a packet counts when the first network-layer
  protocol after the link layer is IPv4 with both addresses captured, and neither address is
  255.255.255.255);
* ``Expected`` and ``verify``: a drained shared directory checked against that answer
  (reports, periods, the Parquet history, the ledger, landing folders, quarantine).

This is a script-side module (``scripts/`` is not a package): ``scripts/crashtest.py`` imports
it as its sibling, and the tests put ``scripts/`` on ``sys.path`` (``tests/conftest.py``).
"""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import numpy as np
import scipy.sparse as sp

NS = 1_000_000_000
PERIOD_ID = re.compile(r"^\d{8}T\d{6}Z$")
# The crash harness's defaults; the tests pass their own.
SYN_WINDOW = (4096, 1)     # --window-packets, --window-seconds of synthetic collectors
PCAP_WINDOW = (256, 2)     # real captures are small: smaller windows; slots that divide the 2 s periods
PERIOD_SECONDS = 2
KEYS = ("valid_packets", "unique_links", "max_link_packets", "unique_sources", "max_source_packets",
        "max_source_fanout", "unique_destinations", "max_destination_packets", "max_destination_fanin")
# Protocol names tshark shows for link-layer headers netsense walks through (tests/test_pcap.py):
# the first other name in frame.protocols is the first network-layer protocol.
# (Juniper's link types are not among them: netsense skips them as unsupported_link, so a
# packet behind one is not counted even where tshark dissects it.)
LINK_LAYER = {"eth", "ethertype", "vlan", "ieee8021ad", "sll", "null", "loop", "ppp", "pppoes", "chdlc",
              "raw", "mpls", "llc", "snap", "cfp", "ppi", "pcap_pktdata"}
BROADCAST = "255.255.255.255"


def stamp(seconds: int) -> str:
    return datetime.fromtimestamp(int(seconds), tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")


# ----------------------------------------------------------------------------- the nine analytics


def nine(src, dst) -> dict:
    """The nine Graph Challenge analytics of the packets (src[i] -> dst[i])."""
    src = np.asarray(src, np.uint64)
    dst = np.asarray(dst, np.uint64)
    if len(src) == 0:
        return dict.fromkeys(KEYS, 0)
    ids, inv = np.unique(np.concatenate([src, dst]), return_inverse=True)
    r, c = inv[: len(src)], inv[len(src):]
    n = len(ids)
    A = sp.coo_matrix((np.ones(len(src), np.int64), (r, c)), shape=(n, n)).tocsr()
    A.sum_duplicates()
    P = A.copy()
    P.data[:] = 1
    out_p, in_p = np.asarray(A.sum(1)).ravel(), np.asarray(A.sum(0)).ravel()
    return {
        "valid_packets": int(A.sum()), "unique_links": int(A.nnz), "max_link_packets": int(A.data.max()),
        "unique_sources": int((out_p > 0).sum()), "max_source_packets": int(out_p.max()),
        "max_source_fanout": int(np.asarray(P.sum(1)).max()),
        "unique_destinations": int((in_p > 0).sum()), "max_destination_packets": int(in_p.max()),
        "max_destination_fanin": int(np.asarray(P.sum(0)).max()),
    }


def synthetic_packets(spec: str):
    """Regenerate what ``synthetic:SPEC`` produces (the generator is seeded): (src, dst)."""
    from netsense.collector.synthetic import SyntheticSpec, generate

    s, d = [], []
    for rec in generate(SyntheticSpec.parse(spec)):
        s.append(rec.src)
        d.append(rec.dst)
    return np.concatenate(s), np.concatenate(d)


# ----------------------------------------------------------------------------- tshark


def tshark_available() -> bool:
    return shutil.which("tshark") is not None


def ip_to_int(text: str) -> int:
    a, b, c, d = (int(x) for x in text.split("."))
    return a << 24 | b << 16 | c << 8 | d


def tshark_frames(path: Path):
    """Per frame: (timestamp ns, (src, dst) dotted quads if the first network-layer header is
    IPv4 with both addresses, else None).  None when tshark cannot read the file's link type.

    The broadcast exclusion is not applied here (netsense applies it when windowing, so a
    parser's per-frame answer includes broadcasts); ``tshark_packets`` applies it.
    """
    run = subprocess.run(["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch", "-e",
                          "frame.protocols", "-e", "ip.src", "-e", "ip.dst", "-E", "occurrence=f"],
                         capture_output=True, text=True, timeout=300)
    out = run.stdout
    if not out and "unknown or unsupported" in run.stderr:
        return None
    frames = []
    for line in out.splitlines():
        ts, protos, src, dst = (line.split("\t") + ["", "", ""])[:4]
        first = next((p for p in protos.split(":") if p not in LINK_LAYER), None)
        counted = first == "ip" and src and dst
        frames.append((int(Decimal(ts) * NS), (src, dst) if counted else None))
    return frames


def tshark_packets(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(timestamp ns, counted mask, src, dst) per frame by the counting rule; src/dst are 0 where
    not counted."""
    frames = tshark_frames(path) or []
    ts = np.array([t for t, _ in frames], np.int64)
    ok = [f is not None and BROADCAST not in f for _, f in frames]
    src = np.array([ip_to_int(f[0]) if k else 0 for (_, f), k in zip(frames, ok)], np.uint32)
    dst = np.array([ip_to_int(f[1]) if k else 0 for (_, f), k in zip(frames, ok)], np.uint32)
    return ts, np.array(ok, bool), src, dst


def counted_pairs(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The counted (src, dst) of a capture, as uint64 arrays for ``nine``."""
    _, ok, src, dst = tshark_packets(path)
    return src[ok].astype(np.uint64), dst[ok].astype(np.uint64)


# ----------------------------------------------------------------------------- expected traffic


@dataclass
class Traffic:
    """What one collector's input holds, computed without netsense: the counted packets,
    the report period of each, and every period its windows (empty ones too) fall in."""

    node: str
    src: np.ndarray
    dst: np.ndarray
    period: np.ndarray
    periods: set


def _periods(ts_all: np.ndarray, counted: np.ndarray, window_seconds: int, period_seconds: int):
    """Report period of each counted packet, and all periods the collector's windows cover.

    Time is the packet's own: a packet's window is in the slot of its own timestamp, and its
    period is the period holding that slot's start, whatever order the packets come in. A
    replay from files (every source the harness uses) lands no empty windows for silent slots,
    so the periods covered are exactly those of the packets (and of skipped records, which
    still make a window)."""
    if len(ts_all) == 0:
        return np.empty(0, np.int64), set()
    starts = (ts_all // (window_seconds * NS)) * window_seconds
    per = starts - starts % period_seconds
    return per[counted], set(np.unique(per).tolist())


def synthetic_traffic(node: str, spec: str, window_seconds: int = SYN_WINDOW[1],
                      period_seconds: int = PERIOD_SECONDS) -> Traffic:
    """Regenerate ``synthetic:SPEC`` (seeded) at full speed: ``pace`` only throttles it."""
    from netsense.collector.synthetic import SyntheticSpec, generate

    s = dataclasses.replace(SyntheticSpec.parse(spec.split(":", 1)[1]), pace=0.0)
    if s.realtime or s.packets == 0:
        raise ValueError(f"{spec}: only finite, replayable synthetic sources have a known total")
    ts, src, dst = [], [], []
    for rec in generate(s):
        ts.append(rec.ts_ns)
        src.append(rec.src)
        dst.append(rec.dst)
    ts, src, dst = np.concatenate(ts), np.concatenate(src), np.concatenate(dst)
    counted = (src != 0xFFFFFFFF) & (dst != 0xFFFFFFFF)
    per, periods = _periods(ts, counted, window_seconds, period_seconds)
    return Traffic(node, src[counted], dst[counted], per, periods)


def tshark_traffic(node: str, path: Path, window_seconds: int = PCAP_WINDOW[1],
                   period_seconds: int = PERIOD_SECONDS) -> Traffic:
    """A capture's packets by Wireshark's reading, with the period each lands in."""
    ts, ok, src, dst = tshark_packets(path)
    per, periods = _periods(ts, ok, window_seconds, period_seconds)
    return Traffic(node, src[ok], dst[ok], per, periods)


@dataclass
class Expected:
    """The independent answer for one shared directory."""

    total: dict
    node_packets: dict            # node -> counted packets
    periods: dict                 # period start -> nine analytics

    @classmethod
    def of(cls, traffic: list[Traffic]) -> "Expected":
        src = np.concatenate([t.src for t in traffic]) if traffic else np.empty(0, np.uint32)
        dst = np.concatenate([t.dst for t in traffic]) if traffic else np.empty(0, np.uint32)
        per = np.concatenate([t.period for t in traffic]) if traffic else np.empty(0, np.int64)
        periods = {}
        for p in sorted(set().union(*(t.periods for t in traffic))) if traffic else []:
            m = per == p
            periods[int(p)] = nine(src[m], dst[m])
        return cls(nine(src, dst), {t.node: len(t.src) for t in traffic}, periods)


# ----------------------------------------------------------------------------- verification


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def ledger_identities(shared: Path) -> list[str]:
    """Every window identity in the ledger's lines, in order (duplicates kept).

    The ledger is compacted into checkpoints, so it holds only the lines after its base line;
    ``consumed_identities`` adds what the checkpoint holds."""
    out = []
    path = shared / "aggregator" / "ledger.jsonl"
    if not path.exists():
        return out
    for line in path.read_bytes().splitlines():
        rec = json.loads(line)
        out.extend(w[0] for w in rec.get("windows", []))
    return out


def consumed_identities(shared: Path) -> tuple[list[str], set]:
    """(identities in the ledger's lines, identities the cumulative report's ranges cover).

    The ranges come from the aggregator's own state, so they are not independent; what makes
    the check exact is that the packet totals, computed without netsense, must also agree."""
    doc = read_json(shared / "reports" / "cumulative.json") or {}
    covered = set()
    for node, runs in (doc.get("windows") or {}).items():
        for run, ranges in runs.items():
            for a, b in ranges:
                covered |= {f"{node}/{run}/{s}" for s in range(a, b + 1)}
    return ledger_identities(shared), covered


def temp_files(shared: Path) -> dict[str, list[str]]:
    """Leftover temp files (``.tmp-*``) by top-level folder of the shared directory."""
    out: dict[str, list[str]] = {}
    for p in shared.rglob(".tmp-*"):
        out.setdefault(p.relative_to(shared).parts[0], []).append(str(p.relative_to(shared)))
    return out


def verify(shared: Path, expected: Expected, injected: list[tuple[str, str, str]] = (),
           check_periods: bool = True) -> tuple[list[str], dict]:
    """Compare a drained shared directory with the independent answer.

    ``injected``: (node folder, file name, reason) of every file put in a landing folder on
    purpose to be quarantined.  Returns (mismatches, facts)."""
    bad: list[str] = []
    facts: dict = {}
    doc = read_json(shared / "reports" / "cumulative.json")
    if doc is None:
        return ["reports/cumulative.json is missing or unreadable"], facts
    got = doc["analytics"]
    for k in KEYS:
        if got.get(k) != expected.total[k]:
            bad.append(f"cumulative {k}: report {got.get(k)}, expected {expected.total[k]}")
    facts["packets"] = got.get("valid_packets", 0)
    for node, n in expected.node_packets.items():
        have = (doc["nodes"].get(node) or {}).get("packets")
        if have != n:
            bad.append(f"node {node}: report has {have} packets, expected {n}")
    if set(doc["nodes"]) != set(expected.node_packets):
        bad.append(f"report nodes {sorted(doc['nodes'])} != expected {sorted(expected.node_packets)}")

    # The ledger: each identity exactly once, and exactly the windows the collectors landed.
    idents, covered = consumed_identities(shared)
    dup = [i for i, c in Counter(idents).items() if c > 1]
    if dup:
        bad.append(f"ledger lists {len(dup)} identities more than once, e.g. {dup[:3]}")
    if not set(idents) <= covered:
        bad.append(f"ledger lines list windows the report's ranges lack: {sorted(set(idents) - covered)[:3]}")
    idents = sorted(covered | set(idents))
    want = set()
    for node in expected.node_packets:
        st = read_json(shared / "status" / f"{node}.json") or {}
        if st.get("state") != "finished":
            bad.append(f"collector {node} status is {st.get('state')!r}, not finished")
            continue
        last = st.get("last_window") or {}
        if last:
            want |= {f"{node}/{st['run']}/{s}" for s in range(int(last["seq"]) + 1)}
    if set(idents) != want:
        missing, extra = sorted(want - set(idents)), sorted(set(idents) - want)
        bad.append(f"ledger identities differ from the landed windows: {len(missing)} missing "
                   f"{missing[:3]}, {len(extra)} unexpected {extra[:3]}")
    per_node = Counter(i.split("/", 1)[0] for i in set(idents))
    for node, s in doc["nodes"].items():
        if s.get("windows") != per_node.get(node, 0):
            bad.append(f"node {node}: report counts {s.get('windows')} windows, ledger {per_node.get(node, 0)}")
    facts["windows"] = len(set(idents))

    # Landing folders: nothing left over after the final drain, and no temp files.
    leftovers = sorted(str(p.relative_to(shared)) for p in (shared / "nodes").glob("*/*"))
    if leftovers:
        bad.append(f"{len(leftovers)} file(s) left in nodes/ after the drain: {leftovers[:5]}")
    # Every writer removes the temp files of its crashed predecessors when it starts (collectors:
    # their landing folder and status file; the aggregator: aggregator/, reports/, quarantine/),
    # and the final drain is an aggregator start: no temp file may be left anywhere.
    temps = temp_files(shared)
    facts["temp_elsewhere"] = {k: len(v) for k, v in temps.items() if k != "nodes"}
    for top, names in sorted(temps.items()):
        bad.append(f"{len(names)} temp file(s) left in {top}/ after the restarts: {names[:3]}")

    # Quarantine: exactly what was put there on purpose, each file with its reason.
    found = []
    qdir = shared / "quarantine"
    for p in sorted(qdir.glob("*/*")) if qdir.exists() else []:
        if p.name.startswith("."):
            continue
        if p.name.endswith(".reason.json"):
            r = read_json(p) or {}
            found.append((r.get("node_folder"), r.get("file"), r.get("reason")))
        elif not p.with_name(p.name + ".reason.json").exists():
            bad.append(f"quarantined {p.relative_to(shared)} has no reason file")
    if sorted(found) != sorted(injected):
        bad.append(f"quarantine holds {sorted(found)}, expected only {sorted(injected)}")
    facts["quarantined"] = len(found)

    if check_periods:
        bad += verify_periods(shared, expected)
    return bad, facts


def verify_periods(shared: Path, expected: Expected) -> list[str]:
    """Every period report (final, newest version) and the Parquet history against the reference."""
    bad = []
    pdir = shared / "reports" / "periods"
    reports = {p.stem: p for p in pdir.glob("*.json") if PERIOD_ID.match(p.stem)} if pdir.exists() else {}
    want = {stamp(s): a for s, a in expected.periods.items()}
    if set(reports) != set(want):
        bad.append(f"period reports {sorted(set(reports) - set(want))[:3]} unexpected, "
                   f"{sorted(set(want) - set(reports))[:3]} missing")
    for pid, path in sorted(reports.items()):
        doc = read_json(path)
        if doc is None:
            bad.append(f"period {pid}: unreadable report")
            continue
        if not doc.get("final"):
            bad.append(f"period {pid}: not final after every collector finished")
        if pid in want and doc["analytics"] != want[pid]:
            diff = {k: (doc["analytics"].get(k), want[pid][k]) for k in KEYS if doc["analytics"].get(k) != want[pid][k]}
            bad.append(f"period {pid}: report != reference (report, expected): {diff}")
    try:
        import pyarrow.dataset as ds

        rows = ds.dataset(shared / "reports" / "history", format="parquet").to_table().to_pylist()
    except Exception as e:
        return bad + [f"history dataset unreadable: {e}"]
    newest: dict = {}
    for r in rows:
        if r["period_id"] in newest:
            bad.append(f"history lists period {r['period_id']} twice: read plainly it would over-count")
        newest[r["period_id"]] = r
    if set(newest) != set(want):
        bad.append(f"history periods differ: {sorted(set(newest) ^ set(want))[:4]}")
    for pid, r in newest.items():
        if pid in want and any(r[k] != want[pid][k] for k in KEYS):
            bad.append(f"history {pid} v{r['version']}: {r['valid_packets']} packets, "
                       f"expected {want[pid]['valid_packets']}")
    return bad
