"""Tests for collector/graphchallenge.py: Graph Challenge tars <-> netsense window files.

The fixtures write tars the way the challenge's pcap2grb/trace2grb do (CAIDA/ILANDS-sensor):
UINT32 2^32 x 2^32 matrices built with PLUS, serialized with zstd level 1, addresses as the
network-order bytes read as a little-endian integer, ustar members "0.grb", "1.grb", ... with
no folder and no end-of-archive marker.
"""
from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import tarfile
import time
from pathlib import Path

import graphblas as gb
import numpy as np
import pytest

from netsense.collector import graphchallenge as gc
from netsense import winfile
from netsense.errors import AlreadyLanded, BadWindowFile, ConfigError, SourceError
from netsense.layout import Layout, WindowName
from conftest import ROOT

N = 1 << 32
NODE = "gc1"


def le(ip: str) -> int:
    """The challenge's index for an address: its network-order bytes read little-endian."""
    return int.from_bytes(socket.inet_aton(ip), "little")


def be(ip: str) -> int:
    """netsense's index for an address: the big-endian integer."""
    return int.from_bytes(socket.inet_aton(ip), "big")


def packets(seed: int, n: int = 4000, hosts: int = 300):
    """``n`` packets between a few hundred addresses (both conventions), plus 10.0.0.1 -> 192.168.1.2."""
    rng = np.random.default_rng(seed)
    pool = rng.integers(1, 0xFFFFFFFF, hosts, dtype=np.uint64).astype(np.uint32)
    src = pool[rng.integers(0, hosts, n)]
    dst = pool[rng.integers(0, hosts, n)]
    src[: n // 10] = be("10.0.0.1")
    dst[: n // 10] = be("192.168.1.2")
    return src, dst  # big-endian (netsense) integers


def netsense_matrix(src_be, dst_be) -> gb.Matrix:
    return gb.Matrix.from_coo(src_be.astype(np.uint64), dst_be.astype(np.uint64), np.ones(len(src_be), np.uint64),
                              nrows=N, ncols=N, dtype="UINT64", dup_op=gb.binary.plus)


def challenge_blob(src_be, dst_be, dtype="UINT32", compression=("zstd", 1)) -> bytes:
    """What pcap2grb serializes: PLUS-built counts at little-endian-bytes indices."""
    r = src_be.astype(np.uint32).byteswap().astype(np.uint64)
    c = dst_be.astype(np.uint32).byteswap().astype(np.uint64)
    m = gb.Matrix.from_coo(r, c, np.ones(len(r), np.uint32), nrows=N, ncols=N, dtype="UINT32",
                           dup_op=gb.binary.plus)
    if dtype != "UINT32":
        m = m.dup(dtype=dtype)
    return m.ss.serialize(compression[0], level=compression[1]).tobytes()


def pcap2grb_tar(path: Path, members: list[tuple[str, bytes]], end_marker: bool = False) -> Path:
    """A tar laid out byte for byte like pcap2grb's add_blob_to_tar (ustar, padded, no end marker)."""
    out = bytearray()
    for name, data in members:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode, ti.mtime = len(data), 0o644, int(time.time())
        out += ti.tobuf(format=tarfile.USTAR_FORMAT) + data + b"\0" * (-len(data) % 512)
    if end_marker:
        out += b"\0" * 1024
    path.write_bytes(bytes(out))
    return path


@pytest.fixture
def traffic():
    """Three challenge members: (their big-endian packets, the tar members)."""
    pk = [packets(seed) for seed in range(3)]
    return pk, [(f"{k}.grb", challenge_blob(s, d)) for k, (s, d) in enumerate(pk)]


def read_window(path: Path):
    name = WindowName.parse(path.name)
    parsed = winfile.read(path)
    return parsed.header, winfile.check_window(parsed, name)


def landed(shared: Path, node: str = NODE) -> list[Path]:
    d = Layout(shared).landing(node)
    return sorted(p for p in d.iterdir() if not p.name.startswith(".")) if d.is_dir() else []


def members_of(tar_path: Path) -> dict[str, gb.Matrix]:
    with tarfile.open(tar_path, "r") as tf:
        return {m.name: gb.Matrix.ss.deserialize(tf.extractfile(m).read()) for m in tf}


# --- import --------------------------------------------------------------------------------
def test_import_lands_byteswapped_uint64_windows(tmp_path, traffic):
    pk, members = traffic
    tar = pcap2grb_tar(tmp_path / "20240101-120000.8388608.tar", members)
    s = gc.import_tar(tar, tmp_path / "shared", NODE, start=1_700_000_040, window_seconds=60)
    assert (s.members, s.landed, s.already_present, s.bad, s.ignored) == (3, 3, 0, 0, 0)
    assert s.packets == sum(len(src) for src, _ in pk)
    assert len(s.run) == 12 and int(s.run, 16) >= 0
    files = landed(tmp_path / "shared")
    assert files == sorted(s.files)
    for k, (path, (src, dst)) in enumerate(zip(files, pk)):
        h, a = read_window(path)
        assert a.dtype == gb.dtypes.UINT64
        assert a.isequal(netsense_matrix(src, dst))
        assert (h["seq"], h["run"], h["node"]) == (k, s.run, NODE)
        assert (h["start"], h["end"]) == (1_700_000_040 + 60 * k, 1_700_000_100 + 60 * k)
        assert h["packets"] == h["records"] == len(src)
        assert h["skipped"] == {} and h["first_ts_ns"] is None and h["last_ts_ns"] is None
        assert h["source"].startswith("graphchallenge:") and h["source"].endswith(f"#{k}.grb")
        # the planted flow, in netsense's big-endian convention
        assert a[be("10.0.0.1"), be("192.168.1.2")].new().value == len(src) // 10
        assert a.get(le("10.0.0.1"), le("192.168.1.2")) is None


def test_dotted_quads_end_to_end():
    """One packet 10.0.0.1 -> 192.168.1.2 stored the challenge way lands at netsense's (0x0A000001, 0xC0A80102)."""
    raw_src = np.frombuffer(socket.inet_aton("10.0.0.1"), "<u4")  # what pcap2grb puts in R[]: s_addr on x86
    raw_dst = np.frombuffer(socket.inet_aton("192.168.1.2"), "<u4")
    m = gb.Matrix.from_coo(raw_src.astype(np.uint64), raw_dst.astype(np.uint64), [1], nrows=N, ncols=N,
                           dtype="UINT32")
    a, n, zeros = gc.to_netsense(m.ss.serialize("zstd", level=1).tobytes())
    assert (n, zeros) == (1, 0)
    assert list(zip(*a.to_coo()[:2])) == [(0x0A000001, 0xC0A80102)]
    a, _, _ = gc.to_netsense(m.ss.serialize("zstd", level=1).tobytes(), byteswap=False)
    assert list(zip(*a.to_coo()[:2])) == [(0x0100000A, 0x0201A8C0)]


@pytest.mark.parametrize("dtype,compression", [("UINT32", ("zstd", 1)), ("UINT32", ("lz4hc", 9)),
                                               ("UINT64", ("none", None)), ("INT64", ("zstd", 1)),
                                               ("FP64", ("lz4", None))])
def test_integer_valued_types_and_any_compression_are_accepted(dtype, compression):
    src, dst = packets(7, n=500)
    a, n, _ = gc.to_netsense(challenge_blob(src, dst, dtype, compression))
    assert a.dtype == gb.dtypes.UINT64 and n == 500
    assert a.isequal(netsense_matrix(src, dst))


def test_iso_valued_and_column_oriented_members():
    """A window where every link has one packet is stored iso (one value); a producer may store by column."""
    r = np.array([le("10.0.0.1"), le("10.0.0.2"), le("1.2.3.4")], np.uint64)
    c = np.array([le("8.8.8.8"), le("8.8.4.4"), le("10.0.0.1")], np.uint64)
    iso = gb.Matrix.from_coo(r, c, 1, nrows=N, ncols=N, dtype="UINT32")
    assert iso.ss.is_iso
    expected = {(be("10.0.0.1"), be("8.8.8.8")), (be("10.0.0.2"), be("8.8.4.4")), (be("1.2.3.4"), be("10.0.0.1"))}
    a, n, _ = gc.to_netsense(iso.ss.serialize("zstd", level=1).tobytes())
    assert n == 3 and set(zip(*map(list, a.to_coo()[:2]))) == expected and set(a.to_coo()[2]) == {1}
    bycol = gb.Matrix.from_coo(r, c, [1, 2, 3], nrows=N, ncols=N, dtype="UINT32")
    bycol = bycol.ss.import_hypercsc(**bycol.ss.export("hypercsc"))
    assert bycol.ss.format == "hypercsc"
    a, n, _ = gc.to_netsense(bycol.ss.serialize("zstd", level=1).tobytes())
    assert n == 6 and a[be("1.2.3.4"), be("10.0.0.1")].new().value == 3
    empty = gb.Matrix("UINT32", nrows=N, ncols=N)
    a, n, _ = gc.to_netsense(empty.ss.serialize("zstd", level=1).tobytes())
    assert (a.nvals, n, str(a.dtype)) == (0, 0, "UINT64")


def test_round_trip_export_of_import_gives_the_same_members(tmp_path, traffic):
    _, members = traffic
    tar = pcap2grb_tar(tmp_path / "in.tar", members)
    s = gc.import_tar(tar, tmp_path / "shared", NODE)
    out = tmp_path / "out.tar"
    assert gc.export_tar(sorted(s.files), out) == 3
    before, after = members_of(tar), members_of(out)
    assert list(after) == ["0.grb", "1.grb", "2.grb"] == list(before)
    for k in before:
        assert after[k].dtype == gb.dtypes.UINT32 == before[k].dtype
        assert after[k].isequal(before[k]), k
    # and back again: the same content fingerprint, so the same identities (nothing new lands)
    again = gc.import_tar(out, tmp_path / "shared", NODE)
    assert again.run == s.run and (again.landed, again.already_present) == (0, 3)


def test_round_trip_without_byteswap(tmp_path, traffic):
    _, members = traffic
    tar = pcap2grb_tar(tmp_path / "in.tar", members)
    s = gc.import_tar(tar, tmp_path / "shared", NODE, byteswap=False)
    out = tmp_path / "out.tar"
    gc.export_tar(sorted(s.files), out, byteswap=False)
    before, after = members_of(tar), members_of(out)
    assert all(after[k].isequal(before[k]) for k in before)
    # byteswap=False keeps the indices as stored
    _, a = read_window(sorted(s.files)[0])
    assert a.isequal(before["0.grb"].dup(dtype="UINT64"))


def test_bad_members_are_skipped_counted_and_logged(tmp_path, caplog):
    src, dst = packets(1, n=800)
    good = challenge_blob(src, dst)
    small = gb.Matrix.from_coo([1], [2], [3], nrows=1 << 16, ncols=1 << 16, dtype="UINT32")
    neg = gb.Matrix.from_coo([1, 5], [2, 6], [3, -1], nrows=N, ncols=N, dtype="INT64")
    frac = gb.Matrix.from_coo([1], [2], [0.5], nrows=N, ncols=N, dtype="FP64")
    boolean = gb.Matrix.from_coo([1], [2], [True], nrows=N, ncols=N, dtype="BOOL")
    vec = gb.Vector.from_coo([1], [2], size=N, dtype="UINT32")
    members = [
        ("0.grb", good),
        ("1.grb", b"this is not a GraphBLAS blob" * 10),
        ("2.grb", good[: len(good) // 2]),             # truncated blob
        ("3.grb", small.ss.serialize().tobytes()),     # wrong shape
        ("4.grb", neg.ss.serialize().tobytes()),       # negative counts
        ("5.grb", frac.ss.serialize().tobytes()),      # not whole packets
        ("6.grb", boolean.ss.serialize().tobytes()),   # a pattern, not counts
        ("7.grb", vec.ss.serialize().tobytes()),       # a vector
        ("8.grb", b""),                                # empty
        ("x.grb", good),                               # no number
        ("9.grb", good),
        ("9.grb", challenge_blob(*packets(2, n=100))), # a second 9
        ("README.txt", b"not data"),                   # ignored, not bad
    ]
    tar = pcap2grb_tar(tmp_path / "bad.tar", members)
    s = gc.import_tar(tar, tmp_path / "shared", NODE)
    reasons = {b["member"]: b["reason"] for b in s.bad_members if b["reason"] != "duplicate_seq"}
    assert reasons == {"1.grb": "bad_payload", "2.grb": "bad_payload", "3.grb": "wrong_shape",
                       "4.grb": "wrong_content", "5.grb": "wrong_content", "6.grb": "wrong_dtype",
                       "7.grb": "wrong_shape", "8.grb": "bad_payload", "x.grb": "bad_name"}
    dup = [b for b in s.bad_members if b["reason"] == "duplicate_seq"]
    assert len(dup) == 1 and dup[0]["member"] == "9.grb"
    assert (s.members, s.landed, s.bad, s.ignored) == (12, 2, 10, 1)
    assert [WindowName.parse(p.name).seq for p in landed(tmp_path / "shared")] == [0, 9]
    assert s.packets == 1600
    assert sum("skipped" in r.message for r in caplog.records) == 10


def test_explicit_zeros_are_dropped(tmp_path):
    m = gb.Matrix.from_coo([1, 2], [3, 4], [0, 5], nrows=N, ncols=N, dtype="UINT32")
    a, n, zeros = gc.to_netsense(m.ss.serialize("zstd", level=1).tobytes())
    assert (a.nvals, n, zeros) == (1, 5, 1)


def test_reimport_is_idempotent(tmp_path, traffic):
    _, members = traffic
    tar = pcap2grb_tar(tmp_path / "in.tar", members)
    shared = tmp_path / "shared"
    first = gc.import_tar(tar, shared, NODE, start=3600)
    files = landed(shared)
    stats = {p: p.stat().st_mtime_ns for p in files}
    for kw in ({"start": 3600}, {"start": 7200}, {"start": 3600, "window_seconds": 10}, {"byteswap": False}):
        again = gc.import_tar(tar, shared, NODE, **kw)
        assert (again.run, again.landed, again.already_present, again.bad) == (first.run, 0, 3, 0)
        assert landed(shared) == files
        assert {p: p.stat().st_mtime_ns for p in files} == stats
    # a copy elsewhere has the same content, hence the same identities
    copy = tmp_path / "elsewhere" / "renamed.tar"
    copy.parent.mkdir()
    shutil.copy(tar, copy)
    assert gc.import_tar(copy, shared, NODE).landed == 0
    # consumed windows (moved to archive/ by the aggregator) are not landed again either
    arch = Layout(shared).archive(NODE)
    arch.mkdir(parents=True)
    for p in files:
        p.rename(arch / p.name)
    again = gc.import_tar(tar, shared, NODE)
    assert (again.landed, again.already_present) == (0, 3) and landed(shared) == []
    # another node importing the same tar gets its own identities
    assert gc.import_tar(tar, shared, "gc2").landed == 3


def test_a_concurrent_landing_of_the_same_identity_is_already_present(tmp_path, traffic, monkeypatch):
    _, members = traffic
    tar = pcap2grb_tar(tmp_path / "in.tar", members)
    shared = tmp_path / "shared"
    ref = gc.import_tar(tar, tmp_path / "ref", NODE)
    monkeypatch.setattr(gc, "_existing", lambda *a: {})  # as if another importer landed them after our scan
    Layout(shared).landing(NODE).mkdir(parents=True)
    for p in ref.files:
        shutil.copy(p, Layout(shared).landing(NODE) / p.name)
    s = gc.import_tar(tar, shared, NODE)
    assert (s.landed, s.already_present) == (0, 3)


def test_anonymization_field_and_hmac(tmp_path, traffic):
    _, members = traffic
    tar = pcap2grb_tar(tmp_path / "t.tar", members)
    s = gc.import_tar(tar, tmp_path / "a", NODE, anonymization="cryptopan-challenge")
    assert read_window(s.files[0])[0]["anonymization"] == "cryptopan-challenge"
    if not hasattr(winfile, "verify_hmac"):
        pytest.skip("this winfile has no HMAC support")
    secret = b"0123456789abcdef0123"
    s = gc.import_tar(tar, tmp_path / "b", NODE, secret=secret)
    for p in s.files:
        winfile.verify_hmac(winfile.read(p), secret)
    with pytest.raises(BadWindowFile):
        winfile.verify_hmac(winfile.read(s.files[0]), b"another secret, 20+ bytes")


def test_run_fingerprints_the_content(tmp_path, traffic):
    _, members = traffic
    a = gc.import_tar(pcap2grb_tar(tmp_path / "a.tar", members), tmp_path / "s", NODE).run
    b = gc.import_tar(pcap2grb_tar(tmp_path / "b.tar", members[:2]), tmp_path / "s", NODE).run
    swapped = [(members[1][0], members[0][1]), (members[0][0], members[1][1]), members[2]]
    c = gc.import_tar(pcap2grb_tar(tmp_path / "c.tar", swapped), tmp_path / "s", NODE).run
    d = gc.import_tar(pcap2grb_tar(tmp_path / "d.tar", members, end_marker=True), tmp_path / "s", NODE).run
    assert len({a, b, c}) == 3 and d == a


def test_compressed_tar_with_a_folder_and_extra_members(tmp_path, traffic):
    pk, members = traffic
    tar = tmp_path / "day.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        d = tarfile.TarInfo("day1")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        for name, data in members:
            ti = tarfile.TarInfo(f"day1/{name}")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        ti = tarfile.TarInfo("day1/NOTES")
        ti.size = 2
        tf.addfile(ti, io.BytesIO(b"hi"))
    s = gc.import_tar(tar, tmp_path / "shared", NODE)
    assert (s.members, s.landed, s.bad, s.ignored) == (3, 3, 0, 2)
    assert s.packets == sum(len(src) for src, _ in pk)


def test_truncated_tar_lands_what_is_complete(tmp_path, traffic):
    _, members = traffic
    tar = pcap2grb_tar(tmp_path / "t.tar", members)
    data = tar.read_bytes()
    offsets = [512, 512 + len(members[0][1]) + (-len(members[0][1]) % 512)]
    cut = offsets[1] + 512 + len(members[1][1]) // 2  # in the middle of 1.grb's blob
    tar.write_bytes(data[:cut])
    s = gc.import_tar(tar, tmp_path / "shared", NODE)
    assert s.landed == 1 and [WindowName.parse(p.name).seq for p in landed(tmp_path / "shared")] == [0]
    assert {(b["member"], b["reason"]) for b in s.bad_members} == {("1.grb", "truncated"),
                                                                   (gc.ARCHIVE, "damaged_tar")}
    # cut inside the second header: tarfile stops silently there, import_tar notices
    tar.write_bytes(data[: offsets[1] + 100])
    s = gc.import_tar(tar, tmp_path / "shared2", NODE)
    assert s.landed == 1 and [b["reason"] for b in s.bad_members] == ["damaged_tar"]


def test_corrupt_header_in_the_middle_is_reported(tmp_path, traffic):
    _, members = traffic
    tar = pcap2grb_tar(tmp_path / "t.tar", members)
    data = bytearray(tar.read_bytes())
    second = 512 + len(members[0][1]) + (-len(members[0][1]) % 512)
    data[second + 148: second + 156] = b"9999999\0"  # wrong header checksum
    tar.write_bytes(bytes(data))
    s = gc.import_tar(tar, tmp_path / "shared", NODE)
    assert s.landed == 1
    assert [(b["member"], b["reason"]) for b in s.bad_members] == [(gc.ARCHIVE, "damaged_tar")]


def test_not_a_tar_or_missing_raises_source_error(tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(os.urandom(3000))
    with pytest.raises(SourceError):
        gc.import_tar(junk, tmp_path / "shared", NODE)
    with pytest.raises(SourceError):
        gc.import_tar(tmp_path / "absent.tar", tmp_path / "shared", NODE)
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    with pytest.raises(SourceError):
        gc.import_tar(empty, tmp_path / "shared", NODE)


def test_bad_arguments(tmp_path, traffic):
    tar = pcap2grb_tar(tmp_path / "t.tar", traffic[1])
    for kw in ({"start": -1}, {"window_seconds": 0}, {"start": 1.5}):
        with pytest.raises(ConfigError):
            gc.import_tar(tar, tmp_path / "shared", NODE, **kw)
    with pytest.raises(ConfigError):
        gc.import_tar(tar, tmp_path / "shared", "Bad_Node")


def test_a_tar_changed_during_the_import_is_refused(tmp_path, traffic, monkeypatch):
    _, members = traffic
    tar = pcap2grb_tar(tmp_path / "t.tar", members)
    survey = gc._survey

    def survey_then_change(*a):
        out = survey(*a)
        with open(tar, "r+b") as f:  # same inode: the importer's open file sees it
            f.seek(512 + 200)
            f.write(b"\xff" * 16)
        return out

    monkeypatch.setattr(gc, "_survey", survey_then_change)
    with pytest.raises(SourceError, match="changed"):
        gc.import_tar(tar, tmp_path / "shared", NODE)
    assert landed(tmp_path / "shared") == []


def test_tar_name_time():
    assert gc.tar_name_time("/x/20240101-120000.8388608.tar") == 1704110400
    assert gc.tar_name_time("capture.tar") is None
    assert gc.tar_name_time("20241399-120000.8388608.tar") is None


# --- export --------------------------------------------------------------------------------
def test_export_writes_pcap2grb_layout(tmp_path, traffic):
    _, members = traffic
    s = gc.import_tar(pcap2grb_tar(tmp_path / "in.tar", members), tmp_path / "shared", NODE)
    out = tmp_path / "out" / "20240101-120000.393216.tar"
    out.parent.mkdir()
    assert gc.export_tar(sorted(s.files), out) == 3
    data = out.read_bytes()
    # gbdump.c's walk: every 512-byte header up to the end of the file has "ustar\0" magic,
    # the size field is octal, blobs are padded to 512; no end-of-archive blocks.
    off, names = 0, []
    while off < len(data):
        h = data[off: off + 512]
        assert h[257:263] == b"ustar\0" and h[263:265] == b"00"
        names.append(h[:100].rstrip(b"\0").decode())
        size = int(h[124:136].rstrip(b"\0 "), 8)
        assert int(h[100:108].rstrip(b"\0 "), 8) == 0o644 and h[156:157] == b"0"
        off += 512 + size + (-size % 512)
    assert off == len(data) and names == ["0.grb", "1.grb", "2.grb"]
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temp file left
    if shutil.which("tar"):  # GNU tar reads it without complaint
        r = subprocess.run(["tar", "tf", str(out)], capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.split() == names and not r.stderr
    with_marker = tmp_path / "marker.tar"
    gc.export_tar(sorted(s.files), with_marker, end_marker=True)
    assert with_marker.read_bytes()[-1024:] == b"\0" * 1024 and len(members_of(with_marker)) == 3


def test_export_is_atomic_and_never_clobbers(tmp_path, traffic):
    _, members = traffic
    s = gc.import_tar(pcap2grb_tar(tmp_path / "in.tar", members), tmp_path / "shared", NODE)
    out = tmp_path / "out.tar"
    out.write_bytes(b"precious")
    with pytest.raises(AlreadyLanded):
        gc.export_tar(s.files, out)
    assert out.read_bytes() == b"precious"
    assert gc.export_tar(s.files, out, overwrite=True) == 3 and len(members_of(out)) == 3
    # a bad window file aborts the export: no output, no temp file
    bad = Path(s.files[1])
    raw = bytearray(bad.read_bytes())
    raw[-10] ^= 0xFF
    bad.write_bytes(bytes(raw))
    out2 = tmp_path / "out2.tar"
    with pytest.raises(BadWindowFile):
        gc.export_tar(s.files, out2)
    assert not out2.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    with pytest.raises(ConfigError):
        gc.export_tar([], out2)


def test_export_refuses_counts_beyond_uint32():
    a = gb.Matrix.from_coo([1], [2], [1 << 33], nrows=N, ncols=N, dtype="UINT64")
    with pytest.raises(gc.GraphChallengeError):
        gc.to_challenge(a)


# --- with the aggregator -------------------------------------------------------------------
def test_the_aggregator_consumes_imported_windows_once(tmp_path, traffic):
    from netsense.aggregator.config import AggregatorConfig
    from netsense.aggregator.loop import drain_aggregator
    from oracle import nine

    pk, members = traffic
    tar = pcap2grb_tar(tmp_path / "in.tar", members)
    shared = tmp_path / "shared"
    gc.import_tar(tar, shared, NODE, start=1_704_067_200, window_seconds=60)
    cfg = AggregatorConfig(shared, period_seconds=60)
    drain_aggregator(cfg)
    gc.import_tar(tar, shared, NODE, start=1_704_067_200, window_seconds=60)  # consumed: lands nothing
    drain_aggregator(cfg)
    doc = winfile_json(shared / "reports" / "cumulative.json")
    src = np.concatenate([s for s, _ in pk])
    dst = np.concatenate([d for _, d in pk])
    assert doc["analytics"] == nine(src, dst)
    assert doc["top"]["sources"][0]["address"] == "10.0.0.1"
    assert doc["top"]["destinations"][0]["address"] == "192.168.1.2"
    assert not (shared / "quarantine").exists() or not any((shared / "quarantine").rglob("*.nsw"))


def winfile_json(path: Path) -> dict:
    import json

    return json.loads(path.read_text())


# --- real challenge data, when someone has put a tar where the tests can see it ----------------
def _real_tars() -> list[Path]:
    env = os.environ.get("NETSENSE_GRAPHCHALLENGE_TAR")
    if env:
        return [Path(env)]
    shared = ROOT.parent / "shared"
    return sorted(shared.rglob("*.tar"))[:1] if shared.is_dir() else []


@pytest.mark.skipif(not _real_tars(), reason="no Graph Challenge tar in ../shared (or $NETSENSE_GRAPHCHALLENGE_TAR)")
def test_a_real_graph_challenge_tar(tmp_path):
    tar = _real_tars()[0]
    s = gc.import_tar(tar, tmp_path / "shared", NODE)
    assert s.landed >= 1 and s.bad == 0
    for p in s.files[:4]:
        h, a = read_window(p)
        assert h["packets"] == gc.CHALLENGE_PACKETS  # 2^17 valid packets per member
    out = tmp_path / "out.tar"
    gc.export_tar(sorted(s.files), out)
    before, after = members_of(tar), members_of(out)
    for name in list(before)[:4]:  # the challenge numbers members 0.grb, 1.grb, ... in tar order
        assert after[name].isequal(before[name])


def test_cli_export_then_import_round_trip_gives_the_same_report(tmp_path):
    import json

    from conftest import run_cli

    a, b = tmp_path / "a", tmp_path / "b"
    r = run_cli("collector", "run", "--shared", str(a), "--node", "a", "--window-packets", "20000",
                "--source", "synthetic:seed=4,packets=50000")
    assert r.returncode == 0, r.stderr
    files = sorted(str(p) for p in (a / "nodes" / "a").glob("*.nsw"))
    r = run_cli("collector", "export-graphchallenge", *files, "-o", str(tmp_path / "x.tar"))
    assert r.returncode == 0 and "3 matrices" in r.stdout, r.stderr
    for _ in range(2):  # importing twice lands nothing twice
        r = run_cli("collector", "import-graphchallenge", str(tmp_path / "x.tar"), "--shared", str(b),
                    "--node", "gc", "--start", "2026-01-01T00:00:00Z")
        assert r.returncode == 0, r.stderr
    for d in (a, b):
        assert run_cli("aggregator", "run", "--shared", str(d), "--once").returncode == 0
    ra, rb = (json.loads((d / "reports" / "cumulative.json").read_text()) for d in (a, b))
    assert ra["analytics"] == rb["analytics"] and rb["analytics"]["valid_packets"] == 50000
    assert rb["periods"]["final"] == rb["periods"]["count"]  # the import's status lets periods close
