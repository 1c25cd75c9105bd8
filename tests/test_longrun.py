"""Hold for months: one writer at a time, a ledger never cut behind valid lines, state that stays
bounded, and rollbacks that never step on an uncommitted state.  Real processes, real files.

Each test reproduces a way a long-running deployment lost or double-counted data before the
fencing, the strict ledger, compaction and repair: the numbers in the docstrings are what the
old code gave.
"""
from __future__ import annotations

import json
import os
import signal
import time

import pytest
from conftest import Proc, read_json, run_cli, wait_for
from oracle import nine, synthetic_packets

WINDOW = ["--window-packets", "2048", "--window-seconds", "1"]
FAST = ["--rescan-seconds", "0.2", "--period-seconds", "2", "--lease-ttl", "3"]
pytestmark = pytest.mark.slow


def collect(shared, node, spec, *extra):
    r = run_cli("collector", "run", "--shared", str(shared), "--node", node, "--source", "synthetic:" + spec,
                *WINDOW, *extra)
    assert r.returncode == 0, r.stderr
    return r


def drain(shared, *extra, env=None):
    return run_cli("aggregator", "run", "--shared", str(shared), "--once", "--period-seconds", "2", *extra,
                   env=env)


def cumulative(shared) -> dict:
    return (read_json(shared / "reports" / "cumulative.json") or {}).get("analytics", {})


def expected(*specs) -> dict:
    import numpy as np

    pairs = [synthetic_packets(s) for s in specs]
    return nine(np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs]))


def one_line_error(r) -> str:
    lines = [x for x in r.stderr.strip().splitlines() if x.startswith("Error:")]
    assert r.returncode != 0 and "Traceback" not in r.stderr and len(lines) == 1, r.stderr
    return lines[0]


def test_a_frozen_holder_is_fenced_and_its_standby_counts_everything_once(shared, tmp_path):
    """Holder SIGSTOPped past its lease, standby takes over, holder resumes: it must stop without
    committing (old code: it appended one more line, the next start cut the ledger there, and
    450,000 packets became 236,880)."""
    a, b = "seed=31,packets=30000,rate=20000,hosts=500", "seed=32,packets=30000,rate=20000,hosts=500"
    collect(shared, "a", a)
    holder = Proc(["aggregator", "run", "--shared", str(shared), *FAST], tmp_path / "holder.log")
    try:
        wait_for(lambda: cumulative(shared).get("valid_packets") == 30000, 120, what="holder consumed a")
        holder.p.send_signal(signal.SIGSTOP)
        lease = shared / "aggregator" / "lease.json"
        wait_for(lambda: (read_json(lease) or {}).get("expires", 0) < time.time(), 30, what="the lease to expire")
        standby = Proc(["aggregator", "run", "--shared", str(shared), *FAST], tmp_path / "standby.log")
        try:
            wait_for(lambda: "taking over the expired lease" in standby.output(), 60, what="takeover")
            collect(shared, "b", b)
            wait_for(lambda: cumulative(shared).get("valid_packets") == 60000, 120, what="standby consumed b")
            holder.p.send_signal(signal.SIGCONT)
            rc = holder.wait(60)
            assert rc != 0 and "stopping without writing" in holder.output(), holder.output()
            assert standby.p.poll() is None, standby.output()
        finally:
            standby.stop()
    finally:
        if holder.p.poll() is None:
            holder.p.send_signal(signal.SIGCONT)
            holder.stop()
    epochs = [json.loads(x).get("epoch") for x in (shared / "aggregator" / "ledger.jsonl").read_text().splitlines()]
    assert epochs == sorted(epochs) and epochs[-1] == 2
    r = drain(shared)
    assert r.returncode == 0, r.stderr
    assert cumulative(shared) == expected(a, b)


