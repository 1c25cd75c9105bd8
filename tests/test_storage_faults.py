"""Storage faults on a real file system: a full and a read-only shared directory.

A small tmpfs is mounted as the shared directory (root only; skipped elsewhere).
The collector must spool finished windows, retry with backoff, and land every
one of them once storage is back, so the aggregator's totals stay exact.
"""
from __future__ import annotations

import os
import subprocess
import threading

import pytest

from conftest import Proc, read_json, run_cli, wait_for
from oracle import nine, synthetic_packets

WINDOW = ["--window-packets", "8192", "--window-seconds", "1"]


@pytest.fixture
def tmpfs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(mnt, keep_bytes: int):
    """Fill the file system until only about ``keep_bytes`` are free."""
    st = os.statvfs(mnt)
    free = st.f_bavail * st.f_frsize
    filler = mnt / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - keep_bytes))
    return filler


def test_full_shared_directory_spools_and_lands_everything_later(tmpfs, tmp_path):
    shared = tmpfs / "shared"
    (shared / "nodes" / "f1").mkdir(parents=True)
    (shared / "status").mkdir()
    spec = "synthetic:seed=3,packets=120000,rate=20000,hosts=2000,pace=60000,batch=4096"
    filler = fill(tmpfs, 64 << 10)
    col = Proc(["collector", "run", "--shared", str(shared), "--node", "f1", "--source", spec, *WINDOW],
               tmp_path / "f1.log")
    wait_for(lambda: "spooling locally" in col.output(), 60, what="the collector to hit ENOSPC")
    assert "No space left" in col.output()
    filler.unlink()
    assert col.wait(120) == 0, col.output()
    st = read_json(shared / "status" / "f1.json")
    assert st["state"] == "finished" and st["windows_dropped"] == 0 and st["spooled"] == 0
    r = run_cli("aggregator", "run", "--shared", str(shared), "--once")
    assert r.returncode == 0, r.stderr
    assert read_json(shared / "reports" / "cumulative.json")["analytics"] == nine(*synthetic_packets(spec.split(":", 1)[1]))


def test_read_only_shared_directory_spools_then_recovers(tmpfs, tmp_path):
    shared = tmpfs / "shared"
    spec = "synthetic:seed=4,packets=120000,rate=20000,hosts=2000,pace=60000,batch=4096"
    col = Proc(["collector", "run", "--shared", str(shared), "--node", "r1", "--source", spec, *WINDOW],
               tmp_path / "r1.log")
    wait_for(lambda: list((shared / "nodes" / "r1").glob("*.nsw")), 60, what="a first landed window")
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    try:
        wait_for(lambda: "spooling locally" in col.output(), 60, what="the collector to hit EROFS")
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    assert col.wait(120) == 0, col.output()
    r = run_cli("aggregator", "run", "--shared", str(shared), "--once")
    assert r.returncode == 0, r.stderr
    assert read_json(shared / "reports" / "cumulative.json")["analytics"] == nine(*synthetic_packets(spec.split(":", 1)[1]))


def test_live_source_drops_past_the_bound_and_counts_it(tmpfs, tmp_path):
    """A live source cannot wait: past --spool-bytes it drops windows, counts and logs them."""
    from netsense.collector.run import Collector, CollectorConfig

    shared = tmpfs / "shared"
    (shared / "nodes" / "l1").mkdir(parents=True)
    (shared / "status").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    try:
        cfg = CollectorConfig(shared, "l1", "synthetic:seed=1,packets=40000,rate=1000000,realtime=1,batch=4096",
                              window_packets=4096, spool_bytes=1)
        stop = threading.Event()
        summary = Collector(cfg).run(stop)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    assert summary.windows_landed == 0
    assert summary.windows_dropped >= 9 and summary.packets_dropped == 40000


def test_aggregator_rolls_back_on_a_full_disk_and_finishes_exactly(tmpfs, tmp_path):
    shared = tmpfs / "shared"
    spec = "synthetic:seed=6,packets=60000,rate=20000,hosts=2000"
    r = run_cli("collector", "run", "--shared", str(shared), "--node", "d1", "--source", spec, *WINDOW)
    assert r.returncode == 0, r.stderr
    (shared / "aggregator").mkdir()
    filler = fill(tmpfs, 16 << 10)  # room for the lease, not for a checkpoint
    agg = Proc(["aggregator", "run", "--shared", str(shared), "--rescan-seconds", "0.2"], tmp_path / "agg.log")
    try:
        wait_for(lambda: "storage error" in agg.output(), 60, what="the aggregator to hit ENOSPC")
        assert not (shared / "reports" / "cumulative.json").exists() or \
            read_json(shared / "reports" / "cumulative.json")["analytics"]["valid_packets"] < 60000
        filler.unlink()
        wait_for(lambda: (read_json(shared / "reports" / "cumulative.json") or {}).get("analytics", {})
                 .get("valid_packets") == 60000, 60, what="the report after space came back")
    finally:
        assert agg.stop() == 0, agg.output()
    assert read_json(shared / "reports" / "cumulative.json")["analytics"] == nine(*synthetic_packets(spec.split(":", 1)[1]))
    assert not list((shared / "nodes" / "d1").glob("*.nsw"))
