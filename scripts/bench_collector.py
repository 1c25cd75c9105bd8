#!/usr/bin/env python3
"""Collector benchmark: parse -> window -> serialize -> land, in packets/s, against nfpcapd.

    python scripts/bench_collector.py                # 2M + 6M packets (a few minutes)
    python scripts/bench_collector.py --quick        # 2M only, fewer repeats, no large capture

The capture: every Ethernet/IPv4 frame of the real captures in ../shared/pcaps/real (classic
pcap, link type Ethernet), repeated in order to --packets records, with both IPv4 addresses
rewritten to heavy-tailed draws (Zipf --alpha over a pool of --pool random addresses per side,
so a 2^17-packet window holds tens of thousands of links) and the IPv4 header checksum fixed,
1 us apart in packet time.  Written as a classic little-endian microsecond pcap into a temporary
directory (never into the repository), removed at the end.  Frames keep their captured length
unless --snaplen cuts them.

Measured, on that one file, in one run (the machine is shared: compare only within a run; CPU
time is printed next to wall time because other processes steal the wall clock):

(a) whole process: ``python -m netsense.collector run --shared TMP --node b --source pcap:FILE``
    (and with ``--anonymize KEYFILE``), wall time from spawn to exit incl. interpreter start-up,
    imports, numba cache loading and landing every window; CPU time = the child's user+sys.
    The same command on a 1,000-packet capture gives the fixed start-up cost alone.
(b) steady state: in this process, after a warm-up run (numba compiled, GraphBLAS loaded, page
    cache warm), ``Collector.run`` over the whole file into a fresh shared directory, plain and
    anonymizing (a fresh Anonymizer per run, so its cache starts cold), best and median of
    --repeats; CPU = time.process_time.  Also the stage split of one steady-state run
    (parse / window / anonymize / to_matrix / serialize+pack / land), a what-if with the window
    files compressed with zstd instead of the default LZ4 (--compression zstd), and a what-if
    with pcap.read_capture's read size changed in this process only (--chunk-what-if; pcap.py is
    not modified).
(c) nfpcapd (nfdump's pcap -> flow collector): ``nfpcapd -r FILE -w OUTDIR`` on the same file,
    wall and CPU time; the ratio ours/nfpcapd in packets/s (> 1: we are faster).
(d) memory: peak RSS (VmHWM, polled from /proc/PID/status every 5 ms; not ru_maxrss, which for
    a child spawned by a large parent starts at the parent's RSS) of the whole-process collector
    on the --packets capture and on one --large-factor times larger: flat when the capture is
    streamed.

GraphBLAS runs on one thread (the collector sets it; OMP_NUM_THREADS=1 for the children too).
Targets (one core): >= 8 M packets/s plain steady state, >= 4 M packets/s anonymized.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numba as nb
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REAL = ROOT.parent / "shared" / "pcaps" / "real"
NV = 1 << 17
START_S = 1_767_225_601          # 2026-01-01T00:00:01Z: inside one 60 s slot for up to 59 M packets
ONE_THREAD = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
TARGET_PLAIN = 8e6
TARGET_ANON = 4e6

_CLASSIC = {b"\xd4\xc3\xb2\xa1": ("<", 1000), b"\xa1\xb2\xc3\xd4": (">", 1000),
            b"\x4d\x3c\xb2\xa1": ("<", 1), b"\xa1\xb2\x3c\x4d": (">", 1)}


# -- the capture ------------------------------------------------------------------------------
def real_frames(snaplen: int = 0):
    """Ethernet/IPv4 frames of the real classic captures: (blob, starts, lengths, orig lengths)."""
    if not REAL.is_dir():
        sys.exit(f"no real captures in {REAL}")
    chunks, starts, lens, origs, pos = [], [], [], [], 0
    for f in sorted(REAL.iterdir()):
        data = f.read_bytes()
        fmt = _CLASSIC.get(data[:4])
        if fmt is None or len(data) < 24:
            continue
        e = fmt[0]
        if struct.unpack_from(e + "I", data, 20)[0] & 0xFFFF != 1:   # Ethernet only
            continue
        off = 24
        while off + 16 <= len(data):
            _, _, caplen, orig = struct.unpack_from(e + "IIII", data, off)
            fr = data[off + 16: off + 16 + caplen]
            off += 16 + caplen
            if len(fr) != caplen:
                break
            if caplen < 34 or fr[12:14] != b"\x08\x00" or fr[14] >> 4 != 4:
                continue
            ihl = (fr[14] & 15) * 4
            if ihl < 20 or caplen < 14 + ihl:
                continue
            if snaplen and caplen > snaplen:
                fr = fr[:max(snaplen, 14 + ihl)]
            chunks.append(fr)
            starts.append(pos)
            lens.append(len(fr))
            origs.append(orig)
            pos += len(fr)
    return (np.frombuffer(b"".join(chunks), np.uint8), np.array(starts, np.int64), np.array(lens, np.int64),
            np.array(origs, np.int64))


@nb.njit(cache=False)
def _fill(out, blob, fstart, flen, forig, idx, t0_us, src, dst):
    """Write pcap records (16-byte header + frame) for frames ``idx``; returns bytes written."""
    p = 0
    for k in range(len(idx)):
        f = idx[k]
        n = flen[f]
        t = t0_us + k
        sec, usec = t // 1_000_000, t % 1_000_000
        for j, v in enumerate((sec, usec, n, forig[f])):
            for b in range(4):
                out[p + 4 * j + b] = (v >> (8 * b)) & 255
        p += 16
        out[p:p + n] = blob[fstart[f]:fstart[f] + n]
        q = p + 14
        s, d = src[k], dst[k]
        for b in range(4):
            out[q + 12 + b] = (s >> (24 - 8 * b)) & 255
            out[q + 16 + b] = (d >> (24 - 8 * b)) & 255
        out[q + 10] = 0
        out[q + 11] = 0
        ihl = (out[q] & 15) * 4
        c = 0
        for b in range(0, ihl, 2):
            c += (np.int64(out[q + b]) << 8) | np.int64(out[q + b + 1])
        while c >> 16:
            c = (c & 0xFFFF) + (c >> 16)
        c = ~c & 0xFFFF
        out[q + 10] = c >> 8
        out[q + 11] = c & 255
        p += n
    return p


def make_capture(path: Path, packets: int, *, seed: int = 1, alpha: float = 1.3, pool: int = 1 << 20,
                 snaplen: int = 0, frames=None) -> dict:
    """Write the benchmark capture (see the module docstring); returns a summary."""
    blob, fstart, flen, forig = frames if frames is not None else real_frames(snaplen)
    rng = np.random.default_rng(seed)
    spool = rng.integers(1, 0xFFFFFFFF, size=pool, dtype=np.uint64).astype(np.uint32)
    dpool = rng.integers(1, 0xFFFFFFFF, size=pool, dtype=np.uint64).astype(np.uint32)
    nbytes, chunk = 24, 1 << 18
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for k0 in range(0, packets, chunk):
            n = min(chunk, packets - k0)
            idx = np.arange(k0, k0 + n, dtype=np.int64) % len(flen)
            src = spool[(rng.zipf(alpha, n) - 1) % pool]
            dst = dpool[(rng.zipf(alpha, n) - 1) % pool]
            out = np.empty(int(16 * n + flen[idx].sum()), np.uint8)
            used = _fill(out, blob, fstart, flen, forig, idx, START_S * 1_000_000 + k0, src, dst)
            f.write(memoryview(out[:used]))
            nbytes += used
    return {"packets": packets, "bytes": nbytes, "frames": len(flen)}


# -- measuring ----------------------------------------------------------------------------------
def _vmhwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def timed_process(cmd: list[str], cwd: Path = ROOT, env=None) -> dict:
    """Run ``cmd``; wall time, the child's CPU time (wait4) and its peak RSS (VmHWM polled)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, env=env or ONE_THREAD, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = [0]
    done = threading.Event()

    def poll():
        while not done.is_set():
            v = _vmhwm_kib(p.pid)
            if v:
                peak[0] = max(peak[0], v)
            done.wait(0.005)

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    done.set()
    t.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    p.stdout.close()
    text = out.decode(errors="replace")
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {p.returncode}:\n{text[-3000:]}")
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "user": ru.ru_utime, "sys": ru.ru_stime,
            "hwm_mib": peak[0] / 1024, "output": text}


