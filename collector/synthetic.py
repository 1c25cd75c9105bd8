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
        """Parse ``seed=1,packets=500000,rate=50000`` (every key optional)."""
        kw = {}
        types = {f: t for f, t in cls.__annotations__.items()}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, val = part.partition("=")
            if not sep or key not in types:
                raise ConfigError(f"synthetic: unknown option {part!r}; known: {', '.join(types)}")
            try:
                kw[key] = val.lower() in ("1", "true", "yes") if types[key] in ("bool", bool) else (
                    float(val) if types[key] in ("float", float) else int(float(val)))
            except ValueError:
                raise ConfigError(f"synthetic: {key} must be a number, got {val!r}") from None
        spec = cls(**kw)
        if spec.packets < 0 or spec.rate <= 0 or spec.hosts < 1 or spec.alpha <= 1 or spec.batch < 1 or spec.pace < 0:
            raise ConfigError("synthetic: need packets >= 0, rate > 0, hosts >= 1, alpha > 1, batch >= 1")
        return spec


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
