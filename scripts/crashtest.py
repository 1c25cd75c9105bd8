#!/usr/bin/env python3
"""Crash-safety harness: kill collectors and the aggregator at every dangerous step, then
check that every packet was counted exactly once.

    python scripts/crashtest.py [--kill-points 200] [--seed S] [--keep DIR] [--jobs 3]

Work is split into *rounds*; each round is a fresh shared directory with real processes
(``python -m netsense.collector run`` / ``python -m netsense.aggregator run``):

* three paced synthetic collectors (``synthetic:...,pace=...`` so kills land mid-run) and,
  when ``../shared/pcaps/real`` and ``tshark`` are there, one collector on a real capture;
* an aggregator daemon (``--rescan-seconds 0.2 --period-seconds 2``, checkpointing often or rarely
  at random) that is killed again
  and again: started with ``NETSENSE_FAILPOINT=<agg point>:<random n>`` (it SIGKILLs itself
  at that step) or started normally and SIGKILLed from outside at a random moment, then
  restarted with the next kill point;
* collectors killed the same two ways (``col.land.temp``, ``col.land.done``, outside SIGKILL)
  and restarted with the same arguments (replayable sources resume; windows landed again
  are dropped by the aggregator as duplicates);
* on purpose, a file with a bad name, a corrupted copy and a plain copy of a consumed window
  are dropped into a landing folder: the first two must end in quarantine, the copy must be
  dropped as a duplicate.

When a round's kill points are used up and its collectors have finished, the daemon is
stopped, ``aggregator run --once`` drains, and the shared directory is checked against an
independent computation (``tests/reference.py``: numpy/scipy; tshark for real captures):
cumulative analytics and per-node packets, every period report and the Parquet history,
the ledger (each window identity exactly once, all of them), no temp files left in
``nodes/*/`` (nor anywhere else: every restarted writer cleans up after its crashed
predecessor), no window left unconsumed, and nothing in quarantine but what was put there,
each file with its reason file.

The aggregator is also killed at ``col.land.temp`` (the landing helper's "temp written, not yet
renamed" step, which it reaches on every atomic write: lease, checkpoints, reports, status,
reason files).  A failpoint that is not reached (the process finished first) is retried later
in the round with a smaller n; while kill points remain and a round runs out of traffic, a
small extra collector (a feeder) is started so the aggregator always has windows to choke on.
Every process's CPU time is accounted by role and printed.  Exit status 1 on any mismatch or
error.

The test suite runs a short version (``tests/test_crash.py``) through ``run_harness``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from netsense.faults import POINTS  # noqa: E402
from reference import KEYS, nine  # noqa: E402  (independent numpy/scipy analytics)

NS = 1_000_000_000
REAL_PCAPS = ROOT.parent / "shared" / "pcaps" / "real"
AGG_POINTS = tuple(p for p in POINTS if p.startswith("agg."))
COL_POINTS = tuple(p for p in POINTS if p.startswith("col."))
# Range of the hit count n for NETSENSE_FAILPOINT=name:n, by how often a point is hit per life.
FP_RANGE = {"agg.read": (1, 8), "agg.sum": (1, 8), "agg.checkpoint": (1, 3), "agg.ledger": (1, 3),
            "agg.reports": (1, 5), "agg.archive": (1, 8), "col.land.temp": (1, 10), "col.land.done": (1, 6)}
AGG_ARGS = ["--rescan-seconds", "0.2", "--period-seconds", "2"]
PERIOD_SECONDS = 2
SYN_WINDOW = (4096, 1)     # --window-packets, --window-seconds of synthetic collectors
PCAP_WINDOW = (256, 5)     # real captures are small: smaller windows, longer slots
MAX_GAP_WINDOWS = 1440     # the collector's default --max-gap-windows
STATUS_INTERVAL = "0.3"
# Real captures (../shared/pcaps/real) of a few thousand packets spanning under two minutes,
# several link types and pcapng; their totals come from tshark, not from netsense.
PCAP_CANDIDATES = ("vnc.pcap", "opera-vpn.pcapng", "ethereum.pcap", "synscan.pcap", "forticlient.pcap",
                   "ocs.pcap", "KakaoTalk_chat.pcap", "log4j-webapp-exploit.pcap", "opc-ua.pcap", "nintendo.pcap",
                   "telegram.pcap", "openvpn_nohmac.pcapng", "fix2.pcap", "wa_voice.pcap")
# Protocol names tshark shows for link-layer headers netsense walks through (tests/test_pcap.py):
# the first other name in frame.protocols is the first network-layer protocol.
LINK_LAYER = {"eth", "ethertype", "vlan", "ieee8021ad", "sll", "null", "loop", "ppp", "pppoes", "chdlc",
              "raw", "mpls", "llc", "snap", "cfp", "ppi", "pcap_pktdata"}
PERIOD_ID = re.compile(r"^\d{8}T\d{6}Z$")


def stamp(seconds: int) -> str:
    return datetime.fromtimestamp(int(seconds), tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")


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

    Windows are cut on packet time, which never goes back (a late packet joins the open
    window), so a packet's slot is the running maximum of slots; its window's period is the
    period holding that slot's start.  Silent slots between two busy ones get empty windows
    (gaps up to the collector's --max-gap-windows)."""
    if len(ts_all) == 0:
        return np.empty(0, np.int64), set()
    slots = np.maximum.accumulate(ts_all // (window_seconds * NS))
    starts = slots * window_seconds
    per = starts - starts % period_seconds
    busy = np.unique(slots)
    filled = [busy[:1]]
    for a, b in zip(busy[:-1], busy[1:]):
        filled.append(np.arange(a + 1, b + 1) if b - a - 1 <= MAX_GAP_WINDOWS else np.array([b]))
    all_slots = np.concatenate(filled) * window_seconds
    return per[counted], set((all_slots - all_slots % period_seconds).tolist())


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


def _ip(text: str) -> int:
    a, b, c, d = (int(x) for x in text.split("."))
    return a << 24 | b << 16 | c << 8 | d


def tshark_traffic(node: str, path: Path, window_seconds: int = PCAP_WINDOW[1],
                   period_seconds: int = PERIOD_SECONDS) -> Traffic:
    """A capture's packets by Wireshark's reading: counted when the first network-layer
    protocol is IPv4 with both addresses, and neither is 255.255.255.255."""
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch", "-e",
                          "frame.protocols", "-e", "ip.src", "-e", "ip.dst", "-E", "occurrence=f"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    ts, counted, src, dst = [], [], [], []
    for line in out.splitlines():
        t, protos, s, d = (line.split("\t") + ["", "", ""])[:4]
        first = next((p for p in protos.split(":") if p not in LINK_LAYER), None)
        ok = first == "ip" and bool(s) and bool(d) and "255.255.255.255" not in (s, d)
        ts.append(int(Decimal(t) * NS))
        counted.append(ok)
        src.append(_ip(s) if ok else 0)
        dst.append(_ip(d) if ok else 0)
    ts_a, c_a = np.array(ts, np.int64), np.array(counted, bool)
    per, periods = _periods(ts_a, c_a, window_seconds, period_seconds)
    return Traffic(node, np.array(src, np.uint64)[c_a].astype(np.uint32),
                   np.array(dst, np.uint64)[c_a].astype(np.uint32), per, periods)


def pcaps_available() -> tuple[list[Path], str]:
    """Real captures usable here, or a reason why none are."""
    if not REAL_PCAPS.is_dir():
        return [], f"{REAL_PCAPS} is absent"
    if shutil.which("tshark") is None:
        return [], "tshark is not on PATH"
    try:
        import netsense.collector.pcap  # noqa: F401  (the collector's pcap: source)
    except Exception as e:  # pragma: no cover - depends on the checkout
        return [], f"the collector's pcap: source does not import ({e})"
    found = [REAL_PCAPS / n for n in PCAP_CANDIDATES if (REAL_PCAPS / n).is_file()]
    return found, "" if found else "none of the candidate captures is there"


def warm_pcap_reader(pcaps: list[Path]) -> float:
    """Read one classic and one pcapng capture in a child process, so numba compiles (and caches)
    the scan loops once, not in every collector of the first rounds at the same time."""
    t0 = time.monotonic()
    picks = [next((p for p in pcaps if p.suffix == suf), None) for suf in (".pcap", ".pcapng")]
    code = ("import sys\nfrom netsense.collector.pcap import open_capture, read_capture\n"
            "for a in sys.argv[1:]:\n    with open_capture(a) as f:\n        list(read_capture(f))\n")
    subprocess.run([sys.executable, "-c", code, *[str(p) for p in picks if p]], cwd=ROOT, timeout=900,
                   capture_output=True)
    return time.monotonic() - t0


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


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def ledger_identities(shared: Path) -> list[str]:
    """Every window identity in the committed ledger lines, in order (duplicates kept)."""
    out = []
    path = shared / "aggregator" / "ledger.jsonl"
    if not path.exists():
        return out
    for line in path.read_bytes().splitlines():
        rec = json.loads(line)
        out.extend(w[0] for w in rec["windows"])
    return out


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
    doc = _read_json(shared / "reports" / "cumulative.json")
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
    idents = ledger_identities(shared)
    dup = [i for i, c in Counter(idents).items() if c > 1]
    if dup:
        bad.append(f"ledger lists {len(dup)} identities more than once, e.g. {dup[:3]}")
    want = set()
    for node in expected.node_packets:
        st = _read_json(shared / "status" / f"{node}.json") or {}
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
            r = _read_json(p) or {}
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
        doc = _read_json(path)
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
        if r["version"] > newest.get(r["period_id"], {"version": 0})["version"]:
            newest[r["period_id"]] = r
    if set(newest) != set(want):
        bad.append(f"history periods differ: {sorted(set(newest) ^ set(want))[:4]}")
    for pid, r in newest.items():
        if pid in want and any(r[k] != want[pid][k] for k in KEYS):
            bad.append(f"history {pid} v{r['version']}: {r['valid_packets']} packets, "
                       f"expected {want[pid]['valid_packets']}")
    return bad


# ----------------------------------------------------------------------------- processes


class Child:
    """One real process, ``python -m ...`` from the repository root, logging to its own file.

    Killed or stopped only through its own pid.  It is reaped with ``wait4`` so that its CPU
    time lands in ``account[role]`` (what the harness spends its time on)."""

    def __init__(self, args: list[str], log: Path, failpoint: str | None = None, role: str = "other",
                 account: Counter | None = None):
        env = {k: v for k, v in os.environ.items() if k != "NETSENSE_FAILPOINT"}
        env["PYTHONUNBUFFERED"] = "1"
        if failpoint:
            env["NETSENSE_FAILPOINT"] = failpoint
        self.log = log
        self.failpoint = failpoint
        self.role = role
        self.account = account if account is not None else Counter()
        self.rc: int | None = None
        with open(log, "wb") as fh:
            self.p = subprocess.Popen([sys.executable, "-m", f"netsense.{args[0]}", *args[1:]], stdout=fh, stderr=subprocess.STDOUT,
                                      cwd=ROOT, env=env)
        self.started = time.monotonic()

    def _reap(self, flags: int) -> int | None:
        if self.rc is None:
            pid, status, ru = os.wait4(self.p.pid, flags)
            if pid == 0:
                return None
            self.rc = os.waitstatus_to_exitcode(status)
            self.p.returncode = self.rc  # keep Popen from reaping it again
            self.account[self.role] += ru.ru_utime + ru.ru_stime
            self.account[self.role + " starts"] += 1
        return self.rc

    def poll(self) -> int | None:
        return self._reap(os.WNOHANG)

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.01)  # polling a child with a deadline
        return self.rc

    def kill(self) -> int:
        if self.poll() is None:
            os.kill(self.p.pid, signal.SIGKILL)
        return self._reap(0)

    def stop(self, timeout: float = 60) -> int:
        if self.poll() is None:
            os.kill(self.p.pid, signal.SIGTERM)
        rc = self.wait(timeout)
        return self.kill() if rc is None else rc

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, n: int = 12) -> str:
        return "\n".join(self.output().splitlines()[-n:])