def collector_cmd(shared: Path, capture: Path, key: Path | None) -> list[str]:
    cmd = [sys.executable, "-m", "netsense.collector", "run", "--shared", str(shared), "--node", "b",
           "--source", f"pcap:{capture}", "-q"]
    return cmd + (["--anonymize", str(key)] if key else [])


def whole_process(tmp: Path, capture: Path, key: Path | None) -> dict:
    shared = Path(tempfile.mkdtemp(prefix="shared-", dir=tmp))
    try:
        r = timed_process(collector_cmd(shared, capture, key))
        r["windows"] = len(list((shared / "nodes" / "b").glob("*.nsw")))
        return r
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def steady_state(tmp: Path, capture: Path, key: Path | None, stages: bool = False,
                 compression: str = "lz4") -> dict:
    """One in-process ``Collector.run`` over the whole capture into a fresh shared directory."""
    from netsense import winfile
    from netsense.collector import run as runmod
    from netsense.collector.run import Collector, CollectorConfig

    anonymizer = None
    if key is not None:
        from netsense.collector.anonymize import Anonymizer

        anonymizer = Anonymizer.from_keyfile(key, create=False)  # fresh: its cache starts cold
    shared = Path(tempfile.mkdtemp(prefix="shared-", dir=tmp))
    cfg = CollectorConfig(shared=shared, node="b", source=f"pcap:{capture}", compression=compression)
    col = Collector(cfg, anonymizer=anonymizer)
    undo = []
    acc: dict[str, list[float]] = {}
    if stages:
        undo = _instrument(col, anonymizer, runmod, winfile, acc, compression)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        summary = col.run(threading.Event())
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        for u in undo:
            u()
        shutil.rmtree(shared, ignore_errors=True)
    assert summary.state == "finished", summary
    return {"wall": wall, "cpu": cpu, "packets": summary.packets, "records": summary.records,
            "windows": summary.windows_landed, "stages": acc}


