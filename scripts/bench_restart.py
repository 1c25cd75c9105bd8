#!/usr/bin/env python3
"""Aggregator restart after N consumed windows: wall time and peak RSS, against an empty share.

    python scripts/bench_restart.py                      # N = 10,000, 100,000, 1,000,000
    python scripts/bench_restart.py --quick              # N = 10,000 only
    python scripts/bench_restart.py --windows 10000,100000 --nodes 1000 --period-seconds 60

What it does, for each N (a fresh share each, removed after its row unless --keep):

1. Builds a share that has consumed N windows, fast: the real transaction engine
   (``netsense.aggregator.daemon.Aggregator``: ``State.apply_batch``, ``State.finalize``,
   ``Aggregator.commit`` with its ledger lines, period files, reports and background
   checkpoints, compaction) is driven in-process, bypassing only the file intake (no window
   files are written, read or archived). Windows are spread over ``--nodes`` nodes with
   1-second slots, so periods advance and become final as in a deployment (1000 nodes x one
   window per second = 60,000 windows per 60 s period). Each window holds ``--links`` links
   drawn Zipf(``--zipf``) over ``--hosts`` addresses per side, so links overlap across windows
   and the cumulative sum grows sub-linearly. It stops the way the daemon does at exit (a
   checkpoint when the ledger has lines to replay, then the lease released). Building time is
   printed; it is not the measured figure.
2. Measures a restart as a real process: ``python -m netsense.aggregator run --shared DIR --once
   -q --period-seconds P`` with nothing new to consume; wall time and peak RSS (``/usr/bin/time
   -f %M``), ``--repeats`` times (3), median. Records the size of
   ``aggregator/ledger.jsonl``, of the newest checkpoint and its cumulative base, the number of
   files in ``aggregator/periods/`` and the cumulative links.
3. The peer, in the same run, interleaved with the runs above: the same restart on an empty,
   initialized share (the fixed cost of starting Python, numba, GraphBLAS). Prints one row per
   N with the absolute figures, the ratios restart(N)/restart(empty) and the differences
   (+s, +MiB). A restart that fails is a row saying so, with the error. One extra restart per
   N runs under cProfile (not timed) and prints where its time goes (imports, warm-up, ledger,
   checkpoint reads, the scan of aggregator/periods/, the recomputed analytics, the reports).

GraphBLAS is pinned to one thread (OMP_NUM_THREADS=1), as in the other benches.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASE_T = 1_767_225_600  # 2026-01-01T00:00:00Z
ONE_THREAD = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _import_engine():
    """The engine's imports; other work may be editing the product: retry a transient import error."""
    for attempt in range(5):
        try:
            import graphblas as gb

            from netsense import winfile
            from netsense.aggregator.config import AggregatorConfig
            from netsense.aggregator.daemon import Aggregator
            from netsense.aggregator.ledger import last_epoch
            from netsense.aggregator.loop import release_free_memory
            from netsense.aggregator.sums import Sums
            from netsense.layout import WindowName
            return dict(gb=gb, winfile=winfile, AggregatorConfig=AggregatorConfig, Aggregator=Aggregator,
                        last_epoch=last_epoch, release_free_memory=release_free_memory, Sums=Sums,
                        WindowName=WindowName)
        except (ImportError, SyntaxError) as e:
            if attempt == 4:
                raise
            print(f"import failed ({e!r}); retrying in 60 s (someone may be editing the product)", flush=True)
            time.sleep(60)


