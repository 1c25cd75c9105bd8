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
independent computation (``scripts/oracle.py``: numpy/scipy; tshark for real captures):
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

Long-run scenarios (``scripts/faultharness.py``, ``--scenarios all|none|NAME,...``, default all)
are planned as kill points of their own kind (``scenario <name>``) in the same rounds, each at
least once per run: a frozen holder and its standby (SIGSTOP past a 3 s lease, SIGCONT), a
standby whose clock runs 120 s ahead, a kill and failed commit/rollback I/O errors in recovery,
a ledger deleted under the daemon (then ``aggregator repair``), a full disk (the round's share on
a 64 MiB tmpfs; left out, and said so, where no tmpfs can be mounted), a FIFO and a flood of
2,000 junk files under valid window names.  The aggregator life that takes one is driven by the
scenario, which checks what the product must do meanwhile; the round still ends with the drain
and the exact comparison.  Checks of ``faultharness.KNOWN_FAILING`` scenarios (product bugs
reported, not yet fixed) are listed as known failures, not errors.

The test suite runs a short version (``tests/test_crash.py``) as a real process, with
``--summary-json`` to check what fired.
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
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # oracle.py, the sibling module

from oracle import (PCAP_WINDOW, PERIOD_SECONDS, SYN_WINDOW, Expected, Traffic, read_json,  # noqa: E402
                    synthetic_traffic, temp_files, tshark_traffic, verify, verify_periods)

import faultharness  # noqa: E402  (the long-run scenarios, mixed into the rounds)
from faultharness import SCENARIOS  # noqa: E402

from netsense.faults import POINTS  # noqa: E402
REAL_PCAPS = ROOT.parent / "shared" / "pcaps" / "real"
AGG_POINTS = tuple(p for p in POINTS if p.startswith("agg."))
COL_POINTS = tuple(p for p in POINTS if p.startswith("col."))
# Range of the hit count n for NETSENSE_FAILPOINT=name:n, by how often a point is hit per life.
FP_RANGE = {"agg.read": (1, 8), "agg.sum": (1, 8), "agg.checkpoint": (1, 3), "agg.ledger": (1, 3),
            "agg.reports": (1, 5), "agg.archive": (1, 8), "col.land.temp": (1, 10), "col.land.done": (1, 6)}
AGG_ARGS = ["--rescan-seconds", "0.2", "--period-seconds", "2"]
STATUS_INTERVAL = "0.3"
# Real captures (../shared/pcaps/real) of a few thousand packets spanning under two minutes,
# several link types and pcapng; their totals come from tshark, not from netsense.
PCAP_CANDIDATES = ("vnc.pcap", "opera-vpn.pcapng", "ethereum.pcap", "synscan.pcap", "forticlient.pcap",
                   "ocs.pcap", "KakaoTalk_chat.pcap", "log4j-webapp-exploit.pcap", "opc-ua.pcap", "nintendo.pcap",
                   "telegram.pcap", "openvpn_nohmac.pcapng", "fix2.pcap", "wa_voice.pcap")
# ----------------------------------------------------------------------------- real captures


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


# ----------------------------------------------------------------------------- processes


class Child:
    """One real process, ``python -m ...`` from the repository root, logging to its own file.

    Killed or stopped only through its own pid.  It is reaped with ``wait4`` so that its CPU
    time lands in ``account[role]`` (what the harness spends its time on)."""

    def __init__(self, args: list[str], log: Path, failpoint: str | None = None, role: str = "other",
                 account: Counter | None = None, env: dict | None = None):
        env = {**{k: v for k, v in os.environ.items() if k not in ("NETSENSE_FAILPOINT", "NETSENSE_CLOCK_SKEW")},
               **(env or {})}
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
    how: str             # "failpoint", "sigkill" or "scenario" (faultharness.SCENARIOS, aggregator only)
    name: str            # failpoint name, "sigkill", or the scenario's name
    n: int = 1           # failpoint: die at the n-th hit
    delay: float = 0.0   # sigkill: seconds after the process is up
    tries: int = 0

    @property
    def kind(self) -> str:
        if self.how == "scenario":
            return f"scenario {self.name}"
        return f"{self.target} {self.name}" if self.how == "failpoint" else f"{self.target} sigkill"

    def env(self) -> str | None:
        if self.how == "scenario":
            return SCENARIOS[self.name].failpoint
        return f"{self.name}:{self.n}" if self.how == "failpoint" else None


