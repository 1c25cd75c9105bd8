"""Live capture as a byte stream: a pcap stream on stdin or a FIFO, and the framing every live source uses.

Packets are decoded with ``collector.pcap.read_capture``; nothing here looks
inside a frame.  What this module adds is *framing*:

* ``read_capture`` parses a buffer once it is full or the stream has ended,
  which is right for files but would hold packets back indefinitely on a quiet
  pipe.  ``Framer`` instead cuts the bytes read so far at the last complete
  record (or pcapng block) and hands ``read_capture`` a self-contained capture:
  the file header (pcapng: the section header and interface descriptions seen
  so far) followed by those records.  The incomplete rest waits for more bytes.
  ``collector.follow`` frames the growing newest file of a directory the same way.
* ``_Emitter`` stamps the decoded batches with positions and says when a batch
  is due; ``collector.follow`` and ``collector.iface`` (which packs received
  frames into an in-memory capture and parses it with ``_parse``) use it too.

Live sources yield a batch, empty if need be, every ``TICK`` seconds so the
collector closes windows on the wall clock even when traffic stops.
Positions are the cumulative number of records yielded.
"""
from __future__ import annotations

import io
import logging
import os
import select
import struct
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from netsense.errors import ConfigError, SourceError

from .records import Records, make_records

log = logging.getLogger("netsense.collector.livecap")  # the name the live sources had as one module

TICK = 0.25               # seconds between batches at most (the collector needs <= ~0.5 s)
READ_BYTES = 1 << 20      # one read from a pipe or a growing file
CHUNK_BYTES = 4 << 20     # parse once this much is pending, even before the next tick
MAX_RECORD = 256 << 20    # the record-size bound of collector.pcap
_LIBPCAP_MAX_SNAP = 262144


def _empty(position: int) -> Records:
    z = np.empty(0, np.int64)
    return make_records(z, z, z, position=position)


def _parse(spec: str, data: bytes) -> list[Records]:
    """Decode a self-contained in-memory capture with the pcap reader (one batch)."""
    from .pcap import CaptureError, read_capture

    try:
        return list(read_capture(io.BytesIO(data), chunk_bytes=len(data) + 64))
    except CaptureError as e:
        raise SourceError(f"source {spec!r}: {e}") from None


# --------------------------------------------------------------------------- framing

_CLASSIC = {  # magic -> (byte order, record header length)
    b"\xd4\xc3\xb2\xa1": ("<", 16), b"\xa1\xb2\xc3\xd4": (">", 16),
    b"\x4d\x3c\xb2\xa1": ("<", 16), b"\xa1\xb2\x3c\x4d": (">", 16),
    b"\x34\xcd\xb2\xa1": ("<", 24), b"\xa1\xb2\xcd\x34": (">", 24),
}
_SHB = b"\x0a\x0d\x0d\x0a"
_BOM = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}


class Framer:
    """Cuts a classic pcap or pcapng byte stream into self-contained captures of complete records.

    ``feed`` bytes as they arrive; ``take`` returns header + complete records
    (or None).  ``take(final=True)`` at the end of the stream also hands over
    an incomplete last record, which ``read_capture`` reports as
    ``truncated_record``.  After a record with an impossible length the rest of
    the stream cannot be framed: ``take`` hands everything over once (the
    reader reports ``malformed_record`` and stops there) and sets ``broken``.
    """

    def __init__(self):
        self.pending = bytearray()
        self.kind: str | None = None   # "pcap", "pcapng", or "other" (not a capture: let the reader say so)
        self.prefix = b""              # what every chunk must start with
        self.broken = False

    def feed(self, data) -> None:
        self.pending += data

    def _header(self, final: bool) -> bool:
        p = self.pending
        if len(p) < 4:
            if final and p:
                self.kind = "other"
            return self.kind is not None
        magic = bytes(p[:4])
        if magic in _CLASSIC:
            if len(p) < 24:
                if final:
                    self.kind = "other"
                return self.kind is not None
            order, self.hdr_len = _CLASSIC[magic]
            minor, = struct.unpack_from(order + "H", p, 6)
            snaplen, = struct.unpack_from(order + "I", p, 16)
            self.swapped = 1 if minor < 3 else 2 if minor == 3 else 0  # as libpcap and collector.pcap
            self.maxcap = min(MAX_RECORD, max(_LIBPCAP_MAX_SNAP, snaplen))
            self.u32 = struct.Struct(order + "I")
            self.prefix = bytes(p[:24])
            del p[:24]
            self.kind = "pcap"
        elif magic == _SHB:
            self.kind, self.u32 = "pcapng", struct.Struct("<I")
        else:
            self.kind = "other"
        return True

    def _frame_pcap(self) -> int:
        p, n, off, h, u32 = self.pending, len(self.pending), 0, self.hdr_len, self.u32
        while n - off >= h:
            caplen, = u32.unpack_from(p, off + 8)
            if self.swapped:
                origlen, = u32.unpack_from(p, off + 12)
                if self.swapped == 1 or caplen > origlen:
                    caplen = origlen
            if caplen > self.maxcap:
                self.broken = True
                return n
            if n - off < h + caplen:
                break
            off += h + caplen
        return off

    def _frame_pcapng(self) -> int:
        p, n, off = self.pending, len(self.pending), 0
        while n - off >= 12:
            if p[off:off + 4] == _SHB:
                order = _BOM.get(bytes(p[off + 8:off + 12]))
                if order is None:
                    self.broken = True
                    return n
                self.u32 = struct.Struct(order + "I")
            btype, blen = self.u32.unpack_from(p, off)[0], self.u32.unpack_from(p, off + 4)[0]
            if blen < 12 or blen & 3 or blen > MAX_RECORD:
                self.broken = True
                return n
            if n - off < blen:
                break
            if btype == 0x0A0D0D0A:     # a new section: its interfaces start over
                self.prefix = bytes(p[off:off + blen])
            elif btype == 1:            # interface description: later packets refer to it by index
                self.prefix += bytes(p[off:off + blen])
            off += blen
        return off

    def take(self, final: bool = False) -> bytes | None:
        if self.broken:
            return None
        if self.kind is None and not self._header(final):
            return None
        prefix = self.prefix
        if self.kind == "other":
            cut, self.broken = len(self.pending), True
        elif self.kind == "pcap":
            cut = self._frame_pcap()
        else:
            cut = self._frame_pcapng()
        if final or self.broken:
            cut = len(self.pending)
        if not cut:
            return None
        out = prefix + bytes(self.pending[:cut])
        del self.pending[:cut]
        return out


