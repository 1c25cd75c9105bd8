"""The aggregation state: cumulative and per-period sums plus who contributed what.

Pure bookkeeping — no file system here except through the callables passed
in — so the exactly-once logic can be tested on its own.  Everything in it is
saved in the periodic checkpoints (see ``ledger``), with the cumulative sum
split into a base file and a delta; between checkpoints the ledger's lines
rebuild it (``apply_batch`` again, and the logged finalizations).  The sums are
``Sums`` (sorted link keys), immutable, so a checkpoint snapshot is a reference.
"""
from __future__ import annotations

import base64
import bisect
import secrets
import zlib
from dataclasses import dataclass, field

from netsense.layout import stamp

from .profile import BatchStats, Profile
from .sums import Sums

empty = Sums.empty


def add_node(stats: dict, node: str, h: dict) -> None:
    s = stats.setdefault(node, {"packets": 0, "records": 0, "windows": 0, "skipped": {}})
    s["packets"] += h["packets"]
    s["records"] += h["records"]
    s["windows"] += 1
    for k, v in h["skipped"].items():
        s["skipped"][k] = s["skipped"].get(k, 0) + v


def add_range(ranges: dict, node: str, run: str, seq: int) -> None:
    """Record window ``seq`` of ``node/run`` as covered, merging into [first, last] runs."""
    lst = ranges.setdefault(node, {}).setdefault(run, [])
    for r in lst:
        if r[0] - 1 <= seq <= r[1] + 1:
            r[0], r[1] = min(r[0], seq), max(r[1], seq)
            break
    else:
        lst.append([seq, seq])
    lst.sort()
    merged = [lst[0]]
    for r in lst[1:]:
        if r[0] <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], r[1])
        else:
            merged.append(r)
    lst[:] = merged


def covered(ranges: dict, identity: str) -> bool:
    """Whether window ``node/run/seq`` is in ``ranges`` (as ``add_range`` keeps them)."""
    node, _, rest = identity.partition("/")
    run, _, seq = rest.partition("/")
    lst = ranges.get(node, {}).get(run)
    if not lst or not seq.isdigit():
        return False
    s = int(seq)
    i = bisect.bisect_right(lst, [s, float("inf")]) - 1
    return i >= 0 and lst[i][0] <= s <= lst[i][1]


@dataclass
class Period:
    """One aligned period.  ``matrix`` is None for a final period whose sum lives in a file."""

    start: int
    end: int
    matrix: Sums | None = None
    windows: list = field(default_factory=list)   # window file names, in consumption order
    nodes: dict = field(default_factory=dict)     # node -> packets/records/windows/skipped
    final: bool = False
    version: int = 0       # final versions published; 0 while provisional
    file: str | None = None  # aggregator/periods/... holding the matrix once final
    dirty: bool = False    # changed since its last published report
    evictable: bool = False  # its period file holds its bookkeeping too (see State.evict)
    upstream_delta: Sums | None = None  # late windows since the last upstream landing (not persisted:
                                             # it becomes an upstream window in the same transaction)

    @property
    def id(self) -> str:
        return stamp(self.start)

    def meta(self) -> dict:
        # The window file names (for the period report) are the one part that grows with the
        # windows of a period (60,000 names a minute at 1,000 nodes): kept deflated, so checkpoint
        # and period-file headers stay far below the container's 1 MiB header bound.
        return {"start": self.start, "end": self.end, "windows_z": _deflate(self.windows), "nodes": self.nodes,
                "final": self.final, "version": self.version, "file": self.file, "evictable": self.evictable}

    @classmethod
    def from_meta(cls, m: dict, matrix: Sums | None = None) -> "Period":
        windows = _inflate(m["windows_z"]) if "windows_z" in m else m["windows"]
        return cls(m["start"], m["end"], matrix, windows, m["nodes"], m["final"], m["version"], m["file"],
                   evictable=m.get("evictable", False))


def _deflate(names: list) -> str:
    return base64.b64encode(zlib.compress("\n".join(names).encode(), 6)).decode()


def _inflate(blob: str) -> list:
    text = zlib.decompress(base64.b64decode(blob)).decode()
    return text.split("\n") if text else []