SCENARIO_SHARE = 0.05   # of the random rest of a plan: scenarios beyond the one of each per run


def _point(rng: random.Random, target: str, name: str) -> KillPoint:
    if target == "scenario":
        return KillPoint("agg", "scenario", name)
    if name == "sigkill":  # seconds after the process is up (holds the lease / wrote its status)
        return KillPoint(target, "sigkill", "sigkill", delay=round(rng.uniform(0.0, 2.5), 3))
    return KillPoint(target, "failpoint", name, n=rng.randint(*FP_RANGE[name]))


def kill_plan(n: int, rng: random.Random, agg_land_temp: bool = True, scenarios: tuple = ()) -> list[KillPoint]:
    """``n`` kill points; the first ones cover every failpoint name and both outside kills.

    With ``agg_land_temp`` the random rest also kills the aggregator at ``col.land.temp``: the
    landing helper's "temp written, not yet renamed" step, which the aggregator reaches on
    every atomic write (lease, checkpoints, period files, reports, status, reason files).

    ``scenarios`` (names of ``faultharness.SCENARIOS``): the rest holds each of them once, at a
    random place, and a few more at random (``SCENARIO_SHARE``); a plan too short for all of them
    is completed by the harness's extra rounds, as for a failpoint never reached.  Without
    scenarios the plan is the one earlier versions drew for the same seed."""
    cover = [_point(rng, "agg", p) for p in AGG_POINTS] + [_point(rng, "col", p) for p in COL_POINTS]
    cover += [_point(rng, "agg", "sigkill"), _point(rng, "col", "sigkill")]
    rng.shuffle(cover)
    plan = cover[:n]
    head = len(plan)
    while len(plan) < n:
        if scenarios and rng.random() < SCENARIO_SHARE:
            plan.append(_point(rng, "scenario", rng.choice(scenarios)))
        elif rng.random() < 0.6:
            plan.append(_point(rng, "agg", rng.choice(AGG_POINTS + ("sigkill",) * 2
                                                      + (("col.land.temp",) if agg_land_temp else ()))))
        else:
            plan.append(_point(rng, "col", rng.choice(COL_POINTS + ("sigkill",))))
    once = [_point(rng, "scenario", s) for s in scenarios]
    rng.shuffle(once)
    for i, p in zip(rng.sample(range(head, n), min(len(once), n - head)), once):
        plan[i] = p  # each scenario once, in place of a random point of the rest
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
    known: list = field(default_factory=list)       # failed checks of faultharness.KNOWN_FAILING scenarios
    tmpfs: bool = False                             # the share was a size-limited tmpfs


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
        self.scenario = None                  # the generator driving a scenario's aggregator life
        self.others: list[Child] = []         # standbys, repairs: killed with the round
        self.on_tmpfs = False
        self.known_damage: dict[str, str] = {}  # "periods" -> the known-failing scenario that damaged them
        self.disk_full = False                # a disk-full episode: collectors are not (re)started,
        self.enospc_until = 0.0               # and one that fails to start on ENOSPC until then is restarted
        if any(p.how == "scenario" and SCENARIOS[p.name].tmpfs for p in points):
            why = faultharness.tmpfs_mount(self.shared)
            if why:
                self.error(f"cannot mount a tmpfs on {self.shared}: {why}")
            self.on_tmpfs = self.r.tmpfs = not why
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

    def check_failed(self, scenario: str, msg: str, damage: str | None = None) -> None:
        """A scenario's check failed: an error, or a known failure (faultharness.KNOWN_FAILING).

        ``damage`` ("periods"): what the known bug just damaged on the share; the drain's check of
        it in this round (period reports and history) is then listed as known failures too."""
        if scenario in faultharness.KNOWN_FAILING:
            self.r.known.append(f"round {self.r.index}: {scenario}: {msg}")
            self.event(f"KNOWN FAILURE {scenario}: {msg}")
            if damage:
                self.known_damage.setdefault(damage, scenario)
        else:
            self.error(msg)

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
        return (read_json(status) or {}).get("pid") == proc.p.pid

    def tick_collectors(self, now: float) -> None:
        for job in self.jobs:
            if job.done:
                continue
            if job.proc is None:
                if not self.disk_full:  # a start-up on a full share fails by design (one-line error)
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
            out = job.proc.output().strip()
            if rc > 0 and now < self.enospc_until and out.startswith("Error:") and "No space left on device" in out:
                # Its start-up writes failed on the full disk, before it read anything (a one-line
                # error, by design): start it again.  A collector already running must spool instead.
                self.event(f"collector {job.node} (start {job.starts}) could not start on the full disk: restarted")
                job.proc = None
                continue
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
    def spawn_aggregator(self, tag: str = "", failpoint: str | None = None, env: dict | None = None,
                         lease_ttl: bool = False) -> Child:
        """One more aggregator daemon (the round's, or a scenario's standby)."""
        if self.agg_starts:
            self.r.agg_restarts += 1
        self.agg_starts += 1
        # Checkpoint often or rarely, at random: kills then land both on checkpoints and on
        # stretches of the write-ahead log that recovery must replay (windows and finalizations).
        ckpt = ["--checkpoint-windows", str(self.rng.choice([1, 5, 30, 4096])),
                "--checkpoint-seconds", str(self.rng.choice([0.3, 2, 600]))]
        c = Child(["aggregator", "run", "--shared", str(self.shared), *AGG_ARGS, *ckpt,
                   *(faultharness.LEASE_TTL if lease_ttl else [])],
                  self.logs / f"agg-{self.agg_starts:03d}{'-' + tag if tag else ''}.log", failpoint, "aggregator",
                  self.r.cpu, env)
        if tag:
            self.others.append(c)
            self.event(f"start aggregator #{self.agg_starts} ({tag}, pid {c.p.pid})")
        return c

    def spawn(self, args: list[str], role: str) -> Child:
        """Another real process of the round (``aggregator repair``)."""
        c = Child(args, self.logs / f"{role}-{len(self.others):02d}.log", role=role, account=self.r.cpu)
        self.others.append(c)
        self.event(f"start {' '.join(args[:2])} (pid {c.p.pid})")
        return c

    def start_aggregator(self, now: float) -> None:
        p = self.agg_point = self.agg_queue.pop(0) if self.agg_queue else None
        sc = SCENARIOS[p.name] if p and p.how == "scenario" else None
        self.agg = self.spawn_aggregator(failpoint=p.env() if p else None, lease_ttl=bool(sc and sc.lease_ttl))
        self.event(f"start aggregator #{self.agg_starts} (pid {self.agg.p.pid}) {p}")
        self.agg_kill_at = self.agg_up_at = None
        self.scenario = sc.run(self, p) if sc else None

    def tick_scenario(self) -> None:
        """One step of the scenario driving this aggregator life; when it ends, the next life starts."""
        p = self.agg_point
        try:
            next(self.scenario)
            return
        except StopIteration as done:
            outcome = done.value
        except Exception as e:  # a harness bug must not pass for a clean scenario
            import traceback

            self.error(f"scenario {p.name} failed: {e}\n{traceback.format_exc()}")
            outcome = "fired"
        self.scenario = None
        if self.agg is not None:  # every scenario ends its aggregator life; make sure
            self.stop_aggregator()
        if outcome == "retry":
            self.retry(p, self.agg_queue, "aggregator")
        else:
            self.fired(p, "scenario")
        self.agg_point = None

    def tick_aggregator(self, now: float) -> None:
        if self.scenario is not None:
            self.tick_scenario()
            return
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
            if self.scenario is not None:
                self.scenario.close()  # its cleanup: SIGCONT, the filler removed
            for j in self.jobs:
                if j.proc is not None and j.proc.poll() is None:
                    j.proc.kill()
            for c in [self.agg, *self.others]:
                if c is not None and c.poll() is None:
                    c.kill()
            if self.on_tmpfs:
                if self.r.mismatches or self.r.errors:  # keep the evidence on disk (FIFOs as FIFOs)
                    subprocess.run(["cp", "-a", str(self.shared), str(self.dir / "shared.kept")], timeout=300)
                faultharness.tmpfs_umount(self.shared)
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
        expected = Expected.of(traffic)
        sc = self.known_damage.get("periods")
        bad, facts = verify(self.shared, expected, self.injected, check_periods=sc is None)
        self.r.mismatches += [f"round {self.r.index}: {b}" for b in bad]
        if sc:  # checked all the same, and listed: the known bug's damage, not a new one
            self.r.known += [f"round {self.r.index}: {sc} (its damage, at the drain): {b}"
                             for b in verify_periods(self.shared, expected)]
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
    scenarios: tuple = ()            # the scenarios this run was asked to include
    scenario_note: str = ""          # why a scenario was left out (disk-full without a tmpfs)

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
    def known(self) -> list:
        return [k for r in self.rounds for k in r.known]

    @property
    def ok(self) -> bool:
        return bool(self.rounds) and not self.mismatches and not self.errors

    def as_json(self) -> dict:
        """What a caller (tests/test_crash.py) checks, for ``--summary-json``."""
        fired = self.fired
        return {"ok": self.ok, "seed": self.seed, "fired": dict(fired), "mismatches": self.mismatches,
                "errors": self.errors, "agg_restarts": self.total("agg_restarts") if self.rounds else 0,
                "windows": self.total("windows") if self.rounds else 0,
                "scenarios": {s: fired[f"scenario {s}"] for s in self.scenarios},
                "scenario_note": self.scenario_note, "known_failures": self.known,
                "known_failing": {s: faultharness.KNOWN_FAILING[s] for s in self.scenarios
                                  if s in faultharness.KNOWN_FAILING},
                "rounds": [{"index": r.index, "quarantined": r.quarantined, "windows": r.windows, "tmpfs": r.tmpfs}
                           for r in self.rounds], "seconds": self.seconds}

    def report(self) -> str:
        fired = self.fired
        by_target = Counter()
        for k, v in fired.items():
            by_target[k.split()[0]] += v
        lines = [f"crashtest: seed {self.seed}, {len(self.rounds)} rounds in {self.seconds:.1f}s",
                 f"kill points fired: {sum(fired.values())} "
                 f"(aggregator {by_target['agg']}, collectors {by_target['col']}, scenarios {by_target['scenario']})"]
        for k in sorted(fired, key=lambda k: (k.startswith("scenario"), k)):
            lines.append(f"  {k:<28} {fired[k]}")
        for sc in self.scenarios:
            if not fired[f"scenario {sc}"]:
                lines.append(f"  scenario {sc:<19} 0  (never fired)")
        if self.scenario_note:
            lines.append(f"  {self.scenario_note}")
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
        tmpfs = sum(r.tmpfs for r in self.rounds)
        if tmpfs:
            lines.append(f"rounds on a {faultharness.TMPFS_SIZE} tmpfs (disk-full): {tmpfs}")
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
        failing = [s for s in self.scenarios if s in faultharness.KNOWN_FAILING]
        if failing:
            lines.append(f"known-failing scenarios (product bugs reported, checks not counted as errors): "
                         f"{len(self.known)} failed check(s)")
            lines += [f"  {s}: {faultharness.KNOWN_FAILING[s]}" for s in failing]
            lines += [f"  {k}" for k in self.known[:10]]
        return "\n".join(lines)