def test_a_standby_whose_clock_runs_ahead_does_not_take_a_live_lease(shared, tmp_path):
    """Old code trusted the standby's clock: two minutes ahead, it took over a live lease."""
    collect(shared, "a", "seed=33,packets=5000,hosts=100")
    holder = Proc(["aggregator", "run", "--shared", str(shared), *FAST], tmp_path / "holder.log")
    try:
        wait_for(lambda: cumulative(shared).get("valid_packets") == 5000, 120, what="holder running")
        r = run_cli("aggregator", "run", "--shared", str(shared), *FAST, timeout=60,
                    env={"NETSENSE_CLOCK_SKEW": "120"})
        assert "another aggregator holds" in one_line_error(r)
        assert holder.p.poll() is None
        assert json.loads((shared / "aggregator" / "lease.json").read_text())["pid"] == holder.p.pid
    finally:
        holder.stop()


def test_a_damaged_line_before_valid_ones_stops_the_start_and_repair_rebuilds_exactly(shared, tmp_path):
    """Old code called the first bad line a torn tail and cut every later (valid) line: their
    windows were archived and never counted again."""
    specs = ["seed=41,packets=20000,hosts=300", "seed=42,packets=20000,hosts=300"]
    collect(shared, "a", specs[0])
    collect(shared, "b", specs[1])
    # A daemon that never checkpoints, killed: its ledger is a log of several lines.
    agg = Proc(["aggregator", "run", "--shared", str(shared), *FAST, "--batch-files", "3",
                "--checkpoint-seconds", "86400", "--checkpoint-windows", "10000000"], tmp_path / "agg.log")
    try:
        wait_for(lambda: cumulative(shared).get("valid_packets") == 40000, 120, what="both nodes consumed")
    finally:
        agg.p.kill()
        agg.wait(30)
    ledger = shared / "aggregator" / "ledger.jsonl"
    lines = ledger.read_bytes().splitlines(keepends=True)
    assert len(lines) >= 3
    lines[1] = lines[1].replace(b'"gen"', b'"gem"')  # damaged, CRC no longer matches
    ledger.write_bytes(b"".join(lines))
    before = ledger.read_bytes()
    r = drain(shared)
    assert "repair" in one_line_error(r) and "line 2" in r.stderr
    assert ledger.read_bytes() == before  # nothing was cut
    r = run_cli("aggregator", "repair", "--shared", str(shared))
    assert r.returncode == 0, r.stderr
    assert list((shared / "aggregator").glob("ledger.jsonl.damaged-*"))
    r = drain(shared)
    assert r.returncode == 0, r.stderr
    assert cumulative(shared) == expected(*specs)


def test_a_second_writer_s_line_is_found_and_repaired(shared):
    """A stale holder's line (an older epoch, a repeated generation) after the new holder's."""
    specs = ["seed=43,packets=20000,hosts=300", "seed=44,packets=20000,hosts=300"]
    collect(shared, "a", specs[0])
    assert drain(shared).returncode == 0
    ledger = shared / "aggregator" / "ledger.jsonl"
    from netsense.aggregator.ledger import _line, parse_line

    last = parse_line(ledger.read_bytes().splitlines(keepends=True)[-1])
    stale = dict(last, epoch=0, windows=[])  # the same generation, written at an older epoch
    stale.pop("base", None)
    stale.setdefault("gen", last.get("base", 0))
    with open(ledger, "ab") as f:
        f.write(_line(stale))
    r = drain(shared)
    assert "two aggregators" in one_line_error(r) or "repeats generation" in r.stderr
    collect(shared, "b", specs[1])
    assert run_cli("aggregator", "repair", "--shared", str(shared)).returncode == 0
    assert drain(shared).returncode == 0
    assert cumulative(shared) == expected(*specs)


def test_a_deleted_ledger_is_never_a_fresh_start(shared):
    """Old code took a missing ledger for a new share: 240,000 packets became 0."""
    specs = ["seed=45,packets=20000,hosts=300", "seed=46,packets=20000,hosts=300"]
    collect(shared, "a", specs[0])
    assert drain(shared).returncode == 0
    (shared / "aggregator" / "ledger.jsonl").unlink()
    collect(shared, "b", specs[1])
    r = drain(shared)
    assert "missing" in one_line_error(r)
    assert cumulative(shared)["valid_packets"] == 20000  # the reports were left alone
    assert run_cli("aggregator", "repair", "--shared", str(shared)).returncode == 0
    assert drain(shared).returncode == 0
    assert cumulative(shared) == expected(*specs)


