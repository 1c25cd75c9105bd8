"""The numba kernels of the pcap reader: link-layer decoding of a frame, and the record scan loops.

``collector.pcap`` reads the stream and handles what is rare (file and section
headers, pcapng interface descriptions) in Python; the per-record work runs in
the loops here (``_scan_pcap``, ``_scan_pcapng``), which write straight into
preallocated columns and classify each frame with ``decode`` (its common cases
inlined).  ``decode`` gives every record a reason code (see ``collector.records``
and the link-layer section below) and never raises on bad packet content.

This is a module of its own because everything numba compiles for the reader
must live in one file: numba's on-disk cache (``cache=True``) is invalidated by
the defining file's timestamp only, so a decoder in another module could be
edited without the cached scan loops that inline it noticing.  For the same
reason the constants the kernels read (the record-size bound, the scan exit
codes, the link types) are defined here: numba compiles globals in as constants.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from .records import BAD_IPV4_HEADER, COUNTED, NOT_IPV4, TRUNCATED, UNSUPPORTED_LINK

MAX_RECORD = 256 << 20      # no record or block may claim more than this

# Scan loop exit codes.
_NEED_MORE = 0   # stopped at an incomplete record (``need`` = its size when known)
_MALFORMED = 1   # stopped at a record whose lengths are impossible
_CONTROL = 2     # pcapng: stopped at a section header / interface description for Python


# --------------------------------------------------------------------------- link layers
#
# Each helper returns (reason, src, dst); src/dst are only meaningful when reason
# is COUNTED.  The rule is the same for every link type: the first network-layer
# header after the link layer must be IPv4 with both addresses captured.  Tunnels
# are not entered (4in6, GRE, VXLAN: the outer header decides), but encapsulations
# that are still link layer (VLAN tags, PPPoE, MPLS, LLC/SNAP, FabricPath, PPI)
# are walked through, because the packet's IP endpoints are behind them.

# Link types (LINKTYPE_* values as stored in pcap / pcapng files).
LINK_NULL = 0          # BSD loopback: 4-byte address family in the capturing host's byte order
LINK_ETHERNET = 1
LINK_PPP = 9
LINK_RAW_A = 12        # raw IP (DLT_RAW on some BSDs)
LINK_RAW_B = 14        # raw IP (DLT_RAW on OpenBSD)
LINK_PPP_HDLC = 50     # PPP in HDLC-like framing (may carry Cisco HDLC frames)
LINK_PPP_ETHER = 51    # PPPoE session header, no Ethernet header
LINK_RAW = 101
LINK_C_HDLC = 104
LINK_LOOP = 108        # OpenBSD loopback: address family in network byte order
LINK_LINUX_SLL = 113
LINK_PPI = 192         # per-packet information header wrapping another link type
LINK_IPV4 = 228
LINK_IPV6 = 229
LINK_LINUX_SLL2 = 276

SUPPORTED_LINKS = frozenset({
    LINK_NULL, LINK_ETHERNET, LINK_PPP, LINK_RAW_A, LINK_RAW_B, LINK_PPP_HDLC, LINK_PPP_ETHER,
    LINK_RAW, LINK_C_HDLC, LINK_LOOP, LINK_LINUX_SLL, LINK_PPI, LINK_IPV4, LINK_IPV6, LINK_LINUX_SLL2,
})

_ZERO = np.uint32(0)


@nb.njit(cache=True)
def u16be(b, i):
    return (np.int64(b[i]) << 8) | np.int64(b[i + 1])


@nb.njit(cache=True, inline="always")
def u32be(b, i):
    return (np.int64(b[i]) << 24) | (np.int64(b[i + 1]) << 16) | (np.int64(b[i + 2]) << 8) | np.int64(b[i + 3])


@nb.njit(cache=True)
def u32(b, i, le):
    """Unsigned 32-bit field in the file's byte order (``le``: little-endian)."""
    if le:
        return (np.int64(b[i + 3]) << 24) | (np.int64(b[i + 2]) << 16) | (np.int64(b[i + 1]) << 8) | np.int64(b[i])
    return u32be(b, i)


@nb.njit(cache=True)
def u16(b, i, le):
    if le:
        return (np.int64(b[i + 1]) << 8) | np.int64(b[i])
    return u16be(b, i)


