"""Unit tests for netsense/winfile.py: the container format and window-file validation.

Every hostile input must raise ``BadWindowFile`` with a specific ``reason``;
nothing else (no KeyError, no MemoryError, no huge allocation).
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib

import graphblas as gb
import numpy as np
import pytest

from netsense import winfile
from netsense.errors import BadWindowFile
from netsense.layout import WindowName
from netsense.collector.window import to_matrix
from netsense.winfile import MAGIC, N, PREFIX, PREFIX_SIZE

NAME = WindowName("node-1", 1_700_000_040, 1_700_000_100, "0123456789ab", 7)


def sample_matrix(seed: int = 0, n: int = 500) -> gb.Matrix:
    rng = np.random.default_rng(seed)
    src = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    dst = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    src[::3] = 0x0A000001  # duplicates and a hub
    return to_matrix(src, dst)


def header_for(name: WindowName, A: gb.Matrix, **over) -> dict:
    packets = int(A.reduce_scalar("plus").new().value) if A.nvals else 0
    h = winfile.window_header(name, source="test", records=packets + 3, packets=packets, skipped={"not_ipv4": 3},
                              first_ts_ns=1, last_ts_ns=2, anonymization=None, created=0.0, host="h")
    h.update(over)
    return h


def window_bytes(A: gb.Matrix | None = None, name: WindowName = NAME, **over) -> bytes:
    A = sample_matrix() if A is None else A
    return winfile.encode(header_for(name, A, **over), {"A": A})


def write(tmp_path, data: bytes, fname: str = "w.nsw"):
    p = tmp_path / fname
    p.write_bytes(data)
    return p


def reason_of(fn, *args, **kw) -> str:
    with pytest.raises(BadWindowFile) as ei:
        fn(*args, **kw)
    return ei.value.reason


def reseal(data: bytes, mutate_header=None, payload: bytes | None = None, fix_sha: bool = True) -> bytes:
    """Rebuild a container after editing its header and/or payload, with a correct CRC (and SHA-256)."""
    _m, ver, flags, hlen, plen, _crc, res = PREFIX.unpack(data[:PREFIX_SIZE])
    header = json.loads(data[PREFIX_SIZE:PREFIX_SIZE + hlen])
    body = data[PREFIX_SIZE + hlen:] if payload is None else payload
    if fix_sha and isinstance(header, dict):
        header["payload"]["sha256"] = hashlib.sha256(body).hexdigest()
        header["payload"]["bytes"] = len(body)
    if mutate_header:
        header = mutate_header(header)
    hb = json.dumps(header).encode()
    return PREFIX.pack(MAGIC, ver, flags, len(hb), len(body), zlib.crc32(hb), res) + hb + body


# --- round trips ------------------------------------------------------------------------

def test_round_trip_window(tmp_path):
    A = sample_matrix()
    p = write(tmp_path, window_bytes(A))
    parsed = winfile.read(p)
    B = winfile.check_window(parsed, NAME)
    assert B.isequal(A) and str(B.dtype) == "UINT64" and B.shape == (N, N)
    h = parsed.header
    assert (h["kind"], h["identity"], h["node"], h["run"], h["seq"]) == ("window", "node-1/0123456789ab/7",
                                                                         "node-1", "0123456789ab", 7)
    assert h["packets"] == 500 and h["records"] == 503 and h["skipped"] == {"not_ipv4": 3}
    assert set(winfile.WINDOW_FIELDS) <= set(h)
    assert os.path.getsize(p) == PREFIX_SIZE + PREFIX.unpack(p.read_bytes()[:32])[3] + h["payload"]["bytes"]
    assert winfile.read_header(p) == h


@pytest.mark.parametrize("compression", sorted(winfile.COMPRESSIONS))
def test_each_compression_round_trips_and_says_which(compression):
    A = sample_matrix(3)
    data = winfile.encode({"kind": "x"}, {"A": A}, compression=compression)
    parsed = winfile.decode(data)
    assert parsed.header["payload"]["codec"] == "graphblas-suitesparse-" + compression
    assert parsed.matrix("A").isequal(A)
    with pytest.raises(ValueError, match="compression must be one of"):
        winfile.encode({"kind": "x"}, {"A": A}, compression="brotli")


def test_round_trip_empty_matrix(tmp_path):
    E = gb.Matrix("UINT64", nrows=N, ncols=N)
    parsed = winfile.read(write(tmp_path, window_bytes(E)))
    B = winfile.check_window(parsed, NAME)
    assert B.nvals == 0 and B.shape == (N, N) and B.isequal(E)
    assert parsed.header["packets"] == 0


def test_round_trip_several_blobs_in_memory():
    A, B = sample_matrix(1), sample_matrix(2, 50)
    parsed = winfile.decode(winfile.encode({"kind": "checkpoint"}, {"x": A, "y": B}))
    assert parsed.matrix("x").isequal(A) and parsed.matrix("y").isequal(B)
    assert reason_of(parsed.matrix, "z") == "missing_blob"


# --- truncation and junk -------------------------------------------------------------------

def test_every_truncation_is_rejected(tmp_path):
    data = window_bytes(sample_matrix(n=20))
    rng = np.random.default_rng(0)
    lengths = sorted(set(range(0, 40)) | set(rng.integers(40, len(data), 60).tolist()) | {len(data) - 1})
    p = tmp_path / "t.nsw"
    for k in lengths:
        p.write_bytes(data[:k])
        expected = "truncated" if k < PREFIX_SIZE else "size_mismatch"
        assert reason_of(winfile.read, p) == expected, k
        assert reason_of(winfile.decode, data[:k]) == expected, k
        assert reason_of(winfile.read_header, p) == expected, k


def test_trailing_garbage_is_rejected(tmp_path):
    assert reason_of(winfile.read, write(tmp_path, window_bytes() + b"\0")) == "size_mismatch"


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes(tmp_path, seed):
    data = np.random.default_rng(seed).bytes(1000)
    assert reason_of(winfile.read, write(tmp_path, data)) == "bad_magic"


def test_bad_magic(tmp_path):
    data = bytearray(window_bytes())
    data[1:6] = b"PNG\r\n"
    assert reason_of(winfile.read, write(tmp_path, bytes(data))) == "bad_magic"
    # text-mode mangling (CRLF -> LF) shortens the magic
    mangled = bytes(window_bytes()).replace(b"\r\n", b"\n", 1)
    assert reason_of(winfile.read, write(tmp_path, mangled)) == "bad_magic"


def test_unknown_version(tmp_path):
    data = bytearray(window_bytes())
    struct.pack_into("<H", data, 8, winfile.FORMAT_VERSION + 1)
    assert reason_of(winfile.read, write(tmp_path, bytes(data))) == "unknown_version"


def test_huge_declared_sizes_fail_before_the_body_is_read(tmp_path):
    # a 40-byte file declaring a 2^40-byte payload
    data = PREFIX.pack(MAGIC, winfile.FORMAT_VERSION, 0, 8, 1 << 40, 0, 0) + b"{}      "
    assert len(data) == 40
    p = write(tmp_path, data)
    assert reason_of(winfile.read, p) == "too_large"
    assert reason_of(winfile.read_header, p) == "too_large"
    assert reason_of(winfile.decode, data) == "too_large"
    # a header larger than MAX_HEADER
    big_h = PREFIX.pack(MAGIC, winfile.FORMAT_VERSION, 0, winfile.MAX_HEADER + 1, 0, 0, 0)
    assert reason_of(winfile.read, write(tmp_path, big_h)) == "too_large"
    # a caller's smaller limit applies too
    small = window_bytes()
    assert reason_of(winfile.read, write(tmp_path, small), max_payload=10) == "too_large"


def test_huge_sparse_file_is_rejected_without_reading_it(tmp_path):
    """The declared sizes match the real (sparse) file size, so only the limit stands between
    the reader and a 1 TiB read: it must refuse from the 32-byte prefix alone."""
    hb = b"{}"
    plen = 1 << 40
    p = tmp_path / "huge.nsw"
    with open(p, "wb") as f:
        f.write(PREFIX.pack(MAGIC, winfile.FORMAT_VERSION, 0, len(hb), plen, zlib.crc32(hb), 0) + hb)
        try:
            f.truncate(PREFIX_SIZE + len(hb) + plen)
        except OSError as e:  # file system without sparse files this large
            pytest.skip(f"cannot create a sparse 1 TiB file here: {e}")
    assert os.path.getsize(p) == PREFIX_SIZE + len(hb) + plen
    assert reason_of(winfile.read, p) == "too_large"
    assert reason_of(winfile.read_header, p) == "too_large"


# --- checksums -------------------------------------------------------------------------------

def test_header_crc_mismatch(tmp_path):
    data = bytearray(window_bytes())
    hlen = PREFIX.unpack(bytes(data[:PREFIX_SIZE]))[3]
    i = PREFIX_SIZE + bytes(data[PREFIX_SIZE:PREFIX_SIZE + hlen]).index(b'"host":"h"') + 8
    data[i] = ord("x")  # same length, still valid JSON, different CRC
    p = write(tmp_path, bytes(data))
    assert reason_of(winfile.read, p) == "bad_header_crc"
    assert reason_of(winfile.read_header, p) == "bad_header_crc"
    data = bytearray(window_bytes())
    data[24] ^= 1  # the stored CRC itself
    assert reason_of(winfile.read, write(tmp_path, bytes(data))) == "bad_header_crc"


@pytest.mark.parametrize("where", [0, 0.5, -1])
def test_payload_corruption_is_bad_checksum(tmp_path, where):
    data = bytearray(window_bytes())
    hlen = PREFIX.unpack(bytes(data[:PREFIX_SIZE]))[3]
    plen = len(data) - PREFIX_SIZE - hlen
    off = PREFIX_SIZE + hlen + (int(plen * where) if where >= 0 else plen - 1)
    data[off] ^= 0x40
    p = write(tmp_path, bytes(data))
    assert reason_of(winfile.read, p) == "bad_checksum"
    # read_header only checks the prefix and the header, by design
    assert winfile.read_header(p)["kind"] == "window"


def test_corrupt_blob_with_matching_checksum_is_bad_payload():
    data = window_bytes()
    hlen = PREFIX.unpack(data[:PREFIX_SIZE])[3]
    body = bytearray(data[PREFIX_SIZE + hlen:])
    for i in range(0, len(body), 7):
        body[i] ^= 0xA5
    parsed = winfile.decode(reseal(data, payload=bytes(body)))  # container is self-consistent
    assert reason_of(winfile.check_window, parsed, NAME) == "bad_payload"


# --- valid container, wrong content ------------------------------------------------------------

def test_wrong_shape_blob():
    small = gb.Matrix.from_coo([0, 9], [1, 2], [5, 6], nrows=10, ncols=10, dtype="UINT64")
    parsed = winfile.decode(window_bytes(small))
    assert reason_of(winfile.check_window, parsed, NAME) == "wrong_shape"
    # a column (N x 1) is not a traffic matrix either
    col = gb.Matrix.from_coo([5], [0], [1], nrows=N, ncols=1, dtype="UINT64")
    assert reason_of(winfile.check_window, winfile.decode(window_bytes(col)), NAME) == "wrong_shape"


def test_wrong_dtype_blob():
    f = gb.Matrix.from_coo([1, 2], [3, 4], [1.0, 2.0], nrows=N, ncols=N, dtype="FP64")
    parsed = winfile.decode(window_bytes(f))
    assert reason_of(winfile.check_window, parsed, NAME) == "wrong_content"
    i = gb.Matrix.from_coo([1, 2], [3, 4], [1, 2], nrows=N, ncols=N, dtype="INT64")
    assert reason_of(winfile.check_window, winfile.decode(window_bytes(i)), NAME) == "wrong_content"


def test_nvals_in_table_not_matching_blob():
    def bump(h):
        h["payload"]["blobs"][0]["nvals"] += 1
        return h
    parsed = winfile.decode(reseal(window_bytes(), bump))
    assert reason_of(winfile.check_window, parsed, NAME) == "wrong_content"


def test_packets_in_header_not_matching_matrix_sum():
    A = sample_matrix()
    parsed = winfile.decode(window_bytes(A, packets=499))
    assert reason_of(winfile.check_window, parsed, NAME) == "wrong_content"
    E = gb.Matrix("UINT64", nrows=N, ncols=N)
    assert reason_of(winfile.check_window, winfile.decode(window_bytes(E, packets=1)), NAME) == "wrong_content"


@pytest.mark.parametrize("other", [
    WindowName("node-2", NAME.start, NAME.end, NAME.run, NAME.seq),
    WindowName(NAME.node, NAME.start, NAME.end, "ba9876543210", NAME.seq),
    WindowName(NAME.node, NAME.start, NAME.end, NAME.run, NAME.seq + 1),
    WindowName(NAME.node, NAME.start + 60, NAME.end + 60, NAME.run, NAME.seq),
    WindowName(NAME.node, NAME.start, NAME.end + 60, NAME.run, NAME.seq),
])
def test_header_name_mismatch(other):
    parsed = winfile.decode(window_bytes(name=other))
    assert reason_of(winfile.check_window, parsed, NAME) == "name_mismatch"


def test_wrong_kind_and_missing_fields():
    assert reason_of(winfile.check_window, winfile.decode(window_bytes(kind="checkpoint")), NAME) == "wrong_kind"

    def drop(h):
        del h["packets"]
        return h
    assert reason_of(winfile.check_window, winfile.decode(reseal(window_bytes(), drop)), NAME) == "bad_header"


# --- hostile headers with a valid CRC (a buggy or malicious writer) ------------------------------

def _set(path, value):
    def f(h):
        d = h
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
        return h
    return f


def _delete(path):
    def f(h):
        d = h
        for k in path[:-1]:
            d = d[k]
        del d[path[-1]]
        return h
    return f


@pytest.mark.parametrize("mutate", [
    lambda h: [h],                                    # not an object
    lambda h: "window",
    _delete(["payload"]),
    _delete(["payload", "sha256"]),
    _set(["payload", "sha256"], 5),
    _set(["payload", "bytes"], 1),
    _set(["payload", "blobs"], None),
    _set(["payload", "blobs", 0, "offset"], -1),
    _set(["payload", "blobs", 0, "offset"], 0.5),
    _set(["payload", "blobs", 0, "offset"], "0"),
    _set(["payload", "blobs", 0, "bytes"], 10 ** 9),
    _set(["payload", "blobs", 0, "bytes"], -3),
    _delete(["payload", "blobs", 0, "nvals"]),
    _delete(["payload", "blobs", 0, "name"]),
    _set(["payload", "blobs", 0], "A"),
], ids=["list", "string", "no-payload", "no-sha", "sha-int", "bytes-wrong", "blobs-null", "offset-neg",
        "offset-float", "offset-str", "blob-too-long", "blob-negative", "no-nvals", "no-name", "blob-str"])
def test_hostile_payload_table_is_bad_header(tmp_path, mutate):
    data = reseal(window_bytes(), mutate)
    with pytest.raises(BadWindowFile) as ei:
        winfile.check_window(winfile.read(write(tmp_path, data)), NAME)
    assert ei.value.reason == "bad_header"


def test_invalid_json_header_with_valid_crc(tmp_path):
    hb = b"{not json"
    data = PREFIX.pack(MAGIC, winfile.FORMAT_VERSION, 0, len(hb), 0, zlib.crc32(hb), 0) + hb
    assert reason_of(winfile.read, write(tmp_path, data)) == "bad_header"
    hb = b"\xff\xfe{}"
    data = PREFIX.pack(MAGIC, winfile.FORMAT_VERSION, 0, len(hb), 0, zlib.crc32(hb), 0) + hb
    assert reason_of(winfile.read, write(tmp_path, data)) == "bad_header"


def test_read_refuses_symlinks_and_special_files(tmp_path):
    real = write(tmp_path, window_bytes())
    link = tmp_path / "link.nsw"
    link.symlink_to(real)
    assert reason_of(winfile.read, link) == "not_regular_file"
    assert reason_of(winfile.read_header, link) == "not_regular_file"
    fifo = tmp_path / "fifo.nsw"
    os.mkfifo(fifo)  # opened non-blocking: refused at once, never waited on
    assert reason_of(winfile.read, fifo) == "not_regular_file"
    assert reason_of(winfile.read_header, fifo) == "not_regular_file"
    assert reason_of(winfile.read, tmp_path) == "not_regular_file"


# --- hostile bytes with every checksum right (issue 11) ----------------------------------------

SECRET = b"0123456789abcdef0123"


def test_the_hmac_is_verified_over_the_header_bytes_and_old_signatures_stay_valid(tmp_path):
    A = sample_matrix(5)
    data = winfile.encode(header_for(NAME, A, host="hmac"), {"A": A}, secret=SECRET)  # "hmac" as a value too
    parsed = winfile.decode(data, secret=SECRET)
    winfile.verify_hmac(parsed, SECRET)
    assert winfile.check_window(parsed, NAME).isequal(A)
    assert winfile.read(write(tmp_path, data), secret=SECRET).header == parsed.header
    assert winfile.read_header(write(tmp_path, data), secret=SECRET) == parsed.header
    # the signature as every earlier writer computed it: canonical JSON of the other fields
    h = json.loads(data[PREFIX_SIZE:PREFIX_SIZE + PREFIX.unpack(data[:PREFIX_SIZE])[3]])
    unsigned = {k: v for k, v in h.items() if k != "hmac"}
    canon = json.dumps(unsigned, sort_keys=True, separators=(",", ":")).encode()
    assert h["hmac"] == __import__("hmac").new(SECRET, canon, hashlib.sha256).hexdigest()

    def resealed(mutate):  # canonical bytes, as a writer would produce them, CRC fixed
        hb = json.dumps(mutate(dict(h)), sort_keys=True, separators=(",", ":")).encode()
        body = data[PREFIX_SIZE + PREFIX.unpack(data[:PREFIX_SIZE])[3]:]
        return PREFIX.pack(MAGIC, 1, 0, len(hb), len(body), zlib.crc32(hb), 0) + hb + body
    assert winfile.decode(resealed(lambda x: x), secret=SECRET).header == parsed.header
    assert reason_of(winfile.decode, data, secret=b"another secret, 20 bytes") == "bad_hmac"
    assert reason_of(winfile.decode, resealed(lambda x: {k: v for k, v in x.items() if k != "hmac"}),
                     secret=SECRET) == "bad_hmac"
    assert reason_of(winfile.decode, resealed(lambda x: {**x, "host": "evil"}), secret=SECRET) == "bad_hmac"
    nested = resealed(lambda x: {**{k: v for k, v in x.items() if k != "hmac"}, "skipped": {"hmac": x["hmac"]}})
    assert reason_of(winfile.decode, nested, secret=SECRET) == "bad_hmac"
    hb = data[PREFIX_SIZE:PREFIX_SIZE + PREFIX.unpack(data[:PREFIX_SIZE])[3]]
    twice = hb[:-1] + b',"hmac":"' + h["hmac"].encode() + b'"}'
    body = data[PREFIX_SIZE + len(hb):]
    data2 = PREFIX.pack(MAGIC, 1, 0, len(twice), len(body), zlib.crc32(twice), 0) + twice + body
    assert reason_of(winfile.decode, data2, secret=SECRET) == "bad_hmac"


@pytest.mark.parametrize("secret", [None, SECRET])
def test_deeply_nested_headers_are_refused_before_json_parses_them(tmp_path, secret):
    hb = window_bytes()[PREFIX_SIZE:]
    hb = hb[:PREFIX.unpack(window_bytes()[:PREFIX_SIZE])[3]]
    for depth, ok in ((200_000, False), (33, False), (31, True)):
        deep = hb[:-1] + b',"z":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
        data = PREFIX.pack(MAGIC, 1, 0, len(deep), 0, zlib.crc32(deep), 0) + deep
        p = write(tmp_path, data)
        if ok:  # gets past the scan (and is refused later: the payload sizes differ)
            assert "deep" not in str(pytest.raises(BadWindowFile, winfile.read, p).value)
        else:
            for fn in (winfile.read, winfile.read_header):
                assert reason_of(fn, p, secret=secret) == "bad_header"
                assert "deep" in str(pytest.raises(BadWindowFile, fn, p, secret=secret).value)


def _blob_fields(blob: bytes) -> list:
    from netsense import grbblob
    return list(grbblob.HEADER.unpack_from(blob))


def _with_fields(blob: bytes, **changes) -> bytes:
    from netsense import grbblob
    names = ["size", "enc", "version", "vlen", "vdim", "nvec", "nonempty", "nvals", "typesize",
             "Cp", "Ch", "Cb", "Ci", "Cx", "hyper", "bitmap", "control", "sic"]
    f = _blob_fields(blob)
    for k, v in changes.items():
        f[names.index(k)] = v
    return grbblob.HEADER.pack(*f) + blob[grbblob.HEADER_SIZE:]


@pytest.mark.parametrize("changes, reason", [
    ({"Cx": 8 << 30}, "too_large"),                          # the bomb: a huge declared value array
    ({"Ci": 16 << 30, "Cx": 16 << 30}, "too_large"),
    ({"sic": 8, "Cp": 8 * (N + 1), "Ch": 0}, "too_large"),   # sparse, not hypersparse: 2^32 row pointers
    ({"nvec": 10 ** 6, "Cp": 8 * (10 ** 6 + 1), "Ch": 8 * 10 ** 6}, "too_large"),
    ({"Ci": 8}, "bad_payload"),                              # arrays that do not fit the entry count
    ({"Cp": 0}, "bad_payload"),
    ({"size": 12}, "bad_payload"),
    ({"enc": 0x10009}, "bad_payload"),
    ({"typesize": 4}, "bad_payload"),
    ({"enc": 11}, "wrong_content"),                          # FP64
    ({"nvals": 499}, "wrong_content"),
    ({"vdim": 1 << 20}, "wrong_shape"),
], ids=lambda x: str(x)[:40])
def test_a_blob_header_is_checked_before_graphblas_allocates(monkeypatch, changes, reason):
    A = sample_matrix(7)
    payload = winfile.serialize({"A": A})
    blob = _with_fields(payload.data, **changes)
    table = {**payload.table, "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob),
             "blobs": [{**payload.table["blobs"][0], "bytes": len(blob)}]}
    parsed = winfile.decode(winfile.pack(header_for(NAME, A), winfile.Payload(table, blob)))

    def never(*a, **k):
        raise AssertionError("deserialized a blob whose header is refused")
    monkeypatch.setattr(gb.Matrix.ss, "deserialize", never)
    assert reason_of(winfile.check_window, parsed, NAME) == reason


def test_exact_sums_and_real_traffic_matrices_only():
    wrap = gb.Matrix.from_coo([1, 2], [3, 4], [2 ** 64 - 1, 6], nrows=N, ncols=N, dtype="UINT64")
    assert reason_of(winfile.check_window, winfile.decode(window_bytes(wrap, packets=5, records=5)), NAME) \
        == "wrong_content"
    zeros = gb.Matrix.from_coo([1, 2], [3, 4], [0, 6], nrows=N, ncols=N, dtype="UINT64")
    assert reason_of(winfile.check_window, winfile.decode(window_bytes(zeros)), NAME) == "wrong_content"
    # two columns of one row swapped in an uncompressed blob: GraphBLAS deserializes it as is
    A = gb.Matrix.from_coo([7, 7, 7], [1, 2, 3], [1, 2, 3], nrows=N, ncols=N, dtype="UINT64")
    blob = bytearray(A.ss.serialize("none", nthreads=1))
    i = bytes(blob).index(struct.pack("<QQQ", 1, 2, 3))
    blob[i:i + 24] = struct.pack("<QQQ", 2, 1, 3)
    payload = winfile.serialize({"A": A})
    table = {**payload.table, "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob),
             "blobs": [{**payload.table["blobs"][0], "bytes": len(blob)}]}
    parsed = winfile.decode(winfile.pack(header_for(NAME, A), winfile.Payload(table, bytes(blob))))
    with pytest.raises(BadWindowFile, match="out of order"):
        winfile.check_window(parsed, NAME)
