#!/usr/bin/env python3
"""Aggregator benchmark: throughput vs. a straightforward baseline, sustained landing rates, RSS.

    python scripts/bench_aggregator.py            # everything (several minutes)
    python scripts/bench_aggregator.py --quick    # a smaller run of every section

Sections (all in one run, on this machine, compared only within the run):
1. Throughput: F window files of 2^17 packets (synthetic heavy-tailed windows with tens of
   thousands of links, plus windows cut from the real captures in ../shared/pcaps/real when
   present) are consumed by `aggregator run --once` — validation, ledger, checkpoints, reports,
   archive included — and, on the same files, by the Graph Challenge style baseline: deserialize
   each matrix and add it into a running sum one by one, then compute the nine analytics. Both
   are separate processes pinned to one GraphBLAS thread. Prints files/s, packets/s, peak RSS,
   the ratio baseline_time / aggregator_time, and checks both give the same analytics.
2. Sustained rate and scaling curve: a feeder lands pre-built window files (renamed into
   nodes/<node>/, so the feeder costs almost nothing) for N nodes at one window per node per
   second while an aggregator daemon runs; prints consumed files/s, packets/s and the
   landing-to-report latency p50/p99 for N = 1 .. 256 (the 64-node row is the DBOS target:
   >= 8.4 M packets/s with p99 < 1 s).
3. Memory: RSS of the aggregator sampled while it consumes >= 10,000 one-second windows spread
   over >= 1,000 ten-second periods: it must not grow with the number of periods.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netsense import winfile  # noqa: E402
from netsense.layout import WindowName  # noqa: E402
from netsense.collector.synthetic import SyntheticSpec, generate  # noqa: E402
from netsense.collector.window import to_matrix  # noqa: E402

NV = 1 << 17
BASE_T = 1_767_225_600
AGG_LOG = os.environ.get("NETSENSE_BENCH_AGG_ARGS", "-q").split()
ONE_THREAD = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


# -- window pool ------------------------------------------------------------------------------
def synthetic_pool(n: int) -> list[tuple[winfile.Payload, int]]:
    pool = []
    for seed in range(n):
        spec = SyntheticSpec(seed=1000 + seed, packets=NV, hosts=200_000, alpha=1.3, batch=NV)
        rec = next(generate(spec))
        pool.append((winfile.serialize({"A": to_matrix(rec.src, rec.dst)}), NV))
    return pool


def capture_pool() -> list[tuple[winfile.Payload, int]]:
    """Windows of 2^17 packets cut from the real captures (all of them, concatenated)."""
    real = ROOT.parent / "shared" / "pcaps" / "real"
    if not real.is_dir():
        return []
    from netsense.collector.pcap import CaptureError, open_capture, read_capture

    src, dst = [], []
    for f in sorted(real.iterdir()):
        try:
            with open_capture(f) as fh:
                for rec in read_capture(fh):
                    ok = rec.reason == 0
                    src.append(rec.src[ok])
                    dst.append(rec.dst[ok])
        except (CaptureError, OSError):
            continue
    if not src:
        return []
    s, d = np.concatenate(src), np.concatenate(dst)
    return [(winfile.serialize({"A": to_matrix(s[i:i + NV], d[i:i + NV])}), len(s[i:i + NV]))
            for i in range(0, len(s) - NV + 1, NV)]


def stage(directory: Path, node: str, seq: int, start: int, payload: winfile.Payload, packets: int,
          seconds: int = 1) -> Path:
    """Write one window file into ``directory`` (a staging area, not the landing folder)."""
    name = WindowName(node, start, start + seconds, "b" * 12, seq)
    header = winfile.window_header(name, source="bench", records=packets, packets=packets, skipped={},
                                   first_ts_ns=None, last_ts_ns=None, anonymization=None, created=time.time(),
                                   host="bench")
    path = directory / name.filename
    path.write_bytes(winfile.pack(header, payload))
    return path


def land_all(staged: list[Path], shared: Path) -> None:
    for p in staged:
        node = p.name.split("_", 1)[0]
        d = shared / "nodes" / node
        d.mkdir(parents=True, exist_ok=True)
        os.rename(p, d / p.name)


# -- section 1: throughput vs baseline ----------------------------------------------------------
BASELINE = r"""
import sys, time, json, os, graphblas as gb
from netsense import winfile
from netsense.aggregator.analytics import analyze
t0 = time.perf_counter()
acc = None
files = sorted(os.path.join(d, f) for d in sys.argv[1:] for f in os.listdir(d))
for path in files:
    with open(path, "rb") as fh:
        data = fh.read()
    hlen = winfile.PREFIX.unpack(data[:32])[3]
    a = gb.Matrix.ss.deserialize(memoryview(data)[32 + hlen:])
    if acc is None:
        acc = a
    else:
        acc(gb.binary.plus) << a
