"""Interoperability with the MIT/IEEE/Amazon Anonymized Network Sensing Graph Challenge data.

``import_tar`` lands each ``N.grb`` member of a Graph Challenge tar as a netsense window
file; ``export_tar`` writes netsense window files as a Graph Challenge style tar.

What the challenge's tars really are
------------------------------------
Checked against the challenge's reference tools, CAIDA/ILANDS-sensor on GitHub
("GraphBLAS Network Tools"; the Graph Challenge paper, arXiv:2409.08115, names this code its
GraphBLAS reference implementation):

* ``src/pcap/pcap2grb.c`` and ``src/libtrace/trace2grb.c`` (commit 209f38ca) and the older
  ``accolade/pcap2grb.c`` all build each matrix with
  ``GrB_Matrix_new(&Gmat, GrB_UINT32, 4294967296, 4294967296)`` and
  ``GrB_Matrix_build(..., V = 1 per packet, GrB_PLUS_UINT32)``, which gives a 2^32 x 2^32
  **UINT32** matrix whose values are packet counts. They serialize it with
  ``GxB_Matrix_serialize`` and a descriptor set to ``GxB_COMPRESSION_ZSTD + 1``
  (**zstd level 1**). The comment in trace2grb.c says "ZSTD level 1 is best".
* A member holds ``SUBWINSIZE = 1 << 17`` valid packets (IPv4 packets, minus the
  255.255.255.255 broadcast). pcap2grb drops the trailing packets that don't fill a member
  unless run with ``-O``.
  A tar holds ``files_per_window = 64`` members by default (64 x 2^17 = 2^23 packets).
* The tar is written by hand (``add_blob_to_tar``): one 512-byte POSIX **ustar** header per
  member, named ``"%d.grb"`` from 0 in order, **with no folder**, mode 0644, uid/gid 0,
  ``mtime = time(NULL)`` (when the file was written, not when the packets were seen),
  followed by the blob padded to 512 bytes. **No end-of-archive zero blocks** are written.
  The writer opens the final name directly with O_APPEND, so a reader can find a tar that
  is only half written. The tar's own name is ``<%Y%m%d-%H%M%S>.<packets>.tar``, taken from
  ``localtime()`` of the first packet. That is a local-time stamp with no zone, and neither
  the members nor the blobs carry any timestamp, so ``import_tar`` takes ``start`` from the
  caller. ``tar_name_time`` parses the stamp if you want it.
* Addresses: the index is ``ip_hdr->ip_src.s_addr``, the network-order bytes loaded as a
  native uint32 on a little-endian host, so **row/col = the address bytes read as a
  little-endian integer** (10.0.0.1 -> 0x0100000A). pcap2grb's ``-S`` option applies
  ``ntohl`` and gives big-endian indices instead. The reference dump tool agrees:
  ``src/util/gbdump.c`` deserializes as ``GrB_UINT32`` and prints octet k = ``i >> 8k``
  (the low byte first). netsense uses the big-endian integer, so ``byteswap=True`` (the
  default) swaps the bytes of every row and column index both ways.
* Readers: the reference Python (``python-v2/tar_matrix_processing.py``) opens the tar with
  ``tarfile`` and keeps members whose name ends in ``.grb``. ``matlab/readTar.m`` walks the
  512-byte headers and stops at an all-zero name. ``gbdump.c`` requires ``"ustar\\0"`` magic
  on every header up to the end of the file, so a standard end-of-archive marker makes it
  exit with "invalid tar file" after the last member. ``export_tar`` therefore writes the
  tars exactly as pcap2grb does (ustar, ``N.grb``, no end marker). GNU tar and Python's
  ``tarfile`` read that layout without complaint.

Import rules
------------
* Identity: ``run`` is the first 12 hex digits of
  ``sha256("netsense-graphchallenge/1\\0" + for each N.grb member in tar order: name + "\\0" +
  sha256(member bytes))``. It fingerprints the tar's content, not its path, mtime,
  ``start``, ``window_seconds`` or ``byteswap``. Those change how the same packets are
  presented, never which packets they are. So importing the same tar again (even with other
  options) yields the same identities, and the aggregator cannot count the packets twice.
  ``seq`` = N from the member name. ``start``/``end`` = ``start + N*window_seconds``,
  ``+ window_seconds`` (made-up, equally spaced slots: the data has no time), ``packets`` =
  ``records`` = the matrix sum, ``skipped`` = {}, ``first_ts_ns``/``last_ts_ns`` = null.
* The tar is streamed twice (``tarfile`` mode ``'r|*'``, so .tar.gz/.bz2/.xz work too) and
  nothing is extracted to disk. Pass 1 hashes the members for the run fingerprint, because
  window names contain it. Pass 2 converts and lands them, and checks that each member's
  bytes still match pass 1: a tar that changes while it is imported raises ``SourceError``.
* Bad members are logged, counted and skipped. A member is bad if it doesn't deserialize,
  isn't 2^32 x 2^32, has a non-numeric type, has negative, fractional or non-finite values,
  has a name ``N.grb`` with no number, repeats an N, isn't a regular file, or is too large.
  Explicit zero entries carry no packets and are dropped. Damage to the tar itself (a
  truncated file, a corrupt header, data after the end marker) is reported as one bad entry
  ``(archive)``: the members before it are still landed.
* Idempotent: an identity already present in ``nodes/<node>/`` or ``archive/<node>/``
  (whatever its start/end) is not landed again. A race with another writer is settled by
  the no-clobber landing rule (``AlreadyLanded``).
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import lzma
import os
import re
import socket
import tarfile
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import graphblas as gb
import numpy as np

from netsense import landing, matrix, winfile
from netsense.errors import AlreadyLanded, BadWindowFile, ConfigError, NetsenseError, SourceError
from netsense.layout import Layout, WindowName, check_node

log = logging.getLogger("netsense.graphchallenge")

N = winfile.N                     # 2^32: the IPv4 address space
MEMBER_RE = re.compile(r"^(\d{1,9})\.grb\Z", re.ASCII)  # pcap2grb: sprintf(th.name, "%d.grb", findex)
CHALLENGE_DTYPE = "UINT32"        # GrB_Matrix_new(&Gmat, GrB_UINT32, 2^32, 2^32)
CHALLENGE_COMPRESSION = ("zstd", 1)  # GxB_COMPRESSION_ZSTD + 1
CHALLENGE_PACKETS = 1 << 17       # SUBWINSIZE: valid packets per member
MAX_MEMBER_BYTES = 1 << 30        # a 2^17-packet member is well under 2 MB; refuse absurd ones before reading
MAX_MEMBER_NVALS = 1 << 26        # entries per deserialized member
FINGERPRINT_TAG = b"netsense-graphchallenge/1\0"
ARCHIVE = "(archive)"             # the "member" name used when the tar itself is damaged
_BLOCK = tarfile.BLOCKSIZE        # 512
_TAR_NAME = re.compile(r"^(\d{8}-\d{6})\.(\d+)\.tar", re.ASCII)
_STREAM_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError)  # reading the stream


class GraphChallengeError(NetsenseError):
    """A netsense window cannot be represented in the Graph Challenge format (export)."""


class _Damage(Exception):
    """The tar stream itself cannot be read any further."""


class _Bad(Exception):
    """A bad member: ``reason`` is a short tag, ``detail`` says why."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass
