"""``netsense-aggregator status --check``: the monitoring-plugin convention, with real processes.

Exit 0 OK, 1 WARNING, 2 CRITICAL, and the one summary line first.  The states are made
for real: live collectors and an aggregator daemon running, a collector killed with
SIGKILL (its status stays ``running`` and ages; the heartbeat's age is then set back with
``os.utime``, the file system's clock being what ``status`` reads), an aggregator that
never ran.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from conftest import Proc, read_json, run_cli, wait_for

LIVE = "synthetic:seed={seed},packets=0,rate=2000,realtime=1"
SUMMARY = re.compile(r"^NETSENSE (OK|WARNING|CRITICAL) - ")


def check(shared: Path, *extra: str):
    r = run_cli("aggregator", "status", "--shared", str(shared), "--check", *extra, timeout=60)
    assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    return r.returncode, r.stdout.splitlines()


def live_collector(shared: Path, node: str, seed: int, tmp_path: Path) -> Proc:
    return Proc(["collector", "run", "--shared", str(shared), "--node", node, "--source", LIVE.format(seed=seed),
                 "--window-seconds", "1", "--status-interval", "5"], tmp_path / f"{node}.log")


def set_back(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def status_json(shared: Path) -> dict:
    r = run_cli("aggregator", "status", "--shared", str(shared), "--check", "--format", "json", timeout=60)
    return json.loads(r.stdout)


def test_healthy_share_is_ok_then_a_killed_node_goes_stale_then_down(shared, tmp_path):
    done = run_cli("collector", "run", "--shared", str(shared), "--node", "done1", "--window-packets", "3000",
                   "--source", "synthetic:seed=3,packets=20000,rate=20000")
    assert done.returncode == 0, done.stderr
    nodes = {n: live_collector(shared, n, seed, tmp_path) for n, seed in (("live1", 1), ("live2", 2))}
    agg = Proc(["aggregator", "run", "--shared", str(shared), "--rescan-seconds", "0.2"], tmp_path / "agg.log")
    try:
        # Healthy: both live nodes up and consumed from, the finished node fully consumed.
        def healthy():
            doc = status_json(shared)
            n = doc["nodes"]
            return doc if (doc["check"]["code"] == 0 and n.get("done1", {}).get("run_windows_consumed") == 7
                           and all(n.get(x, {}).get("run_windows_consumed", 0) > 0 for x in nodes)) else None

        doc = wait_for(healthy, 90, interval=0.3, what="a healthy share")
        rc, lines = check(shared)
        assert rc == 0, lines
        assert lines[0].startswith("NETSENSE OK - 2 nodes up, 1 finished, aggregator up, 0 quarantined"), lines
        # Landed and consumed on the same basis: the run's windows (7 = ceil(20000 / 3000)), by the
        # node's status document and by the cumulative report, equal once everything is consumed.
        done1 = [line for line in lines if line.startswith("done1: finished")]
        assert len(done1) == 1 and ": 7 windows landed, 7 consumed" in done1[0], lines
        assert len(list((shared / "archive" / "done1").glob("*.nsw"))) == 7
        assert doc["nodes"]["done1"]["run_windows_landed"] == 7

        # live2 dies without a word (SIGKILL): its status stays "running" and only ages.
        nodes["live2"].p.kill()
        nodes["live2"].wait()
        status_file = shared / "status" / "live2.json"
        assert read_json(status_file)["state"] == "running"
        set_back(status_file, 30)      # 6 heartbeats of 5 s missed: stale -> WARNING
        rc, lines = check(shared)
        assert rc == 1, lines
        assert lines[0].startswith("NETSENSE WARNING - 1 node up, 1 stale, 1 finished, aggregator up"), lines
        assert any(line.startswith("live2: stale") for line in lines), lines
        assert any(re.fullmatch(r"WARNING: node live2: stale, last heartbeat 3\ds ago", line) for line in lines), lines
        set_back(status_file, 120)     # 24 missed: down -> CRITICAL
        rc, lines = check(shared)
        assert rc == 2, lines
        assert lines[0].startswith("NETSENSE CRITICAL - 1 node up, 1 down, 1 finished, aggregator up"), lines
        assert any(line.startswith("CRITICAL: node live2: down") for line in lines), lines
    finally:
        for p in nodes.values():
            p.stop()
        assert agg.stop() == 0, agg.output()


def test_no_aggregator_status_is_critical(shared):
    r = run_cli("collector", "run", "--shared", str(shared), "--node", "n1",
                "--source", "synthetic:seed=4,packets=5000,rate=20000")
    assert r.returncode == 0, r.stderr
    rc, lines = check(shared)
    assert rc == 2, lines
    assert lines[0].startswith("NETSENSE CRITICAL - 0 nodes up, 1 finished, aggregator down, 0 quarantined"), lines
    assert any("no readable aggregator/status.json" in line for line in lines), lines


def test_an_old_aggregator_heartbeat_is_critical_and_stale_seconds_moves_the_line(shared):
    r = run_cli("collector", "run", "--shared", str(shared), "--node", "n1",
                "--source", "synthetic:seed=4,packets=5000,rate=20000")
    assert r.returncode == 0, r.stderr
    r = run_cli("aggregator", "run", "--shared", str(shared), "--once")
    assert r.returncode == 0, r.stderr
    rc, lines = check(shared)
    assert rc == 0, lines  # just written: up
    set_back(shared / "aggregator" / "status.json", 90)  # default threshold: 30 s (3 x 2.25 s is less)
    rc, lines = check(shared)
    assert rc == 2, lines
    assert lines[0].startswith("NETSENSE CRITICAL - 0 nodes up, 1 finished, aggregator down"), lines
    assert any(re.match(r"CRITICAL: aggregator: down, last heartbeat 9\ds ago \(threshold 30s", line)
               for line in lines), lines
    rc, lines = check(shared, "--stale-seconds", "600")  # e.g. an aggregator run --once from cron
    assert rc == 0 and lines[0].startswith("NETSENSE OK - "), lines


def test_quarantine_and_old_pending_windows_are_warnings(shared, tmp_path):
    r = run_cli("collector", "run", "--shared", str(shared), "--node", "n1",
                "--source", "synthetic:seed=4,packets=5000,rate=20000")
    assert r.returncode == 0, r.stderr
    (shared / "nodes" / "junk").mkdir()
    (shared / "nodes" / "junk" / "garbage.nsw").write_bytes(b"\x00" * 100)
    r = run_cli("aggregator", "run", "--shared", str(shared), "--once")
    assert r.returncode == 0, r.stderr
    rc, lines = check(shared)
    assert rc == 1, lines
    # "junk" is known only from its quarantined file: listed, and the quarantine is the warning.
    assert lines[0].startswith("NETSENSE WARNING - 0 nodes up, 1 finished, 1 no status file, aggregator up, "
                               "1 quarantined"), lines
    assert "WARNING: quarantine: bad_name 1" in lines, lines
    assert any(line.startswith("junk: no status file") and line.endswith("; 1 file(s) quarantined")
               for line in lines), lines
    for f in (shared / "quarantine").rglob("*"):
        if f.is_file():
            f.unlink()
    rc, lines = check(shared)
    assert rc == 0, lines
    # A window landed a while ago that nobody consumed (the aggregator ran, but not since).
    r = run_cli("collector", "run", "--shared", str(shared), "--node", "n2",
                "--source", "synthetic:seed=5,packets=5000,rate=20000")
    assert r.returncode == 0, r.stderr
    (landed,) = (shared / "nodes" / "n2").glob("*.nsw")
    set_back(landed, 120)
    rc, lines = check(shared, "--stale-seconds", "60")
    assert rc == 1, lines
    assert lines[0].startswith("NETSENSE WARNING - 0 nodes up, 2 finished, aggregator up, 0 quarantined, 1 pending")
    assert any(re.match(r"WARNING: pending: 1 window file\(s\) waiting, the oldest for 1[12]\ds", line)
               for line in lines), lines
    assert any(line.startswith("n2: finished") and ": 1 windows landed, 0 consumed" in line for line in lines), lines
    assert SUMMARY.match(lines[0])