@dataclass
class State:
    period_seconds: int
    generation: int = 0
    cumulative: Sums = field(default_factory=empty)
    # The cumulative sum is checkpointed as a rarely rewritten base file plus the delta
    # since then, so a commit costs O(recent traffic), not O(everything ever seen).
    delta: Sums = field(default_factory=empty)
    base_file: str | None = None
    nodes: dict = field(default_factory=dict)       # cumulative per-node stats
    coverage: dict = field(default_factory=dict)    # node -> run -> [[first_seq, last_seq], ...]
    watermarks: dict = field(default_factory=dict)  # node -> greatest window end consumed
    periods: dict = field(default_factory=dict)     # start -> Period
    anonymization: str | None = None
    unpublished: list = field(default_factory=list)  # period starts whose reports may lag the state
    counters: dict = field(default_factory=dict)    # consumed, duplicates, quarantined:<reason>, ...
    # Hierarchical aggregation: final period sums (and restatement deltas) waiting to be
    # landed in a parent shared directory as ordinary window files.
    upstream: bool = False
    instance: str = field(default_factory=lambda: secrets.token_hex(6))  # the upstream "run"
    upstream_seq: int = 0
    upstream_pending: list = field(default_factory=list)  # [{"seq", "start", "end", "packets"}]
    upstream_mats: dict = field(default_factory=dict)     # seq -> matrix
    top_n: int = 10
    # Final, published periods leave memory and the checkpoint (their sums and bookkeeping are
    # in their period files): the state stays bounded by the open periods, not by history.
    # Periods starting before ``evicted_before`` may be such periods; ``find_final(start)``
    # (set by the daemon) loads one back when a late window restates it.
    evicted_before: int = 0
    find_final: object = None
    # Running analytics per open period start and for "cumulative" (not persisted: rebuilt
    # from the matrices after a restart).
    profiles: dict = field(default_factory=dict)

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    def period_of(self, start: int) -> int:
        return start - start % self.period_seconds

    def apply(self, header: dict, a: Sums, filename: str, load_final) -> None:
        """Sum one validated window (see ``apply_batch``)."""
        self.apply_batch([(header, a, filename)], load_final)

    def apply_batch(self, items: list, load_final) -> None:
        """Sum validated windows ``(header, matrix, filename)``.

        Windows are summed per period first and each period sum is added to its
        period and to the cumulative total once: the large running sums are
        touched once per batch, not once per window.  ``load_final(period)``
        returns the saved matrix of a period already published as final (a late
        window restates it).
        """
        groups: dict = {}
        for item in items:
            groups.setdefault(self.period_of(item[0]["start"]), []).append(item)
        sums = []
        for ps, group in sorted(groups.items()):
            p = self.periods.get(ps)
            if p is None and ps < self.evicted_before and self.find_final is not None:
                p = self.find_final(ps)  # a final period that left memory: a late window restates it
                if p is not None:
                    self.periods[ps] = p
            if p is None:
                p = self.periods[ps] = Period(ps, ps + self.period_seconds, empty())
            if p.matrix is None:
                p.matrix = load_final(p)
            s = Sums.sum_many([a for _, a, _ in group])
            if p.final and self.upstream:  # a restatement: the parent needs exactly the late part
                p.upstream_delta = s if p.upstream_delta is None else p.upstream_delta.add(s)
            stats = BatchStats.of(s)
            p.matrix = self.profile(ps, p.matrix).grow(p.matrix, s, stats)
            sums.append((s, stats))
            p.dirty = True
            for header, _, filename in group:
                node = header["node"]
                p.windows.append(filename)
                add_node(p.nodes, node, header)
                add_node(self.nodes, node, header)
                add_range(self.coverage, node, header["run"], header["seq"])
                self.watermarks[node] = max(self.watermarks.get(node, 0), header["end"])
                self.count("windows_consumed")
                self.count("packets_consumed", header["packets"])
        if sums:
            total = Sums.sum_many([m for m, _ in sums])
            stats = sums[0][1] if len(sums) == 1 else None  # one period: the same batch sum
            self.cumulative = self.profile("cumulative", self.cumulative).grow(self.cumulative, total, stats)
            self.delta = self.delta.add(total)

    def profile(self, key, matrix: Sums) -> Profile:
        """The running analytics of ``matrix`` (a period's, or "cumulative"), built on first use."""
        prof = self.profiles.get(key)
        if prof is None:
            prof = self.profiles[key] = Profile.of(matrix, self.top_n)
        return prof

    def forget(self, key) -> None:
        self.profiles.pop(key, None)

    def evict(self, p: "Period") -> None:
        """A final period, published, whose sum is in its period file: drop it from memory."""
        if p.final and p.evictable and not p.dirty and p.file and p.upstream_delta is None:
            self.periods.pop(p.start, None)
            self.profiles.pop(p.start, None)
            self.evicted_before = max(self.evicted_before, p.end)

    def covers(self, identity: str) -> bool:
        """Window ``identity`` has been consumed (its node/run/seq is in the coverage ranges)."""
        return covered(self.coverage, identity)

    def finalize(self, done_nodes: set, known_nodes: set, grace_seconds: int) -> list[Period]:
        """Mark periods final by watermark; return those that became final (or were restated).

        A period is final when every known node is done or has consumed a
        window ending past the period's end, or when the newest data seen is
        ``grace_seconds`` past it (a silent node cannot hold reports forever).
        """
        newest = max(self.watermarks.values(), default=0)
        pending = [n for n in known_nodes if n not in done_nodes]
        out = []
        for p in sorted(self.periods.values(), key=lambda p: p.start):
            if p.final:
                if p.matrix is not None and p.dirty:
                    out.append(p)  # restatement
                continue
            if all(self.watermarks.get(n, 0) >= p.end for n in pending) or newest >= p.end + grace_seconds:
                p.final = True
                p.dirty = True
                out.append(p)
        return out

    def queue_upstream(self, finalized: list[Period]) -> None:
        """Queue what the parent has not seen: a first final version whole, a restatement as its delta."""
        if not self.upstream:
            return
        for p in finalized:
            m = p.matrix if p.version == 1 else p.upstream_delta
            p.upstream_delta = None
            if m is None:
                continue
            packets = m.total()
            self.upstream_pending.append({"seq": self.upstream_seq, "start": p.start, "end": p.end,
                                          "packets": packets, "version": p.version})
            self.upstream_mats[self.upstream_seq] = m
            self.upstream_seq += 1

    def upstream_landed(self, seq: int) -> None:
        self.upstream_pending = [u for u in self.upstream_pending if u["seq"] != seq]
        self.upstream_mats.pop(seq, None)

    # -- persistence (the checkpoint's header and matrices) -------------------
    def to_checkpoint(self) -> tuple[dict, dict]:
        self.unpublished = sorted(p.start for p in self.periods.values() if p.dirty)
        header = {"period_seconds": self.period_seconds, "nodes": self.nodes, "coverage": self.coverage,
                  "watermarks": self.watermarks, "anonymization": self.anonymization,
                  "unpublished": self.unpublished, "counters": self.counters, "base_file": self.base_file,
                  "instance": self.instance, "upstream_seq": self.upstream_seq,
                  "upstream_pending": self.upstream_pending, "evicted_before": self.evicted_before,
                  "periods": {str(s): p.meta() for s, p in self.periods.items()}}
        mats = {"delta": self.delta}
        for u in self.upstream_pending:
            mats[f"upstream:{u['seq']}"] = self.upstream_mats[u["seq"]]
        for s, p in self.periods.items():
            if p.matrix is not None and not p.final:
                mats[f"period:{s}"] = p.matrix
        return header, mats

    def rebase(self, base_file: str) -> None:
        """The cumulative sum now lives in ``base_file``; start a new, empty delta."""
        self.base_file = base_file
        self.delta = empty()

    @classmethod
    def from_checkpoint(cls, gen: int, header: dict, mats: dict, base: Sums | None = None) -> "State":
        cumulative = mats["delta"] if base is None else base.add(mats["delta"])
        st = cls(header["period_seconds"], gen, cumulative, mats["delta"], header["base_file"], header["nodes"],
                 header["coverage"], header["watermarks"], {}, header["anonymization"], header["unpublished"],
                 header["counters"], instance=header["instance"], upstream_seq=header["upstream_seq"],
                 upstream_pending=header["upstream_pending"], evicted_before=header.get("evicted_before", 0))
        st.upstream_mats = {u["seq"]: mats[f"upstream:{u['seq']}"] for u in st.upstream_pending}
        for s, m in header["periods"].items():
            s = int(s)
            st.periods[s] = Period.from_meta(m, mats.get(f"period:{s}"))
        return st
