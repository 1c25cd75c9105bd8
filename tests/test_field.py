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


def _sample(folder, k: int, max_bytes: int = 1 << 20) -> list:
    """k captures of the folder, chosen by a hash of their names (none is named in the test)."""
    import zlib

    files = sorted((p for p in folder.iterdir() if p.suffix in (".pcap", ".pcapng") and p.stat().st_size <= max_bytes),
                   key=lambda p: zlib.crc32(p.name.encode()))
    return files[:k]


def test_a_folder_of_captures_out_of_time_order_gives_tshark_s_per_period_counts(shared, tmp_path):
    """Old code folded packets of a file whose times went back into the open window: on 268 real
    captures, 999 of 1,023 one-minute periods held the wrong count (the total was right)."""
    import time

    import numpy as np
    import oracle

    if not oracle.tshark_available():
        pytest.skip("tshark is not installed")
    from conftest import shared_pcaps

    real = shared_pcaps("real")
    picks = _sample(real, 10)
    packets = {p: oracle.tshark_packets(p) for p in picks}
    picks = [p for p in picks if packets[p][1].any()]
    assert len(picks) >= 4
    # Name them in reverse time order: the collector reads a folder in name order.
    folder = tmp_path / "captures"
    folder.mkdir()
    by_time = sorted(picks, key=lambda p: int(packets[p][0].min()))
    for i, p in enumerate(reversed(by_time)):
        (folder / f"{i:02d}-{p.name}").symlink_to(p)
    r = run_cli("collector", "run", "--shared", str(shared), "--node", "cap", "--source", f"pcap:{folder}",
                "--window-seconds", "60", timeout=600)
    assert r.returncode == 0, r.stderr
    r = run_cli("aggregator", "run", "--shared", str(shared), "--once", "--period-seconds", "60", timeout=600)
    assert r.returncode == 0, r.stderr
    # The independent answer: every packet in the period of its own timestamp (plausible ones).
    now = time.time_ns()
    ts = np.concatenate([packets[p][0] for p in picks])
    ok = np.concatenate([packets[p][1] for p in picks]) & (ts >= 631_152_000 * 10**9) & (ts <= now + 86_400 * 10**9)
    src = np.concatenate([packets[p][2] for p in picks])
    dst = np.concatenate([packets[p][3] for p in picks])
    period = ts // (60 * 10**9) * 60
    from netsense.layout import stamp

    want = {stamp(int(s)): nine(src[ok & (period == s)], dst[ok & (period == s)])
            for s in np.unique(period[ok]).tolist()}
    got = {}
    for f in (shared / "reports" / "periods").glob("*.json"):
        doc = read_json(f)
        if "." not in f.stem and doc["analytics"]["valid_packets"]:
            got[f.stem] = doc["analytics"]
    assert got == want
    assert read_json(shared / "reports" / "cumulative.json")["analytics"] == nine(src[ok], dst[ok])


def test_history_read_plainly_sums_like_the_cumulative_report_after_restatements(shared):
    """Old code: every final version was a row, so summing the history as the README shows gave
    1,887 against 1,259 after a period was restated twice."""
    import pyarrow.dataset as ds

    win = ["--window-packets", "4096", "--window-seconds", "1"]
    specs = ["seed=71,packets=20000,rate=10000,hosts=300", "seed=72,packets=6000,rate=10000,hosts=300",
             "seed=73,packets=5000,rate=10000,hosts=300"]
    for i, spec in enumerate(specs):  # each later node restates the periods the first made final
        r = run_cli("collector", "run", "--shared", str(shared), "--node", f"n{i}", "--source",
                    "synthetic:" + spec, *win)
        assert r.returncode == 0, r.stderr
        r = run_cli("aggregator", "run", "--shared", str(shared), "--once", "--period-seconds", "1")
        assert r.returncode == 0, r.stderr
    versions = ds.dataset(shared / "reports" / "history-versions", format="parquet").to_table().to_pylist()
    assert max(r["version"] for r in versions) == 3  # restated twice
    latest = ds.dataset(shared / "reports" / "history", format="parquet").to_table().to_pylist()
    cum = read_json(shared / "reports" / "cumulative.json")["analytics"]["valid_packets"]
    assert sum(r["valid_packets"] for r in latest) == cum == 31000
    assert len({r["period_id"] for r in latest}) == len(latest)
    assert len(list((shared / "reports" / "history").iterdir())) == 1  # one file for the day, not one per version


def test_a_collector_whose_anonymization_differs_from_the_share_s_refuses_at_start(shared, tmp_path):
    """Old code started a plain node on an anonymized share cleanly: its windows were all
    quarantined while status showed it as finished."""
    key = tmp_path / "k.cryptopant"
    base = ["--shared", str(shared), "--window-packets", "5000"]
    r = run_cli("collector", "run", "--node", "anon1", "--anonymize", str(key), *base,
                "--source", "synthetic:seed=81,packets=12000")
    assert r.returncode == 0, r.stderr
    assert run_cli("aggregator", "run", "--shared", str(shared), "--once").returncode == 0
    for extra, says in (([], "start it with --anonymize"),
                        (["--anonymize", str(tmp_path / "other.key")], "anonymized with key")):
        r = run_cli("collector", "run", "--node", "plain1", *extra, *base, "--source", "synthetic:seed=82,packets=5000")
        errors = [x for x in r.stderr.splitlines() if x.startswith("Error:")]
        assert r.returncode == 1 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
        assert says in errors[0]
    assert not (shared / "nodes" / "plain1").exists() or not list((shared / "nodes" / "plain1").iterdir())
    r = run_cli("collector", "run", "--node", "anon2", "--anonymize", str(key), *base,
                "--source", "synthetic:seed=83,packets=5000")
    assert r.returncode == 0, r.stderr  # the share's own key is welcome


