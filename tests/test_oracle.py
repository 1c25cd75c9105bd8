"""Three collectors on three real captures + ``--once``: the nine analytics equal tshark's."""
from __future__ import annotations

import numpy as np
import pytest

import oracle
from conftest import read_json, run_cli, shared_pcaps
from oracle import nine

pytestmark = pytest.mark.slow
CAPTURES = ("vnc.pcap", "forticlient.pcap", "telegram.pcap")


def test_three_collectors_on_real_captures_match_tshark(shared):
    real = shared_pcaps("real")
    if not oracle.tshark_available():
        pytest.skip("tshark is not installed")
    srcs, dsts = [], []
    for i, name in enumerate(CAPTURES):
        r = run_cli("collector", "run", "--shared", str(shared), "--node", f"node{i}", "--source",
                    f"pcap:{real / name}", "--window-packets", "500")
        assert r.returncode == 0, r.stderr
        s, d = oracle.counted_pairs(real / name)
        assert len(s) > 100
        st = read_json(shared / "status" / f"node{i}.json")
        assert st["packets"] == len(s), (name, st["skipped"])
        srcs.append(s)
        dsts.append(d)
    r = run_cli("aggregator", "run", "--shared", str(shared), "--once")
    assert r.returncode == 0, r.stderr
    doc = read_json(shared / "reports" / "cumulative.json")
    assert doc["analytics"] == nine(np.concatenate(srcs), np.concatenate(dsts))