# -- traffic: tiny windows with realistically overlapping links -------------------------------
class Traffic:
    """Zipf(a) over ``hosts`` addresses per side; ``links`` draws per window, deduplicated."""

    def __init__(self, hosts: int, a: float, links: int, seed: int):
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        w = np.arange(1, hosts + 1, dtype=np.float64) ** -a
        self.cdf = np.cumsum(w / w.sum())
        # distinct addresses, random order (rank -> address)
        pool = self.rng.choice(1 << 32, size=2 * hosts, replace=False).astype(np.uint64)
        self.src_addr, self.dst_addr = pool[:hosts], pool[hosts:]
        self.links = links

    def batch(self, n: int):
        """Keys and packet counts of ``n`` windows: (keys, vals, bounds) with window i at bounds[i]:bounds[i+1]."""
        m = n * self.links
        s = self.src_addr[np.minimum(np.searchsorted(self.cdf, self.rng.random(m)), len(self.cdf) - 1)]
        d = self.dst_addr[np.minimum(np.searchsorted(self.cdf, self.rng.random(m)), len(self.cdf) - 1)]
        keys = (s << np.uint64(32)) | d
        vals = self.rng.geometric(0.3, m).astype(np.uint64)
        win = np.repeat(np.arange(n, dtype=np.int64), self.links)
        order = np.lexsort((keys, win))
        keys, vals, win = keys[order], vals[order], win[order]
        first = np.ones(m, bool)
        first[1:] = (keys[1:] != keys[:-1]) | (win[1:] != win[:-1])
        starts = np.flatnonzero(first)
        keys, vals, win = keys[starts], np.add.reduceat(vals, starts), win[starts]
        bounds = np.searchsorted(win, np.arange(n + 1))
        return keys, vals, bounds


# -- building a share that has consumed N windows ---------------------------------------------------
def node_name(i: int) -> str:
    return f"n{i:04d}"


class Builder:
    """Drives the real engine in-process from window ``done`` on; stops like the daemon at exit."""

    def __init__(self, E: dict, shared: Path, nodes: int, period_seconds: int, traffic: Traffic, batch: int,
                 join_every: int):
        self.E, self.shared, self.nodes, self.ps = E, shared, nodes, period_seconds
        self.traffic, self.batch, self.join_every = traffic, batch, join_every
        self.done = 0  # windows consumed so far
        # Random 12-hex run ids, as collectors draw them (sequential ones would make the period's
        # list of window names, kept deflated in checkpoint and period-file headers, compress
        # about twice as well as a real share's).
        rng = np.random.default_rng(traffic.seed + 1)
        self.runs = [rng.bytes(6).hex() for _ in range(nodes)]
        self.commits = 0

    def build_to(self, n: int) -> dict:
        E = self.E
        E["gb"].ss.config["nthreads"] = 1
        cfg = E["AggregatorConfig"](self.shared, period_seconds=self.ps)
        agg = E["Aggregator"](cfg)
        agg.layout.ensure()
        agg.layout.ensure(agg.layout.aggregator())
        agg.lease.acquire(E["last_epoch"](agg.layout.aggregator()))
        agg.lease.start_heartbeat()  # as the daemon: background checkpoints need a fresh lease
        t0 = time.perf_counter()
        try:
            agg.recover()
            grace = cfg.grace_periods * cfg.period_seconds
            WindowName, window_header, Sums = E["WindowName"], E["winfile"].window_header, E["Sums"]
            created = time.time()
            while self.done < n:
                k = min(self.batch, n - self.done)
                keys, vals, bounds = self.traffic.batch(k)
                items, consumed, ids = [], [], {}
                for j in range(k):
                    i = self.done + j
                    sec, node = divmod(i, self.nodes)
                    name = WindowName(node_name(node), BASE_T + sec, BASE_T + sec + 1, self.runs[node], sec)
                    a, b = bounds[j], bounds[j + 1]
                    s = Sums(keys[a:b], vals[a:b])
                    packets = int(vals[a:b].sum())
                    header = window_header(name, source="bench", records=packets, packets=packets, skipped={},
                                           first_ts_ns=None, last_ts_ns=None, anonymization=None,
                                           created=created, host="bench")
                    fn = name.filename
                    items.append((header, s, fn))
                    consumed.append((name.identity, f"{i:016x}", fn))
                    ids[name.identity] = fn
                # What Aggregator.step does after the intake:
                agg.state.apply_batch(items, agg.load_final)
                known, done = agg.statuses.known_and_done(agg.state.nodes, agg.consumed, ids)
                finalized = agg.state.finalize(done, known, grace)
                agg.commit(consumed, finalized)
                self.done += k
                self.commits += 1
                if self.commits % self.join_every == 0:
                    agg.join_checkpoint()
                    E["release_free_memory"]()
                    agg.write_status()
            # The daemon's clean stop: a checkpoint so the next start replays nothing.
            agg.join_checkpoint()
            if agg.ledger.replay:
                agg.commit([], [], checkpoint=True)
                agg.write_status()
        finally:
            if agg.checkpoints.thread is not None:
                agg.checkpoints.thread.join()
            agg.lease.release()
        build_s = time.perf_counter() - t0
        links = agg.state.cumulative.nvals
        periods = len(agg.state.periods)
        del agg
        gc.collect()
        E["release_free_memory"]()
        return {"build_s": build_s, "links": links, "periods_in_memory": periods}


