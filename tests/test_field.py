"""Never silently wrong in the field: ordinary operator mistakes end in exact numbers or a
one-line refusal.  Real processes, real files."""
from __future__ import annotations

import pytest
from conftest import Proc, read_json, run_cli, wait_for
from oracle import nine, synthetic_packets

pytestmark = pytest.mark.slow


def test_a_second_collector_with_the_same_node_name_refuses_and_nothing_counts_twice(shared, tmp_path):
    """Old code ran both side by side: their traffic was counted twice, and the second logged a
    false "previous live run ended" warning."""
    spec = "synthetic:seed=61,packets=40000,rate=20000,hosts=300,pace=4000,batch=1000"
    first = Proc(["collector", "run", "--shared", str(shared), "--node", "n1", "--source", spec,
                  "--window-packets", "4096", "--window-seconds", "1"], tmp_path / "first.log")
    try:
        wait_for(lambda: (read_json(shared / "status" / "n1.json") or {}).get("windows_landed", 0) >= 1, 60,
                 what="the first collector landing")
        assert first.p.poll() is None  # still running (paced: 10 s)
        r = run_cli("collector", "run", "--shared", str(shared), "--node", "n1", "--source",
                    "synthetic:seed=62,packets=40000,hosts=300", timeout=60)
        errors = [x for x in r.stderr.splitlines() if x.startswith("Error:")]
        assert r.returncode == 1 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
        assert "node n1 is already being collected" in errors[0] and "another --node" in errors[0]
        assert "previous live run" not in r.stderr
        assert first.wait(120) == 0, first.output()
    finally:
        if first.p.poll() is None:
            first.stop()
    r = run_cli("aggregator", "run", "--shared", str(shared), "--once")
    assert r.returncode == 0, r.stderr
    assert read_json(shared / "reports" / "cumulative.json")["analytics"] == nine(*synthetic_packets(spec[10:]))
    assert not (shared / "status" / "n1.lease").exists()  # released at exit