class ImportSummary:
    """What ``import_tar`` did with one tar."""

    tar: str
    node: str
    run: str = ""
    members: int = 0            # N.grb members in the tar (good or bad)
    landed: int = 0             # window files written by this call
    already_present: int = 0    # identities already in nodes/<node>/ or archive/<node>/
    bad: int = 0                # bad members + damage to the archive itself
    packets: int = 0            # packets in the windows landed by this call
    zero_entries_dropped: int = 0
    ignored: int = 0            # other tar members (folders, READMEs): not part of the data
    files: list = field(default_factory=list)        # window file of every good member, landed or present
    bad_members: list = field(default_factory=list)  # {"member", "reason", "detail"}
    seconds: float = 0.0


@dataclass
class _Entry:
    """One N.grb member as seen by pass 1."""

    name: str
    seq: int | None
    size: int
    digest: bytes | None = None
    problem: tuple[str, str] | None = None


# --- reading -----------------------------------------------------------------------------
def _is_grb(info: tarfile.TarInfo) -> bool:
    return info.name.rsplit("/", 1)[-1].lower().endswith(".grb")


def _tail_damage(tf: tarfile.TarFile) -> str | None:
    """After ``tarfile`` stopped iterating, say whether it stopped at a real end.

    ``tarfile`` ends the iteration silently on a corrupt or truncated header in the middle
    of an archive. A real end is either the end of the stream exactly at a header boundary
    (pcap2grb writes no end marker) or a zero block followed only by zeros.
    """
    s = tf.fileobj
    try:
        consumed = s.tell() - tf.offset
        if consumed not in (0, _BLOCK):
            return f"truncated header at offset {tf.offset}"
        while True:
            chunk = s.read(1 << 16)
            if not chunk:
                return None
            if chunk.strip(b"\0"):
                return f"corrupt header at offset {tf.offset}, or data after the end-of-archive marker"
    except _STREAM_ERRORS as e:
        return f"unreadable after offset {tf.offset}: {e}"