def test_a_ledger_deleted_while_running_stops_the_daemon_without_recreating_it(shared, tmp_path):
    specs = ["seed=47,packets=20000,hosts=300", "seed=48,packets=20000,hosts=300"]
    collect(shared, "a", specs[0])
    agg = Proc(["aggregator", "run", "--shared", str(shared), *FAST], tmp_path / "agg.log")
    try:
        wait_for(lambda: cumulative(shared).get("valid_packets") == 20000, 120, what="first node consumed")
        (shared / "aggregator" / "ledger.jsonl").unlink()
        collect(shared, "b", specs[1])
        rc = agg.wait(120)
    finally:
        if agg.p.poll() is None:
            agg.stop()
    assert rc != 0 and "vanished" in agg.output(), agg.output()
    assert not (shared / "aggregator" / "ledger.jsonl").exists()
    assert run_cli("aggregator", "repair", "--shared", str(shared)).returncode == 0
    assert drain(shared).returncode == 0
    assert cumulative(shared) == expected(*specs)


def test_a_failed_rollback_never_counts_the_batch_twice(shared):
    """A commit fails, then the rollback's reload fails too: old code stepped on the state it could
    not reload, and the next commit counted the batch again (50 -> 100)."""
    spec = "seed=49,packets=20000,hosts=300"
    collect(shared, "a", spec)
    r = drain(shared, env={"NETSENSE_FAILPOINT": "agg.ledger:1:eio,agg.recover:2:eio"})
    assert r.returncode == 0, r.stderr
    assert "injected I/O error" in r.stderr
    assert cumulative(shared) == expected(spec)


def test_a_failed_archive_move_never_deletes_the_only_copy(shared):
    """Old code: the move failed, the window stayed in nodes/, and the next run deleted it as a
    duplicate although archive/ held no copy."""
    spec = "seed=50,packets=20000,hosts=300"
    collect(shared, "a", spec)
    blocker = shared / "archive" / "a"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a directory")  # archive/a cannot be created: every move fails
    assert drain(shared).returncode == 0
    landed = sorted(p.name for p in (shared / "nodes" / "a").glob("*.nsw"))
    assert landed  # still there
    blocker.unlink()
    assert drain(shared).returncode == 0
    assert sorted(p.name for p in (shared / "archive" / "a").glob("*.nsw")) == landed
    assert cumulative(shared) == expected(spec)


def test_restart_after_many_windows_is_bounded(shared):
    """17,000 one-packet windows: old code wrote every period's window list into the checkpoint
    header, which was refused over 1 MiB, and the second start exited 1 with too_large."""
    spec = "seed=1,packets=17000,hosts=200"
    r = run_cli("collector", "run", "--shared", str(shared), "--node", "a", "--source", "synthetic:" + spec,
                "--window-packets", "1", timeout=900)
    assert r.returncode == 0, r.stderr
    r = run_cli("aggregator", "run", "--shared", str(shared), "--once", "--batch-files", "4096", timeout=900)
    assert r.returncode == 0, r.stderr
    t0 = time.monotonic()
    r = run_cli("aggregator", "run", "--shared", str(shared), "--once", timeout=900)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 60
    assert cumulative(shared) == expected(spec)
    ledger = shared / "aggregator" / "ledger.jsonl"
    assert ledger.stat().st_size < 64 << 10, "the ledger is compacted into the checkpoint"
    assert os.path.getsize(sorted((shared / "aggregator" / "state").glob("checkpoint-*"))[-1]) < 8 << 20


