"""Live captures: a pcap stream (stdin or a FIFO), a directory of rotating capture files, an interface.

All three decode packets with ``collector.pcap.read_capture``; nothing here
looks inside a frame.  What this module adds is *framing*:

* ``read_capture`` parses a buffer once it is full or the stream has ended,
  which is right for files but would hold packets back indefinitely on a quiet
  pipe.  ``Framer`` instead cuts the bytes read so far at the last complete
  record (or pcapng block) and hands ``read_capture`` a self-contained capture:
  the file header (pcapng: the section header and interface descriptions seen
  so far) followed by those records.  The incomplete rest waits for more bytes.
* An interface capture packs each received frame as a pcap record into an
  in-memory capture (nanosecond timestamps from the wall clock) and parses it
  the same way.

Live sources yield a batch, empty if need be, every ``TICK`` seconds so the
collector closes windows on the wall clock even when traffic stops.
Positions are the cumulative number of records yielded.
"""
from __future__ import annotations

import errno
import fnmatch
import glob
import io
import logging
import os
import select
import socket
import struct
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from netsense.errors import ConfigError, SourceError

from .records import Records, make_records

log = logging.getLogger("netsense.collector.livecap")

TICK = 0.25               # seconds between batches at most (the collector needs <= ~0.5 s)
READ_BYTES = 1 << 20      # one read from a pipe or a growing file
CHUNK_BYTES = 4 << 20     # parse once this much is pending, even before the next tick
DEFAULT_SETTLE = 5.0      # follow: seconds a compressed/empty file must keep its size to be complete
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


# --------------------------------------------------------------------------- follow a directory

def follow_target(spec: str, arg: str) -> tuple[Path, str | None]:
    """(directory, name pattern or None) for ``follow=1``: a directory, a glob in one directory, or a file."""
    p = Path(arg).expanduser()
    if p.is_dir():
        return p, None
    directory, name = p.parent, p.name
    if glob.has_magic(str(directory)):
        raise ConfigError(f"source {spec!r}: with follow=1 only the file name may be a pattern")
    if not directory.is_dir():
        raise SourceError(f"source {spec!r}: directory {directory} does not exist")
    return directory, name  # a glob of names, or one (possibly future) file name