def _walk(f, path, on_member) -> str | None:
    """Stream the tar in ``f`` (mode 'r|*'), call ``on_member(tf, info)`` for each member.

    Returns a description of damage to the archive, or None. Errors reading the stream
    (``_read`` turns them into ``_Damage`` inside ``on_member``) end the walk as damage;
    anything else propagates.
    """
    f.seek(0)
    try:
        tf = tarfile.open(fileobj=f, mode="r|*")
    except _STREAM_ERRORS as e:
        raise SourceError(f"{path} is not a readable tar archive: {e}") from None
    with tf:
        members = iter(tf)
        while True:
            try:
                info = next(members)
            except StopIteration:
                return _tail_damage(tf)
            except _STREAM_ERRORS as e:
                return f"unreadable at offset {tf.offset}: {e}"
            try:
                on_member(tf, info)
            except _Damage as d:
                return str(d)


def _read(tf: tarfile.TarFile, info: tarfile.TarInfo, consume=None) -> bytes:
    """A member's bytes (or, with ``consume``, feed them to it in chunks); stream errors -> ``_Damage``."""
    try:
        r = tf.extractfile(info)
        if consume is None:
            data = r.read()
        else:
            data = b""
            while chunk := r.read(1 << 20):
                consume(chunk)
    except _STREAM_ERRORS as e:
        raise _Damage(f"the archive ends or breaks inside member {info.name}: {e}") from None
    return data


def _survey(f, path, max_bytes: int) -> tuple[list[_Entry], str | None, int]:
    """Pass 1: list the N.grb members, hash them, find bad names and duplicates."""
    entries: list[_Entry] = []
    seen: set[int] = set()
    ignored = 0

    def on_member(tf, info):
        nonlocal ignored
        if not _is_grb(info):
            ignored += 1
            return
        base = info.name.rsplit("/", 1)[-1]
        m = MEMBER_RE.match(base)
        e = _Entry(info.name, int(m[1]) if m else None, info.size)
        entries.append(e)
        if not info.isreg():
            e.problem = ("not_regular_file", f"tar member type {info.type!r}")
            return
        if e.seq is None:
            e.problem = ("bad_name", "not <number>.grb")
        elif e.seq in seen:
            e.problem = ("duplicate_seq", f"a member numbered {e.seq} came earlier")
        else:
            seen.add(e.seq)
        if info.size > max_bytes and e.problem is None:
            e.problem = ("too_large", f"{info.size} bytes, limit {max_bytes}")
        h = hashlib.sha256()
        _read(tf, info, h.update)
        e.digest = h.digest()

    damage = _walk(f, path, on_member)
    if damage and entries and entries[-1].digest is None and entries[-1].problem is None:
        entries[-1].problem = ("truncated", "the archive ends inside this member")
    return entries, damage, ignored


def _fingerprint(entries: Iterable[_Entry]) -> str:
    h = hashlib.sha256(FINGERPRINT_TAG)
    for e in entries:
        h.update(e.name.rsplit("/", 1)[-1].encode("utf-8", "surrogateescape") + b"\0")
        h.update(e.digest or b"-")
    return h.hexdigest()[:12]


def _single_threaded():
    """A GraphBLAS context with one thread, engaged for the calling thread only.

    A member is only 2^17 packets. SuiteSparse's OpenMP start-up costs more than it saves on
    matrices that small: (de)serializing one with 2 threads took ~10x longer than with 1 on
    the 2-core test box. trace2grb.c does the same (``GxB_set(GxB_NTHREADS, 1)``, "with
    matrices this small (2^17), NTHREADS == 1 yields best performance for serialization").
    The context also covers ``winfile.encode``. The process-wide setting is left alone.
    """
    try:
        return gb.ss.Context(engage=False, stack=False, nthreads=1)
    except Exception:  # SuiteSparse:GraphBLAS < 8 has no contexts
        return contextlib.nullcontext()