def run_harness(kill_points: int = 200, seed: int | None = None, workdir: Path | None = None, jobs: int = 3,
                per_round: int = 12, use_pcaps: bool = True, log=print, stop: threading.Event | None = None,
                round_deadline: float = 300.0, agg_land_temp: bool = True, collectors: int = 3,
                scenarios: tuple = tuple(SCENARIOS)) -> Summary:
    """Run rounds until at least ``kill_points`` kill points have fired (or were given up), each of
    ``scenarios`` among them."""
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
    tmpfs = [s for s in scenarios if SCENARIOS[s].tmpfs]
    why = faultharness.tmpfs_probe(base) if tmpfs else ""
    if why:
        scenarios = tuple(s for s in scenarios if s not in tmpfs)
        summary.scenario_note = f"skipped {', '.join(tmpfs)}: cannot mount a tmpfs ({why})"
        log(summary.scenario_note)
    summary.scenarios = scenarios
    stop = stop or threading.Event()
    cache: dict = {}
    lock = threading.Lock()
    plan = kill_plan(kill_points, rng, agg_land_temp, scenarios)
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
        unfired = [s for s in scenarios if not fired[f"scenario {s}"]]
        missing = kill_points - sum(fired.values())
        if missing <= 0 and not uncovered and not unfired:
            break
        more = [_point(rng, n[:3], n) for n in uncovered] + [_point(rng, "scenario", s) for s in unfired]
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
    ap.add_argument("--collectors", type=int, default=3, help="synthetic collectors per round (default 3)")
    ap.add_argument("--round-deadline", type=float, default=300.0, help="seconds a round may take (default 300)")
    ap.add_argument("--summary-json", type=Path, default=None, metavar="FILE",
                    help="also write the summary (fired kill points, mismatches, errors) as JSON to FILE")
    ap.add_argument("--plan-json", action="store_true",
                    help="print the kill plan for --kill-points and --seed as JSON and exit")
    ap.add_argument("--scenarios", default="all", metavar="all|none|NAME,NAME",
                    help="long-run fault scenarios mixed into the rounds, each at least once per run (default all: "
                         + ", ".join(SCENARIOS) + ")")
    ap.add_argument("-q", "--quiet", action="store_true", help="print only the final report")
    a = ap.parse_args(argv)
    try:
        scenarios = faultharness.parse_scenarios(a.scenarios)
    except ValueError as e:
        ap.error(str(e))
    if a.plan_json:
        plan = kill_plan(a.kill_points, random.Random(a.seed), not a.no_agg_land_temp, scenarios)
        print(json.dumps([dict(dataclasses.asdict(p), kind=p.kind, env=p.env()) for p in plan]))
        return 0
    workdir = a.keep or Path(tempfile.mkdtemp(prefix="netsense-crash-"))
    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"crashtest: working in {workdir}", flush=True)
    s = run_harness(a.kill_points, a.seed, workdir, a.jobs, a.per_round, not a.no_pcap,
                    log=(lambda m: None) if a.quiet else (lambda m: print(m, flush=True)), stop=stop,
                    round_deadline=a.round_deadline, agg_land_temp=not a.no_agg_land_temp, collectors=a.collectors,
                    scenarios=scenarios)
    print(s.report())
    if a.summary_json:
        a.summary_json.write_text(json.dumps(s.as_json(), indent=1) + "\n")
    if a.keep is None:
        if s.ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir} for inspection")
    return 0 if s.ok else 1


if __name__ == "__main__":
    sys.exit(main())
