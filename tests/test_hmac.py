"""--secret: with a shared secret, writing to the shared directory is not enough to inject traffic."""
from __future__ import annotations

import json

from conftest import read_json, run_cli

from netsense import winfile
from netsense.layout import WindowName


def collect(shared, node, seed, *extra):
    r = run_cli("collector", "run", "--shared", str(shared), "--node", node, "--window-packets", "5000",
                "--source", f"synthetic:seed={seed},packets=12000", *extra)
    assert r.returncode == 0, r.stderr


def test_aggregator_with_secret_accepts_only_signed_windows(shared, tmp_path):
    good, bad = tmp_path / "good.key", tmp_path / "bad.key"
    good.write_text("correct horse battery staple 42\n")
    bad.write_text("an attacker's guess at the key!!\n")
    collect(shared, "signed", 1, "--secret", str(good))
    collect(shared, "unsigned", 2)
    collect(shared, "forged", 3, "--secret", str(bad))
    f = sorted((shared / "nodes" / "signed").glob("*.nsw"))[0]
    parsed = winfile.read(f)
    assert len(parsed.header["hmac"]) == 64
    winfile.verify_hmac(parsed, good.read_bytes().strip())
    r = run_cli("aggregator", "run", "--shared", str(shared), "--once", "--secret", str(good))
    assert r.returncode == 0, r.stderr
    doc = read_json(shared / "reports" / "cumulative.json")
    assert set(doc["nodes"]) == {"signed"} and doc["analytics"]["valid_packets"] == 12000
    reasons = {json.loads(p.read_text())["reason"] for p in (shared / "quarantine").glob("*/*.reason.json")}
    assert reasons == {"bad_hmac"}
    assert len(list((shared / "quarantine").glob("*/*.nsw"))) == 6  # 3 windows each from unsigned and forged


def test_tampered_signed_header_is_refused(tmp_path):
    import graphblas as gb

    secret = b"0123456789abcdef0123"
    name = WindowName("n1", 0, 60, "0" * 12, 0)
    h = winfile.window_header(name, source="x", records=1, packets=1, skipped={}, first_ts_ns=0, last_ts_ns=0,
                              anonymization=None, created=0.0, host="h")
    a = gb.Matrix.from_coo([1], [2], [1], nrows=winfile.N, ncols=winfile.N, dtype="UINT64")
    parsed = winfile.decode(winfile.encode(h, {"A": a}, secret=secret))
    winfile.verify_hmac(parsed, secret)
    parsed.header["host"] = "evil"
    try:
        winfile.verify_hmac(parsed, secret)
    except winfile.BadWindowFile as e:
        assert e.reason == "bad_hmac"
    else:
        raise AssertionError("a modified header passed the HMAC check")


def test_short_secret_is_a_clear_error(shared, tmp_path):
    k = tmp_path / "short.key"
    k.write_text("short")
    r = run_cli("aggregator", "run", "--shared", str(shared), "--once", "--secret", str(k))
    assert r.returncode == 1 and "at least 16" in r.stderr