@nb.njit(cache=True)
def ipv4(b, q, end):
    """IPv4 header expected at ``q`` (the link layer said so): validate and extract."""
    if q >= end:
        return TRUNCATED, _ZERO, _ZERO
    vi = b[q]
    if (vi >> 4) != 4 or (vi & 15) < 5:
        return BAD_IPV4_HEADER, _ZERO, _ZERO
    if end - q < 20:
        return TRUNCATED, _ZERO, _ZERO
    return COUNTED, np.uint32(u32be(b, q + 12)), np.uint32(u32be(b, q + 16))


@nb.njit(cache=True)
def raw_ip(b, q, end):
    """Raw IP (no link header): the version nibble selects the protocol.

    Version 6 is a valid non-IPv4 packet; any other version is a broken header.
    """
    if q >= end:
        return TRUNCATED, _ZERO, _ZERO
    v = b[q] >> 4
    if v == 6:
        return NOT_IPV4, _ZERO, _ZERO
    return ipv4(b, q, end)


_ET_TRUNCATED = -1     # pseudo ethertypes returned by ppp_proto
_ET_OTHER = 0xFFFF


@nb.njit(cache=True)
def ppp_proto(b, q, end):
    """Read the PPP protocol field at ``q``; returns (equivalent ethertype, payload offset).

    The field is 1 byte when protocol-field-compressed (odd first byte).  Mapping
    to ethertypes lets ``ethertype`` walk PPP payloads without recursion.
    """
    if q >= end:
        return _ET_TRUNCATED, q
    if b[q] & 1:
        proto = np.int64(b[q])
        q += 1
    else:
        if end - q < 2:
            return _ET_TRUNCATED, q
        proto = u16be(b, q)
        q += 2
    if proto == 0x0021:
        return np.int64(0x0800), q
    if proto == 0x0281 or proto == 0x0283:
        return np.int64(0x8847), q
    return np.int64(_ET_OTHER), q


@nb.njit(cache=True)
def ethertype(b, q, end, et):
    """Walk ethertype-labelled encapsulations starting with type ``et`` whose payload is at ``q``.

    Handles any depth of 802.1Q/802.1ad/QinQ tags, PPPoE sessions, MPLS label
    stacks, 802.3 LLC/SNAP and Cisco FabricPath (MAC-in-MAC), so that the reason reflects the first header
    that is not one of those.
    """
    while True:
        if et == 0x0800:
            return ipv4(b, q, end)
        if et == 0x8100 or et == 0x88A8 or et == 0x9100 or et == 0x9200:
            if end - q < 4:
                return TRUNCATED, _ZERO, _ZERO
            et = u16be(b, q + 2)
            q += 4
        elif et == _ET_TRUNCATED:
            return TRUNCATED, _ZERO, _ZERO
        elif et <= 1500:
            # 802.3 length field: only LLC/SNAP with a zero OUI carries an ethertype.
            if (end - q >= 8 and b[q] == 0xAA and b[q + 1] == 0xAA and b[q + 2] == 0x03
                    and b[q + 3] == 0 and b[q + 4] == 0 and b[q + 5] == 0):
                et = u16be(b, q + 6)
                q += 8
            else:
                return NOT_IPV4, _ZERO, _ZERO
        elif et == 0x8903:  # Cisco FabricPath: 2 bytes FTAG/TTL, then a whole inner Ethernet frame
            if end - q < 16:
                return TRUNCATED, _ZERO, _ZERO
            et = u16be(b, q + 14)
            q += 16
        elif et == 0x8864:  # PPPoE session: 6-byte header, then a PPP protocol field
            if end - q < 6:
                return TRUNCATED, _ZERO, _ZERO
            et, q = ppp_proto(b, q + 6, end)
        elif et == 0x8847 or et == 0x8848:
            # MPLS: pop labels until bottom-of-stack, then guess the payload by its version nibble.
            while True:
                if end - q < 4:
                    return TRUNCATED, _ZERO, _ZERO
                bos = b[q + 2] & 1
                q += 4
                if bos:
                    break
            if q >= end:
                return TRUNCATED, _ZERO, _ZERO
            if (b[q] >> 4) == 4:
                return ipv4(b, q, end)
            return NOT_IPV4, _ZERO, _ZERO
        else:
            return NOT_IPV4, _ZERO, _ZERO