class _Emitter:
    """Turns framed chunks into position-stamped batches; remembers when it last yielded."""

    def __init__(self, spec: str):
        self.spec = spec
        self.position = 0
        self.last = time.monotonic()

    def chunk(self, data: bytes | None) -> list[Records]:
        """The batches of a framed chunk, for the caller to yield (none for None)."""
        out = []
        for rec in _parse(self.spec, data) if data else ():
            self.position += len(rec)
            out.append(Records(rec.ts_ns, rec.src, rec.dst, rec.reason, self.position, rec.extra_skipped))
        if out:
            self.last = time.monotonic()
        return out

    def due(self) -> bool:
        return time.monotonic() - self.last >= TICK

    def empty(self) -> Records:
        self.last = time.monotonic()
        return _empty(self.position)


# --------------------------------------------------------------------------- stdin / FIFO

def check_stdin(spec: str) -> None:
    try:
        os.fstat(0)
        if os.isatty(0):
            raise ConfigError(f"source {spec!r}: standard input is a terminal; pipe a capture into it "
                              "(tcpdump -U -w - ... | netsense-collector run ... --source pcap:-)")
    except OSError:
        raise SourceError(f"source {spec!r}: standard input is closed") from None


def stream_batches(spec: str, path: Path | None, stop) -> Iterator[Records]:
    """A capture arriving on stdin (``path`` None) or a FIFO, parsed as it arrives.

    A FIFO is opened non-blocking, so waiting for its writer does not block
    the collector; the stream ends when the writer closes it after sending data.
    """
    if path is None:
        fd, own = 0, False  # fd 0 itself: sys.stdin may be replaced (test runners), the descriptor is not
    else:
        try:
            fd, own = os.open(path, os.O_RDONLY | os.O_NONBLOCK), True
        except OSError as e:
            raise SourceError(f"source {spec!r}: cannot open {path}: {e.strerror}") from None
    where = "standard input" if path is None else str(path)
    fr, out, seen, eof = Framer(), _Emitter(spec), 0, False
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], TICK)
            if ready:
                try:
                    data = os.read(fd, READ_BYTES)
                except BlockingIOError:
                    data = None
                if data:
                    fr.feed(data)
                    seen += len(data)
                elif data == b"":
                    if seen or path is None:
                        eof = True
                    else:
                        time.sleep(TICK)  # a FIFO nobody has opened for writing yet
            stopping = stop()
            if eof or stopping or len(fr.pending) >= CHUNK_BYTES or out.due():
                if eof and not seen:
                    raise SourceError(f"source {spec!r}: {where} ended without any capture data")
                batches = out.chunk(fr.take(final=eof))
                yield from batches
                if not batches:
                    yield out.empty()
                if fr.broken:
                    log.error("%s: the capture on %s has a malformed record; nothing after it can be read",
                              spec, where)
                    return
                if eof:
                    return
                if stopping:
                    if fr.pending:
                        log.info("%s: stopping with %d bytes of an incomplete record unread", spec, len(fr.pending))
                    return
    finally:
        if own:
            os.close(fd)
