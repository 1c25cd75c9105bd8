"""Three collectors on three real captures + ``--once``: the nine analytics equal tshark's."""
from __future__ import annotations

import numpy as np
import pytest

import oracle
from conftest import read_json, run_cli, shared_pcaps
from oracle import nine

pytestmark = pytest.mark.slow


def pick(folder, k: int = 3, max_bytes: int = 1 << 20) -> list:
    """k small captures with counted packets, chosen by a hash of their names: none is named here,
    so $NETSENSE_PCAPS_REAL can point the test at anyone's captures."""
    import zlib

    files = sorted((p for p in folder.iterdir() if p.suffix in (".pcap", ".pcapng") and p.stat().st_size <= max_bytes),
                   key=lambda p: zlib.crc32(p.name.encode()))
    out = []
    for f in files:
        if len(oracle.counted_pairs(f)[0]) > 100:
            out.append(f)
            if len(out) == k:
                break
    if len(out) < k:
        pytest.skip(f"fewer than {k} small captures with IPv4 traffic in {folder}")
    return out


def test_three_collectors_on_real_captures_match_tshark(shared):
    real = shared_pcaps("real")
    if not oracle.tshark_available():
        pytest.skip("tshark is not installed")
    srcs, dsts = [], []
    for i, cap in enumerate(pick(real)):
        r = run_cli("collector", "run", "--shared", str(shared), "--node", f"node{i}", "--source",
                    f"pcap:{cap}", "--window-packets", "500")
        assert r.returncode == 0, r.stderr
        s, d = oracle.counted_pairs(cap)
        st = read_json(shared / "status" / f"node{i}.json")
        assert st["packets"] == len(s), (cap.name, st["skipped"])
        srcs.append(s)
        dsts.append(d)
    r = run_cli("aggregator", "run", "--shared", str(shared), "--once")
    assert r.returncode == 0, r.stderr
    doc = read_json(shared / "reports" / "cumulative.json")
    assert doc["analytics"] == nine(np.concatenate(srcs), np.concatenate(dsts))
