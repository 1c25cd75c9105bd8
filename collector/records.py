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

REASONS = {
    NOT_IPV4: "not_ipv4",
    TRUNCATED: "truncated",
    BAD_IPV4_HEADER: "bad_ipv4_header",
    BROADCAST: "broadcast",
    UNSUPPORTED_LINK: "unsupported_link",
    TRUNCATED_RECORD: "truncated_record",
    MALFORMED_RECORD: "malformed_record",
}
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