def _instrument(col, anonymizer, runmod, winfile, acc, compression) -> list:
    """Time the stages of one run: thread CPU and wall per stage (main thread; landing on its own)."""
    def clock(name, fn, cpu=time.thread_time):
        def timed(*a, **kw):
            t, c = time.perf_counter(), cpu()
            try:
                return fn(*a, **kw)
            finally:
                s = acc.setdefault(name, [0.0, 0.0, 0])
                s[0] += cpu() - c
                s[1] += time.perf_counter() - t
                s[2] += 1
        return timed

    undo = []
    src = col.source
    orig_batches = src.batches

    def batches(stop):
        it = iter(orig_batches(stop))
        nxt = clock("parse (pcap.read_capture)", lambda: next(it, None))
        while True:
            rec = nxt()
            if rec is None:
                return
            yield rec
    col.source = dataclasses.replace(src, batches=batches)
    undo.append(lambda: setattr(col, "source", src))
    orig_feed = runmod.Windower.feed
    runmod.Windower.feed = clock("window (Windower.feed)", orig_feed)
    undo.append(lambda: setattr(runmod.Windower, "feed", orig_feed))
    orig_tm = runmod.to_matrix
    runmod.to_matrix = clock("to_matrix (sort, count, import)", orig_tm)
    undo.append(lambda: setattr(runmod, "to_matrix", orig_tm))
    orig_ser = winfile.serialize
    winfile.serialize = clock(f"serialize (GxB {compression}) + sha256", orig_ser)
    undo.append(lambda: setattr(winfile, "serialize", orig_ser))
    if anonymizer is not None:
        orig_an = anonymizer.anonymize
        anonymizer.anonymize = clock("  of which anonymize", orig_an)
        undo.append(lambda: setattr(anonymizer, "anonymize", orig_an))
    if hasattr(col, "_write") and hasattr(col, "settle"):  # landing on its own thread (collector/run.py)
        col._write = clock("land (write+fsync+rename), own thread", col._write)
        col.settle = clock("waiting for landing (main thread)", col.settle)
    return undo