def run_once(shared: Path, log: Path, extra: list[str] = (), timeout: float = 300,
             account: Counter | None = None) -> int:
    """``aggregator run --once`` (the final drain); returns its exit status."""
    c = Child(["aggregator", "run", "--shared", str(shared), "--once", "--period-seconds", str(PERIOD_SECONDS),
               *extra], log, role="drain", account=account)
    rc = c.wait(timeout)
    return c.kill() if rc is None else rc


# ----------------------------------------------------------------------------- kill plan


@dataclass
class KillPoint:
    target: str          # "agg" or "col"
    how: str             # "failpoint" or "sigkill"
    name: str            # failpoint name, or "sigkill"
    n: int = 1           # failpoint: die at the n-th hit
    delay: float = 0.0   # sigkill: seconds after the process is up
    tries: int = 0

    @property
    def kind(self) -> str:
        return f"{self.target} {self.name}" if self.how == "failpoint" else f"{self.target} sigkill"

    def env(self) -> str | None:
        return f"{self.name}:{self.n}" if self.how == "failpoint" else None


def _point(rng: random.Random, target: str, name: str) -> KillPoint:
    if name == "sigkill":  # seconds after the process is up (holds the lease / wrote its status)
        return KillPoint(target, "sigkill", "sigkill", delay=round(rng.uniform(0.0, 2.5), 3))
    return KillPoint(target, "failpoint", name, n=rng.randint(*FP_RANGE[name]))


