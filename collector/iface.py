"""Live capture from a Linux interface (``iface:NAME``, ``iface:any``) through an AF_PACKET socket.

Each received frame is packed as a pcap record into an in-memory capture
(nanosecond timestamps from the wall clock), which is parsed with
``collector.pcap.read_capture`` (through ``collector.stream._parse``) like any
other capture; batches come at least every ``collector.stream.TICK`` seconds.
"""
from __future__ import annotations

import errno
import logging
import select
import socket
import struct
import time
from pathlib import Path
from typing import Iterator

from netsense.errors import ConfigError, SourceError

from .records import Records
from .stream import TICK, _Emitter, _parse

log = logging.getLogger("netsense.collector.livecap")  # the name the live sources had as one module

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_OUTGOING = 4
PACKET_IGNORE_OUTGOING = 23  # Linux >= 4.20: the kernel does not queue packets this host sends
SO_RCVBUFFORCE = 33
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
LINK_ETHERNET = 1
LINK_LINUX_SLL = 113
SNAPLEN = 256              # bytes of each frame kept: the headers, never the payload
BUFFER_BYTES = 4 << 20     # in-memory capture between two parses
RCVBUF_BYTES = 32 << 20


def _hatype(name: str) -> int | None:
    try:
        return int(Path(f"/sys/class/net/{name}/type").read_text())
    except (OSError, ValueError):
        return None


def _loopbacks() -> set[str]:
    return {name for _, name in socket.if_nameindex() if _hatype(name) == ARPHRD_LOOPBACK}


def check_iface(spec: str, name: str) -> None:
    """Fail early with a clear message: no AF_PACKET, unknown interface, or not allowed to capture."""
    if not name:
        raise ConfigError(f"source {spec!r}: iface needs an interface name (iface:eth0, iface:any)")
    if not hasattr(socket, "AF_PACKET"):
        raise SourceError(f"source {spec!r}: interface capture needs Linux (AF_PACKET)")
    if name != "any":
        try:
            socket.if_nametoindex(name)
        except OSError:
            have = ", ".join(n for _, n in socket.if_nameindex())
            raise SourceError(f"source {spec!r}: no interface {name!r} (have: {have})") from None
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    except PermissionError:
        raise SourceError(f"source {spec!r}: capturing from an interface needs root or CAP_NET_RAW") from None
    except OSError as e:
        raise SourceError(f"source {spec!r}: cannot open a packet socket: {e.strerror}") from None


def iface_batches(spec: str, name: str, stop, *, cooked: bool | None = None,
                  snaplen: int = SNAPLEN) -> Iterator[Records]:
    """Capture from interface ``name`` (or every interface: ``any``) until stopped.

    Ethernet and loopback devices are read as raw frames (LINKTYPE_ETHERNET);
    other device types and ``any`` in cooked mode (SOCK_DGRAM: the kernel strips
    the link header and reports the protocol, which becomes a Linux SLL header).
    As libpcap does, packets a loopback device *sends* are dropped: the kernel
    shows every loopback packet twice, once outgoing and once incoming.
    Timestamps are the wall clock when the packet was read.
    """
    if cooked is None:
        cooked = name == "any" or _hatype(name) not in (ARPHRD_ETHER, ARPHRD_LOOPBACK)
    kind = socket.SOCK_DGRAM if cooked else socket.SOCK_RAW
    sll = 16 if cooked else 0
    link = LINK_LINUX_SLL if cooked else LINK_ETHERNET
    header = struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, snaplen + sll, link)  # ns timestamps
    _parse(spec, header + struct.pack("<IIII", 0, 0, 0, 0))  # load the decoder (numba) before packets queue up
    try:
        if name == "any":
            sock = socket.socket(socket.AF_PACKET, kind, socket.htons(ETH_P_ALL))
        else:
            sock = socket.socket(socket.AF_PACKET, kind, 0)  # nothing arrives until bound
            sock.bind((name, ETH_P_ALL))
    except PermissionError:
        raise SourceError(f"source {spec!r}: capturing from an interface needs root or CAP_NET_RAW") from None
    except OSError as e:
        raise SourceError(f"source {spec!r}: cannot capture on {name}: {e.strerror}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF_BYTES)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
    sock.setblocking(False)
    loopbacks = _loopbacks()
    drop_outgoing_all = name in loopbacks
    lo_any = loopbacks if name == "any" else set()
    if drop_outgoing_all:
        try:  # on loopback, skip the outgoing copies in the kernel: half the work (still filtered below)
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        except OSError:
            pass

    buf = bytearray(BUFFER_BYTES)
    view = memoryview(buf)
    buf[:24] = header
    rec_hdr = struct.Struct("<IIII")
    sll_hdr = struct.Struct(">HHH8sH")
    biggest = 16 + sll + snaplen
    recv_into, time_ns, monotonic, trunc = sock.recvfrom_into, time.time_ns, time.monotonic, socket.MSG_TRUNC
    out = _Emitter(spec)
    off = 24
    flush_at = out.last + TICK
    drops, last_drop_log = 0, 0.0
    log.info("%s: capturing on %s (%s mode, %d bytes of each frame)", spec, name, "cooked" if cooked else "raw",
             snaplen)
    try:
        while True:
            if off + biggest > BUFFER_BYTES or monotonic() >= flush_at:
                batches = out.chunk(bytes(view[:off]) if off > 24 else None)
                yield from batches
                if not batches:
                    yield out.empty()
                off = 24
                flush_at = out.last + TICK
                drops += _drops(sock)
                if drops and time.monotonic() - last_drop_log > 10:
                    log.warning("%s: the kernel dropped %d packets so far (capture too slow)", spec, drops)
                    last_drop_log = time.monotonic()
                if stop():
                    return
            try:
                n, addr = recv_into(view[off + 16 + sll:], snaplen, trunc)
            except BlockingIOError:
                select.select([sock], [], [], max(0.0, flush_at - monotonic()))
                continue
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno == errno.ENETDOWN:  # the interface went down: keep waiting for it
                    time.sleep(TICK / 2)
                    continue
                raise SourceError(f"source {spec!r}: capture on {name} failed: {e.strerror}") from None
            if addr[2] == PACKET_OUTGOING and (drop_outgoing_all or addr[0] in lo_any):
                continue
            t = time_ns()
            cap = n if n < snaplen else snaplen
            if cooked:
                sll_hdr.pack_into(buf, off + 16, addr[2], addr[3], 0, b"", addr[1])
            rec_hdr.pack_into(buf, off, t // 1_000_000_000, t % 1_000_000_000, cap + sll, n + sll)
            off += 16 + sll + cap
    finally:
        drops += _drops(sock)
        if drops:
            log.warning("%s: the kernel dropped %d packets in all", spec, drops)
        sock.close()


def _drops(sock) -> int:
    try:
        _packets, dropped = struct.unpack("II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        return dropped
    except OSError:
        return 0