# -- measuring a restart ---------------------------------------------------------------------------
def restart_cmd(shared: Path, period_seconds: int) -> list[str]:
    return ["-m", "netsense.aggregator", "run", "--shared", str(shared), "--once", "-q",
            "--period-seconds", str(period_seconds)]


TIME = shutil.which("time", path="/usr/bin:/bin")


def run_child(args: list[str]) -> tuple[float, float, int, str]:
    """(wall s, peak RSS MiB, exit code, stderr) of one ``python args...`` child.

    Peak RSS comes from ``/usr/bin/time -f %M`` (its own wait4 of the child): ``os.wait4`` or
    ``RUSAGE_CHILDREN`` here would not do, because Linux carries the forking process's high-water
    mark across fork and exec, so every child would report at least this bench's own peak. Without
    /usr/bin/time, VmHWM is polled from /proc every 20 ms (what bench_aggregator does).
    """
    with tempfile.TemporaryDirectory() as td:
        err_path, rss_path = Path(td) / "err", Path(td) / "rss"
        cmd = [sys.executable, *args]
        if TIME:
            cmd = [TIME, "-f", "%M", "-o", str(rss_path), *cmd]
        with open(err_path, "w") as err:
            t0 = time.perf_counter()
            p = subprocess.Popen(cmd, cwd=ROOT, env=ONE_THREAD, stdout=subprocess.DEVNULL, stderr=err)
            peak = 0
            if TIME:
                p.wait()
            while p.poll() is None:
                peak = max(peak, _vmhwm_kib(p.pid))
                time.sleep(0.02)  # polling interval (the exit is noticed within 20 ms)
            wall = time.perf_counter() - t0
        if TIME:
            try:
                peak = int(rss_path.read_text().split()[-1])
            except (OSError, ValueError, IndexError):
                peak = 0
        return wall, peak / 1024, p.returncode, err_path.read_text()


def _vmhwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def restart(shared: Path, period_seconds: int, empty: bool = False) -> tuple[float, float, str | None]:
    """(wall s, peak RSS MiB, None) of one restart, or (wall, rss, the error's last line) if it failed."""
    for attempt in range(3):
        if empty:
            # A run on a share with an empty ledger writes a generation-0 reports/cumulative.json, and
            # the next start then refuses the share ("ledger deleted or lost", recovery.check_fresh):
            # remove it (untimed) so every peer run starts on an empty, initialized share.
            (shared / "reports" / "cumulative.json").unlink(missing_ok=True)
        wall, rss, rc, err = run_child(restart_cmd(shared, period_seconds))
        if rc == 0:
            return wall, rss, None
        transient = any(e in err for e in ("ImportError", "ModuleNotFoundError", "SyntaxError"))
        if not transient or attempt == 2:
            lines = err.strip().splitlines()
            return wall, rss, f"exit {rc}: {lines[-1] if lines else '(no message)'}"
        print("restart failed with an import error (product code being edited?); retrying in 60 s", flush=True)
        time.sleep(60)
    raise AssertionError