def nfpcapd(tmp: Path, capture: Path) -> dict:
    out = Path(tempfile.mkdtemp(prefix="nfpcapd-", dir=tmp))
    try:
        r = timed_process(["nfpcapd", "-r", str(capture), "-w", str(out)], cwd=tmp)
        m = re.search(r"Processed:\s*(\d+)", r["output"])
        r["processed"] = int(m.group(1)) if m else None
        r["flow_files"] = sum(1 for f in out.rglob("nfcapd.*") if f.is_file())
        return r
    finally:
        shutil.rmtree(out, ignore_errors=True)


# -- reporting --------------------------------------------------------------------------------
def mpps(n: int, seconds: float) -> str:
    return f"{n / seconds / 1e6:6.2f} M/s" if seconds > 0 else "   inf"


def summarize(runs: list[dict], n: int) -> dict:
    walls, cpus = [r["wall"] for r in runs], [r["cpu"] for r in runs]
    return {"wall_best": min(walls), "wall_med": statistics.median(walls), "cpu_best": min(cpus),
            "cpu_med": statistics.median(cpus), "n": n}


def line(label: str, s: dict) -> str:
    n = s["n"]
    return (f"  {label:<34} wall {s['wall_best']:7.3f} s best ({mpps(n, s['wall_best'])}), "
            f"median {s['wall_med']:7.3f} s ({mpps(n, s['wall_med'])}) | CPU {s['cpu_best']:7.3f} s best "
            f"({mpps(n, s['cpu_best'])}), median {s['cpu_med']:7.3f} s ({mpps(n, s['cpu_med'])})")


def verdict(value: float, target: float) -> str:
    return f"{value / 1e6:.2f} M packets/s {'>=' if value >= target else '<'} target {target / 1e6:.0f} M: " + (
        "met" if value >= target else "NOT met")


