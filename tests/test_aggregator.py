"""The aggregator library in-process on real directories: rebasing, restatements, lease, hostile entries."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import read_json
from oracle import nine, synthetic_packets

from netsense.aggregator.config import AggregatorConfig
from netsense.aggregator.daemon import Aggregator
from netsense.aggregator.ledger import last_epoch
from netsense.aggregator.loop import drain_aggregator
from netsense.errors import AggregatorBusy, LeaseLost
from netsense.collector.run import CollectorConfig, run_collector


def collect(shared, node, spec, **kw):
    cfg = CollectorConfig(shared, node, spec, window_packets=kw.get("window_packets", 4096),
                          window_seconds=kw.get("window_seconds", 1))
    return run_collector(cfg)


def engine(cfg: AggregatorConfig) -> Aggregator:
    """The transaction engine driven by hand, as a restarted process would be: the previous
    instance's lease (the same test process, so not provably dead) is cleared and taken."""
    agg = Aggregator(cfg)
    agg.lease.path.unlink(missing_ok=True)
    agg.lease.acquire(last_epoch(agg.layout.aggregator()))
    return agg


def drain(shared, **kw):
    (shared / "aggregator" / "lease.json").unlink(missing_ok=True)  # an engine's, in this same process
    cfg = AggregatorConfig(shared, period_seconds=kw.pop("period_seconds", 2), **kw)
    return drain_aggregator(cfg)


def test_small_batches_with_rebasing_and_restarts_equal_the_reference(shared):
    spec = "seed=11,packets=60000,rate=20000,hosts=2000"
    collect(shared, "a", "synthetic:" + spec)
    # Every checkpoint rebases the cumulative sum (threshold 1 link); restart the aggregator
    # several times part-way through, each restart replaying what the last checkpoint lacks.
    for _ in range(3):
        agg = engine(AggregatorConfig(shared, period_seconds=2, batch_files=2, rebase_min_links=1))
        agg.recover()
        assert agg.step() == 2
    drain(shared, batch_files=3, rebase_min_links=1)
    doc = read_json(shared / "reports" / "cumulative.json")
    assert doc["analytics"] == nine(*synthetic_packets(spec))
    names = sorted(p.name for p in (shared / "aggregator" / "state").iterdir())
    assert len(names) == 2 and names[0].startswith("checkpoint-") and names[1].startswith("cumulative-")


def test_lz4_and_zstd_collectors_feed_one_aggregator(shared):
    from netsense import winfile

    a, b = "seed=21,packets=20000,hosts=500", "seed=22,packets=20000,hosts=500"
    run_collector(CollectorConfig(shared, "a", "synthetic:" + a, window_packets=4096, window_seconds=1))
    run_collector(CollectorConfig(shared, "b", "synthetic:" + b, window_packets=4096, window_seconds=1,
                                  compression="zstd"))
    codecs = {n: {winfile.read_header(f)["payload"]["codec"] for f in (shared / "nodes" / n).glob("*.nsw")}
              for n in "ab"}
    assert codecs == {"a": {"graphblas-suitesparse-lz4"}, "b": {"graphblas-suitesparse-zstd"}}
    drain(shared)
    pa, pb = synthetic_packets(a), synthetic_packets(b)
    want = nine(np.concatenate([pa[0], pb[0]]), np.concatenate([pa[1], pb[1]]))
    assert read_json(shared / "reports" / "cumulative.json")["analytics"] == want


def wal_aggregator(shared, **kw):
    """An aggregator that never checkpoints on its own: commits are ledger lines only."""
    cfg = AggregatorConfig(shared, period_seconds=kw.pop("period_seconds", 3600), batch_files=2,
                           checkpoint_seconds=1e9, checkpoint_windows=10**9, **kw)
    agg = engine(cfg)
    agg.recover()
    return agg


