"""Hierarchical aggregation with real processes: racks -> global, exactly once end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import Proc, read_json, run_cli, wait_for
from oracle import nine, synthetic_packets

pytestmark = pytest.mark.slow
WINDOW = ["--window-packets", "8192", "--window-seconds", "1"]


def collect(shared, node, spec):
    r = run_cli("collector", "run", "--shared", str(shared), "--node", node, "--source", "synthetic:" + spec, *WINDOW)
    assert r.returncode == 0, r.stderr


def reference(specs):
    parts = [synthetic_packets(s) for s in specs]
    return nine(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def test_two_level_tree_totals_equal_the_sum_of_all_collectors(tmp_path):
    top = tmp_path / "global"
    racks = {"rack1": ["seed=1,packets=30000,rate=10000", "seed=2,packets=25000,rate=10000"],
             "rack2": ["seed=3,packets=20000,rate=10000", "seed=4,packets=35000,rate=10000"]}
    for rack, specs in racks.items():
        for i, spec in enumerate(specs):
            collect(tmp_path / rack, f"{rack}-n{i}", spec)
    # rack1 as a daemon (stopped with SIGTERM once drained), rack2 with --once.
    agg1 = Proc(["aggregator", "run", "--shared", str(tmp_path / "rack1"), "--period-seconds", "2",
                 "--rescan-seconds", "0.2", "--parent", str(top), "--parent-node", "rack1"], tmp_path / "rack1.log")
    wait_for(lambda: (read_json(top / "status" / "rack1.json") or {}).get("windows_landed", 0) >= 2
             and not (read_json(top / "status" / "rack1.json") or {}).get("spooled"), 120, what="rack1 upstream")
    assert agg1.stop() == 0, agg1.output()
    r = run_cli("aggregator", "run", "--shared", str(tmp_path / "rack2"), "--once", "--period-seconds", "2",
                "--parent", str(top), "--parent-node", "rack2")
    assert r.returncode == 0, r.stderr
    assert read_json(top / "status" / "rack2.json")["state"] == "finished"
    r = run_cli("aggregator", "run", "--shared", str(top), "--once", "--period-seconds", "2")
    assert r.returncode == 0, r.stderr
    all_specs = [s for specs in racks.values() for s in specs]
    doc = read_json(top / "reports" / "cumulative.json")
    assert doc["analytics"] == reference(all_specs)
    assert set(doc["nodes"]) == {"rack1", "rack2"}
    # Every rack-level period arrived once: the global per-period totals equal the racks' totals.
    for rack in racks:
        rack_cum = read_json(tmp_path / rack / "reports" / "cumulative.json")
        assert doc["nodes"][rack]["packets"] == rack_cum["analytics"]["valid_packets"]

    # A late window at rack2 restates a rack period; only its delta goes up, once.
    late = "seed=9,packets=5000,rate=10000"
    collect(tmp_path / "rack2", "rack2-late", late)
    for _ in range(2):  # a restarted rack aggregator must not land anything twice
        r = run_cli("aggregator", "run", "--shared", str(tmp_path / "rack2"), "--once", "--period-seconds", "2",
                    "--parent", str(top), "--parent-node", "rack2")
        assert r.returncode == 0, r.stderr
    r = run_cli("aggregator", "run", "--shared", str(top), "--once", "--period-seconds", "2")
    assert r.returncode == 0, r.stderr
    doc = read_json(top / "reports" / "cumulative.json")
    assert doc["analytics"] == reference(all_specs + [late])
    restated = json.loads((top / "reports" / "periods" / "20260101T000000Z.json").read_text())
    assert restated["restatement"] and restated["version"] == 2
    # Upstream windows re-landed after a restart are identical copies: dropped, never conflicts.
    assert read_json(top / "aggregator" / "status.json")["counters"]["conflicts"] == 0
    assert not list((top / "quarantine").glob("*/*"))