def test_resume_checks_what_the_share_holds_not_only_the_status_file(tmp_path):
    """Old code trusted status/<node>.json alone: a status restored or copied onto a share that
    does not hold the windows it names made the collector skip (here: all of) its traffic."""
    spec = "synthetic:seed=91,packets=20000,hosts=300"
    a, b = tmp_path / "a", tmp_path / "b"
    args = ["--node", "n1", "--source", spec, "--window-packets", "4096", "--window-seconds", "1"]
    assert run_cli("collector", "run", "--shared", str(a), *args).returncode == 0
    (b / "status").mkdir(parents=True)
    (b / "status" / "n1.json").write_bytes((a / "status" / "n1.json").read_bytes())  # says: all landed
    r = run_cli("collector", "run", "--shared", str(b), *args)
    assert r.returncode == 0, r.stderr
    assert "holds no such file" in r.stderr
    r = run_cli("aggregator", "run", "--shared", str(b), "--once", "--period-seconds", "2")
    assert r.returncode == 0, r.stderr
    assert read_json(b / "reports" / "cumulative.json")["analytics"] == nine(*synthetic_packets(spec[10:]))


def test_a_period_shorter_than_the_windows_is_refused_with_a_clear_reason(shared):
    """Old code accepted --period-seconds 10 with 60 s windows and labelled packets with a time
    range they were not in."""
    r = run_cli("collector", "run", "--shared", str(shared), "--node", "n1", "--source",
                "synthetic:seed=92,packets=5000,hosts=100", "--window-seconds", "60")
    assert r.returncode == 0, r.stderr
    r = run_cli("aggregator", "run", "--shared", str(shared), "--once", "--period-seconds", "10")
    assert r.returncode == 0, r.stderr
    reasons = [read_json(p) for p in (shared / "quarantine" / "n1").glob("*.reason.json")]
    assert reasons and {x["reason"] for x in reasons} == {"period_mismatch"}
    assert "--period-seconds a multiple of 60" in reasons[0]["detail"]
    assert not list((shared / "reports" / "periods").glob("*.json"))  # nothing mislabelled


def test_report_lists_periods_with_versions_and_takes_iso_8601(shared):
    w = ["--window-packets", "4096", "--window-seconds", "1"]
    for i, spec in enumerate(["seed=74,packets=20000,rate=10000,hosts=300", "seed=75,packets=6000,rate=10000,hosts=300"]):
        assert run_cli("collector", "run", "--shared", str(shared), "--node", f"n{i}", "--source",
                       "synthetic:" + spec, *w).returncode == 0
        assert run_cli("aggregator", "run", "--shared", str(shared), "--once", "--period-seconds", "1").returncode == 0
    r = run_cli("aggregator", "report", "--shared", str(shared), "--period", "list")
    assert r.returncode == 0 and "20260101T000000Z  restated: earlier versions 1 kept" in r.stdout, r.stdout
    iso = run_cli("aggregator", "report", "--shared", str(shared), "--period", "2026-01-01T00:00:00Z", "--format", "json")
    pid = run_cli("aggregator", "report", "--shared", str(shared), "--period", "20260101T000000Z", "--format", "json")
    assert iso.returncode == 0 and iso.stdout == pid.stdout
    r = run_cli("aggregator", "report", "--shared", str(shared), "--period", "2026-01-01T05:00:00Z")
    errors = [x for x in r.stderr.splitlines() if x.startswith("Error:")]
    assert r.returncode == 1 and len(errors) == 1 and "no period starts at 20260101T050000Z" in errors[0]
    assert "nearest: 20260101T000001Z" in errors[0]


def test_status_marks_a_node_whose_windows_are_being_quarantined(shared):
    """Old code showed such a node as finished, and nothing else."""
    r = run_cli("collector", "run", "--shared", str(shared), "--node", "n1", "--source",
                "synthetic:seed=93,packets=5000,hosts=100", "--window-seconds", "60")
    assert r.returncode == 0, r.stderr
    assert run_cli("aggregator", "run", "--shared", str(shared), "--once", "--period-seconds", "10").returncode == 0
    st = run_cli("aggregator", "status", "--shared", str(shared))
    assert st.returncode == 0 and "windows of these nodes are being quarantined" in st.stdout and "n1 (" in st.stdout
    doc = __import__("json").loads(run_cli("aggregator", "status", "--shared", str(shared), "--format", "json").stdout)
    assert doc["nodes"]["n1"]["quarantined"] >= 1
    assert run_cli("aggregator", "status", "--shared", str(shared), "--check").returncode == 1
