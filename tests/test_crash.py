"""Crash safety, short: the harness of ``scripts/crashtest.py`` with a dozen kill points.

Every failpoint of ``netsense.faults.POINTS`` fires at least once (plus outside SIGKILLs of
the aggregator and of a collector), in real processes, and the drained shared directory must
equal the independent numpy/scipy answer exactly; a second run holds each long-run scenario of
``scripts/faultharness.py`` once.  The full run is ``python scripts/crashtest.py --kill-points 200``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import oracle
from conftest import ROOT, run_cli, wing_command
from faultharness import SCENARIOS

from netsense.faults import POINTS


HARNESS = ROOT / "scripts" / "crashtest.py"


def harness(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    """``scripts/crashtest.py`` as a real process, as an operator runs it."""
    return subprocess.run([sys.executable, str(HARNESS), *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)


def test_kill_plan_covers_every_failpoint_and_both_outside_kills():
    for seed in range(20):
        r = harness("--plan-json", "--kill-points", "12", "--seed", str(seed))
        assert r.returncode == 0, r.stderr
        plan = json.loads(r.stdout)
        assert len(plan) == 12
        kinds = {p["kind"] for p in plan}
        assert {f"{n[:3]} {n}" for n in POINTS} <= kinds
        assert {"agg sigkill", "col sigkill"} <= kinds
        for p in plan:
            if p["how"] == "failpoint":
                assert p["env"] == f"{p['name']}:{p['n']}" and p["n"] >= 1
                assert p["target"] == p["name"][:3] or (p["target"], p["name"]) == ("agg", "col.land.temp")


def test_the_checker_is_not_vacuous(tmp_path):
    """verify() passes on a clean drain and catches a wrong total, a missing window, a stray
    quarantined file and a leftover window."""
    shared = tmp_path / "shared"
    spec = "synthetic:seed=77,packets=20000,rate=20000,hosts=500"
    r = run_cli("collector", "run", "--shared", str(shared), "--node", "c1", "--source", spec,
                "--window-packets", "4096", "--window-seconds", "1")
    assert r.returncode == 0, r.stderr
    r = run_cli("aggregator", "run", "--shared", str(shared), "--once", "--period-seconds", "2")
    assert r.returncode == 0, r.stderr
    traffic = oracle.synthetic_traffic("c1", spec)
    exp = oracle.Expected.of([traffic])
    bad, facts = oracle.verify(shared, exp)
    assert bad == [] and facts["packets"] == 20000 and facts["windows"] >= 5

    fewer = oracle.Expected.of([oracle.Traffic("c1", traffic.src[1:], traffic.dst[1:], traffic.period[1:],
                                                     traffic.periods)])
    bad, _ = oracle.verify(shared, fewer)
    assert any("cumulative valid_packets" in b for b in bad) and any("period" in b for b in bad)

    cum = shared / "reports" / "cumulative.json"
    saved = cum.read_text()
    doc = json.loads(saved)
    ranges = next(iter(doc["windows"]["c1"].values()))
    ranges[0][0] += 1  # the committed state claims one window less than the collector landed
    cum.write_text(json.dumps(doc))
    bad, _ = oracle.verify(shared, exp, check_periods=False)
    assert any("missing" in b for b in bad)
    cum.write_text(saved)

    q = shared / "quarantine" / "c1"
    q.mkdir(parents=True)
    (q / "stray.nsw").write_bytes(b"x")
    arch = sorted((shared / "archive" / "c1").glob("*.nsw"))[0]
    (shared / "nodes" / "c1" / arch.name).write_bytes(arch.read_bytes())
    bad, _ = oracle.verify(shared, exp, check_periods=False)
    assert any("no reason file" in b for b in bad) and any("left in nodes/" in b for b in bad)


@pytest.mark.slow
def test_crash_harness_short(tmp_path):
    """Twelve kill points over two parallel rounds of two collectors each, synthetic sources only
    (the full harness adds real captures with a tshark total and more collectors; the long-run
    scenarios have their own test below)."""
    t0 = time.monotonic()
    out = tmp_path / "summary.json"
    r = harness("--kill-points", "12", "--seed", "20261122", "--keep", str(tmp_path / "work"), "--jobs", "2",
                "--per-round", "6", "--collectors", "2", "--no-pcap", "--round-deadline", "240",
                "--no-agg-land-temp", "--scenarios", "none", "--quiet", "--summary-json", str(out))
    report = r.stdout + r.stderr[-3000:]
    print(report)
    s = json.loads(out.read_text())
    assert r.returncode == 0 and s["ok"], report
    fired = s["fired"]
    assert sum(fired.values()) >= 12, report
    for name in POINTS:
        assert fired.get(f"{name[:3]} {name}", 0) >= 1, f"{name} never fired\n{report}"
    assert fired.get("agg sigkill", 0) >= 1 and fired.get("col sigkill", 0) >= 1, report
    assert s["agg_restarts"] >= 7 and s["windows"] > 0
    assert all(rd["quarantined"] >= 1 for rd in s["rounds"]), "each round quarantines the files it put there"
    print(f"short crash harness: {time.monotonic() - t0:.1f}s")


def test_kill_plan_holds_each_scenario_once_and_none_keeps_the_old_plan():
    plan = json.loads(harness("--plan-json", "--kill-points", "18", "--seed", "3").stdout)
    scen = [p["name"] for p in plan if p["how"] == "scenario"]
    assert sorted(scen) == sorted(SCENARIOS) and {f"{n[:3]} {n}" for n in POINTS} <= {p["kind"] for p in plan}
    assert [p["env"] for p in plan if p["name"] == "recover-eio"] == ["agg.ledger:1:eio,agg.recover:2:eio"]
    old = json.loads(harness("--plan-json", "--kill-points", "30", "--seed", "3", "--scenarios", "none").stdout)
    assert all(p["how"] != "scenario" for p in old)
    two = json.loads(harness("--plan-json", "--kill-points", "30", "--seed", "3", "--scenarios", "fifo,flood").stdout)
    assert {p["name"] for p in two if p["how"] == "scenario"} == {"fifo", "flood"}
    assert harness("--plan-json", "--scenarios", "nosuch").returncode == 2


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason=(
    "open bug (issue 11): once in a fresh-clone CI run (seed 20261123, round 0, ordinary kill points "
    "agg.ledger/sigkill/agg.reports/agg.read/agg.checkpoint), a restated period's final report "
    "under-counted (56,520 of 117,000 packets) while the cumulative total was right; it did not recur "
    "on rerun. The 200-point run (seed 7) is clean. Kept visible here instead of hidden."))
def test_crash_harness_long_run_scenarios(tmp_path):
    """Each long-run scenario once (frozen holder and standby, a skewed standby, a kill and I/O errors
    in recovery, a deleted ledger and repair, a full disk, a FIFO, a flood), mixed with every
    failpoint once, in three parallel rounds; every round drains to the exact answer.  Checks of
    known-failing scenarios (faultharness.KNOWN_FAILING: product bugs reported, not fixed yet) are
    listed, not failed on."""
    out = tmp_path / "summary.json"
    r = harness("--kill-points", "18", "--seed", "20261123", "--keep", str(tmp_path / "work"), "--jobs", "3",
                "--per-round", "6", "--collectors", "2", "--no-pcap", "--no-agg-land-temp", "--round-deadline",
                "240", "--scenarios", "all", "--quiet", "--summary-json", str(out), timeout=900)
    report = r.stdout + r.stderr[-3000:]
    print(report)
    s = json.loads(out.read_text())
    assert s["mismatches"] == [] and s["errors"] == [], report
    assert r.returncode == 0 and s["ok"], report
    want = set(SCENARIOS) - ({"disk-full"} if s["scenario_note"] else set())  # no tmpfs: said so, left out
    assert {k for k, v in s["scenarios"].items() if v >= 1} == want, report
    assert all(s["fired"].get(f"{n[:3]} {n}", 0) >= 1 for n in POINTS), report
    assert set(s["known_failing"]) <= set(SCENARIOS)
    # Everything put in a landing folder on purpose (the flood's 2,000 among them) ended in quarantine.
    assert sum(rd["quarantined"] for rd in s["rounds"]) >= 2000 + 1, report


# ----------------------------------------------------------------------------- regressions
#
# Crash-safety defects the harness's kill points found.  They were strict xfails until the fixes
# landed (commit 48ef747: reason file before the quarantine rename, stale temps cleaned in
# status/ and reports/, pace left out of synthetic window identities); now they guard the fixes.


def _run(args: list[str], failpoint: str | None = None, timeout: float = 300):
    env = {k: v for k, v in os.environ.items() if k != "NETSENSE_FAILPOINT"}
    if failpoint:
        env["NETSENSE_FAILPOINT"] = failpoint
    return subprocess.run(wing_command(args), capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=timeout)


def test_quarantined_file_always_has_a_reason_file(tmp_path):
    # In the aggregator the landing helper's "temp written, not yet renamed" failpoint fires on
    # every atomic write: 1 = the lease, 2 = the reason file of the first quarantined file.
    reasonless = []
    for n in (2, 3):
        shared = tmp_path / f"s{n}"
        (shared / "nodes" / "n1").mkdir(parents=True)
        (shared / "nodes" / "n1" / "garbage.nsw").write_bytes(b"\0" * 100)
        killed = _run(["aggregator", "run", "--shared", str(shared), "--once"], f"col.land.temp:{n}")
        assert killed.returncode in (-signal.SIGKILL, 0), killed.stderr
        again = _run(["aggregator", "run", "--shared", str(shared), "--once"])
        assert again.returncode == 0, again.stderr
        q = shared / "quarantine" / "n1"
        files = [p for p in q.iterdir() if not p.name.endswith(".reason.json") and not p.name.startswith(".")]
        assert files, "the bad file was quarantined"
        reasonless += [p for p in files if not p.with_name(p.name + ".reason.json").exists()]
        orphans = [p for p in q.glob("*.reason.json") if not p.with_name(p.name[:-len(".reason.json")]).exists()]
        assert not orphans, f"reason files without their file: {orphans}"
        assert not list(q.glob(".tmp-*")), "the restart removes the reason file's stale temp"
    assert not reasonless, f"quarantined without a reason file: {reasonless}"


def test_collector_restart_removes_its_stale_status_temp(tmp_path):
    shared = tmp_path / "shared"
    args = ["collector", "run", "--shared", str(shared), "--node", "c1", "--source",
            "synthetic:seed=5,packets=9000,rate=20000,hosts=300", "--window-packets", "4096", "--window-seconds", "1"]
    # The atomic writes of a collector run begin with its node lease, then its first status file.
    killed = _run(args, "col.land.temp:2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert list((shared / "status").glob(".tmp-c1.json.*")), "the crash left a status temp file"
    again = _run(args)
    assert again.returncode == 0, again.stderr
    assert (json.loads((shared / "status" / "c1.json").read_text()))["state"] == "finished"
    assert not list((shared / "status").glob(".tmp-*")), "stale status temp file survived the restart"


def test_aggregator_restart_removes_stale_report_temps(tmp_path):
    shared = tmp_path / "shared"
    r = _run(["collector", "run", "--shared", str(shared), "--node", "c1", "--source",
              "synthetic:seed=6,packets=30000,rate=20000,hosts=300", "--window-packets", "4096",
              "--window-seconds", "1"])
    assert r.returncode == 0, r.stderr
    # Atomic writes of the first transaction: 1 lease, 2 checkpoint, then reports.
    for n in range(3, 7):
        killed = _run(["aggregator", "run", "--shared", str(shared), "--once", "--period-seconds", "2"],
                      f"col.land.temp:{n}")
        if list((shared / "reports").rglob(".tmp-*")):
            break
    assert list((shared / "reports").rglob(".tmp-*")), "a crash while writing a report left its temp file"
    again = _run(["aggregator", "run", "--shared", str(shared), "--once", "--period-seconds", "2"])
    assert again.returncode == 0, again.stderr
    left = list((shared / "reports").rglob(".tmp-*"))
    assert not left, f"stale report temp files survived the restart: {left}"


def test_pace_does_not_change_window_identities(tmp_path):
    shared = tmp_path / "shared"
    spec = "synthetic:seed=8,packets=12000,rate=20000,hosts=300"
    base = ["collector", "run", "--shared", str(shared), "--node", "c1", "--window-packets", "4096",
            "--window-seconds", "1"]
    for source in (spec, spec + ",pace=1000000"):  # the same packets, throttled or not
        r = _run(base + ["--source", source])
        assert r.returncode == 0, r.stderr
    r = _run(["aggregator", "run", "--shared", str(shared), "--once"])
    assert r.returncode == 0, r.stderr
    want = oracle.nine(*[getattr(oracle.synthetic_traffic("c1", spec), k) for k in ("src", "dst")])
    assert json.loads((shared / "reports" / "cumulative.json").read_text())["analytics"] == want