def test_commits_between_checkpoints_are_replayed_from_the_archive(shared):
    spec = "seed=5,packets=50000,rate=20000,hosts=3000"
    collect(shared, "a", "synthetic:" + spec)
    agg = wal_aggregator(shared)
    assert agg.step() == 2 and agg.step() == 2
    state_dir = shared / "aggregator" / "state"
    assert not list(state_dir.glob("checkpoint-*"))  # two generations, no checkpoint: the ledger is the log
    assert [r[0] for r in agg.ledger.replay] == [1, 2]
    want = agg.state.profile("cumulative", agg.state.cumulative).analytics()
    # A restart (as after SIGKILL) rebuilds the committed state from the archived windows.
    again = wal_aggregator(shared)
    assert again.state.generation == 2 and again.state.cumulative.isequal(agg.state.cumulative)
    assert again.state.counters == agg.state.counters
    assert read_json(shared / "reports" / "cumulative.json")["analytics"] == want.as_dict()
    # A redelivered copy of a window the log still needs is archived, not deleted.
    consumed = sorted((shared / "archive" / "a").glob("*.nsw"))
    copy = shared / "nodes" / "a" / consumed[0].name
    copy.write_bytes(consumed[0].read_bytes())
    again.step()
    assert not copy.exists() and (shared / "archive" / "a" / consumed[0].name).exists()
    # Retention never deletes a window the log still needs.
    from netsense.aggregator.retention import RetentionPolicy, enforce
    keep = set(again.ledger.unsnapshotted.values())
    assert len(keep) >= 4 and enforce(shared / "archive", RetentionPolicy(max_bytes=0), keep=keep)[0] == 0
    # A clean exit checkpoints: the next start replays nothing, and the totals are exact.
    drain(shared, period_seconds=3600)
    assert list(state_dir.glob("checkpoint-*"))
    last = wal_aggregator(shared)
    assert last.ledger.replay == []
    assert read_json(shared / "reports" / "cumulative.json")["analytics"] == nine(*synthetic_packets(spec))


def test_finalizations_and_restatements_are_replayed_as_logged(shared):
    """Periods made final (and restated) between checkpoints come back final, same versions and files."""
    spec = "seed=8,packets=40000,rate=4000,hosts=500"  # 10 one-second windows over 5 two-second periods
    collect(shared, "a", "synthetic:" + spec)
    held = sorted((shared / "nodes" / "a").glob("*.nsw"))[2]  # a window of the first period, held back
    late = held.rename(shared / held.name)
    agg = wal_aggregator(shared, period_seconds=2)
    while agg.step():
        pass

    def finals_of(a):  # start -> (version, period file), as the ledger's lines decided them
        return {s: (v, f) for _, _, fin in a.ledger.replay for s, v, f in fin}

    finals = finals_of(agg)
    assert finals and not list((shared / "aggregator" / "state").glob("checkpoint-*"))
    # Final, published periods leave memory: their period files hold them.
    assert not any(p.final for p in agg.state.periods.values())
    late.rename(held)  # arrives late: restates a final period, still without a checkpoint
    assert agg.step() == 1
    finals2 = finals_of(agg)
    restated = [s for s, (v, _) in finals2.items() if v == 2]
    assert len(restated) == 1
    periods_dir = shared / "aggregator" / "periods"
    assert len(list(periods_dir.iterdir())) == len(finals) + 1  # the superseded version is kept for now
    again = wal_aggregator(shared, period_seconds=2)  # recovery: nothing decided again, all replayed
    assert finals_of(again) == finals2
    assert again.state.cumulative.isequal(agg.state.cumulative)
    # No checkpoint names the superseded file (the replay rebuilt that period from its windows): gone.
    current = {s: f for s, (_, f) in finals2.items()}
    assert sorted(f.name for f in periods_dir.iterdir()) == sorted(current.values())
    drain(shared, period_seconds=2)
    from netsense.layout import stamp

    doc = read_json(shared / "reports" / "periods" / f"{stamp(restated[0])}.json")
    assert doc["version"] == 2 and doc["restatement"]
    assert read_json(shared / "reports" / "cumulative.json")["analytics"] == nine(*synthetic_packets(spec))