def kill_plan(n: int, rng: random.Random, agg_land_temp: bool = True) -> list[KillPoint]:
    """``n`` kill points; the first ones cover every failpoint name and both outside kills.

    With ``agg_land_temp`` the random rest also kills the aggregator at ``col.land.temp``: the
    landing helper's "temp written, not yet renamed" step, which the aggregator reaches on
    every atomic write (lease, checkpoints, period files, reports, status, reason files)."""
    cover = [_point(rng, "agg", p) for p in AGG_POINTS] + [_point(rng, "col", p) for p in COL_POINTS]
    cover += [_point(rng, "agg", "sigkill"), _point(rng, "col", "sigkill")]
    rng.shuffle(cover)
    plan = cover[:n]
    while len(plan) < n:
        if rng.random() < 0.6:
            plan.append(_point(rng, "agg", rng.choice(AGG_POINTS + ("sigkill",) * 2
                                                      + (("col.land.temp",) if agg_land_temp else ()))))
        else:
            plan.append(_point(rng, "col", rng.choice(COL_POINTS + ("sigkill",))))
    return plan


# ----------------------------------------------------------------------------- one round


@dataclass
class ColJob:
    node: str
    source: str
    window: tuple
    traffic: Traffic | None = None
    proc: Child | None = None
    point: KillPoint | None = None
    kill_at: float | None = None
    starts: int = 0
    kills: int = 0
    done: bool = False

    def args(self, shared: Path) -> list[str]:
        return ["collector", "run", "--shared", str(shared), "--node", self.node, "--source", self.source,
                "--window-packets", str(self.window[0]), "--window-seconds", str(self.window[1]),
                "--status-interval", STATUS_INTERVAL]