# Phases of a restart as cProfile names them: (label, file suffix, function).
PHASES = [
    ("imports", "<frozen importlib._bootstrap>", "_find_and_load"),
    ("numba warm_up", "aggregator/sums.py", "warm_up"),
    ("lease acquire", "aggregator/lease.py", "acquire"),
    ("recover", "aggregator/daemon.py", "recover"),
    ("  ledger load", "aggregator/ledger.py", "load"),
    ("  read checkpoint+base", "aggregator/ledger.py", "read_checkpoint"),
    ("  State.from_checkpoint (base + delta)", "aggregator/state.py", "from_checkpoint"),
    ("  tidy_period_files (scan periods/)", "aggregator/recovery.py", "tidy_period_files"),
    ("  publish (reports)", "aggregator/publish.py", "publish"),
    ("    Profile.of (analytics from scratch)", "aggregator/profile.py", "of"),
    ("step (scan nodes/)", "aggregator/daemon.py", "step"),
    ("write_status", "aggregator/daemon.py", "write_status"),
]


def profiled_restart(shared: Path, period_seconds: int, out: Path) -> tuple[float, list[tuple[str, float]]]:
    wall, _, rc, err = run_child(["-m", "cProfile", "-o", str(out), *restart_cmd(shared, period_seconds)])
    if rc:
        return wall, [("profile failed: " + err.strip().splitlines()[-1] if err.strip() else "profile failed", 0.0)]
    st = pstats.Stats(str(out))
    total = st.total_tt
    found = []
    for label, suffix, fn in PHASES:
        ct = sum(v[3] for (f, _, name), v in st.stats.items() if name == fn and f.endswith(suffix))
        found.append((label, ct))
    found.append(("total (profiled)", total))
    return wall, found


def share_facts(shared: Path) -> dict:
    agg = shared / "aggregator"
    ckpts = sorted((agg / "state").glob("checkpoint-*.nsc"))
    bases = sorted((agg / "state").glob("cumulative-*.nsc"))
    periods = [p for p in (agg / "periods").iterdir()] if (agg / "periods").is_dir() else []
    try:
        cum = json.loads((shared / "reports" / "cumulative.json").read_text())
        links, windows = cum["analytics"]["unique_links"], sum(n["windows"] for n in cum["nodes"].values())
    except (OSError, ValueError, KeyError):
        links = windows = 0
    return {"ckpt_header_bytes": header_bytes(ckpts[-1]) if ckpts else 0,
            "period_header_bytes": max((header_bytes(p) for p in periods), default=0),
            "ledger_bytes": (agg / "ledger.jsonl").stat().st_size if (agg / "ledger.jsonl").exists() else 0,
            "checkpoint_bytes": ckpts[-1].stat().st_size if ckpts else 0,
            "base_bytes": bases[-1].stat().st_size if bases else 0,
            "period_files": len(periods), "links": links, "windows_reported": windows}


def header_bytes(path: Path) -> int:
    """The JSON header length a netsense container declares (its prefix's H)."""
    from netsense import winfile

    with open(path, "rb") as f:
        return winfile.PREFIX.unpack(f.read(winfile.PREFIX.size))[3]


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def mib(b: float) -> str:
    return f"{b / 2**20:,.1f}"