def test_a_flood_of_junk_files_is_refused_in_short_transactions(shared, tmp_path):
    """Old code quarantined 100,000 junk files in one transaction (two fsyncs each) before the
    commit: 90 s, three times the lease; `status` then took 15 s rereading every reason file."""
    import re

    spec = "seed=51,packets=20000,hosts=300"
    collect(shared, "a", spec)
    junk = shared / "nodes" / "a"
    for i in range(3000):
        (junk / f"a_20260101T000000Z_20260101T000001Z_{i:012x}-00000000.nsw").write_bytes(os.urandom(64))
    r = drain(shared, "-v")
    assert r.returncode == 0, r.stderr
    assert cumulative(shared) == expected(spec)
    assert len(list((shared / "quarantine" / "a").glob("*.reason.json"))) == 3000
    # No transaction refused more than its bound, and each took well under the lease.
    took = [float(x) for x in re.findall(r"committed: .*?\((\d+\.\d+)s since the batch began\)", r.stderr)]
    assert took and max(took) < 10, took
    t0 = time.monotonic()
    st = run_cli("aggregator", "status", "--shared", str(shared), "--format", "json")
    assert st.returncode == 0 and time.monotonic() - t0 < 15
    assert json.loads(st.stdout)["quarantine"].get("bad_magic", 0) + \
        json.loads(st.stdout)["quarantine"].get("truncated", 0) >= 2000


@pytest.fixture
def small_disk(tmp_path):
    """A real, size-limited file system (tmpfs, 64 MiB): root and mount(8) needed, else skip."""
    import shutil
    import subprocess

    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_full_disk_while_idle_never_kills_the_daemon(small_disk, tmp_path):
    """Old code died at the first heartbeat, lease renewal or idle checkpoint on a full disk."""
    shared = small_disk / "shared"
    specs = ["seed=52,packets=20000,hosts=300", "seed=53,packets=20000,hosts=300"]
    collect(shared, "a", specs[0])
    agg = Proc(["aggregator", "run", "--shared", str(shared), *FAST], tmp_path / "agg.log")
    filler = small_disk / "filler"
    try:
        wait_for(lambda: cumulative(shared).get("valid_packets") == 20000, 120, what="first node consumed")
        with open(filler, "wb", buffering=0) as f:  # fill the disk to the last byte
            try:
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
            except OSError:
                pass
            try:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
            except OSError:
                pass
        wait_for(lambda: "cannot renew the lease" in agg.output() or "storage error" in agg.output()
                 or "cannot write aggregator status" in agg.output(), 60, what="the daemon to meet the full disk")
        assert agg.p.poll() is None, agg.output()
        filler.unlink()
        collect(shared, "b", specs[1])
        wait_for(lambda: cumulative(shared).get("valid_packets") == 40000, 120, what="second node consumed")
        assert agg.p.poll() is None and "Traceback" not in agg.output(), agg.output()
    finally:
        filler.unlink(missing_ok=True)
        rc = agg.stop()
    assert rc == 0, agg.output()
    r = drain(shared)
    assert r.returncode == 0, r.stderr
    assert cumulative(shared) == expected(*specs)


def test_a_restatement_replayed_after_a_crash_is_counted_once(shared):
    """Found by the long-run harness: recovery gave the state the generation of the ledger's last
    line, so replaying an earlier restatement loaded a later period file that already held the
    late windows, and added them again (20,000 packets instead of 14,000)."""
    w = ["--window-packets", "2048", "--window-seconds", "1"]
    assert run_cli("collector", "run", "--shared", str(shared), "--node", "a", "--source",
                   "synthetic:seed=1,packets=8000,rate=20000,hosts=300", *w).returncode == 0
    assert drain(shared).returncode == 0  # the period is final, published, out of memory
    assert run_cli("collector", "run", "--shared", str(shared), "--node", "b", "--source",
                   "synthetic:seed=2,packets=6000,rate=20000,hosts=300", *w).returncode == 0
    # Three restatements, one per transaction, no checkpoint; killed after the third commit.
    r = drain(shared, "--batch-files", "1", "--checkpoint-seconds", "600", "--checkpoint-windows", "4096",
              env={"NETSENSE_FAILPOINT": "agg.archive:3"})
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert drain(shared).returncode == 0  # recovery replays the three restatements
    doc = read_json(shared / "reports" / "periods" / "20260101T000000Z.json")
    assert doc["analytics"] == expected("seed=1,packets=8000,rate=20000,hosts=300",
                                        "seed=2,packets=6000,rate=20000,hosts=300")
    assert len(doc["windows"]) == len(set(doc["windows"])) == 7