@nb.njit(cache=True)
def decode(b, p, end, link):
    """Classify the frame in ``b[p:end]`` captured on ``link``; returns (reason, src, dst)."""
    if link == LINK_PPI:
        # Per-Packet Information header (little-endian): version, flags, length, inner link type.
        if end - p < 8:
            return TRUNCATED, _ZERO, _ZERO
        hlen = u16(b, p + 2, True)
        link = u32(b, p + 4, True)
        if hlen < 8 or link == LINK_PPI:
            return UNSUPPORTED_LINK, _ZERO, _ZERO
        p += hlen
    if link == LINK_ETHERNET:
        if end - p < 14:
            return TRUNCATED, _ZERO, _ZERO
        return ethertype(b, p + 14, end, u16be(b, p + 12))
    if link == LINK_RAW or link == LINK_RAW_A or link == LINK_RAW_B:
        return raw_ip(b, p, end)
    if link == LINK_IPV4:
        return ipv4(b, p, end)
    if link == LINK_IPV6:
        return NOT_IPV4, _ZERO, _ZERO
    if link == LINK_LINUX_SLL:
        if end - p < 16:
            return TRUNCATED, _ZERO, _ZERO
        return ethertype(b, p + 16, end, u16be(b, p + 14))
    if link == LINK_LINUX_SLL2:
        if end - p < 20:
            return TRUNCATED, _ZERO, _ZERO
        return ethertype(b, p + 20, end, u16be(b, p))
    if link == LINK_NULL or link == LINK_LOOP:
        # The family is in the writer's byte order (NULL) or network order (LOOP);
        # AF_INET is 2 everywhere, so accept it in either order.
        if end - p < 4:
            return TRUNCATED, _ZERO, _ZERO
        if u32be(b, p) == 2 or u32(b, p, True) == 2:
            return ipv4(b, p + 4, end)
        return NOT_IPV4, _ZERO, _ZERO
    if link == LINK_C_HDLC or ((link == LINK_PPP_HDLC or link == LINK_PPP) and end > p
                               and (b[p] == 0x0F or b[p] == 0x8F)):
        # Cisco HDLC: address, control, then an ethertype.
        if end - p < 4:
            return TRUNCATED, _ZERO, _ZERO
        return ethertype(b, p + 4, end, u16be(b, p + 2))
    if link == LINK_PPP or link == LINK_PPP_HDLC:
        if end - p >= 2 and b[p] == 0xFF and b[p + 1] == 0x03:
            p += 2
        et, q = ppp_proto(b, p, end)
        return ethertype(b, q, end, et)
    if link == LINK_PPP_ETHER:
        if end - p < 8:
            return TRUNCATED, _ZERO, _ZERO
        et, q = ppp_proto(b, p + 6, end)
        return ethertype(b, q, end, et)
    return UNSUPPORTED_LINK, _ZERO, _ZERO


# --------------------------------------------------------------------------- scan loops

@nb.njit(cache=True, inline="always")
def _plain_ipv4(b, p, end, link):
    """Offset of the IPv4 header for the common cases (untagged Ethernet, raw IP) when it is
    complete and valid, else -1.  Inlined into the scan loops: a call to ``decode`` per record
    costs more than all the parsing (numba does not inline it by itself), and inlining ``decode``
    whole makes compilation take a minute.
    """
    q = -1
    if link == LINK_ETHERNET:
        if end - p >= 34 and b[p + 12] == 0x08 and b[p + 13] == 0x00:
            q = p + 14
    elif link == LINK_RAW or link == LINK_IPV4:
        if end - p >= 20:
            q = p
    if q >= 0 and (b[q] >> 4) == 4 and (b[q] & 15) >= 5:
        return q
    return -1