@dataclass
class RoundResult:
    index: int
    fired: Counter = field(default_factory=Counter)
    unreached: Counter = field(default_factory=Counter)
    agg_restarts: int = 0
    col_restarts: int = 0
    windows: int = 0
    packets: int = 0
    collectors: int = 0
    pcaps: list = field(default_factory=list)
    mismatches: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    temp_elsewhere: Counter = field(default_factory=Counter)
    quarantined: int = 0
    seconds: float = 0.0
    cpu: Counter = field(default_factory=Counter)   # role -> CPU seconds of its processes; "<role> starts"


class Round:
    MAX_TRIES = 3            # a failpoint not reached this many times is given up (counted unreached)
    MAX_COL_KILLS = 3        # per collector: paced sources regenerate their skipped part at pace
    FP_IDLE = 8.0            # an aggregator failpoint not hit after this long idle, with no traffic
    FP_CAP = 60.0            # coming, or after this long holding the lease, is retried later
    MAX_TOPUPS = 20

    def __init__(self, index: int, base: Path, points: list[KillPoint], seed: int, pcaps: list[Path],
                 traffic_cache: dict, deadline: float = 300.0, stop: threading.Event | None = None,
                 collectors: int = 3):
        self.r = RoundResult(index)
        self.t0 = time.monotonic()
        self.rng = random.Random(seed)
        self.dir = base / f"round-{index:03d}"
        self.shared = self.dir / "shared"
        self.logs = self.dir / "logs"
        self.shared.mkdir(parents=True)
        self.logs.mkdir()
        self.agg_queue = [p for p in points if p.target == "agg"]
        self.col_queue = [p for p in points if p.target == "col"]
        self.jobs: list[ColJob] = []
        self.agg: Child | None = None
        self.agg_point: KillPoint | None = None
        self.agg_kill_at: float | None = None
        self.agg_up_at: float | None = None   # when the running aggregator took the lease
        self.agg_starts = 0
        self.injected: list[tuple[str, str, str]] = []
        self.injections_done = False
        self.topups = 0
        self.deadline = deadline
        self.stop = stop or threading.Event()
        self.traffic_cache = traffic_cache
        for i in range(1, collectors + 1):
            packets = self.rng.randint(30, 70) * 1000
            self.jobs.append(ColJob(f"s{i}", f"synthetic:seed={self.rng.randrange(1 << 30)},packets={packets},"
                                    f"rate=20000,hosts=3000,pace=12000,batch=2048", SYN_WINDOW))
        if pcaps:
            cap = self.rng.choice(pcaps)
            self.r.pcaps.append(cap.name)
            node = "p-" + re.sub(r"[^a-z0-9.-]", "-", cap.stem.lower())[:40]
            self.jobs.append(ColJob(node, f"pcap:{cap}", PCAP_WINDOW))

    # -- helpers ----------------------------------------------------------------
    def error(self, msg: str) -> None:
        self.r.errors.append(f"round {self.r.index}: {msg}")
        self.event(f"ERROR {msg}")

    def event(self, msg: str) -> None:
        with open(self.logs / "events.log", "a") as f:
            f.write(f"{time.monotonic() - self.t0:8.3f} {datetime.now().strftime('%H:%M:%S.%f')[:-3]} {msg}\n")

    def fired(self, p: KillPoint, who: str) -> None:
        self.r.fired[p.kind] += 1
        self.event(f"fired {p.kind} n={p.n} delay={p.delay} in {who}")

    def retry(self, p: KillPoint, queue: list, who: str) -> None:
        p.tries += 1
        self.event(f"not reached: {p.kind} n={p.n} delay={p.delay} in {who} (try {p.tries})")
        p.n = max(1, p.n // 2)  # fewer hits next time
        if p.tries >= self.MAX_TRIES:
            self.r.unreached[p.kind] += 1
        else:
            queue.append(p)

    def traffic(self, job: ColJob) -> Traffic:
        key = (job.node, job.source, job.window)
        if key not in self.traffic_cache:
            if job.source.startswith("synthetic:"):
                self.traffic_cache[key] = synthetic_traffic(job.node, job.source, job.window[1])
            else:
                self.traffic_cache[key] = tshark_traffic(job.node, Path(job.source.split(":", 1)[1]), job.window[1])
        return self.traffic_cache[key]

    # -- collectors -----------------------------------------------------------------
    def start_collector(self, job: ColJob, now: float) -> None:
        job.point, job.kill_at = None, None
        if self.col_queue and job.kills < self.MAX_COL_KILLS:
            job.point = self.col_queue.pop(0)
        if job.starts:
            self.r.col_restarts += 1
        job.starts += 1
        job.proc = Child(job.args(self.shared), self.logs / f"col-{job.node}-{job.starts:02d}.log",
                         job.point.env() if job.point else None, "collector", self.r.cpu)
        self.event(f"start collector {job.node} #{job.starts} {job.point}")

    def is_up(self, proc: Child, status: Path) -> bool:
        """The process has written ``status`` (lease or status file) with its pid."""
        return (_read_json(status) or {}).get("pid") == proc.p.pid

    def tick_collectors(self, now: float) -> None:
        for job in self.jobs:
            if job.done:
                continue
            if job.proc is None:
                self.start_collector(job, now)
                continue
            rc = job.proc.poll()
            if rc is None:
                if (job.point and job.point.how == "sigkill" and job.kill_at is None
                        and self.is_up(job.proc, self.shared / "status" / f"{job.node}.json")):
                    job.kill_at = now + job.point.delay
                if job.kill_at is not None and now >= job.kill_at:
                    job.proc.kill()
                    self.fired(job.point, job.node)
                    job.kills += 1
                    job.proc = None
                continue
            if rc == -signal.SIGKILL and job.point and job.point.how == "failpoint":
                self.fired(job.point, job.node)
                job.kills += 1
                job.proc = None
                continue
            if job.point:  # finished before the kill point was reached
                self.retry(job.point, self.col_queue, job.node)
            if rc != 0:
                self.error(f"collector {job.node} (start {job.starts}) exited {rc}:\n{job.proc.tail()}")
                job.done = True
                continue
            if "Traceback" in job.proc.output():
                self.error(f"collector {job.node} (start {job.starts}) logged a traceback:\n{job.proc.tail()}")
            job.done = True
            job.proc = None
            self.event(f"collector {job.node} finished")
        # Keep traffic flowing while kill points remain: an idle aggregator reaches no failpoint.
        # A feeder lands a window about every 0.4 s for six seconds.  (Real captures
        # are short, and may wait for numba to compile: they do not count.)
        active = [j for j in self.jobs if not j.done and j.source.startswith("synthetic:")]
        pending = self.agg_queue or self.col_queue or self.agg_point is not None
        if pending and not active and self.topups < self.MAX_TOPUPS:
            self.topups += 1
            self.jobs.append(ColJob(f"top{self.topups}", f"synthetic:seed={self.rng.randrange(1 << 30)},"
                                    f"packets=60000,rate=20000,hosts=2000,pace=10000,batch=2048", SYN_WINDOW))

    # -- the aggregator -----------------------------------------------------------------
    def start_aggregator(self, now: float) -> None:
        self.agg_point = self.agg_queue.pop(0) if self.agg_queue else None
        if self.agg_starts:
            self.r.agg_restarts += 1
        self.agg_starts += 1
        # Checkpoint often or rarely, at random: kills then land both on checkpoints and on
        # stretches of the write-ahead log that recovery must replay (windows and finalizations).
        ckpt = ["--checkpoint-windows", str(self.rng.choice([1, 5, 30, 4096])),
                "--checkpoint-seconds", str(self.rng.choice([0.3, 2, 600]))]
        self.agg = Child(["aggregator", "run", "--shared", str(self.shared), *AGG_ARGS, *ckpt],
                         self.logs / f"agg-{self.agg_starts:03d}.log",
                         self.agg_point.env() if self.agg_point else None, "aggregator", self.r.cpu)
        self.event(f"start aggregator #{self.agg_starts} {self.agg_point}")
        self.agg_kill_at = self.agg_up_at = None

    def tick_aggregator(self, now: float) -> None:
        if self.agg is None:
            self.start_aggregator(now)
            return
        p, rc = self.agg_point, self.agg.poll()
        if rc is None:
            if self.agg_up_at is None and self.is_up(self.agg, self.shared / "aggregator" / "lease.json"):
                self.agg_up_at = now
                if p and p.how == "sigkill":
                    self.agg_kill_at = now + p.delay  # from taking the lease: recovery, then the loop
            if self.agg_kill_at is not None and now >= self.agg_kill_at:
                self.agg.kill()
                self.fired(p, "aggregator")
                self.agg = None
            elif p and p.how == "failpoint" and self.agg_up_at is not None and self.give_up(now):
                self.event(f"giving up on {p.kind} n={p.n}: up {now - self.agg_up_at:.1f}s, "
                           f"idle {self.agg_idle_since(now):.1f}s")
                rc = self.stop_aggregator()
                if rc == -signal.SIGKILL:  # reached while finishing its last transaction
                    self.fired(p, "aggregator")
                else:
                    self.retry(p, self.agg_queue, "aggregator")
            return
        if rc == -signal.SIGKILL and p and p.how == "failpoint":
            self.fired(p, "aggregator")
        else:
            self.error(f"aggregator (start {self.agg_starts}, point {p and p.kind}) exited {rc} by itself:\n"
                       f"{self.agg.tail()}")
            if p:
                self.retry(p, self.agg_queue, "aggregator")
        self.agg = None

    def give_up(self, now: float) -> bool:
        """A failpoint is out of reach when the aggregator has held the lease for FP_CAP seconds,
        or when nothing is left to come (no synthetic collector running, no feeder left) and it
        has been idle for FP_IDLE seconds."""
        up = now - self.agg_up_at
        if up > self.FP_CAP:
            return True
        coming = any(not j.done and j.source.startswith("synthetic:") for j in self.jobs)
        return not coming and up > self.FP_IDLE and self.agg_idle_since(now) > self.FP_IDLE

    def agg_idle_since(self, now: float) -> float:
        """Seconds since the running aggregator last logged (0 until it has started its loop)."""
        try:
            out = self.agg.output()
            if "watching" not in out:
                return 0.0
            return time.time() - self.agg.log.stat().st_mtime
        except OSError:
            return 0.0

    def stop_aggregator(self) -> int:
        """SIGTERM the daemon; it finishes its transaction and exits 0 (or dies by the default
        action if the signal came before it installed its handler, still importing)."""
        rc = self.agg.stop()
        out = self.agg.output()
        if rc == -signal.SIGTERM and "received SIGTERM" not in out:
            rc = 0
        if rc not in (0, -signal.SIGKILL):
            self.error(f"aggregator exited {rc} on SIGTERM:\n{self.agg.tail()}")
        elif rc == 0 and "Traceback" in out:
            self.error(f"aggregator logged a traceback:\n{self.agg.tail()}")
        self.event(f"stopped aggregator #{self.agg_starts}: {rc}")
        self.agg = None
        return rc

    # -- files put in a landing folder on purpose -------------------------------------------
    def inject(self, force: bool = False) -> None:
        """A bad name and a corrupted copy (quarantined) and a plain copy (a duplicate) of
        windows already consumed, landed atomically like a collector would."""
        archived = sorted((self.shared / "archive").glob("s1/*.nsw"))
        if len(archived) < 2 and not force:
            return
        self.injections_done = True
        node_dir = self.shared / "nodes" / "s1"
        node_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.shared / f".inject-{os.getpid()}"

        def land(name: str, data: bytes) -> bool:
            tmp.write_bytes(data)
            try:
                os.link(tmp, node_dir / name)  # never clobber a collector's file
                return True
            except FileExistsError:
                return False
            finally:
                tmp.unlink()

        garbage = f"garbage-{self.r.index}.nsw"
        if land(garbage, os.urandom(100)):
            self.injected.append(("s1", garbage, "bad_name"))
        if len(archived) >= 2:
            a, b = self.rng.sample(archived, 2)
            data = bytearray(a.read_bytes())
            data[-10] ^= 0xFF  # the payload, under a valid name and header
            if land(a.name, bytes(data)):
                self.injected.append(("s1", a.name, "bad_checksum"))
            land(b.name, b.read_bytes())  # a redelivered copy: dropped as a duplicate

    # -- the round ---------------------------------------------------------------------------
    def finished(self) -> bool:
        return (all(j.done for j in self.jobs) and not self.agg_queue and not self.col_queue
                and self.agg_point is None)

    def run(self) -> RoundResult:
        t0 = time.monotonic()
        try:
            self._run(t0)
        except Exception as e:  # a harness bug must not pass for a clean round
            import traceback

            self.error(f"harness error: {e}\n{traceback.format_exc()}")
        finally:
            for j in self.jobs:
                if j.proc is not None and j.proc.poll() is None:
                    j.proc.kill()
            if self.agg is not None and self.agg.poll() is None:
                self.agg.kill()
        self.r.seconds = time.monotonic() - t0
        return self.r

    def _run(self, t0: float) -> None:
        while True:
            now = time.monotonic()
            if self.stop.is_set():
                self.error("interrupted")
                return
            if now - t0 > self.deadline:
                self.error(f"round did not finish within {self.deadline:.0f}s "
                           f"(queues: agg {len(self.agg_queue)}, col {len(self.col_queue)})")
                return
            self.tick_collectors(now)
            self.tick_aggregator(now)
            if not self.injections_done and now - t0 > 2.0:
                self.inject()
            if self.finished():
                break
            time.sleep(0.02)  # the supervision loop's tick; every wait above has a deadline
        # Drain: stop the daemon (SIGTERM finishes the transaction), then --once.
        if self.agg is not None:
            if self.stop_aggregator() == -signal.SIGKILL:
                self.error("the last aggregator died by SIGKILL without a failpoint")
        if not self.injections_done:
            self.inject(force=True)
        # Every collector restarted cleans its folder: nothing temporary may remain there.
        temps = temp_files(self.shared).get("nodes", [])
        if temps:
            self.r.mismatches.append(f"round {self.r.index}: temp files left in nodes/: {temps[:5]}")
        rc = run_once(self.shared, self.logs / "drain.log", account=self.r.cpu)
        if rc != 0:
            self.error(f"final drain exited {rc}: {(self.logs / 'drain.log').read_text()[-2000:]}")
        traffic = [self.traffic(j) for j in self.jobs]
        bad, facts = verify(self.shared, Expected.of(traffic), self.injected)
        self.r.mismatches += [f"round {self.r.index}: {b}" for b in bad]
        self.r.windows = facts.get("windows", 0)
        self.r.packets = facts.get("packets", 0)
        self.r.quarantined = facts.get("quarantined", 0)
        self.r.temp_elsewhere.update(facts.get("temp_elsewhere", {}))
        self.r.collectors = len(self.jobs)


# ----------------------------------------------------------------------------- the harness


@dataclass
class Summary:
    seed: int
    rounds: list = field(default_factory=list)
    pcap_note: str = ""
    seconds: float = 0.0
    cpu_self: float = 0.0

    def total(self, attr):
        out = Counter() if isinstance(getattr(self.rounds[0], attr), Counter) else 0
        for r in self.rounds:
            out += getattr(r, attr)
        return out

    @property
    def fired(self) -> Counter:
        return self.total("fired") if self.rounds else Counter()

    @property
    def mismatches(self) -> list:
        return [m for r in self.rounds for m in r.mismatches]

    @property
    def errors(self) -> list:
        return [e for r in self.rounds for e in r.errors]

    @property
    def ok(self) -> bool:
        return bool(self.rounds) and not self.mismatches and not self.errors

    def report(self) -> str:
        fired = self.fired
        by_target = Counter()
        for k, v in fired.items():
            by_target[k.split()[0]] += v
        lines = [f"crashtest: seed {self.seed}, {len(self.rounds)} rounds in {self.seconds:.1f}s",
                 f"kill points fired: {sum(fired.values())} "
                 f"(aggregator {by_target['agg']}, collectors {by_target['col']})"]
        for k in sorted(fired):
            lines.append(f"  {k:<22} {fired[k]}")
        unreached = self.total("unreached") if self.rounds else Counter()
        if unreached:
            lines.append(f"  given up, never reached: {dict(unreached)}")
        lines.append(f"restarts: aggregator {self.total('agg_restarts')}, collectors {self.total('col_restarts')}")
        caps = sorted({p for r in self.rounds for p in r.pcaps})
        lines.append(f"collectors: {self.total('collectors')} ({sum(len(r.pcaps) for r in self.rounds)} on real "
                     f"captures{': ' + ', '.join(caps) if caps else ''})")
        if self.pcap_note:
            lines.append(f"real captures not used: {self.pcap_note}")
        lines.append(f"window files consumed (distinct identities): {self.total('windows')}")
        lines.append(f"packets: {self.total('packets')}")
        lines.append(f"quarantined on purpose: {self.total('quarantined')}")
        elsewhere = self.total("temp_elsewhere") if self.rounds else Counter()
        lines.append(f"temp files left after restarts: nodes/ 0 expected; elsewhere (status/, reports/, ...) "
                     f"{dict(elsewhere) or 0}")
        cpu = self.total("cpu") if self.rounds else Counter()
        roles = [f"{r} {cpu[r]:.0f}s/{cpu[r + ' starts']} starts = {cpu[r] / max(1, cpu[r + ' starts']):.2f}s each"
                 for r in ("aggregator", "collector", "drain")]
        lines.append(f"cpu: {'; '.join(roles)}; harness itself {self.cpu_self:.0f}s "
                     f"({self.seconds:.0f}s wall on {os.cpu_count()} cpus)")
        lines.append(f"mismatches: {len(self.mismatches)}")
        lines += [f"  {m}" for m in self.mismatches[:50]]
        lines.append(f"errors: {len(self.errors)}")
        lines += [f"  {e}" for e in self.errors[:20]]
        return "\n".join(lines)


def run_harness(kill_points: int = 200, seed: int | None = None, workdir: Path | None = None, jobs: int = 3,
                per_round: int = 12, use_pcaps: bool = True, log=print, stop: threading.Event | None = None,
                round_deadline: float = 300.0, agg_land_temp: bool = True, collectors: int = 3) -> Summary:
    """Run rounds until at least ``kill_points`` kill points have fired (or were given up)."""
    seed = random.randrange(1 << 32) if seed is None else seed
    self_cpu0 = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    rng = random.Random(seed)
    summary = Summary(seed)
    t0 = time.monotonic()
    pcaps, note = pcaps_available() if use_pcaps else ([], "disabled (--no-pcap)")
    summary.pcap_note = note
    if pcaps:
        log(f"real captures: {len(pcaps)} candidates; numba warm-up took {warm_pcap_reader(pcaps):.1f}s")
    base = Path(workdir or tempfile.mkdtemp(prefix="netsense-crash-"))
    base.mkdir(parents=True, exist_ok=True)
    stop = stop or threading.Event()
    cache: dict = {}
    lock = threading.Lock()
    plan = kill_plan(kill_points, rng, agg_land_temp)
    chunks = [plan[i:i + per_round] for i in range(0, len(plan), per_round)]
    seeds = [rng.randrange(1 << 32) for _ in range(len(chunks) + 8)]

    def one(i: int, points: list[KillPoint]) -> RoundResult:
        res = Round(i, base, points, seeds[i], pcaps, cache, round_deadline, stop, collectors).run()
        with lock:
            log(f"round {i}: {sum(res.fired.values())} kill points, {res.windows} windows, {res.packets} packets, "
                f"{len(res.mismatches)} mismatches, {len(res.errors)} errors, {res.seconds:.1f}s")
        return res

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        summary.rounds = list(pool.map(lambda a: one(*a), enumerate(chunks)))
    # Points given up on (never reached) are made good with extra rounds, a few at most, so that
    # at least ``kill_points`` fire and every failpoint name fires at least once.
    extra = len(chunks)
    while not stop.is_set() and extra < len(seeds):
        fired = summary.fired
        uncovered = [n for n in POINTS if not fired[f"{n[:3]} {n}"]]
        missing = kill_points - sum(fired.values())
        if missing <= 0 and not uncovered:
            break
        more = [_point(rng, n[:3], n) for n in uncovered]
        more += kill_plan(missing - len(more), rng, agg_land_temp) if missing > len(more) else []
        summary.rounds.append(one(extra, more))
        extra += 1
    summary.seconds = time.monotonic() - t0
    summary.cpu_self = sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - self_cpu0
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kill-points", type=int, default=200, help="kill points to fire (default 200)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    ap.add_argument("--keep", type=Path, default=None, metavar="DIR",
                    help="work in DIR and keep it (default: a temp dir, removed unless something failed)")
    ap.add_argument("--jobs", type=int, default=3, help="rounds run in parallel (default 3)")
    ap.add_argument("--per-round", type=int, default=12, help="kill points per round (default 12)")
    ap.add_argument("--no-pcap", action="store_true", help="synthetic sources only")
    ap.add_argument("--no-agg-land-temp", action="store_true",
                    help="do not kill the aggregator at col.land.temp (inside its atomic writes)")
    a = ap.parse_args(argv)
    workdir = a.keep or Path(tempfile.mkdtemp(prefix="netsense-crash-"))
    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"crashtest: working in {workdir}", flush=True)
    s = run_harness(a.kill_points, a.seed, workdir, a.jobs, a.per_round, not a.no_pcap,
                    log=lambda m: print(m, flush=True), stop=stop, agg_land_temp=not a.no_agg_land_temp)
    print(s.report())
    if a.keep is None:
        if s.ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir} for inspection")
    return 0 if s.ok else 1


if __name__ == "__main__":
    sys.exit(main())