def own_peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", default="10000,100000,1000000", help="comma-separated N (consumed windows)")
    ap.add_argument("--quick", action="store_true", help="N = 10,000 only")
    ap.add_argument("--nodes", type=int, default=1000, help="nodes landing one window per 1-second slot each")
    ap.add_argument("--period-seconds", type=int, default=60)
    ap.add_argument("--links", type=int, default=16, help="link draws per window (before deduplication)")
    ap.add_argument("--hosts", type=int, default=300_000, help="addresses per side the links are drawn from")
    ap.add_argument("--zipf", type=float, default=1.2, help="Zipf exponent of the address popularity")
    ap.add_argument("--batch", type=int, default=4096, help="windows per transaction while building")
    ap.add_argument("--join-every", type=int, default=8, help="wait for the background checkpoint every K commits")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-profile", action="store_true", help="skip the profiled restart per N")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep each built share in the scratch directory")
    ap.add_argument("--work", type=Path, help="scratch directory (default: a temporary one, removed at the end)")
    args = ap.parse_args()
    ns = [10_000] if args.quick else sorted(int(x.replace("_", "")) for x in args.windows.split(",") if x)

    E = _import_engine()
    work = args.work or Path(tempfile.mkdtemp(prefix="netsense-restart-"))
    work.mkdir(parents=True, exist_ok=True)
    empty = work / "empty"
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, GraphBLAS 1 thread; scratch {work}")
    print(f"windows: {args.nodes} nodes x 1-second slots, {args.period_seconds} s periods "
          f"({args.nodes * args.period_seconds:,} windows per period), {args.links} link draws per window, "
          f"Zipf({args.zipf}) over {args.hosts:,} addresses per side; built in-process through the engine "
          f"(apply_batch / finalize / commit), {args.batch} windows per transaction")

    # The peer: an empty, initialized share (a first --once run creates the tree; not timed).
    run_child(restart_cmd(empty, args.period_seconds))
    restart(empty, args.period_seconds, empty=True)  # warm: numba's cache, the page cache
    max_header = getattr(E["winfile"], "MAX_HEADER", 0)
    rows, profiles = [], {}
    for n in ns:
        print(f"\n== N = {n:,} windows ==", flush=True)
        shared = work / f"share-{n}"
        shutil.rmtree(shared, ignore_errors=True)
        traffic = Traffic(args.hosts, args.zipf, args.links, args.seed)
        builder = Builder(E, shared, args.nodes, args.period_seconds, traffic, args.batch, args.join_every)
        b = builder.build_to(n)
        print(f"built (not measured): {b['build_s']:.1f} s ({n / b['build_s']:,.0f} windows/s), "
              f"{builder.commits} commits, cumulative links {b['links']:,}, periods in memory "
              f"{b['periods_in_memory']}, bench peak RSS so far {own_peak_mib():,.0f} MiB, share {mib(du(shared))} MiB",
              flush=True)
        os.sync()
        facts = share_facts(shared)
        print(f"share: ledger.jsonl {facts['ledger_bytes']:,} B, newest checkpoint {mib(facts['checkpoint_bytes'])} MiB"
              f" (JSON header {facts['ckpt_header_bytes']:,} B) + cumulative base {mib(facts['base_bytes'])} MiB, "
              f"aggregator/periods/ {facts['period_files']} files (largest header {facts['period_header_bytes']:,} B),"
              f" cumulative links {facts['links']:,}, windows in cumulative.json {facts['windows_reported']:,}")
        if facts["windows_reported"] != n:
            print(f"WARNING: cumulative.json counts {facts['windows_reported']:,} windows, expected {n:,}")
        for what, size in (("newest checkpoint", facts["ckpt_header_bytes"]),
                           ("largest period file", facts["period_header_bytes"])):
            if max_header and size > max_header:
                print(f"NOTE: the {what}'s header is {size:,} B, above winfile.MAX_HEADER = {max_header:,} B "
                      f"that every reader enforces (mostly the period's list of window file names)")
        ours, peer, error = [], [], None
        _, _, error = restart(shared, args.period_seconds)  # first restart after building: not counted
        for _ in range(0 if error else args.repeats):  # interleaved: drift in the load hits both alike
            w0, r0, _ = restart(empty, args.period_seconds, empty=True)
            peer.append((w0, r0))
            w, r, error = restart(shared, args.period_seconds)
            if error:
                break
            ours.append((w, r))
        if not peer:
            w0, r0, _ = restart(empty, args.period_seconds, empty=True)
            peer.append((w0, r0))
        row = {"n": n, "build_s": b["build_s"], **facts, "error": error,
               "t0": statistics.median(w for w, _ in peer), "rss0": statistics.median(r for _, r in peer)}
        if error:
            print(f"restart FAILS: {error}")
        else:
            row.update(t=statistics.median(w for w, _ in ours), t_min=min(w for w, _ in ours),
                       t_max=max(w for w, _ in ours), rss=statistics.median(r for _, r in ours))
            print(f"restart: {row['t']:.2f} s (min {row['t_min']:.2f}, max {row['t_max']:.2f}), peak RSS "
                  f"{row['rss']:.0f} MiB;  empty share: {row['t0']:.2f} s, {row['rss0']:.0f} MiB;  ratio time "
                  f"{row['t'] / row['t0']:.2f}, RSS {row['rss'] / row['rss0']:.2f}")
        rows.append(row)
        if not args.no_profile and not error:
            pwall, phases = profiled_restart(shared, args.period_seconds, work / f"restart-{n}.prof")
            (empty / "reports" / "cumulative.json").unlink(missing_ok=True)
            pe_wall, pe = profiled_restart(empty, args.period_seconds, work / "restart-empty.prof")
            profiles[n] = dict(phases)
            print(f"where a restart's time goes (cProfile, cumulative s, inflated by profiling; wall {pwall:.2f} s, "
                  f"empty share {pe_wall:.2f} s):")
            for (label, ct), (_, ct0) in zip(phases, pe):
                print(f"  {label:<42} {ct:7.3f}   empty {ct0:7.3f}")
        if not args.keep:
            shutil.rmtree(shared, ignore_errors=True)

    print(f"\n== restart after N windows: {args.nodes} nodes, {args.period_seconds} s periods; medians of "
          f"{args.repeats} restarts, the empty share measured interleaved ==")
    print(f"{'windows':>10} {'build s':>8} {'links':>11} {'ledger KiB':>10} {'ckpt MiB':>9} {'ckpt hdr KiB':>12} "
          f"{'base MiB':>9} {'periods/':>8} {'restart s':>9} {'RSS MiB':>8} {'empty s':>8} {'empty RSS':>9} "
          f"{'x time':>7} {'x RSS':>6} {'+s':>6} {'+MiB':>5}")
    for r in rows:
        head = (f"{r['n']:>10,} {r['build_s']:>8.1f} {r['links']:>11,} {r['ledger_bytes'] / 1024:>10,.1f} "
                f"{r['checkpoint_bytes'] / 2**20:>9.2f} {r['ckpt_header_bytes'] / 1024:>12,.0f} "
                f"{r['base_bytes'] / 2**20:>9.2f} {r['period_files']:>8}")
        if r["error"]:
            print(f"{head} {'FAILS':>9} {'':>8} {r['t0']:>8.2f} {r['rss0']:>9.0f}   ({r['error']})")
        else:
            print(f"{head} {r['t']:>9.2f} {r['rss']:>8.0f} {r['t0']:>8.2f} {r['rss0']:>9.0f} "
                  f"{r['t'] / r['t0']:>7.2f} {r['rss'] / r['rss0']:>6.2f} {r['t'] - r['t0']:>+6.2f} "
                  f"{r['rss'] - r['rss0']:>+5.0f}")
    ok = [r for r in rows if not r["error"]]
    if len(ok) > 1:
        a, z = ok[0], ok[-1]
        print(f"from {a['n']:,} to {z['n']:,} windows ({z['n'] / a['n']:.0f}x): restart minus empty "
              f"{a['t'] - a['t0']:+.2f} -> {z['t'] - z['t0']:+.2f} s, RSS minus empty {a['rss'] - a['rss0']:+.0f} -> "
              f"{z['rss'] - z['rss0']:+.0f} MiB; cumulative links {a['links']:,} -> {z['links']:,} "
              f"({z['links'] / max(a['links'], 1):.1f}x), periods/ files {a['period_files']} -> {z['period_files']}")
        if a["n"] in profiles and z["n"] in profiles:
            pa, pz = profiles[a["n"]], profiles[z["n"]]
            grow = sorted(((pz[k] - pa[k], k) for k in pz if k in pa and not k.startswith("total")
                           and k.startswith("  ") and not k.startswith("    ")), reverse=True)
            print("growth by phase of recover (profiled s, largest first): "
                  + ", ".join(f"{k.strip()} {d:+.3f}" for d, k in grow))
    failed = [r for r in rows if r["error"]]
    if failed:
        names = ", ".join(f"{r['n']:,}" for r in failed)
        print(f"restart FAILED for N = {names}: see above")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
