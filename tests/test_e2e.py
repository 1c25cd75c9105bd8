"""End to end with real processes on a real directory: collectors land, one aggregator reports."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import Proc, read_json, run_cli, wait_for
from oracle import nine, synthetic_packets

pytestmark = pytest.mark.slow
SPECS = {f"node{i}": f"synthetic:seed={i},packets={60000 + 7919 * i},rate=20000,hosts=3000" for i in (1, 2, 3)}
WINDOW = ["--window-packets", "8192", "--window-seconds", "1"]


def expected_total():
    parts = [synthetic_packets(s.split(":", 1)[1]) for s in SPECS.values()]
    return nine(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def cumulative_covers(shared, packets):
    doc = read_json(shared / "reports" / "cumulative.json")
    return doc if doc and doc["analytics"]["valid_packets"] == packets else None


def test_three_collectors_and_a_daemon_aggregator(shared, tmp_path):
    agg = Proc(["aggregator", "run", "--shared", str(shared), "--period-seconds", "2", "--rescan-seconds", "0.5"],
               tmp_path / "agg.log")
    try:
        wait_for(lambda: (shared / "aggregator" / "lease.json").exists(), 60, what="aggregator start")
        cols = [Proc(["collector", "run", "--shared", str(shared), "--node", n, "--source", s, *WINDOW],
                     tmp_path / f"{n}.log") for n, s in SPECS.items()]
        for c in cols:
            assert c.wait(180) == 0, c.output()
        exp = expected_total()
        doc = wait_for(lambda: cumulative_covers(shared, exp["valid_packets"]), 120, what="cumulative report")
        assert doc["analytics"] == exp
        # Per-node counts equal what each collector says it landed.
        for n in SPECS:
            st = read_json(shared / "status" / f"{n}.json")
            assert st["state"] == "finished"
            assert doc["nodes"][n]["packets"] == st["packets"]
            assert doc["nodes"][n]["windows"] == st["windows_landed"]
        # Every period becomes final once all nodes have finished.
        wait_for(lambda: all(json.loads(p.read_text())["final"] for p in (shared / "reports/periods").glob("*.json")),
                 60, what="final periods")
        # A second aggregator on the same directory refuses to start.
        second = run_cli("aggregator", "run", "--shared", str(shared), "--once")
        assert second.returncode != 0 and "another aggregator" in second.stderr
    finally:
        assert agg.stop() == 0, agg.output()
    # The Parquet history holds a row per final period version (a restatement when a late
    # node's window arrived after its period was final); the newest versions sum to the total.
    import pyarrow.dataset as ds

    rows = ds.dataset(shared / "reports" / "history-versions", format="parquet").to_table().to_pylist()
    newest = {}
    for r in rows:
        assert r["restatement"] == (r["version"] > 1)
        if r["version"] > newest.get(r["period_id"], {"version": 0})["version"]:
            newest[r["period_id"]] = r
    # Read plainly, as the README shows, reports/history/ sums to the total: each period once.
    latest = ds.dataset(shared / "reports" / "history", format="parquet").to_table().to_pylist()
    assert sum(r["valid_packets"] for r in latest) == exp["valid_packets"]
    assert {r["period_id"]: r["version"] for r in latest} == {k: r["version"] for k, r in newest.items()}
    assert sorted(newest) == sorted(p.stem for p in (shared / "reports/periods").glob("*.json") if "." not in p.stem)


def test_once_restart_and_redelivery_count_each_window_once(shared, tmp_path):
    for n, s in SPECS.items():
        r = run_cli("collector", "run", "--shared", str(shared), "--node", n, "--source", s, *WINDOW)
        assert r.returncode == 0, r.stderr
    exp = expected_total()
    r = run_cli("aggregator", "run", "--shared", str(shared), "--once")
    assert r.returncode == 0, r.stderr
    first = read_json(shared / "reports" / "cumulative.json")
    assert first["analytics"] == exp
    # Rerunning a finished collector on the same input lands nothing new.
    r = run_cli("collector", "run", "--shared", str(shared), "--node", "node1", "--source", SPECS["node1"], *WINDOW)
    assert r.returncode == 0 and "nothing to do" in r.stderr, r.stderr
    assert not list((shared / "nodes" / "node1").glob("*.nsw"))
    # Deliver every window again: the same input with the collector's status lost, and a copy from the archive.
    (shared / "status" / "node1.json").unlink()
    r = run_cli("collector", "run", "--shared", str(shared), "--node", "node1", "--source", SPECS["node1"], *WINDOW)
    assert r.returncode == 0, r.stderr
    redelivered = len(list((shared / "nodes" / "node1").glob("*.nsw")))
    assert redelivered > 0
    arch = sorted((shared / "archive" / "node2").glob("*.nsw"))[0]
    shutil.copy(arch, shared / "nodes" / "node2" / arch.name)
    r = run_cli("aggregator", "run", "--shared", str(shared), "--once")
    assert r.returncode == 0, r.stderr
    again = read_json(shared / "reports" / "cumulative.json")
    assert again["analytics"] == exp
    agg_status = read_json(shared / "aggregator" / "status.json")
    assert agg_status["counters"]["duplicates"] == redelivered + 1
    assert not list((shared / "nodes").glob("*/*.nsw"))


def test_bad_files_are_quarantined_and_the_daemon_keeps_going(shared, tmp_path):
    n, s = "node1", SPECS["node1"]
    r = run_cli("collector", "run", "--shared", str(shared), "--node", n, "--source", s, *WINDOW)
    assert r.returncode == 0, r.stderr
    landed = sorted((shared / "nodes" / n).glob("*.nsw"))
    victim = landed[0]
    data = bytearray(victim.read_bytes())
    data[-10] ^= 0xFF  # corrupt the payload under a valid name and header
    victim.write_bytes(bytes(data))
    (shared / "nodes" / n / "garbage.nsw").write_bytes(b"\x00" * 100)
    r = run_cli("aggregator", "run", "--shared", str(shared), "--once")
    assert r.returncode == 0, r.stderr
    reasons = sorted(json.loads(p.read_text())["reason"] for p in (shared / "quarantine").glob("*/*.reason.json"))
    assert reasons == ["bad_checksum", "bad_name"]
    doc = read_json(shared / "reports" / "cumulative.json")
    assert doc["nodes"][n]["windows"] == len(landed) - 1
    st = run_cli("aggregator", "status", "--shared", str(shared))
    assert st.returncode == 0 and "bad_checksum 1" in st.stdout


def test_sigterm_lands_the_open_window(shared, tmp_path):
    spec = "synthetic:seed=5,packets=0,rate=50000,realtime=1"
    col = Proc(["collector", "run", "--shared", str(shared), "--node", "live1", "--source", spec,
                "--window-seconds", "3600", "--status-interval", "0.2"], tmp_path / "live.log")
    # Nothing can close by time for an hour: wait until packets flow, then stop.
    wait_for(lambda: (read_json(shared / "status" / "live1.json") or {}).get("records_read", 0) > 0, 60,
             what="packets flowing")
    assert col.stop() == 0, col.output()
    st = read_json(shared / "status" / "live1.json")
    assert st["state"] == "stopped" and st["packets"] > 0 and st["windows_landed"] >= 1
    r = run_cli("aggregator", "run", "--shared", str(shared), "--once", "--period-seconds", "3600")
    assert r.returncode == 0, r.stderr
    assert read_json(shared / "reports" / "cumulative.json")["analytics"]["valid_packets"] == st["packets"]


def test_collector_killed_mid_run_resumes_without_loss_or_double_count(shared, tmp_path):
    spec = "synthetic:seed=9,packets=240000,rate=20000,hosts=3000,pace=60000,batch=4096"
    args = ["collector", "run", "--shared", str(shared), "--node", "k1", "--source", spec, *WINDOW,
            "--status-interval", "0.1"]
    col = Proc(args, tmp_path / "k1.log")
    wait_for(lambda: len(list((shared / "nodes" / "k1").glob("*.nsw"))) >= 4, 60, what="some windows landed")
    col.p.kill()  # SIGKILL: no chance to land the open window or update the status
    col.wait()
    assert (read_json(shared / "status" / "k1.json") or {}).get("state") == "running"
    r = run_cli(*args)
    # It resumes after the last window its status recorded; windows landed after that
    # status write are landed again with the same identity and content.
    assert r.returncode == 0, r.stderr
    r = run_cli("aggregator", "run", "--shared", str(shared), "--once")
    assert r.returncode == 0, r.stderr
    exp = nine(*synthetic_packets(spec.split(":", 1)[1]))
    assert read_json(shared / "reports" / "cumulative.json")["analytics"] == exp
