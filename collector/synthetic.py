"""Seeded, heavy-tailed synthetic traffic: the demo and benchmarks need no capture.

Real traffic matrices are power-law: a few hosts send and receive most
packets, most links carry one or two.  Sources and destinations are drawn
from Zipf distributions over seeded random address pools, so a 2^17-packet
window holds tens of thousands of distinct links, like real captures.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from netsense.cli_support import MAX_EPOCH, parse_number
from netsense.errors import ConfigError

from .records import LIMITED_BROADCAST, make_records

NS = 1_000_000_000


@dataclass(frozen=True)
class SyntheticSpec:
    seed: int = 0
    packets: int = 1_000_000     # total packets; 0 = endless
    rate: float = 100_000.0      # packets per second of packet time
    start: int = 1_767_225_600   # 2026-01-01T00:00:00Z, so runs are reproducible
    hosts: int = 50_000          # address pool size per side
    alpha: float = 1.3           # Zipf exponent (heavier tail as it nears 1)
    batch: int = 65_536
    realtime: bool = False       # stamp packets with the wall clock and pace to `rate`
    pace: float = 0.0            # replayable, but at most this many packets per wall-clock second

    @classmethod
    def parse(cls, text: str) -> "SyntheticSpec":
        """Parse ``seed=1,packets=500000,rate=50000`` (every key optional; ranges in ``RANGES``)."""
        kw = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, val = part.partition("=")
            key = key.strip()
            if not sep or key not in RANGES:
                raise ConfigError(f"synthetic: unknown option {part!r}; known: {', '.join(RANGES)}")
            if RANGES[key] is bool:
                v = val.strip().lower()
                if v not in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
                    raise ConfigError(f"synthetic: {key} must be 0 or 1, got {val!r}")
                kw[key] = v in ("1", "true", "yes", "on")
                continue
            lo, hi, integer, lo_open = RANGES[key]
            try:
                kw[key] = parse_number(val, lo, hi, integer=integer, lo_open=lo_open)
            except ValueError as e:
                raise ConfigError(f"synthetic: {key}: {e}") from None
        spec = cls(**kw)
        if spec.packets and spec.start + spec.packets / spec.rate > MAX_EPOCH:
            raise ConfigError(f"synthetic: packets={spec.packets} at rate={spec.rate:g} from start={spec.start} end "
                              f"after 2255-03-14 (epoch {MAX_EPOCH}); raise rate or lower packets or start")
        return spec


# The range of every key (shown in --source's help): what the generator's arithmetic and memory
# allow.  (low, high, integer, low excluded) or bool.
RANGES = {
    "seed": (0, 2**64 - 1, True, False),      # numpy's generator takes any unsigned 64-bit seed
    "packets": (0, 2**53, True, False),       # 0 = endless; packet indexes stay exact as float64 times
    "rate": (0.001, 1e9, False, False),       # packets per second of packet time
    "start": (0, MAX_EPOCH, True, False),     # UTC seconds; int64 nanoseconds hold times to 2262
    "hosts": (1, 1 << 24, True, False),       # two pools of this many addresses are drawn up front
    "alpha": (1, 100, False, True),           # Zipf needs alpha > 1
    "batch": (1, 1 << 24, True, False),       # records per batch, held in memory at once
    "realtime": bool,
    "pace": (0, 1e9, False, False),           # 0 = unthrottled
}


def _pool(rng: np.random.Generator, n: int) -> np.ndarray:
    pool = rng.integers(1, LIMITED_BROADCAST, size=n, dtype=np.uint64).astype(np.uint32)
    return pool


def generate(spec: SyntheticSpec, stop=lambda: False):
    """Yield ``Records`` batches until ``spec.packets`` are produced (or forever if 0)."""
    rng = np.random.default_rng(spec.seed)
    srcs, dsts = _pool(rng, spec.hosts), _pool(rng, spec.hosts)
    produced = 0
    t0_wall = time.time()
    while not stop() and (spec.packets == 0 or produced < spec.packets):
        n = spec.batch if spec.packets == 0 else min(spec.batch, spec.packets - produced)
        si = (rng.zipf(spec.alpha, n) - 1) % spec.hosts
        di = (rng.zipf(spec.alpha, n) - 1) % spec.hosts
        idx = np.arange(produced, produced + n, dtype=np.float64)
        if spec.pace and not spec.realtime:
            delay = t0_wall + produced / spec.pace - time.time()
            if delay > 0:
                time.sleep(min(delay, 1.0))  # throttling a generator, not synchronizing anything
        if spec.realtime:
            due = t0_wall + (produced + n) / spec.rate
            delay = due - time.time()
            if delay > 0:
                time.sleep(min(delay, 1.0))  # pacing a generator, not synchronizing anything
            ts = np.full(n, time.time_ns(), np.int64)
        else:
            ts = (spec.start * NS + idx * (NS / spec.rate)).astype(np.int64)
        produced += n
        yield make_records(ts, srcs[si], dsts[di], position=produced)
