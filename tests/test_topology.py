"""Trees of aggregators stay trees, with real processes.

A --parent that is the share itself (also through a symlink or ``..``), inside it or containing
it is refused at start, before anything is written; a loop of parents (A's parent is B, B's is
A) cannot be seen at start, so the windows that bring an aggregator's own sums back are
quarantined as ``feedback_loop`` and the totals stay exact.
"""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from conftest import read_json, run_cli

from netsense.errors import ConfigError
from netsense.layout import WindowName

pytestmark = pytest.mark.slow
PACKETS = 30_000
# 300 s of packet time: five 60-second windows and five 60-second periods.
SPEC = f"synthetic:seed=5,packets={PACKETS},rate=100,hosts=300"


def collect(shared, node="c1", spec=SPEC):
    r = run_cli("collector", "run", "--shared", str(shared), "--node", node, "--source", spec, timeout=180)
    assert r.returncode == 0, r.stderr


def drain(shared, parent=None, parent_node=None, timeout=120):
    args = ["aggregator", "run", "--shared", str(shared), "--once"]
    if parent is not None:
        args += ["--parent", str(parent), "--parent-node", parent_node]
    try:
        return run_cli(*args, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"aggregator run --once on {shared} did not finish in {timeout}s (feeding on itself?)")


def total(shared) -> int:
    doc = read_json(shared / "reports" / "cumulative.json")
    return doc["analytics"]["valid_packets"] if doc else 0


def tree(d):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


@pytest.mark.parametrize("form", ["same", "symlink", "dotdot", "inside", "contains"])
def test_parent_that_is_or_overlaps_the_share_is_refused_at_start(tmp_path, form):
    shared = tmp_path / "rack" / "shared"
    collect(shared)
    parent = {"same": shared,
              "symlink": tmp_path / "link",
              "dotdot": shared / ".." / "shared",
              "inside": shared / "up",
              "contains": tmp_path / "rack"}[form]
    if form == "symlink":
        (tmp_path / "link").symlink_to(shared, target_is_directory=True)
    before = tree(shared)
    r = drain(shared, parent, "rack1", timeout=60)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: --parent"), r.stderr
    assert "parent aggregator" in lines[0]  # says what to give instead
    assert tree(shared) == before  # nothing written into the share: no reports, no lease, no ledger
    assert not (shared / "aggregator").exists()


def test_a_loop_of_two_shares_stays_exact(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    collect(a)
    logs = []
    for rnd in range(3):
        ra = drain(a, b, "agg-a")
        assert ra.returncode == 0, ra.stderr
        logs.append(ra.stderr)
        assert total(a) == PACKETS, f"round {rnd}: A's total grew to {total(a)}"
        rb = drain(b, a, "agg-b")
        assert rb.returncode == 0, rb.stderr
        assert total(b) == PACKETS, f"round {rnd}: B's total is {total(b)}"
    # B summed A's five periods once; what B landed back in A carries A's instance in its
    # lineage and was refused, never summed.
    reasons = [json.loads(p.read_text()) for p in (a / "quarantine" / "agg-b").glob("*.reason.json")]
    assert len(reasons) == 5 and {r["reason"] for r in reasons} == {"feedback_loop"}, reasons
    assert not list((a / "nodes" / "agg-b").glob("*.nsw"))
    assert read_json(a / "reports" / "cumulative.json")["nodes"].keys() == {"c1"}
    # The loop is logged as an error once (in the round that met it), not once per window.
    assert sum(line.count("ERROR") for line in logs[1].splitlines() if "--parent chain loops" in line) == 1
    assert "quarantined" in logs[1]


def test_own_upstream_windows_landing_back_are_refused(tmp_path):
    """A parent that is this share under another path (bind mount, another NFS mount) lands this
    aggregator's own windows (run = its instance) in its own landing folders."""
    a, b = tmp_path / "a", tmp_path / "b"
    collect(a)
    r = drain(a, b, "agg-a")
    assert r.returncode == 0, r.stderr
    landed = sorted((b / "nodes" / "agg-a").glob("*.nsw"))
    assert len(landed) == 5
    (a / "nodes" / "agg-a").mkdir(parents=True)
    for f in landed:  # what a parent that is the same directory under another path receives
        shutil.copy(f, a / "nodes" / "agg-a" / f.name)
    r = drain(a, b, "agg-a")
    assert r.returncode == 0, r.stderr
    assert total(a) == PACKETS
    reasons = [json.loads(p.read_text()) for p in (a / "quarantine" / "agg-a").glob("*.reason.json")]
    assert len(reasons) == 5 and {r["reason"] for r in reasons} == {"feedback_loop"}, reasons


def test_check_parent_and_is_feedback(tmp_path):
    from netsense.aggregator.topology import check_parent, is_feedback

    s = tmp_path / "s"
    s.mkdir()
    check_parent(s, None)
    check_parent(s, tmp_path / "other")
    check_parent(s, tmp_path / "s2")  # a sibling whose name starts the same is not inside
    for bad in (s, s / ".." / "s", s / "x" / "y", tmp_path):
        with pytest.raises(ConfigError):
            check_parent(s, bad)
    n = WindowName("agg-a", 0, 60, "0123456789ab", 0)
    assert is_feedback(n, "0123456789ab")
    assert is_feedback(n, "ba9876543210", via=["ba9876543210"])
    assert not is_feedback(n, "ba9876543210", via=["000000000000"])