def test_background_checkpoints_become_the_recovery_point(shared):
    """A due checkpoint is written after the commit by a background thread; the next line names it."""
    from netsense.layout import checkpoint_file

    spec = "seed=9,packets=40000,rate=20000,hosts=800"
    collect(shared, "a", "synthetic:" + spec)
    agg = engine(AggregatorConfig(shared, period_seconds=3600, batch_files=2, checkpoint_windows=1,
                                      rebase_min_links=1))
    agg.recover()
    steps = 0
    while agg.step():
        steps += 1
        agg.join_checkpoint()  # deterministic here; the daemon just goes on with the next batch
    lines = [json.loads(x) for x in (shared / "aggregator" / "ledger.jsonl").read_text().splitlines()]
    assert steps >= 4
    # Each line names the checkpoint written after the previous one; once named, the ledger is
    # compacted: a base line at that generation, then only the lines after it.
    base, rest = lines[0], lines[1:]
    assert base["base"] == steps - 1 and base["checkpoint"] == checkpoint_file(steps - 1)
    assert [x["gen"] for x in rest] == [steps] and rest[0]["checkpoint"] == checkpoint_file(steps - 1)
    state = sorted(p.name for p in (shared / "aggregator" / "state").iterdir())
    # the named checkpoint and its base, plus the newest one (written, not yet named)
    assert checkpoint_file(steps - 1) in state and checkpoint_file(steps) in state
    again = wal_aggregator(shared)
    assert [r[0] for r in again.ledger.replay] == [steps]
    assert again.state.cumulative.isequal(agg.state.cumulative)
    assert again.state.counters == agg.state.counters


def test_a_missing_log_window_stops_recovery_with_a_clear_error(shared):
    from netsense.errors import StateError

    collect(shared, "a", "synthetic:seed=6,packets=20000,rate=20000,hosts=300")
    agg = wal_aggregator(shared)
    assert agg.step() == 2
    victim = sorted((shared / "archive" / "a").glob("*.nsw"))[0]
    victim.unlink()
    with pytest.raises(StateError, match="missing from archive/ and nodes/"):
        wal_aggregator(shared)


def test_late_window_restates_a_final_period_and_keeps_the_old_report(shared):
    collect(shared, "early", "synthetic:seed=1,packets=20000,rate=10000")  # 2 s of traffic: one period
    drain(shared)
    first = read_json(shared / "reports" / "periods" / "20260101T000000Z.json")
    assert first["final"] and first["version"] == 1 and not first["restatement"]
    collect(shared, "late", "synthetic:seed=2,packets=10000,rate=10000")  # same period, after it was final
    drain(shared)
    second = read_json(shared / "reports" / "periods" / "20260101T000000Z.json")
    assert second["version"] == 2 and second["restatement"] and second["final"]
    assert second["analytics"]["valid_packets"] == 30000
    kept = read_json(shared / "reports" / "periods" / "20260101T000000Z.v1.json")
    assert kept["analytics"] == first["analytics"]
    a = synthetic_packets("seed=1,packets=20000,rate=10000")
    b = synthetic_packets("seed=2,packets=10000,rate=10000")
    assert second["analytics"] == nine(np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]]))
    import pyarrow.dataset as ds

    # Read plainly, the history holds the period once, its latest version; every version is in
    # history-versions/. One Parquet file per UTC day, not one per version.
    latest = ds.dataset(shared / "reports" / "history", format="parquet").to_table().to_pylist()
    assert [(r["period_id"], r["version"], r["valid_packets"]) for r in latest] == [("20260101T000000Z", 2, 30000)]
    versions = ds.dataset(shared / "reports" / "history-versions", format="parquet").to_table().to_pylist()
    assert sorted((r["period_id"], r["version"]) for r in versions) == [("20260101T000000Z", 1), ("20260101T000000Z", 2)]
    assert sorted(p.name for p in (shared / "reports" / "history").iterdir()) == ["20260101.parquet"]


def test_period_waits_for_a_running_node_then_grace_finalizes_it(shared):
    collect(shared, "fast", "synthetic:seed=1,packets=40000,rate=10000")  # packet time 0..4 s
    # A node that is running (fresh heartbeat) but has landed nothing yet holds periods open ...
    (shared / "status" / "slow.json").write_text(json.dumps({"node": "slow", "state": "running"}))
    drain(shared, grace_periods=5)
    periods = {p.stem: json.loads(p.read_text()) for p in (shared / "reports" / "periods").glob("*.json")}
    assert periods and not any(d["final"] for d in periods.values())
    # ... until the newest data is --grace periods past them.
    collect(shared, "fast2", "synthetic:seed=3,packets=10000,rate=10000,start=1767225620")
    drain(shared, grace_periods=5)
    first = read_json(shared / "reports" / "periods" / "20260101T000000Z.json")
    assert first["final"]


