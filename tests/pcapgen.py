"""Build small synthetic captures in memory (classic pcap and pcapng) for the parser tests.

Everything is plain ``struct`` so the expected bytes are obvious from the code:
frames are built from ``ipv4``/``ipv6``/``eth``/... helpers and wrapped with
``pcap`` or the pcapng block helpers.
"""
from __future__ import annotations

import struct


def ip(s: str) -> int:
    a, b, c, d = (int(x) for x in s.split("."))
    return a << 24 | b << 16 | c << 8 | d


def ipv4(src: str, dst: str, payload: bytes = b"", *, version: int = 4, ihl: int = 5, proto: int = 17,
         options: bytes = b"") -> bytes:
    """An IPv4 header (no checksum: the parser must not care) plus payload."""
    total = min(20 + len(options) + len(payload), 0xFFFF)  # giant test frames: lengths are not checked
    return (struct.pack(">BBHHHBBH", version << 4 | ihl, 0, total, 1, 0, 64, proto, 0)
            + struct.pack(">II", ip(src), ip(dst)) + options + payload)


def ipv6(payload: bytes = b"", nxt: int = 17) -> bytes:
    return struct.pack(">IHBB", 6 << 28, len(payload), nxt, 64) + bytes(range(32)) + payload


def eth(payload: bytes, ethertype: int = 0x0800, tags=()) -> bytes:
    """Ethernet II frame; ``tags`` is a list of (tpid, vid) pushed outermost first."""
    hdr = b"\x00\x11\x22\x33\x44\x55" + b"\x66\x77\x88\x99\xaa\xbb"
    for tpid, vid in tags:
        hdr += struct.pack(">HH", tpid, vid)
    return hdr + struct.pack(">H", ethertype) + payload


def eth_snap(payload: bytes, ethertype: int = 0x0800) -> bytes:
    """802.3 frame with an LLC/SNAP header carrying an ethertype."""
    llc = b"\xaa\xaa\x03\x00\x00\x00" + struct.pack(">H", ethertype)
    return b"\x00" * 12 + struct.pack(">H", len(llc) + len(payload)) + llc + payload


def mpls(payload: bytes, labels=(16, 17)) -> bytes:
    out = b""
    for i, label in enumerate(labels):
        bos = 1 if i == len(labels) - 1 else 0
        out += struct.pack(">I", label << 12 | bos << 8 | 64)
    return out + payload


def pppoe(payload: bytes, proto: int = 0x0021) -> bytes:
    return struct.pack(">BBHHH", 0x11, 0, 0x1234, len(payload) + 2, proto) + payload


def sll(payload: bytes, proto: int = 0x0800, hatype: int = 1) -> bytes:
    return struct.pack(">HHH8sH", 0, hatype, 6, b"\x00\x11\x22\x33\x44\x55\x00\x00", proto) + payload


def sll2(payload: bytes, proto: int = 0x0800, hatype: int = 1) -> bytes:
    return struct.pack(">HHIHBB8s", proto, 0, 2, hatype, 0, 6, b"\x00\x11\x22\x33\x44\x55\x00\x00") + payload


def null(payload: bytes, af: int = 2, order: str = "<") -> bytes:
    return struct.pack(order + "I", af) + payload


def ppp(payload: bytes, proto: int = 0x0021, addr_ctrl: bool = True, compressed: bool = False) -> bytes:
    pfield = struct.pack(">B", proto) if compressed else struct.pack(">H", proto)
    return (b"\xff\x03" if addr_ctrl else b"") + pfield + payload


def chdlc(payload: bytes, proto: int = 0x0800) -> bytes:
    return struct.pack(">BBH", 0x0F, 0, proto) + payload


# --------------------------------------------------------------------------- classic pcap

def pcap(frames, linktype: int = 1, *, endian: str = "<", nanos: bool = False, snaplen: int = 65535,
         version=(2, 4)) -> bytes:
    """Classic pcap; ``frames`` are (ts_ns, data) or (ts_ns, data, caplen_override)."""
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, version[0], version[1], 0, 0, snaplen, linktype)]
    for fr in frames:
        ts_ns, data = fr[0], fr[1]
        caplen = fr[2] if len(fr) > 2 else len(data)
        sec, rest = divmod(ts_ns, 1_000_000_000)
        frac = rest if nanos else rest // 1000
        out.append(struct.pack(endian + "IIII", sec, frac, caplen, max(caplen, len(data))) + data)
    return b"".join(out)


# --------------------------------------------------------------------------- pcapng

def _block(btype: int, body: bytes, endian: str) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(endian + "II", btype, n) + body + struct.pack(endian + "I", n)


