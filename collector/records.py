"""Packet records: the one shape every traffic source yields.

A source turns whatever it reads (a capture, a stream, a web request) into
``Records`` batches.  Keeping one columnar shape means windowing, counting and
skip accounting are written once, vectorized, for every source.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Why a packet was not counted.  Codes are stored per packet by parsers (uint8);
# names are what window files and reports show.  0 means "counted".
COUNTED = 0
NOT_IPV4 = 1          # first network-layer header is not IPv4 (IPv6, ARP, ...)
TRUNCATED = 2         # capture too short to hold both IPv4 addresses
BAD_IPV4_HEADER = 3   # IPv4 ethertype/linktype but version != 4 or IHL < 5
BROADCAST = 4         # to or from 255.255.255.255 (excluded as in the Graph Challenge)
UNSUPPORTED_LINK = 5  # link-layer type we do not decode
TRUNCATED_RECORD = 6  # record header/length runs past the end of the file
MALFORMED_RECORD = 7  # record length impossible (caplen > snaplen bound, ...)
IMPLAUSIBLE_TIME = 8  # timestamp before 1990 or more than a day ahead of the collector's clock
SERVER_UNRESOLVED = 9  # in-process sensing: the web server named itself only by a host name that does not resolve to IPv4

REASONS = {
    NOT_IPV4: "not_ipv4",
    TRUNCATED: "truncated",
    BAD_IPV4_HEADER: "bad_ipv4_header",
    BROADCAST: "broadcast",
    UNSUPPORTED_LINK: "unsupported_link",
    TRUNCATED_RECORD: "truncated_record",
    MALFORMED_RECORD: "malformed_record",
    IMPLAUSIBLE_TIME: "implausible_time",
    SERVER_UNRESOLVED: "server_unresolved",
}
# Packet times outside [PLAUSIBLE_SINCE, collector clock + FUTURE_SLACK] are never counted into a
# period: a fuzzed or misconfigured capture stamped 1970 or 2031 would otherwise open periods
# nobody asked for (and a file of them pulled 71% of a folder's packets into 2031).
PLAUSIBLE_SINCE_NS = 631_152_000 * 1_000_000_000  # 1990-01-01T00:00:00Z, before any pcap capture
FUTURE_SLACK_NS = 86_400 * 1_000_000_000          # a day ahead of the collector's clock
LIMITED_BROADCAST = 0xFFFFFFFF


@dataclass(frozen=True)
class Records:
    """A batch of packets in arrival order.

    ``ts_ns``: int64 nanoseconds since the Unix epoch (UTC).
    ``src``/``dst``: uint32 IPv4 addresses, network byte order read as a
    big-endian integer (10.0.0.1 == 0x0A000001); meaningless where ``reason`` != 0.
    ``reason``: uint8, 0 for a counted packet, else a key of ``REASONS``.
    ``position``: an opaque, deterministic resume point of the source after
    this batch (e.g. records consumed); it feeds window identities.
    """

    ts_ns: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    reason: np.ndarray
    position: int = 0
    extra_skipped: dict = field(default_factory=dict)  # reason name -> count not tied to a record

    def __len__(self) -> int:
        return len(self.ts_ns)


def make_records(ts_ns, src, dst, reason=None, position=0, extra_skipped=None) -> Records:
    """Build a Records batch with the canonical dtypes (copying only when needed)."""
    ts = np.ascontiguousarray(ts_ns, dtype=np.int64)
    s = np.ascontiguousarray(src, dtype=np.uint32)
    d = np.ascontiguousarray(dst, dtype=np.uint32)
    r = np.zeros(len(ts), np.uint8) if reason is None else np.ascontiguousarray(reason, dtype=np.uint8)
    if not (len(ts) == len(s) == len(d) == len(r)):
        raise ValueError("Records columns differ in length")
    return Records(ts, s, d, r, position, dict(extra_skipped or {}))


def tail(rec: Records, k: int) -> Records:
    """The batch without its first ``k`` records (resuming a source mid-batch)."""
    return Records(rec.ts_ns[k:], rec.src[k:], rec.dst[k:], rec.reason[k:], rec.position, rec.extra_skipped)


def mark_broadcast(rec: Records) -> np.ndarray:
    """Return the reason column with limited-broadcast packets marked as skipped."""
    reason = rec.reason
    bcast = (reason == COUNTED) & ((rec.src == LIMITED_BROADCAST) | (rec.dst == LIMITED_BROADCAST))
    if bcast.any():
        reason = reason.copy()
        reason[bcast] = BROADCAST
    return reason


def mark_implausible(rec: Records, now_ns: int) -> Records:
    """The batch with records of implausible time (see ``PLAUSIBLE_SINCE_NS``) skipped by reason.

    Returns ``rec`` itself when every time is plausible (the common case costs two reductions).
    """
    if len(rec) == 0:
        return rec
    hi = now_ns + FUTURE_SLACK_NS
    ts = rec.ts_ns
    if int(ts.min()) >= PLAUSIBLE_SINCE_NS and int(ts.max()) <= hi:
        return rec
    bad = ((ts < PLAUSIBLE_SINCE_NS) | (ts > hi)) & (rec.reason == COUNTED)
    if not bad.any():
        return rec
    reason = rec.reason.copy()
    reason[bad] = IMPLAUSIBLE_TIME
    return Records(ts, rec.src, rec.dst, reason, rec.position, rec.extra_skipped)