def _swap(idx: np.ndarray) -> np.ndarray:
    """Byte-swap 32-bit indices held in uint64 (the GraphBLAS index type)."""
    return idx.astype(np.uint32).byteswap().astype(np.uint64)


def _coo(m: gb.Matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, values) of a hypersparse matrix, in no particular order.

    ``to_coo`` first waits on the matrix, and on a freshly deserialized 2^17-packet member
    that wait (sorting and hashing the hyperlist) cost twice the deserialization itself.
    Exporting the hypersparse CSR arrays unsorted skips it. ``matrix.from_unique_pairs`` sorts anyway.
    """
    d = m.ss.export("hypercsr", sort=False)
    indptr = d["indptr"].astype(np.int64)
    rows = np.repeat(d["rows"], np.diff(indptr))
    cols, vals = d["col_indices"], d["values"]
    if d["is_iso"]:
        vals = np.full(len(cols), vals[0] if len(vals) else 0, dtype=vals.dtype)
    return rows, cols, vals


def to_netsense(data: bytes, *, byteswap: bool = True) -> tuple[gb.Matrix, int, int]:
    """A challenge blob -> (UINT64 matrix in netsense's convention, packets, zero entries dropped).

    Raises ``_Bad`` for anything that isn't a 2^32 x 2^32 matrix of non-negative packet counts.
    """
    try:
        m = winfile.deserialize_traffic_matrix(data, "member")
    except BadWindowFile as e:
        raise _Bad(e.reason, e.detail) from None
    np_type = getattr(m.dtype, "np_type", None)
    kind = getattr(np_type, "kind", "?")
    if kind not in "iuf":
        raise _Bad("wrong_dtype", f"{m.dtype}: packet counts must be integers (the challenge uses UINT32)")
    if m.nvals > MAX_MEMBER_NVALS:
        raise _Bad("too_large", f"{m.nvals} entries, limit {MAX_MEMBER_NVALS}")
    rows, cols, vals = _coo(m)
    if kind == "f":
        if not np.isfinite(vals).all() or (vals < 0).any() or (vals != np.floor(vals)).any() \
                or (vals > 2.0 ** 53).any():
            raise _Bad("wrong_content", f"{m.dtype} values that are not whole packet counts")
    elif kind == "i" and (vals < 0).any():
        raise _Bad("wrong_content", "negative packet counts")
    nonzero = vals != 0
    zeros = int(len(vals) - np.count_nonzero(nonzero))
    if zeros:
        rows, cols, vals = rows[nonzero], cols[nonzero], vals[nonzero]
    vals = vals.astype(np.uint64)
    # exact sum in two halves (each fits in uint64 for < 2^32 entries), then check it fits UINT64
    packets = (int(np.sum(vals >> np.uint64(32), dtype=np.uint64)) << 32) + int(
        np.sum(vals & np.uint64(0xFFFFFFFF), dtype=np.uint64))
    if packets >= 1 << 64:
        raise _Bad("wrong_content", "the packet count does not fit in 64 bits")
    if byteswap:
        rows, cols = _swap(rows), _swap(cols)
    return matrix.from_unique_pairs(rows, cols, vals), packets, zeros


def tar_name_time(tar_path) -> int | None:
    """The stamp in a pcap2grb tar name (``20240101-120000.8388608.tar``) as seconds, read as UTC.

    pcap2grb writes ``localtime()`` of the first packet and records no zone: pass the
    result (corrected for the capture host's zone if it wasn't UTC) as ``start`` if you
    want it. Returns None for other names.
    """
    m = _TAR_NAME.match(Path(tar_path).name)
    if not m:
        return None
    try:
        return int(datetime.strptime(m[1], "%Y%m%d-%H%M%S").replace(tzinfo=timezone.utc).timestamp())
    except ValueError:
        return None


def _existing(layout: Layout, node: str, run: str) -> dict[int, Path]:
    """Window files of ``run`` already landed (nodes/) or consumed (archive/), by seq.

    nodes/ is listed before archive/: a file the aggregator moves in between is seen in archive/.
    """
    found: dict[int, Path] = {}
    for d in (layout.landing(node), layout.archive(node)):
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            continue
        for n in names:
            w = WindowName.parse(n)
            if w is not None and w.node == node and w.run == run:
                found.setdefault(w.seq, d / n)
    return found


def import_tar(tar_path, shared, node, *, start: int = 0, window_seconds: int = 60, byteswap: bool = True,
               anonymization: str | None = None, secret: bytes | None = None,
               max_member_bytes: int = MAX_MEMBER_BYTES) -> ImportSummary:
    """Land each N.grb member of a Graph Challenge tar as a netsense window in ``shared/nodes/<node>/``.

    Window ``seq`` = N. ``run`` = the tar's content fingerprint (see the module docstring).
    Slots are ``[start + N*window_seconds, start + (N+1)*window_seconds)``: the tars carry no
    packet timestamps, so the caller picks ``start`` (``tar_name_time`` reads pcap2grb's
    local-time file name stamp). ``packets`` = ``records`` = the matrix sum, ``skipped`` = {}.
    The matrix is converted to UINT64. With ``byteswap`` (the default) the row and column
    indices are byte-swapped from the challenge's little-endian reading to netsense's
    big-endian addresses. Pass ``byteswap=False`` for tars made with ``pcap2grb -S``.
    ``anonymization`` is the header's anonymization field: the challenge data is
    CryptoPAN-anonymized, but the aggregator refuses windows whose field differs from the
    directory's, so keep the default None unless the directory uses a named key. ``secret``
    signs the header the way ``collector --secret`` does.

    Bad members are logged, counted and skipped, and never raise. ``SourceError`` means the
    file isn't a tar at all or changed during the import. ``LandingError`` means the shared
    directory can't be written (then run the import again: it is idempotent).
    """
    t0 = time.monotonic()
    check_node(node)
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ConfigError(f"start must be a non-negative integer (UTC seconds), not {start!r}")
    if isinstance(window_seconds, bool) or not isinstance(window_seconds, int) or window_seconds < 1:
        raise ConfigError(f"window_seconds must be a positive integer, not {window_seconds!r}")
    path = Path(tar_path)
    summary = ImportSummary(str(path), node)
    layout = Layout(shared)
    landing_dir = layout.landing(node)
    host = socket.gethostname()
    source = f"graphchallenge:{path.resolve()}"

    def bad(member: str, reason: str, detail: str) -> None:
        summary.bad += 1
        summary.bad_members.append({"member": member, "reason": reason, "detail": detail})
        log.warning("%s: member %s skipped: %s: %s", path, member, reason, detail)

    try:
        f = open(path, "rb")
    except OSError as e:
        raise SourceError(f"cannot open {path}: {e.strerror or e}") from None
    with f, _single_threaded():
        entries, damage, summary.ignored = _survey(f, path, max_member_bytes)
        summary.members = len(entries)
        summary.run = run = _fingerprint(entries)
        for e in entries:  # the last window's end must still be a valid stamp (year <= 9999)
            if e.problem is None and e.seq is not None and start + (e.seq + 1) * window_seconds > 253402300799:
                e.problem = ("bad_name", f"member number {e.seq} puts its window after the year 9999")
        layout.ensure(landing_dir)
        present = _existing(layout, node, run)
        moved = [p for s, p in present.items() if WindowName.parse(p.name).start != start + s * window_seconds]
        if moved:
            log.warning("%s: %d window(s) of run %s were imported before with another start/window_seconds; "
                        "keeping them (e.g. %s)", path, len(moved), run, moved[0].name)
        pos = 0

        def on_member(tf, info):
            nonlocal pos
            if not _is_grb(info):
                return
            if pos >= len(entries) or entries[pos].name != info.name:
                raise SourceError(f"{path} changed while it was imported (member {info.name})")
            e = entries[pos]
            pos += 1
            if e.problem:
                bad(e.name, *e.problem)
                return
            if e.seq in present:
                summary.already_present += 1
                summary.files.append(present[e.seq])
                return
            data = _read(tf, info)
            if hashlib.sha256(data).digest() != e.digest:
                raise SourceError(f"{path} changed while it was imported (member {info.name})")
            try:
                a, packets, zeros = to_netsense(data, byteswap=byteswap)
            except _Bad as b:
                bad(e.name, b.reason, b.detail)
                return
            summary.zero_entries_dropped += zeros
            name = WindowName(node, start + e.seq * window_seconds, start + (e.seq + 1) * window_seconds, run, e.seq)
            header = winfile.window_header(
                name, source=f"{source}#{e.name}", records=packets, packets=packets, skipped={},
                first_ts_ns=None, last_ts_ns=None, anonymization=anonymization, created=time.time(), host=host)
            extra = {} if secret is None else {"secret": secret}  # older winfile.encode has no secret=
            blob = winfile.encode(header, {"A": a}, **extra)
            final = landing_dir / name.filename
            try:
                landing.atomic_write(final, blob)
                summary.landed += 1
                summary.packets += packets
            except AlreadyLanded:  # landed meanwhile by a concurrent import of the same tar
                summary.already_present += 1
            summary.files.append(final)

        _walk(f, path, on_member)  # damage was found and is reported by pass 1
        if pos != len(entries):
            raise SourceError(f"{path} changed while it was imported ({pos} of {len(entries)} members read again)")
    if damage:
        bad(ARCHIVE, "damaged_tar", damage)
    if not entries:
        log.warning("%s holds no N.grb members: is it a Graph Challenge tar?", path)
    summary.seconds = time.monotonic() - t0
    log.info("%s -> node %s run %s: %d members, %d landed, %d already present, %d bad, %d packets (%.2fs)",
             path, node, run, summary.members, summary.landed, summary.already_present, summary.bad,
             summary.packets, summary.seconds)
    return summary


# --- writing -----------------------------------------------------------------------------
def to_challenge(a: gb.Matrix, *, byteswap: bool = True) -> bytes:
    """A netsense traffic matrix -> a challenge blob: UINT32, little-endian-bytes addresses, zstd level 1."""
    rows, cols, vals = a.to_coo()
    if len(vals) and int(vals.max()) > 0xFFFFFFFF:
        raise GraphChallengeError(f"a link carries {int(vals.max())} packets, more than UINT32 holds")
    if byteswap:
        rows, cols = _swap(rows), _swap(cols)
    m = matrix.from_unique_pairs(rows, cols, vals.astype(np.uint32))  # CHALLENGE_DTYPE
    raw = m.ss.serialize(CHALLENGE_COMPRESSION[0], level=CHALLENGE_COMPRESSION[1], nthreads=1)
    return raw.tobytes() if isinstance(raw, np.ndarray) else bytes(raw)


def _ustar_header(name: str, size: int, mtime: int) -> bytes:
    """The 512-byte header pcap2grb writes: ustar, mode 0644, uid/gid 0, regular file."""
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = size, 0o644, mtime, 0, 0, "", ""
    ti.type = tarfile.REGTYPE
    return ti.tobuf(format=tarfile.USTAR_FORMAT, encoding="ascii", errors="strict")


def export_tar(window_files, out_tar, *, byteswap: bool = True, overwrite: bool = False,
               end_marker: bool = False) -> int:
    """Write netsense window files as a Graph Challenge tar; return the number of members.

    Member k is ``k.grb``, the k-th window file in the order given (pass them sorted by seq
    to keep a run's numbering). Each is a UINT32 2^32 x 2^32 matrix serialized with zstd
    level 1 and, with ``byteswap``, little-endian-bytes addresses, laid out like pcap2grb's
    tars. No end-of-archive marker is written unless ``end_marker``: the challenge's
    ``gbdump`` rejects one. Every window file is fully validated (``winfile.read`` +
    ``check_window``) and a bad one raises ``BadWindowFile``. A window that UINT32 can't
    hold raises ``GraphChallengeError``.

    The tar is streamed to a temp file next to ``out_tar``, fsynced, then renamed into
    place and the directory fsynced. Without ``overwrite`` an existing ``out_tar`` is never
    clobbered (``AlreadyLanded``). Readers never see half a tar.
    """
    out = Path(out_tar)
    files = [Path(p) for p in window_files]
    if not files:
        raise ConfigError("no window files to export")
    mtime = int(time.time())
    with landing.atomic_file(out, replace=overwrite) as f, _single_threaded():
        for k, p in enumerate(files):
            name = WindowName.parse(p.name)
            if name is None:
                raise BadWindowFile("bad_name", f"{p.name} is not a window file name")
            a = winfile.check_window(winfile.read(p), name)
            blob = to_challenge(a, byteswap=byteswap)
            f.write(_ustar_header(f"{k}.grb", len(blob), mtime))
            f.write(blob)
            f.write(b"\0" * (-len(blob) % _BLOCK))
        if end_marker:
            f.write(b"\0" * (2 * _BLOCK))
    return len(files)