res = analyze(acc).as_dict()
print(json.dumps({"seconds": time.perf_counter() - t0, "files": len(files), "analytics": res}))
"""


def peak_rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_measured(cmd: list[str], cwd=ROOT) -> tuple[float, int, subprocess.CompletedProcess]:
    """Run ``cmd``; return wall seconds, peak RSS (KiB, polled from /proc) and the result."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, env=ONE_THREAD, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while p.poll() is None:
        peak = max(peak, peak_rss_kib(p.pid))
        time.sleep(0.05)  # sampling interval for the RSS probe
    out, err = p.communicate()
    return time.perf_counter() - t0, peak, subprocess.CompletedProcess(cmd, p.returncode, out, err)


def throughput(work: Path, pool, files: int, nodes: int) -> dict:
    shared = work / "tp"
    staging = work / "tp-staging"
    staging.mkdir(parents=True)
    staged = []
    for i in range(files):
        node = f"n{i % nodes:03d}"
        payload, packets = pool[i % len(pool)]
        staged.append(stage(staging, node, i // nodes, BASE_T + i // nodes, payload, packets))
    packets = sum(pool[i % len(pool)][1] for i in range(files))
    b_wall, b_rss, b = run_measured([sys.executable, "-c", BASELINE, str(staging)])
    if b.returncode:
        raise SystemExit(f"baseline failed: {b.stderr}")
    base = json.loads(b.stdout)
    land_all(staged, shared)
    a_wall, a_rss, a = run_measured([sys.executable, "-m", "netsense.aggregator", "run", "--shared", str(shared), "--once",
                                     "-q"])
    if a.returncode:
        raise SystemExit(f"aggregator failed: {a.stderr}")
    ours = json.loads((shared / "reports" / "cumulative.json").read_text())["analytics"]
    same = ours == base["analytics"]
    shutil.rmtree(shared)
    shutil.rmtree(staging)
    return {"files": files, "packets": packets, "baseline_s": b_wall, "baseline_rss_mib": b_rss / 1024,
            "aggregator_s": a_wall, "aggregator_rss_mib": a_rss / 1024, "ratio": b_wall / a_wall,
            "same_analytics": same, "unique_links": ours["unique_links"]}


# -- section 2: sustained landing ------------------------------------------------------------------
def sustained(work: Path, pool, nodes: int, seconds: int, report_seconds: float, csv: Path | None = None) -> dict:
    shared = work / f"sus-{nodes}"
    staging = work / f"sus-{nodes}-staging"
    staging.mkdir(parents=True)
    plan = []  # (due offset, path)
    k = 0
    for sec in range(seconds):
        for n in range(nodes):
            payload, packets = pool[k % len(pool)]
            k += 1
            p = stage(staging, f"n{n:03d}", sec, BASE_T + sec, payload, packets)
            plan.append((sec + n / nodes, p, packets))
    (shared / "nodes").mkdir(parents=True)
    # Flush the GBs of staged files now: otherwise the kernel writes them back during the first
    # seconds of the feed and the aggregator's fsyncs wait behind that, which is the bench, not it.
    os.sync()
    agg = subprocess.Popen([sys.executable, "-m", "netsense.aggregator", "run", "--shared", str(shared), *AGG_LOG,
                            "--rescan-seconds", "0.5", "--period-seconds", "60"], cwd=ROOT, env=ONE_THREAD)
    lease = shared / "aggregator" / "lease.json"
    deadline = time.monotonic() + 60
    while not lease.exists() and time.monotonic() < deadline:
        time.sleep(0.02)  # waiting for start-up, bounded by the deadline
    time.sleep(1.0)  # let the first (empty) scan and reports settle before timing starts
    landed = {}
    report_times = []  # (time seen, generation)
    cum = shared / "reports" / "cumulative.json"
    last_mtime = 0.0
    t0 = time.monotonic()
    i = 0

    def poll_report():
        nonlocal last_mtime
        try:
            st = cum.stat()
        except FileNotFoundError:
            return
        if st.st_mtime != last_mtime:
            last_mtime = st.st_mtime
            with open(cum) as fh:
                m = re.search(r'"generation": (\d+)', fh.read(400))
            if m:
                report_times.append((time.monotonic(), int(m.group(1))))

    while i < len(plan):
        now = time.monotonic() - t0
        while i < len(plan) and plan[i][0] <= now:
            _, p, _ = plan[i]
            node = p.name.split("_", 1)[0]
            d = shared / "nodes" / node
            d.mkdir(exist_ok=True)
            os.rename(p, d / p.name)
            landed[WindowName.parse(p.name).identity] = time.monotonic()
            i += 1
        poll_report()
        time.sleep(0.005)  # feeder tick
    end_feed = time.monotonic()
    total = len(plan)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        poll_report()
        st = shared / "aggregator" / "status.json"
        try:
            if json.loads(st.read_text())["windows_consumed"] >= total and report_times and \
                    report_times[-1][1] >= _generations(shared)[-1][0]:
                break
        except (OSError, ValueError, KeyError, IndexError):
            pass
        time.sleep(0.01)
    done = time.monotonic()
    rss = peak_rss_kib(agg.pid)
    agg.terminate()
    agg.wait(60)
    gens = _generations(shared)
    gen_of = {ident: g for g, ids in gens for ident in ids}
    lat, rows, reported_at = [], [], []
    for ident, t_land in landed.items():
        g = gen_of.get(ident)
        t_rep = next((t for t, rg in report_times if rg >= g), None) if g is not None else None
        if t_rep is not None:
            lat.append(t_rep - t_land)
            reported_at.append(t_rep - t0)
            rows.append(f"{nodes},{ident},{t_land - t0:.3f},{g},{t_rep - t_land:.3f}")
    if csv:
        with open(csv, "a") as fh:
            fh.write("".join(r + "\n" for r in rows))
    packets = sum(pk for _, _, pk in plan)
    shutil.rmtree(shared)
    shutil.rmtree(staging)
    lat = np.array(lat) if lat else np.array([np.nan])
    elapsed = done - t0
    # Steady rate: windows reported between the 2nd second and the end of the feed, per second
    # (the overall figure also counts start-up and the drain of the last windows).
    feed = end_feed - t0
    rep = np.array(reported_at)
    steady = ((rep >= 2.0) & (rep <= feed)).sum() / max(feed - 2.0, 1e-9) * NV
    return {"nodes": nodes, "windows": total, "measured": int(np.isfinite(lat).sum()),
            "files_per_s": total / elapsed, "packets_per_s": packets / elapsed, "steady_packets_per_s": steady,
            "offered_packets_per_s": packets / max(end_feed - t0, 1e-9),
            "p50_s": float(np.nanpercentile(lat, 50)), "p99_s": float(np.nanpercentile(lat, 99)),
            "rss_mib": rss / 1024}


def _generations(shared: Path) -> list[tuple[int, list[str]]]:
    out = []
    try:
        with open(shared / "aggregator" / "ledger.jsonl") as fh:
            for line in fh:
                rec = json.loads(line)
                out.append((rec["gen"], [w[0] for w in rec["windows"]]))
    except (OSError, ValueError):
        pass
    return out


# -- section 3: RSS over many periods ----------------------------------------------------------------
def memory(work: Path, pool, windows: int) -> list[tuple[int, float]]:
    shared = work / "mem"
    staging = work / "mem-staging"
    staging.mkdir(parents=True)
    staged = [stage(staging, "m1", i, BASE_T + i, *pool[i % len(pool)]) for i in range(windows)]
    land_all(staged, shared)
    p = subprocess.Popen([sys.executable, "-m", "netsense.aggregator", "run", "--shared", str(shared), "--once", "-q",
                          "--period-seconds", "10", "--grace", "0"], cwd=ROOT, env=ONE_THREAD)
    samples, next_mark = [], windows // 10
    status = shared / "aggregator" / "status.json"
    while p.poll() is None:
        try:
            consumed = json.loads(status.read_text())["windows_consumed"]
        except (OSError, ValueError, KeyError):
            consumed = 0
        if consumed >= next_mark:
            rss = 0
            try:
                rss = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{p.pid}/status").read_text()).group(1))
            except (OSError, AttributeError):
                pass
            samples.append((consumed, rss / 1024))
            next_mark += windows // 10
        time.sleep(0.05)  # sampling interval
    shutil.rmtree(shared)
    shutil.rmtree(staging)
    return samples


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes for a fast look")
    ap.add_argument("--work", type=Path, help="scratch directory (default: a temporary one)")
    ap.add_argument("--files", type=int, help="files for the throughput section")
    ap.add_argument("--seconds", type=int, help="seconds of landing per sustained run")
    ap.add_argument("--curve", default="1,2,4,8,16,32,64,256", help="node counts for the scaling curve")
    ap.add_argument("--rss-windows", type=int, help="windows for the memory section (>= 10000 by default)")
    ap.add_argument("--latency-csv", type=Path, help="append every window's landing-to-report latency here "
                                                     "(nodes,identity,landed_at,generation,latency)")
    args = ap.parse_args()
    files = args.files or (256 if args.quick else 2048)
    seconds = args.seconds or (5 if args.quick else 15)
    rss_windows = args.rss_windows or (2000 if args.quick else 10000)
    work = args.work or Path(tempfile.mkdtemp(prefix="netsense-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} CPUs, GraphBLAS pinned to 1 thread (OMP_NUM_THREADS=1); scratch {work}")
    t = time.perf_counter()
    pool = synthetic_pool(8 if args.quick else 32)
    caps = capture_pool()
    pool = pool + caps
    print(f"window pool: {len(pool) - len(caps)} synthetic + {len(caps)} real-capture windows of 2^17 packets, "
          f"{np.mean([p[0].table['blobs'][0]['nvals'] for p in pool]):,.0f} links each on average "
          f"({time.perf_counter() - t:.1f}s)")

    print("\n== 1. throughput: aggregator --once vs. deserialize-and-add baseline (same files) ==")
    r = throughput(work, pool, files, 64)
    print(f"files {r['files']:,}  packets {r['packets']:,}  cumulative links {r['unique_links']:,}")
    print(f"baseline   {r['baseline_s']:7.2f} s  {r['files'] / r['baseline_s']:8.1f} files/s  "
          f"{r['packets'] / r['baseline_s'] / 1e6:7.2f} M packets/s  peak RSS {r['baseline_rss_mib']:.0f} MiB")
    print(f"aggregator {r['aggregator_s']:7.2f} s  {r['files'] / r['aggregator_s']:8.1f} files/s  "
          f"{r['packets'] / r['aggregator_s'] / 1e6:7.2f} M packets/s  peak RSS {r['aggregator_rss_mib']:.0f} MiB")
    print(f"ratio baseline/aggregator = {r['ratio']:.2f}  (>= 1.0: the aggregator, doing validation, ledger, "
          f"checkpoints and reports, is at least as fast)   same analytics: {r['same_analytics']}")

    print("\n== 2. sustained landing, one 2^17-packet window per node per second ==")
    print("offered: M packets/s landed by the feeder; Mpkt/s: consumed over the whole run (start-up and the "
          "final drain included); steady: M packets/s reported from second 2 to the end of the feed; "
          "latency: landing -> first cumulative report that includes the window")
    print(f"{'nodes':>5} {'windows':>8} {'files/s':>8} {'Mpkt/s':>8} {'steady':>8} {'offered':>8} {'p50 s':>7} "
          f"{'p99 s':>7} {'RSS MiB':>8}")
    for n in [int(x) for x in args.curve.split(",") if x]:
        s = sustained(work, pool, n, seconds, 0.5, args.latency_csv)
        print(f"{s['nodes']:>5} {s['windows']:>8} {s['files_per_s']:>8.1f} {s['packets_per_s'] / 1e6:>8.2f} "
              f"{s['steady_packets_per_s'] / 1e6:>8.2f} {s['offered_packets_per_s'] / 1e6:>8.2f} {s['p50_s']:>7.3f} "
              f"{s['p99_s']:>7.3f} {s['rss_mib']:>8.0f}")
        if s["nodes"] == 64:
            ok = s["steady_packets_per_s"] >= 0.97 * s["offered_packets_per_s"] and s["p99_s"] < 1.0
            print(f"      64-node target (64 x 2^17 packets/s = 8.39 M/s kept up with, p99 < 1 s): "
                  f"{'met' if ok else 'NOT met'}")

    print(f"\n== 3. RSS while consuming {rss_windows:,} one-second windows in {rss_windows // 10:,} ten-second periods ==")
    for consumed, rss in memory(work, pool, rss_windows):
        print(f"  after {consumed:>6,} windows: RSS {rss:7.1f} MiB")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if r["same_analytics"] else 1


if __name__ == "__main__":
    sys.exit(main())