# -- main -------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=2_000_000, help="records in the main capture (>= 2M)")
    ap.add_argument("--large-factor", type=float, default=3.0,
                    help="the memory check's second capture is this many times larger (2-4); 0 skips it")
    ap.add_argument("--repeats", type=int, default=5, help="runs per measurement (best and median printed)")
    ap.add_argument("--alpha", type=float, default=1.3, help="Zipf exponent of the rewritten addresses")
    ap.add_argument("--pool", type=int, default=1 << 20, help="addresses per side the Zipf draws pick from")
    ap.add_argument("--snaplen", type=int, default=0, help="cut frames to this many bytes (0: as captured)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tmp", type=Path, default=None, help="where the temporary directory goes (default: $TMPDIR)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (captures, key)")
    ap.add_argument("--quick", action="store_true", help="2 repeats, no large capture")
    ap.add_argument("--chunk-what-if", default="2",
                    help="comma-separated pcap read sizes in MiB to also try in-process (monkeypatched "
                         "read_capture default, not a change to pcap.py); empty skips")
    ap.add_argument("--no-nfpcapd", action="store_true")
    ap.add_argument("--pin", type=int, default=None, metavar="CPU",
                    help="pin this process and its children (collectors, nfpcapd) to one CPU")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.large_factor = 2, 0
    if args.packets < 2_000_000 and not args.quick:
        print(f"note: --packets {args.packets} is below the 2M the issue asks for")
    tmp = Path(tempfile.mkdtemp(prefix="netsense-bench-collector-", dir=args.tmp))
    if tmp.resolve().is_relative_to(ROOT.resolve()):
        sys.exit("refusing to write captures into the repository; pass --tmp elsewhere")
    os.environ["OMP_NUM_THREADS"] = "1"
    if args.pin is not None:
        os.sched_setaffinity(0, {args.pin})
    try:
        run_bench(args, tmp)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run_bench(args, tmp: Path) -> None:
    import graphblas as gb

    from netsense.collector.anonymize import Anonymizer

    gb.ss.config["nthreads"] = 1
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, numba {nb.__version__}, "
          f"python-graphblas {gb.__version__}; {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; temp dir {tmp}")
    t = time.perf_counter()
    frames = real_frames(args.snaplen)
    cap = tmp / "bench.pcap"
    info = make_capture(cap, args.packets, seed=args.seed, alpha=args.alpha, pool=args.pool, snaplen=args.snaplen,
                        frames=frames)
    n = info["packets"]
    print(f"capture: {n:,} records ({info['bytes'] / 1e6:,.0f} MB, {info['bytes'] / n:.0f} B/record incl. "
          f"the 16-byte record header) from {info['frames']:,} Ethernet/IPv4 frames of {REAL}, Zipf "
          f"alpha={args.alpha} over {args.pool:,} addresses per side; built in {time.perf_counter() - t:.1f} s")
    key = tmp / "bench.key"
    Anonymizer.from_keyfile(key, create=True)
    warm = tmp / "warm.pcap"
    make_capture(warm, 300_000, seed=args.seed + 1, alpha=args.alpha, pool=args.pool, snaplen=args.snaplen,
                 frames=frames)
    tiny = tmp / "tiny.pcap"
    make_capture(tiny, 1000, seed=args.seed + 3, alpha=args.alpha, pool=args.pool, snaplen=args.snaplen,
                 frames=frames)

    # Links per window, to show the matrices are realistic (and the first window's size on disk).
    from netsense.collector.pcap import open_capture, read_capture
    from netsense.collector.window import Windower, to_matrix

    win = Windower()
    with open_capture(cap) as f:
        w = next(x for rec in read_capture(f) for x in win.feed(rec))
    a = to_matrix(w.src, w.dst)
    print(f"first window: {w.packets:,} packets, {a.nvals:,} links, {len(np.unique(w.src)):,} sources, "
          f"{len(np.unique(w.dst)):,} destinations")

    # Warm-up: numba compiles (or loads its cache) for children and for this process.
    for k in (None, key):
        whole_process(tmp, warm, k)
        steady_state(tmp, warm, k)
    with open(cap, "rb") as f:  # page cache warm for everyone
        while f.read(64 << 20):
            pass

    print(f"\n(a) whole process: python -m netsense.collector run --shared TMP --node b --source pcap:FILE "
          f"[--anonymize KEY], {args.repeats} runs each, alternating")
    wp = {None: [], key: []}
    start = {None: [], key: []}
    for _ in range(args.repeats):
        for k in (None, key):
            wp[k].append(whole_process(tmp, cap, k))
            start[k].append(whole_process(tmp, tiny, k))
    assert all(r["windows"] == -(-n // NV) for rs in wp.values() for r in rs), "windows missing"
    a_plain, a_anon = summarize(wp[None], n), summarize(wp[key], n)
    print(line("plain", a_plain))
    print(line("anonymized", a_anon))
    for label, k in (("plain", None), ("anonymized", key)):
        st = summarize(start[k], 1000)
        print(f"  {label:<10} start-up alone (the same command on a 1,000-packet capture): wall "
              f"{st['wall_best']:.3f} s best, {st['wall_med']:.3f} s median; CPU {st['cpu_best']:.3f} s best, "
              f"{st['cpu_med']:.3f} s median (interpreter, imports, numba cache, GraphBLAS)")

    print(f"\n(b) steady state: Collector.run in-process after warm-up, whole file, {args.repeats} runs each, "
          f"alternating (CPU = process CPU incl. the landing thread)")
    ss = {None: [], key: []}
    for _ in range(args.repeats):
        for k in (None, key):
            ss[k].append(steady_state(tmp, cap, k))
    b_plain, b_anon = summarize(ss[None], n), summarize(ss[key], n)
    print(line("plain", b_plain))
    print(line("anonymized", b_anon))
    for label, k in (("plain", None), ("anonymized", key)):
        r = steady_state(tmp, cap, k, stages=True)
        print(f"  stages of one {label} run ({r['wall']:.3f} s wall, {r['cpu']:.3f} s CPU), per stage: "
              f"thread CPU / wall, ms:")
        for name, (c, wl, calls) in r["stages"].items():
            print(f"    {name:<42} {c * 1e3:8.1f} / {wl * 1e3:8.1f}  ({calls} calls)")
    runs_z = [steady_state(tmp, cap, None, compression="zstd") for _ in range(args.repeats)]
    print(line("what-if --compression zstd, plain", summarize(runs_z, n)))
    for mib in filter(None, (x.strip() for x in args.chunk_what_if.split(","))):
        from netsense.collector import pcap

        saved = pcap.read_capture.__defaults__
        pcap.read_capture.__defaults__ = (int(float(mib) * (1 << 20)),) + saved[1:]
        try:
            steady_state(tmp, warm, None)
            runs = [steady_state(tmp, cap, k) for _ in range(args.repeats) for k in (None,)]
            runs_a = [steady_state(tmp, cap, key) for _ in range(max(1, args.repeats // 2))]
        finally:
            pcap.read_capture.__defaults__ = saved
        print(line(f"what-if read_capture {mib} MiB, plain", summarize(runs, n)))
        print(line(f"what-if read_capture {mib} MiB, anon", summarize(runs_a, n)))

    if not args.no_nfpcapd and shutil.which("nfpcapd"):
        print(f"\n(c) nfpcapd -r FILE -w OUTDIR (nfdump {_nfdump_version()}), {args.repeats} runs")
        nf = [nfpcapd(tmp, cap) for _ in range(args.repeats)]
        c_nf = summarize(nf, n)
        print(line("nfpcapd", c_nf) + f"  [processed {nf[0]['processed']}, peak RSS {nf[0]['hwm_mib']:.0f} MiB]")
        for label, ours in (("whole process, plain", a_plain), ("whole process, anonymized", a_anon),
                            ("steady state, plain", b_plain), ("steady state, anonymized", b_anon)):
            print(f"  ratio ours/nfpcapd in packets/s, {label:<26}: wall {c_nf['wall_med'] / ours['wall_med']:6.1f}x"
                  f"  CPU {c_nf['cpu_med'] / ours['cpu_med']:6.1f}x  (medians)")
    else:
        print("\n(c) nfpcapd: skipped (not installed or --no-nfpcapd)")

    print("\n(d) memory: peak RSS (VmHWM) of the whole-process collector")
    small = {}
    for label, k in (("plain", None), ("anonymized", key)):
        small[k] = max(x["hwm_mib"] for x in wp[k])
        print(f"  {n:>11,} records, {label:<10}: {small[k]:6.0f} MiB ({info['bytes'] / 1e9:.1f} GB capture; "
              f"max over {len(wp[k])} runs)")
    if args.large_factor:
        big = tmp / "bench-large.pcap"
        nbig = int(n * args.large_factor)
        binfo = make_capture(big, nbig, seed=args.seed + 2, alpha=args.alpha, pool=args.pool,
                             snaplen=args.snaplen, frames=frames)
        cap.unlink()   # only one big file on disk at a time
        for label, k in (("plain", None), ("anonymized", key)):
            r = whole_process(tmp, big, k)
            print(f"  {nbig:>11,} records, {label:<10}: {r['hwm_mib']:6.0f} MiB ({binfo['bytes'] / 1e9:.1f} GB "
                  f"capture; {r['hwm_mib'] / small[k]:.2f}x the RSS for {args.large_factor:g}x the packets; "
                  f"{r['wall']:.2f} s wall, {r['cpu']:.2f} s CPU incl. start-up)")
        big.unlink()
        from netsense.collector import pcap

        print(f"  (streamed: read {pcap.read_capture.__defaults__[0] >> 10} KiB at a time; each window is "
              f"encoded, landed and freed, so the peak is start-up + numba/GraphBLAS + a few windows)")

    print("\nsummary (medians; targets are steady state, one core):")
    print(f"  plain      steady state: wall {verdict(n / b_plain['wall_med'], TARGET_PLAIN)}; "
          f"CPU {verdict(n / b_plain['cpu_med'], TARGET_PLAIN)}")
    print(f"  anonymized steady state: wall {verdict(n / b_anon['wall_med'], TARGET_ANON)}; "
          f"CPU {verdict(n / b_anon['cpu_med'], TARGET_ANON)}")


def _nfdump_version() -> str:
    try:
        out = subprocess.run(["nfdump", "-V"], capture_output=True, text=True, timeout=10).stdout
        return out.strip().split()[-1] if out.strip() else "?"
    except Exception:
        return "?"


if __name__ == "__main__":
    main()