@nb.njit(cache=True)
def _scan_pcap(buf, off, end, le, hdr_len, ts_mult, link, maxcap, swapped_lengths,
               i, ts, src, dst, reason):
    """Parse classic pcap records in ``buf[off:end]`` into the columns from row ``i``.

    Returns (rows used, offset of the first unparsed byte, exit code, bytes needed).
    ``swapped_lengths``: 1 = caplen/len fields swapped (pcap < 2.3), 2 = maybe (2.3).
    """
    while True:
        if end - off < hdr_len:
            return i, off, _NEED_MORE, hdr_len
        caplen = u32(buf, off + 8, le)
        if swapped_lengths:
            origlen = u32(buf, off + 12, le)
            if swapped_lengths == 1 or caplen > origlen:
                caplen = origlen
        if caplen > maxcap:
            return i, off, _MALFORMED, 0
        total = hdr_len + caplen
        if end - off < total:
            return i, off, _NEED_MORE, total
        ts[i] = u32(buf, off, le) * 1_000_000_000 + u32(buf, off + 4, le) * ts_mult
        q = _plain_ipv4(buf, off + hdr_len, off + total, link)
        if q >= 0:
            reason[i] = COUNTED
            src[i] = u32be(buf, q + 12)
            dst[i] = u32be(buf, q + 16)
        else:
            r, s, d = decode(buf, off + hdr_len, off + total, link)
            reason[i] = r
            src[i] = s
            dst[i] = d
        i += 1
        off += total


@nb.njit(cache=True)
def _ts_to_ns(units, mode, k, offset_ns):
    """pcapng timestamp units -> ns.  mode 0: units*k, 1: units//k, 2: units / 2**k."""
    if mode == 0:
        return units * k + offset_ns
    if mode == 1:
        return units // k + offset_ns
    whole = (units >> k) * 1_000_000_000
    frac = units & ((np.int64(1) << k) - 1)
    if k <= 33:  # frac * 1e9 still fits in int64
        return whole + ((frac * 1_000_000_000) >> k) + offset_ns
    return whole + np.int64(frac * (1e9 / 2.0 ** k)) + offset_ns


@nb.njit(cache=True)
def _scan_pcapng(buf, off, end, le, if_link, if_snap, if_mode, if_k, if_off, n_if, last_ts,
                 i, ts, src, dst, reason):
    """Parse pcapng blocks in ``buf[off:end]``: packet blocks become rows, unknown blocks are skipped.

    Stops with ``_CONTROL`` at a section header or interface description (Python
    parses those) and returns (rows used, offset, exit code, bytes needed, last timestamp).
    """
    while True:
        if end - off < 12:
            return i, off, _NEED_MORE, 12, last_ts
        btype = u32(buf, off, le)
        if btype == 0x0A0D0D0A:
            return i, off, _CONTROL, 0, last_ts
        blen = u32(buf, off + 4, le)
        if blen < 12 or blen & 3 or blen > MAX_RECORD:
            return i, off, _MALFORMED, 0, last_ts
        if end - off < blen:
            return i, off, _NEED_MORE, blen, last_ts
        if u32(buf, off + blen - 4, le) != blen:
            return i, off, _MALFORMED, 0, last_ts
        if btype == 1:
            return i, off, _CONTROL, 0, last_ts
        if btype == 6 or btype == 2:      # enhanced / obsolete packet block
            if blen < 32:
                return i, off, _MALFORMED, 0, last_ts
            if btype == 6:
                ifid = u32(buf, off + 8, le)
            else:
                ifid = u16(buf, off + 8, le)
            units = (u32(buf, off + 12, le) << 32) | u32(buf, off + 16, le)
            caplen = u32(buf, off + 20, le)
            if caplen > blen - 32:
                return i, off, _MALFORMED, 0, last_ts
            data = off + 28
            if ifid < n_if:
                last_ts = _ts_to_ns(units, if_mode[ifid], if_k[ifid], if_off[ifid])
            else:
                last_ts = units * 1000  # unknown interface: assume the default microseconds
        elif btype == 3:                  # simple packet block: interface 0, no timestamp
            if blen < 16:
                return i, off, _MALFORMED, 0, last_ts
            ifid = 0
            caplen = min(u32(buf, off + 8, le), blen - 16)
            if n_if > 0 and if_snap[0] > 0:
                caplen = min(caplen, if_snap[0])
            data = off + 12
        else:
            off += blen
            continue
        ts[i] = last_ts
        if ifid < n_if:
            q = _plain_ipv4(buf, data, data + caplen, if_link[ifid])
            if q >= 0:
                reason[i] = COUNTED
                src[i] = u32be(buf, q + 12)
                dst[i] = u32be(buf, q + 16)
            else:
                r, s, d = decode(buf, data, data + caplen, if_link[ifid])
                reason[i] = r
                src[i] = s
                dst[i] = d
        else:
            reason[i] = UNSUPPORTED_LINK
            src[i] = 0
            dst[i] = 0
        i += 1
        off += blen