def test_stale_lease_is_taken_over_but_a_fresh_one_is_not(shared):
    from netsense.lease import Lease

    agg_dir = shared / "aggregator"
    holder = Lease(agg_dir / "lease.json", ttl=2)
    holder.acquire()
    with pytest.raises(AggregatorBusy, match="another aggregator"):
        Lease(agg_dir / "lease.json", ttl=2).acquire()
    # A crashed holder on another host: its lease expired and was not renewed.
    doc = json.loads(holder.path.read_text())
    doc.update(host="elsewhere", pid=1, expires=doc["renewed"] - 100)
    holder.path.write_text(json.dumps(doc))
    old = holder.path.stat().st_mtime - 100
    os.utime(holder.path, (old, old))
    newcomer = Lease(agg_dir / "lease.json", ttl=2)
    newcomer.acquire()  # after watching it not change for ttl/2
    assert json.loads(holder.path.read_text())["owner"] == newcomer.owner
    assert newcomer.epoch == holder.epoch + 1
    with pytest.raises(LeaseLost, match="taken over"):
        holder.renew()
    with pytest.raises(LeaseLost):
        holder.assert_held()


def test_symlinks_and_foreign_names_are_refused_not_followed(shared, tmp_path):
    collect(shared, "n1", "synthetic:seed=1,packets=5000")
    secret = tmp_path / "outside.nsw"
    secret.write_bytes(b"not yours")
    (shared / "nodes" / "n1" / "n1_20260101T000000Z_20260101T000001Z_aaaaaaaaaaaa-00000000.nsw").symlink_to(secret)
    (shared / "nodes" / "n1" / "../n1/..evil").write_bytes(b"x")
    (shared / "nodes" / "link-node").symlink_to(tmp_path)
    drain(shared)
    reasons = sorted(json.loads(p.read_text())["reason"] for p in (shared / "quarantine").glob("*/*.reason.json"))
    assert reasons == ["not_regular_file"]
    assert secret.read_bytes() == b"not yours"  # the target was neither read into a report nor moved
    assert read_json(shared / "reports" / "cumulative.json")["analytics"]["valid_packets"] == 5000
    problems = read_json(shared / "aggregator" / "status.json")["problems"]
    assert any("link-node" in p for p in problems)


def test_retention_deletes_oldest_archived_windows_by_age_and_size(shared):
    from netsense.aggregator.retention import RetentionPolicy, enforce

    collect(shared, "n1", "synthetic:seed=1,packets=40000")
    drain(shared)
    files = sorted((shared / "archive" / "n1").glob("*.nsw"))
    assert len(files) == 10
    for i, f in enumerate(files):  # file i is 10 - i days old
        t = 1_800_000_000 - (10 - i) * 86400
        os.utime(f, (t, t))
    now = 1_800_000_000
    assert enforce(shared / "archive", RetentionPolicy(max_age_seconds=7.5 * 86400), now)[0] == 3
    remaining = sorted((shared / "archive" / "n1").glob("*.nsw"))
    assert remaining == files[3:]
    cap = sum(f.stat().st_size for f in remaining[-2:])
    assert enforce(shared / "archive", RetentionPolicy(max_bytes=cap), now)[0] == 5
    assert sorted((shared / "archive" / "n1").glob("*.nsw")) == files[-2:]
    assert (shared / "reports" / "cumulative.json").exists()


def test_status_flags_a_node_whose_clock_is_skewed(shared):
    import time

    from netsense.aggregator.status import format_status, gather_status

    (shared / "status").mkdir()
    now = time.time()
    for node, skew in (("good", 0.0), ("ahead", 120.0)):
        (shared / "status" / f"{node}.json").write_text(json.dumps(
            {"node": node, "state": "running", "heartbeat": now + skew, "status_interval": 5}))
    doc = gather_status(shared)
    assert not doc["nodes"]["good"]["clock_skewed"]
    assert doc["nodes"]["ahead"]["clock_skewed"] and 110 < doc["nodes"]["ahead"]["clock_skew_s"] < 130
    assert "ahead (+120s)" in format_status(doc)