def _options(opts, endian: str) -> bytes:
    if not opts:
        return b""
    out = b""
    for code, value in opts:
        out += struct.pack(endian + "HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)
    return out + struct.pack(endian + "HH", 0, 0)


def shb(endian: str = "<", options=()) -> bytes:
    return _block(0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1) + _options(options, endian), endian)


def idb(linktype: int = 1, endian: str = "<", tsresol: int | None = None, snaplen: int = 0,
        tsoffset: int | None = None) -> bytes:
    opts = [(2, b"eth0")]
    if tsresol is not None:
        opts.append((9, bytes([tsresol])))
    if tsoffset is not None:
        opts.append((14, struct.pack(endian + "q", tsoffset)))
    return _block(1, struct.pack(endian + "HHI", linktype, 0, snaplen) + _options(opts, endian), endian)


def epb(data: bytes, units: int, ifid: int = 0, endian: str = "<", caplen: int | None = None) -> bytes:
    caplen = len(data) if caplen is None else caplen
    body = struct.pack(endian + "IIIII", ifid, units >> 32, units & 0xFFFFFFFF, caplen, len(data)) + data
    body += b"\x00" * (-len(body) % 4)
    return _block(6, body + _options([(1, b"a comment")], endian), endian)


def spb(data: bytes, endian: str = "<", origlen: int | None = None) -> bytes:
    return _block(3, struct.pack(endian + "I", len(data) if origlen is None else origlen) + data, endian)


def pb(data: bytes, units: int, ifid: int = 0, endian: str = "<") -> bytes:
    body = struct.pack(endian + "HHIIII", ifid, 0, units >> 32, units & 0xFFFFFFFF, len(data), len(data)) + data
    return _block(2, body, endian)


def unknown_block(endian: str = "<", btype: int = 0x0BADBEEF) -> bytes:
    return _block(btype, b"whatever payload", endian)


def nrb(endian: str = "<") -> bytes:
    """A name resolution block: valid, and of no interest to the parser."""
    rec = struct.pack(endian + "HH", 1, 4 + 8) + bytes([10, 0, 0, 1]) + b"host.a\x00\x00"
    return _block(4, rec + struct.pack(endian + "HH", 0, 0), endian)


# --------------------------------------------------------------------------- bulk

def bulk_pcap(n: int, linktype: int = 1, payload_len: int = 26) -> bytes:
    """``n`` small Ethernet/IPv4 packets with varying addresses, built with numpy for speed."""
    import numpy as np

    frame = eth(ipv4("10.0.0.1", "10.0.0.2", b"\x00" * payload_len))
    rec_len = 16 + len(frame)
    rec = np.frombuffer(struct.pack("<IIII", 0, 0, len(frame), len(frame)) + frame, np.uint8)
    arr = np.tile(rec, n).reshape(n, rec_len)
    idx = np.arange(n, dtype=np.uint32)
    arr[:, 0:4] = (idx // 1000 + 1_600_000_000).astype("<u4").view(np.uint8).reshape(n, 4)
    arr[:, 4:8] = (idx % 1000 * 1000).astype("<u4").view(np.uint8).reshape(n, 4)
    arr[:, 16 + 14 + 12:16 + 14 + 16] = (0x0A000000 + idx % 5000).astype(">u4").view(np.uint8).reshape(n, 4)
    arr[:, 16 + 14 + 16:16 + 14 + 20] = (0x0B000000 + idx % 7000).astype(">u4").view(np.uint8).reshape(n, 4)
    return pcap([], linktype) + arr.tobytes()


def bulk_pcapng(n: int, payload_len: int = 26) -> bytes:
    """``n`` Ethernet/IPv4 enhanced packet blocks (nanosecond interface), same addresses as ``bulk_pcap``."""
    import numpy as np

    frame = eth(ipv4("10.0.0.1", "10.0.0.2", b"\x00" * payload_len))
    block = np.frombuffer(epb(frame, 0), np.uint8)
    blen = len(block)
    arr = np.tile(block, n).reshape(n, blen)
    idx = np.arange(n, dtype=np.uint64)
    units = (1_600_000_000 + idx // 1000) * 10**9 + idx % 1000 * 10**6
    arr[:, 12:16] = (units >> np.uint64(32)).astype("<u4").view(np.uint8).reshape(n, 4)
    arr[:, 16:20] = (units & np.uint64(0xFFFFFFFF)).astype("<u4").view(np.uint8).reshape(n, 4)
    ip_at = 28 + 14
    arr[:, ip_at + 12:ip_at + 16] = (0x0A000000 + idx % 5000).astype(">u4").view(np.uint8).reshape(n, 4)
    arr[:, ip_at + 16:ip_at + 20] = (0x0B000000 + idx % 7000).astype(">u4").view(np.uint8).reshape(n, 4)
    return shb() + idb(1, tsresol=9) + arr.tobytes()
