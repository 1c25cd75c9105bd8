#!/usr/bin/env python3
"""Throughput of collector.anonymize (cryptopANT-compatible scramble_ip4).

    .venv/bin/python scripts/bench_anonymize.py [--cipher aes|blowfish] [--pass-bits 16]

Prints addresses/s for cold (uncached) distinct addresses, uniform and clustered,
and ms per 2^17-packet window of heavy-tailed (Zipf) traffic: the first window
(cold cache) and steady state (cache warm from earlier windows).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from netsense.collector.anonymize import Anonymizer  # noqa: E402


# CPU time of this thread: on a shared, loaded machine wall time mostly measures the neighbours.
clock = time.thread_time


def best(fn, repeat=5):
    times = []
    for _ in range(repeat):
        t = clock()
        fn()
        times.append(clock() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cipher", default="aes", choices=["aes", "blowfish"])
    ap.add_argument("--pass-bits", type=int, default=16)
    ap.add_argument("--distinct", type=int, default=1 << 20)
    ap.add_argument("--window", type=int, default=1 << 17)
    ap.add_argument("--hosts", type=int, default=50_000)
    ap.add_argument("--alpha", type=float, default=1.3)
    ap.add_argument("--aesni", default="auto", choices=["auto", "on", "off"])
    args = ap.parse_args()

    aesni = {"auto": None, "on": True, "off": False}[args.aesni]
    with tempfile.TemporaryDirectory() as d:
        an = Anonymizer.from_keyfile(os.path.join(d, "key"), pass_bits=args.pass_bits,
                                     cipher=args.cipher, aesni=aesni)
    rng = np.random.default_rng(7)
    an.anonymize_uncached(np.arange(1000, dtype=np.uint32))   # compile / load the numba cache
    an.anonymize(np.arange(1000, dtype=np.uint32))

    print(f"{an!r}  aesni={an.aesni}  load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
          "  (times are thread CPU time)")
    # 1. cold, uniformly random distinct addresses (no prefix sharing below /16 to speak of)
    u = np.unique(rng.integers(0, 0xF0000000, args.distinct, dtype=np.uint64).astype(np.uint32))
    u.sort()
    b0 = an.blocks
    t = best(lambda: an._compute(u), 3)
    print(f"cold uniform distinct : {u.size / t / 1e6:6.2f} M addr/s  "
          f"({(an.blocks - b0) / 3 / u.size:.1f} blocks/addr, {t / u.size * 1e9:.0f} ns/addr)")
    # 2. cold, clustered: hosts in /24s (what real traffic looks like)
    nets = rng.integers(0, 0xF00000, args.distinct // 64, dtype=np.uint64).astype(np.uint32)
    c = np.unique((np.repeat(nets, 64) << 8) | rng.integers(0, 256, nets.size * 64).astype(np.uint32))
    b0 = an.blocks
    t = best(lambda: an._compute(c), 3)
    print(f"cold clustered (/24s) : {c.size / t / 1e6:6.2f} M addr/s  "
          f"({(an.blocks - b0) / 3 / c.size:.1f} blocks/addr)")
    # 3. windows of Zipf traffic, as collector.synthetic makes them (src and dst pools)
    srcs = rng.integers(1, 0xFFFFFFFF, args.hosts, dtype=np.uint64).astype(np.uint32)
    dsts = rng.integers(1, 0xFFFFFFFF, args.hosts, dtype=np.uint64).astype(np.uint32)

    def window():
        s = srcs[(rng.zipf(args.alpha, args.window) - 1) % args.hosts]
        d = dsts[(rng.zipf(args.alpha, args.window) - 1) % args.hosts]
        return s, d

    wins = [window() for _ in range(41)]
    nd = np.mean([np.unique(np.concatenate(w)).size for w in wins])
    with tempfile.TemporaryDirectory() as d:
        fresh = Anonymizer.from_keyfile(os.path.join(d, "key"), pass_bits=args.pass_bits,
                                        cipher=args.cipher, aesni=aesni)
    t = clock()
    fresh.anonymize(wins[0][0])
    fresh.anonymize(wins[0][1])
    t_first = clock() - t
    ts = []
    for s, dd in wins[1:]:
        t = clock()
        fresh.anonymize(s)
        fresh.anonymize(dd)
        ts.append(clock() - t)
    pk = 2 * args.window
    print(f"window {args.window} pkts, ~{nd:.0f} distinct addrs (Zipf a={args.alpha}, {args.hosts} hosts/side):")
    print(f"  first window (cold cache): {t_first * 1e3:7.2f} ms  ({pk / t_first / 1e6:.1f} M addr/s incl. repeats)")
    print(f"  steady state (warm)      : {np.median(ts) * 1e3:7.2f} ms  median, min {min(ts) * 1e3:.2f},"
          f" max {max(ts) * 1e3:.2f} ms  ({pk / np.median(ts) / 1e6:.1f} M addr/s)")
    # a scan: every packet from a new random source
    scans = [rng.integers(0, 0xF0000000, args.window, dtype=np.uint64).astype(np.uint32) for _ in range(4)]
    ts = []
    for s in scans:
        t = clock()
        fresh.anonymize(s)
        ts.append(clock() - t)
    print(f"  scan window ({args.window} new random sources): {np.median(ts) * 1e3:7.2f} ms median"
          f"  ({args.window / np.median(ts) / 1e6:.1f} M addr/s)")
    # the collector's way: np.unique per window, anonymize the distinct set, map back
    ts = []
    for s, dd in wins[1:]:
        t = clock()
        u2, inv = np.unique(np.concatenate([s, dd]), return_inverse=True)
        fresh.anonymize(u2)[inv]
        ts.append(clock() - t)
    print(f"  steady, via np.unique    : {np.median(ts) * 1e3:7.2f} ms  median, min {min(ts) * 1e3:.2f} ms"
          " (np.unique(return_inverse) included: call anonymize on the columns instead)")


if __name__ == "__main__":
    main()