def follow_batches(spec: str, directory: Path, pattern: str | None, settle: float, stop) -> Iterator[Records]:
    """Read the capture files of ``directory`` in name order as they appear, forever (until stopped).

    The newest file is read as it grows, a complete record at a time.  A file
    is finished (its incomplete tail, if any, reported as truncated_record)
    once a file with a later name exists and everything up to its end has been
    read.  Compressed files cannot be read while written: they are read whole
    once a later file exists or their size has not changed for ``settle``
    seconds.  Names starting with "." are ignored, so writers may write
    ``.name`` and rename it.  A file name is read once: rotation schemes that
    reuse names (tcpdump -W) are not supported.  Files present at start are
    read too, and a restarted collector is a new live run: it reads again the
    files still in the directory, so move finished files away (or narrow the
    glob) before restarting.
    """
    from .pcap import CaptureError, open_capture, read_capture
    from .sources import CAPTURE_MAGICS, COMPRESSED_MAGICS, natural_key

    done: set[str] = set()
    sizes: dict[str, tuple] = {}   # name -> (size, mtime_ns, monotonic time it was first seen so)
    out = _Emitter(spec)
    cur = None                     # (name, file object, Framer) of the file being read as it grows
    listing_error = 0.0

    def listing() -> list[str]:
        nonlocal listing_error
        try:
            with os.scandir(directory) as it:
                names = [e.name for e in it if not e.name.startswith(".")
                         and (pattern is None or fnmatch.fnmatchcase(e.name, pattern)) and _is_file(e)]
        except OSError as e:
            if time.monotonic() - listing_error > 60:
                log.warning("%s: cannot list %s: %s; retrying", spec, directory, e.strerror or e)
                listing_error = time.monotonic()
            return []
        return sorted(names, key=natural_key)

    def settled(name: str, st) -> bool:
        key = (st.st_size, st.st_mtime_ns)
        old = sizes.get(name)
        if old is None or old[:2] != key:
            sizes[name] = (*key, time.monotonic())
            return False
        return time.monotonic() - old[2] >= settle

    def finish(name: str):
        done.add(name)
        sizes.pop(name, None)

    def restamped(batches):
        for rec in batches:
            out.position += len(rec)
            out.last = time.monotonic()
            yield Records(rec.ts_ns, rec.src, rec.dst, rec.reason, out.position, rec.extra_skipped)

    def wait():
        time.sleep(TICK / 2)
        if out.due():
            yield out.empty()

    try:
        while True:
            if stop():
                if cur is not None:  # the collector takes one more batch after stopping: the complete records
                    yield from out.chunk(cur[2].take())
                return
            if cur is None:
                names = listing()
                todo = [n for n in names if n not in done]
                if not todo:
                    yield from wait()
                    continue
                name = todo[0]
                newer = names[-1] != name and natural_key(names[-1]) > natural_key(name)
                path = directory / name
                try:
                    st = path.stat()
                    with open(path, "rb") as f:
                        head = f.read(4)
                except FileNotFoundError:
                    log.warning("%s: %s disappeared before it was read", spec, path)
                    finish(name)
                    continue
                except OSError as e:
                    raise SourceError(f"source {spec!r}: cannot read {path}: {e.strerror}") from None
                complete = newer or settled(name, st)
                if len(head) < 4 or head[:2] in COMPRESSED_MAGICS:
                    if not complete:  # still being written: wait for it
                        yield from wait()
                        continue
                    if len(head) < 4:
                        if newer:
                            log.info("%s: skipping %s: empty", spec, path)
                            finish(name)
                        else:  # an empty newest file: keep waiting for its header
                            yield from wait()
                        continue
                if head in CAPTURE_MAGICS and not newer:
                    cur = (name, open(path, "rb"), Framer())  # the newest file: read it as it grows
                    log.info("%s: reading %s as it is written", spec, path)
                    continue
                if head not in CAPTURE_MAGICS and head[:2] not in COMPRESSED_MAGICS:
                    log.warning("%s: skipping %s: not a capture file", spec, path)
                    finish(name)
                    continue
                # A complete file (a later one exists, or a settled compressed one): read it whole.
                log.info("%s: reading %s", spec, path)
                try:
                    with open_capture(path) as f:
                        for rec in restamped(read_capture(f)):
                            yield rec
                            if stop():
                                return
                except CaptureError as e:
                    log.error("%s: skipping the rest of %s: %s", spec, path, e)
                except (OSError, EOFError) as e:
                    log.error("%s: skipping the rest of %s: %s", spec, path, getattr(e, "strerror", None) or e)
                finish(name)
                continue

            name, f, fr = cur
            data = f.read(READ_BYTES)
            if data:
                fr.feed(data)
                if len(fr.pending) >= CHUNK_BYTES or out.due():
                    yield from _chunk_or_empty(out, fr.take())
                    if fr.broken:
                        log.error("%s: %s has a malformed record; skipping the rest of it", spec, directory / name)
                        f.close()
                        finish(name)
                        cur = None
                continue
            # At the current end of the file: finish it once a later file exists, else wait for more.
            names = listing()
            if names and natural_key(names[-1]) > natural_key(name):
                while True:  # the writer has moved on: whatever is in the file now is all of it
                    data = f.read(READ_BYTES)
                    if not data:
                        break
                    fr.feed(data)
                yield from _chunk_or_empty(out, fr.take(final=True))
                f.close()
                finish(name)
                cur = None
                continue
            batches = out.chunk(fr.take())
            yield from batches
            if fr.broken:
                log.error("%s: %s has a malformed record; skipping the rest of it", spec, directory / name)
                f.close()
                finish(name)
                cur = None
                continue
            if not batches:
                yield from wait()
    finally:
        if cur is not None:
            if cur[2].pending:
                log.info("%s: stopping with %d bytes of an incomplete record of %s unread",
                         spec, len(cur[2].pending), directory / cur[0])
            cur[1].close()


def _is_file(entry) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def _chunk_or_empty(out: _Emitter, data) -> list[Records]:
    return out.chunk(data) or [out.empty()]


# --------------------------------------------------------------------------- interfaces (AF_PACKET)

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
