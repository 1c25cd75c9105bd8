"""The netsense file format: owner of every byte both daemons exchange.

One container serves window files (collector -> aggregator) and the
aggregator's checkpoints.  It is self-describing and checkable *before*
anything large is allocated or deserialized:

    offset  size  field
    0       8     magic  b"\\x89NSWIN\\r\\n"  (catches text-mode mangling, like PNG)
    8       2     format version, little-endian u16 (FORMAT_VERSION)
    10      2     flags (0)
    12      4     header length H, u32 (<= MAX_HEADER)
    16      8     payload length P, u64
    24      4     CRC-32 of the header bytes
    28      4     reserved (0)
    32      H     header: UTF-8 JSON object (see shared_fs_layout.md)
    32+H    P     payload: GraphBLAS serializations (SuiteSparse, LZ4 or zstd), back to back

The header lists the payload's blobs (name, offset, length, nvals, dtype,
shape) and the payload's SHA-256; the file size must be exactly 32+H+P.

Everything read comes from another host and is hostile until checked, so a
reader trusts nothing before the check that covers it: one non-blocking,
no-follow open checked with fstat (a FIFO swapped in never hangs it); the
prefix and CRC; the header bytes scanned for depth and, with a secret, the HMAC
verified over the bytes (``winheader``) before ``json.loads``; the payload
table, then the SHA-256; a blob's own GraphBLAS header before it is
deserialized (``grbblob``: a decompression bomb declares arrays its entries
cannot need); and for windows every field and the matrix itself (``wincheck``).
"""
from __future__ import annotations

import errno
import hashlib
import hmac
import os
import stat
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import graphblas as gb
import numpy as np

from . import grbblob, wincheck, winheader
from .errors import BadWindowFile
from .matrix import N  # noqa: F401  (the matrix dimension, part of the format)

MAGIC = b"\x89NSWIN\r\n"
FORMAT_VERSION = 1
PREFIX = struct.Struct("<8sHHIQII")
PREFIX_SIZE = PREFIX.size  # 32
MAX_HEADER = 1 << 20
# The aggregator's own state files (checkpoints, period sums) use the same container, but their
# headers carry per-period bookkeeping that grows with the windows of a period (a full minute at
# 1,000 nodes is about 1 MB deflated); only the aggregator writes and reads them.
MAX_STATE_HEADER = 256 << 20
DEFAULT_MAX_PAYLOAD = 1 << 31
DTYPE = "UINT64"
# GraphBLAS serialization compressors a writer may choose; the header's payload.codec says which
# (GraphBLAS reads every one). Measured per 2^17-packet window of ~44,000 links, one thread:
# lz4 1.6 ms to write, 0.9 ms to read, 330 KiB; zstd level 1 3.1 ms, 1.4 ms, 182 KiB.
# LZ4 is the default: both daemons are CPU-bound (the collector shares its host, the aggregator
# has one core for the fleet); zstd halves the bytes where storage or the network is scarcer.
COMPRESSIONS = {"lz4": {}, "zstd": {"level": 1}}
DEFAULT_COMPRESSION = "lz4"
CODEC_PREFIX = "graphblas-suitesparse-"
# One thread: a window's blob is small, and OpenMP's spinning threads made (de)serialization
# about 10x slower on a busy 2-core machine; parallelism comes from running more processes.


@dataclass(frozen=True)
class Payload:
    """Serialized matrices ready to be packed under any header (serialize once, pack many)."""

    table: dict   # the header's "payload" object
    data: bytes


