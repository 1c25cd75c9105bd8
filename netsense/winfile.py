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
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import graphblas as gb
import numpy as np

from .errors import BadWindowFile
from .matrix import N  # noqa: F401  (the matrix dimension, part of the format)

MAGIC = b"\x89NSWIN\r\n"
FORMAT_VERSION = 1
PREFIX = struct.Struct("<8sHHIQII")
PREFIX_SIZE = PREFIX.size  # 32
MAX_HEADER = 1 << 20
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


def _canonical(header: dict) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _mac(secret: bytes, header: dict) -> str:
    unsigned = {k: v for k, v in header.items() if k != "hmac"}
    return hmac.new(secret, _canonical(unsigned), hashlib.sha256).hexdigest()


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
        h["hmac"] = _mac(secret, h)
    hb = _canonical(h)
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


def deserialize_traffic_matrix(blob, what: str = "matrix") -> gb.Matrix:
    """Deserialize a GraphBLAS blob that must be a 2^32 x 2^32 matrix (``BadWindowFile`` otherwise)."""
    try:
        m = gb.Matrix.ss.deserialize(np.frombuffer(blob, np.uint8), nthreads=1)
    except Exception as ex:  # SuiteSparse raises several types for corrupt input
        raise BadWindowFile("bad_payload", f"cannot deserialize {what}: {ex}") from None
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
        m = deserialize_traffic_matrix(self.payload[e["offset"]: e["offset"] + e["bytes"]], name)
        if str(m.dtype) != DTYPE or m.nvals != e["nvals"]:
            raise BadWindowFile("wrong_content", f"{name}: dtype {m.dtype} nvals {m.nvals}, header says {e}")
        return m


def parse_prefix(prefix: bytes, file_size: int, max_payload: int = DEFAULT_MAX_PAYLOAD) -> tuple[int, int]:
    """Check magic, version and declared sizes against the real file size; return (H, P)."""
    if len(prefix) < PREFIX_SIZE:
        raise BadWindowFile("truncated", f"{file_size} bytes, shorter than the {PREFIX_SIZE}-byte prefix")
    magic, version, _flags, hlen, plen, _crc, _ = PREFIX.unpack(prefix[:PREFIX_SIZE])
    if magic != MAGIC:
        raise BadWindowFile("bad_magic", "not a netsense file")
    if version != FORMAT_VERSION:
        raise BadWindowFile("unknown_version", f"format version {version}, this build reads {FORMAT_VERSION}")
    if hlen > MAX_HEADER or plen > max_payload:
        raise BadWindowFile("too_large", f"declared header {hlen} / payload {plen} bytes exceed the limits")
    if PREFIX_SIZE + hlen + plen != file_size:
        raise BadWindowFile("size_mismatch", f"declared {PREFIX_SIZE + hlen + plen} bytes, file has {file_size}")
    return hlen, plen


def decode(data: bytes, max_payload: int = DEFAULT_MAX_PAYLOAD) -> Parsed:
    """Validate a whole container held in memory (sizes, CRC, JSON, SHA-256)."""
    hlen, plen = parse_prefix(data[:PREFIX_SIZE], len(data), max_payload)
    crc = PREFIX.unpack(data[:PREFIX_SIZE])[5]
    hb = data[PREFIX_SIZE:PREFIX_SIZE + hlen]
    if zlib.crc32(hb) != crc:
        raise BadWindowFile("bad_header_crc", "header checksum mismatch")
    try:
        header = json.loads(hb)
        p = header["payload"]
        blobs = p["blobs"]
        # Check every field later code relies on (sha256 below, name/offset/bytes/nvals in
        # Parsed.matrix), with exact types: a header with a valid CRC but a missing or
        # mistyped field used to escape as KeyError/TypeError instead of BadWindowFile.
        ok = isinstance(header, dict) and p["bytes"] == plen and isinstance(p["sha256"], str) and all(
            isinstance(b["name"], str) and all(type(b[k]) is int for k in ("offset", "bytes", "nvals"))
            and 0 <= b["offset"] and 0 <= b["bytes"] and b["offset"] + b["bytes"] <= plen for b in blobs)
    except (ValueError, KeyError, TypeError) as ex:
        raise BadWindowFile("bad_header", f"unreadable header: {ex}") from None
    if not ok:
        raise BadWindowFile("bad_header", "payload table does not fit the payload")
    payload = data[PREFIX_SIZE + hlen:]
    if hashlib.sha256(payload).hexdigest() != p["sha256"]:
        raise BadWindowFile("bad_checksum", "payload SHA-256 mismatch")
    return Parsed(header, payload)


def read(path: Path | str, max_payload: int = DEFAULT_MAX_PAYLOAD) -> Parsed:
    """Read and validate a container file; sizes are checked before the body is read."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        prefix = f.read(PREFIX_SIZE)
        parse_prefix(prefix, size, max_payload)
        data = prefix + f.read()
    return decode(data, max_payload)


def verify_hmac(parsed: Parsed, secret: bytes) -> None:
    """Refuse a container without a valid HMAC for ``secret`` (writing to the share is not enough)."""
    mac = parsed.header.get("hmac")
    if not isinstance(mac, str) or not hmac.compare_digest(mac, _mac(secret, parsed.header)):
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


def read_header(path: Path | str) -> dict:
    """Only the header (for status tools); checks the prefix and CRC, not the payload."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        prefix = f.read(PREFIX_SIZE)
        hlen, _ = parse_prefix(prefix, size)
        hb = f.read(hlen)
    if zlib.crc32(hb) != PREFIX.unpack(prefix)[5]:
        raise BadWindowFile("bad_header_crc", "header checksum mismatch")
    return json.loads(hb)


# --- window files ------------------------------------------------------------
WINDOW_KIND = "window"


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


WINDOW_FIELDS = ("kind", "identity", "node", "run", "seq", "start", "end", "first_ts_ns", "last_ts_ns",
                 "source", "records", "packets", "skipped", "anonymization", "created", "host", "payload")


OPTIONAL_FIELDS = ("hmac",)  # present when the collector runs with --secret


def check_window(parsed: Parsed, name) -> gb.Matrix:
    """Validate a decoded window file against its name; return its matrix A[src, dst]."""
    h = parsed.header
    if h.get("kind") != WINDOW_KIND:
        raise BadWindowFile("wrong_kind", f"kind {h.get('kind')!r}, expected {WINDOW_KIND!r}")
    missing = [f for f in WINDOW_FIELDS if f not in h]
    if missing:
        raise BadWindowFile("bad_header", f"missing fields {missing}")
    if (h["identity"], h["start"], h["end"]) != (name.identity, name.start, name.end):
        raise BadWindowFile("name_mismatch", f"header says {h['identity']} {h['start']}-{h['end']}, name says "
                                             f"{name.identity} {name.start}-{name.end}")
    a = parsed.matrix("A")
    total = a.reduce_scalar("plus").new().value if a.nvals else 0
    if int(total or 0) != h["packets"]:
        raise BadWindowFile("wrong_content", f"matrix sums to {total}, header says {h['packets']} packets")
    return a