def serialize(blobs: dict[str, gb.Matrix], compression: str = DEFAULT_COMPRESSION) -> Payload:
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {sorted(COMPRESSIONS)}, not {compression!r}")
    parts, entries, offset = [], [], 0
    for name, m in blobs.items():
        raw = m.ss.serialize(compression, **COMPRESSIONS[compression], nthreads=1)
        b = raw.tobytes() if isinstance(raw, np.ndarray) else bytes(raw)
        entries.append({"name": name, "offset": offset, "bytes": len(b), "nvals": int(m.nvals),
                        "nrows": int(m.nrows), "ncols": int(m.ncols), "dtype": str(m.dtype)})
        parts.append(b)
        offset += len(b)
    data = b"".join(parts)
    return Payload({"codec": CODEC_PREFIX + compression, "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(), "blobs": entries}, data)


def pack(header: dict, payload: Payload, secret: bytes | None = None) -> bytes:
    """Prefix + header (with the payload table and, with ``secret``, an HMAC) + payload."""
    h = dict(header)
    h["payload"] = payload.table
    if secret is not None:
        h["hmac"] = winheader.mac(secret, h)
    hb = winheader.canonical(h)
    prefix = PREFIX.pack(MAGIC, FORMAT_VERSION, 0, len(hb), len(payload.data), zlib.crc32(hb), 0)
    return prefix + hb + payload.data


def encode(header: dict, blobs: dict[str, gb.Matrix], secret: bytes | None = None,
           compression: str = DEFAULT_COMPRESSION) -> bytes:
    """Serialize matrices and a JSON header into one container.

    With ``secret``, the header carries ``hmac``: HMAC-SHA256 over the canonical
    JSON of the rest of the header, which includes the payload's SHA-256, so the
    MAC covers every byte that matters.
    """
    return pack(header, serialize(blobs, compression), secret)


def deserialize_traffic_matrix(blob, what: str = "matrix", nvals: int | None = None,
                               uint64: bool = False) -> gb.Matrix:
    """Deserialize a GraphBLAS blob that must be a 2^32 x 2^32 matrix (``BadWindowFile`` otherwise).

    The blob's own header is checked first (``grbblob.check``): a blob declaring another shape,
    another layout than hypersparse, or arrays larger than ``nvals`` entries need (its own count
    when None) is refused before GraphBLAS allocates them.  ``uint64``: the type must be UINT64.
    """
    grbblob.check(blob, N, nvals, grbblob.UINT64_CODE if uint64 else None, what)
    try:
        m = gb.Matrix.ss.deserialize(np.frombuffer(blob, np.uint8), nthreads=1)
    except Exception as ex:  # SuiteSparse raises several types for corrupt input
        raise BadWindowFile("bad_payload", f"cannot deserialize {what}: {type(ex).__name__} {ex}") from None
    if not isinstance(m, gb.Matrix) or m.nrows != N or m.ncols != N:
        raise BadWindowFile("wrong_shape", f"{what} is {getattr(m, 'shape', type(m).__name__)}, expected 2^32 x 2^32")
    return m


@dataclass(frozen=True)
class Parsed:
    """A validated container: header dict and the payload bytes (checksum verified)."""

    header: dict
    payload: bytes

    def matrix(self, name: str) -> gb.Matrix:
        """Deserialize one blob and check it is what the header says it is."""
        for e in self.header["payload"]["blobs"]:
            if e["name"] == name:
                break
        else:
            raise BadWindowFile("missing_blob", name)
        m = deserialize_traffic_matrix(self.payload[e["offset"]: e["offset"] + e["bytes"]], name,
                                       nvals=e["nvals"], uint64=True)
        if str(m.dtype) != DTYPE or m.nvals != e["nvals"]:
            raise BadWindowFile("wrong_content", f"{name}: dtype {m.dtype} nvals {m.nvals}, header says {e}")
        return m


def parse_prefix(prefix: bytes, file_size: int, max_payload: int = DEFAULT_MAX_PAYLOAD,
                 max_header: int = MAX_HEADER) -> tuple[int, int]:
    """Check magic, version and declared sizes against the real file size; return (H, P)."""
    if len(prefix) < PREFIX_SIZE:
        raise BadWindowFile("truncated", f"{file_size} bytes, shorter than the {PREFIX_SIZE}-byte prefix")
    magic, version, _flags, hlen, plen, _crc, _ = PREFIX.unpack(prefix[:PREFIX_SIZE])
    if magic != MAGIC:
        raise BadWindowFile("bad_magic", "not a netsense file")
    if version != FORMAT_VERSION:
        raise BadWindowFile("unknown_version", f"format version {version}, this build reads {FORMAT_VERSION}")
    if hlen > max_header or plen > max_payload:
        raise BadWindowFile("too_large", f"declared header {hlen} / payload {plen} bytes exceed the limits")
    if PREFIX_SIZE + hlen + plen != file_size:
        raise BadWindowFile("size_mismatch", f"declared {PREFIX_SIZE + hlen + plen} bytes, file has {file_size}")
    return hlen, plen


def decode(data: bytes, max_payload: int = DEFAULT_MAX_PAYLOAD, secret: bytes | None = None,
           max_header: int = MAX_HEADER) -> Parsed:
    """Validate a whole container held in memory (sizes, CRC, JSON, HMAC with ``secret``, SHA-256)."""
    hlen, plen = parse_prefix(data[:PREFIX_SIZE], len(data), max_payload, max_header)
    crc = PREFIX.unpack(data[:PREFIX_SIZE])[5]
    hb = data[PREFIX_SIZE:PREFIX_SIZE + hlen]
    if zlib.crc32(hb) != crc:
        raise BadWindowFile("bad_header_crc", "header checksum mismatch")
    header = winheader.parse(bytes(hb), secret, max_header)
    try:
        p = header["payload"]
        blobs = p["blobs"]
        # Check every field later code relies on (sha256 below, name/offset/bytes/nvals in
        # Parsed.matrix), with exact types: a header with a valid CRC but a missing or
        # mistyped field used to escape as KeyError/TypeError instead of BadWindowFile.
        ok = type(p["bytes"]) is int and p["bytes"] == plen and isinstance(p["sha256"], str) and all(
            isinstance(b["name"], str) and all(type(b[k]) is int for k in ("offset", "bytes", "nvals"))
            and 0 <= b["offset"] and 0 <= b["bytes"] and 0 <= b["nvals"] and b["offset"] + b["bytes"] <= plen
            for b in blobs)
    except (ValueError, KeyError, TypeError) as ex:
        raise BadWindowFile("bad_header", f"unreadable header: {type(ex).__name__} {ex}") from None
    if not ok:
        raise BadWindowFile("bad_header", "payload table does not fit the payload")
    payload = data[PREFIX_SIZE + hlen:]
    if hashlib.sha256(payload).hexdigest() != p["sha256"]:
        raise BadWindowFile("bad_checksum", "payload SHA-256 mismatch")
    return Parsed(header, payload)


def _open_regular(path: Path | str) -> int:
    """A descriptor of the regular file ``path``, opened without following a symlink and without
    blocking: a FIFO swapped in for a window file (after the scan saw a file) used to hang the
    aggregator in ``open()`` forever. Anything but a regular file is ``not_regular_file``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENXIO, errno.EOPNOTSUPP):
            raise BadWindowFile("not_regular_file",
                                f"symlinks and special files are never read ({e.strerror})") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise BadWindowFile("not_regular_file", f"a {stat.filemode(mode)[0]!r} file; only regular files are read")
    return fd


def read(path: Path | str, max_payload: int = DEFAULT_MAX_PAYLOAD, secret: bytes | None = None,
         max_size: int | None = None, max_header: int = MAX_HEADER) -> Parsed:
    """Read and validate a container file; sizes are checked before the body is read.

    ``secret``: the header's HMAC is verified before its fields are parsed (``bad_hmac``);
    ``max_size``: files larger than this many bytes are ``too_large`` without being read.
    """
    with os.fdopen(_open_regular(path), "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if max_size is not None and size > max_size:
            raise BadWindowFile("too_large", f"{size} bytes > the limit of {max_size}")
        prefix = f.read(PREFIX_SIZE)
        parse_prefix(prefix, size, max_payload, max_header)
        data = prefix + f.read(size - PREFIX_SIZE)
    return decode(data, max_payload, secret, max_header)


def verify_hmac(parsed: Parsed, secret: bytes) -> None:
    """Refuse a decoded container without a valid HMAC for ``secret`` over its header as it is now.

    ``read``/``decode`` with ``secret`` check the bytes before parsing; this checks a header
    dict (e.g. one edited in memory), for tools that decoded without the secret.
    """
    mac = parsed.header.get("hmac")
    if not isinstance(mac, str) or not hmac.compare_digest(mac, winheader.mac(secret, parsed.header)):
        raise BadWindowFile("bad_hmac", "missing or invalid HMAC for the configured --secret")


def load_secret(path) -> bytes:
    """Read a shared secret file (at least 16 bytes after stripping whitespace)."""
    from .errors import ConfigError

    try:
        data = Path(path).read_bytes().strip()
    except OSError as e:
        raise ConfigError(f"cannot read secret file {path}: {e.strerror}") from None
    if len(data) < 16:
        raise ConfigError(f"secret file {path} holds {len(data)} bytes; use at least 16 (e.g. head -c 32 /dev/urandom | base64)")
    return data


def read_header(path: Path | str, secret: bytes | None = None, max_header: int = MAX_HEADER) -> dict:
    """Only the header (for status tools); checks the prefix, CRC and depth (and the HMAC with
    ``secret``), not the payload."""
    with os.fdopen(_open_regular(path), "rb") as f:
        size = os.fstat(f.fileno()).st_size
        prefix = f.read(PREFIX_SIZE)
        hlen, _ = parse_prefix(prefix, size, max_header=max_header)
        hb = f.read(hlen)
    if zlib.crc32(hb) != PREFIX.unpack(prefix)[5]:
        raise BadWindowFile("bad_header_crc", "header checksum mismatch")
    return winheader.parse(hb, secret, max_header)


# --- window files ------------------------------------------------------------
WINDOW_KIND = wincheck.KIND


def window_header(name, *, source: str, records: int, packets: int, skipped: dict,
                  first_ts_ns: int | None, last_ts_ns: int | None, anonymization: str | None,
                  created: float, host: str) -> dict:
    """The JSON header of a window file (documented field by field in shared_fs_layout.md)."""
    return {
        "kind": WINDOW_KIND,
        "identity": name.identity,
        "node": name.node,
        "run": name.run,
        "seq": name.seq,
        "start": name.start,
        "end": name.end,
        "first_ts_ns": first_ts_ns,
        "last_ts_ns": last_ts_ns,
        "source": source,
        "records": int(records),
        "packets": int(packets),
        "skipped": {k: int(v) for k, v in sorted(skipped.items())},
        "anonymization": anonymization,
        "created": created,
        "host": host,
    }


WINDOW_FIELDS = wincheck.FIELDS
OPTIONAL_FIELDS = wincheck.OPTIONAL  # present when the collector runs with --secret


def check_window(parsed: Parsed, name) -> gb.Matrix:
    """Validate a decoded window file against its name; return its matrix A[src, dst].

    Every header field is type- and range-checked first (``wincheck.check_header``), so the
    blob is deserialized only for a header that could be a window; then the matrix's arrays
    are checked as a traffic matrix and its exact sum against ``packets``.
    """
    h = parsed.header
    wincheck.check_header(h, name)
    a = parsed.matrix("A")
    try:
        d = a.ss.unpack("hypercsr")  # zero-copy: the arrays move out, and back once checked
    except Exception as ex:  # GraphBLAS refusing its own deserialized matrix: corrupt content
        raise BadWindowFile("bad_payload", f"A: {type(ex).__name__} {ex}") from None
    wincheck.check_arrays(d, h["packets"])  # on failure the arrays (and a) are simply dropped
    a.ss.pack_hypercsr(rows=d["rows"], indptr=d["indptr"], values=d["values"], col_indices=d["col_indices"],
                       nvec=len(d["rows"]), is_iso=d["is_iso"], sorted_cols=True, take_ownership=True)
    return a
