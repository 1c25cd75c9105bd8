"""Every byte from the share is hostile until checked (issue 11).

Crafted files are built with the real encoder (``winfile.encode`` / ``pack``) and
a hand-edited header, with correct CRC and SHA-256, so only the check under test
can catch them; they are landed next to good windows (real collector runs) in a
real shared directory, and a real ``netsense-aggregator run --once`` process must
exit 0, quarantine each with the expected reason, and report exactly the good
windows' analytics (``oracle.nine`` of ``oracle.synthetic_packets``).  Many more
mutations run in-process against ``winfile.decode`` / ``check_window`` and
``statusdoc.parse``, which must never raise anything but ``BadWindowFile``.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import hmac
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import graphblas as gb
import numpy as np
import pytest
from conftest import ROOT, read_json, run_cli, wing_command
from oracle import nine, synthetic_packets

from netsense import statusdoc, winfile
from netsense.collector.window import to_matrix
from netsense.errors import BadWindowFile
from netsense.layout import WindowName

GOOD = {"g1": "seed=1,packets=12000", "g2": "seed=2,packets=7000"}
SECRET = b"correct horse battery staple 42"
START = 1767225600  # 2026-01-01T00:00:00Z, the synthetic source's first slot
RUN = "0123456789ab"
N = winfile.N
DEEP = 200_000


# ----------------------------------------------------------------------------- shares and oracle

@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Good windows from real collector runs, made once: a plain share and a signed one."""
    root = tmp_path_factory.mktemp("hostile")
    key = root / "secret.key"
    key.write_bytes(SECRET + b"\n")
    for share, extra in ((root / "plain", ()), (root / "signed", ("--secret", str(key)))):
        share.mkdir()
        for node, spec in GOOD.items():
            r = run_cli("collector", "run", "--shared", str(share), "--node", node, "--window-packets", "5000",
                        "--source", f"synthetic:{spec}", *extra)
            assert r.returncode == 0, r.stderr
    return root


def share_from(template, tmp_path, kind: str = "plain") -> Path:
    share = tmp_path / "shared"
    shutil.copytree(template / kind, share)
    return share


@functools.cache
def expected() -> dict:
    src, dst = zip(*(synthetic_packets(spec) for spec in GOOD.values()))
    src, dst = np.concatenate(src), np.concatenate(dst)
    counted = (src != 0xFFFFFFFF) & (dst != 0xFFFFFFFF)
    return nine(src[counted], dst[counted])


def aggregate(share: Path, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    r = run_cli("aggregator", "run", "--shared", str(share), "--once", *extra, timeout=timeout)
    assert r.returncode == 0, r.stderr
    return r


def reasons(share: Path) -> dict:
    """quarantined file name -> reason, from the reason files."""
    out = {}
    for p in (share / "quarantine").glob("*/*.reason.json"):
        doc = json.loads(p.read_text())
        out[doc["file"]] = doc["reason"]
    return out


def assert_exact(share: Path) -> None:
    doc = read_json(share / "reports" / "cumulative.json")
    assert doc["analytics"] == expected()
    assert set(doc["nodes"]) == set(GOOD)


# ----------------------------------------------------------------------------- crafted files

def name_for(node: str, seq: int) -> WindowName:
    return WindowName(node, START, START + 60, RUN, seq)


def small_matrix(seed: int = 0, n: int = 300) -> gb.Matrix:
    rng = np.random.default_rng(seed)
    src = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    dst = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    src[::4] = 0x0A000001
    return to_matrix(src, dst)


def total(a: gb.Matrix) -> int:
    return sum(int(v) for v in a.to_coo()[2]) if a.nvals else 0


def header_for(name: WindowName, a: gb.Matrix, **over) -> dict:
    p = total(a)
    h = winfile.window_header(name, source="synthetic:crafted", records=p, packets=p, skipped={},
                              first_ts_ns=START * 10 ** 9, last_ts_ns=START * 10 ** 9 + 5, anonymization=None,
                              created=time.time(), host="attacker")
    h.update(over)
    return h


def canonical(h) -> bytes:
    """The header bytes every writer produces (shared_fs_layout.md: sorted keys, no spaces)."""
    return json.dumps(h, sort_keys=True, separators=(",", ":")).encode()


def signed(h: dict, secret: bytes) -> dict:
    """``h`` with the documented HMAC: HMAC-SHA256 of the canonical JSON of every other field."""
    h = {k: v for k, v in h.items() if k != "hmac"}
    return {**h, "hmac": hmac.new(secret, canonical(h), hashlib.sha256).hexdigest()}


def container(hb: bytes, payload: bytes) -> bytes:
    """A container around exact header bytes: correct prefix sizes and CRC."""
    return winfile.PREFIX.pack(winfile.MAGIC, winfile.FORMAT_VERSION, 0, len(hb), len(payload), zlib.crc32(hb), 0) \
        + hb + payload


def split(data: bytes) -> tuple[bytes, bytes]:
    hlen = winfile.PREFIX.unpack(data[:winfile.PREFIX_SIZE])[3]
    return data[winfile.PREFIX_SIZE:winfile.PREFIX_SIZE + hlen], data[winfile.PREFIX_SIZE + hlen:]


def deep_header(data: bytes) -> bytes:
    """The same window with a field nested DEEP levels deep added to its (valid-CRC) header."""
    hb, payload = split(data)
    return container(hb[:-1] + b',"zdeep":' + b"[" * DEEP + b"]" * DEEP + b"}", payload)


def zstd_zeros(n: int) -> bytes:
    """A standard zstd frame of ``n`` zero bytes made of RLE blocks (4 bytes per 128 KiB)."""
    frame = bytearray(b"\x28\xb5\x2f\xfd\x00\x38")  # magic; no content size; 128 KiB window
    k = n >> 17
    for i in range(k):
        frame += ((1 << 17) << 3 | 1 << 1 | (i == k - 1)).to_bytes(3, "little") + b"\0"
    return bytes(frame)


def bomb_blob(cx_blocks: int = 4, block: int = (1 << 31) - (1 << 17)) -> bytes:
    """A GraphBLAS blob of one entry whose value array is declared (and really decompresses) to
    cx_blocks x block bytes: ~8.6 GB from ~263 KB, the decompression bomb of issue 11."""
    frame = zstd_zeros(block)
    sblocks = [16, 8, 8] + [len(frame) * (i + 1) for i in range(cx_blocks)]
    body = b"".join(struct.pack("<Q", s) for s in sblocks) + struct.pack("<QQQQ", 0, 1, 0, 5) \
        + frame * cx_blocks + b"\0\0"
    fields = [0, 9, 9004005, N, N, 1, 1, 1, 8, 16, 8, 0, 8, cx_blocks * block, 0.0625, 0.4, 15, 4,
              1, -1, 1, -1, 0, -1, 1, -1, cx_blocks, 3001]
    fields[0] = 160 + len(body)
    return struct.pack("<QIiqqqqqqqqqqqffIi10i", *fields) + body


def bomb_window(name: WindowName, **over) -> bytes:
    blob = bomb_blob()
    table = {"codec": "graphblas-suitesparse-zstd", "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest(),
             "blobs": [{"name": "A", "offset": 0, "bytes": len(blob), "nvals": 1, "nrows": N, "ncols": N,
                        "dtype": "UINT64"}]}
    h = winfile.window_header(name, source="synthetic:bomb", records=1, packets=1, skipped={}, first_ts_ns=None,
                              last_ts_ns=None, anonymization=None, created=0.0, host="attacker")
    h.update(over)
    return winfile.pack(h, winfile.Payload(table, blob))


def land(share: Path, name: WindowName, data: bytes) -> str:
    d = share / "nodes" / name.node
    d.mkdir(parents=True, exist_ok=True)
    (d / name.filename).write_bytes(data)
    return name.filename


def crafted_cases() -> list[tuple[str, WindowName, bytes]]:
    """(expected reason, name, bytes) of each crafted header that used to crash or mislead."""
    a = small_matrix()
    cases = []

    def add(reason, seq, data):
        cases.append((reason, name_for("evil", seq), data))

    def enc(i, **over):
        return winfile.encode(header_for(name_for("evil", i), a, **over), {"A": a})

    add("bad_header", 0, enc(0, records=[1, 2]))
    add("bad_header", 1, enc(1, skipped="not_ipv4"))
    add("bad_header", 2, enc(2, anonymization=5))
    add("bad_header", 3, enc(3, packets=total(a) + 0.0))  # a float that compares equal to the sum
    add("bad_header", 4, deep_header(enc(4)))
    add("name_mismatch", 5, enc(5, node="g1"))            # credited to another node
    add("name_mismatch", 6, enc(6, run="ffffffffffff"))
    add("name_mismatch", 7, enc(7, seq=70))
    # UINT64 values whose sum wraps to 5: 2^64 - 1 + 1 + 5
    wrap = gb.Matrix.from_coo([1, 2, 3], [4, 5, 6], [2 ** 64 - 1, 1, 5], nrows=N, ncols=N, dtype="UINT64")
    name = name_for("evil", 8)
    add("wrong_content", 8, winfile.encode(header_for(name, wrap, records=5, packets=5), {"A": wrap}))
    # two entries of 2^63: the sum wraps to 0, and so would an empty window's
    zero = gb.Matrix.from_coo([1, 2], [4, 5], [2 ** 63, 2 ** 63], nrows=N, ncols=N, dtype="UINT64")
    name = name_for("evil", 9)
    add("wrong_content", 9, winfile.encode(header_for(name, zero, records=0, packets=0), {"A": zero}))
    return cases


# ----------------------------------------------------------------------------- real processes

def test_crafted_headers_are_quarantined_and_the_counts_stay_exact(template, tmp_path):
    share = share_from(template, tmp_path)
    cases = crafted_cases()
    for _reason, name, data in cases:
        land(share, name, data)
    aggregate(share)
    assert reasons(share) == {name.filename: reason for reason, name, _ in cases}
    assert_exact(share)
    # a restart (the files are gone from nodes/, so this is the cheap half) changes nothing
    aggregate(share)
    assert_exact(share)


def test_with_secret_the_hmac_is_checked_before_the_header_is_parsed(template, tmp_path):
    share = share_from(template, tmp_path, "signed")
    a = small_matrix(1)
    cases = {}
    for seq, (reason, data) in enumerate([
        ("bad_header", deep_header(winfile.encode(header_for(name_for("evil", 0), a), {"A": a}))),
        ("bad_header", deep_header(winfile.encode(header_for(name_for("evil", 1), a), {"A": a}, secret=SECRET))),
        ("bad_hmac", winfile.encode(header_for(name_for("evil", 2), a), {"A": a})),
        ("bad_hmac", winfile.encode(header_for(name_for("evil", 3), a), {"A": a}, secret=b"not the secret, 20+")),
        # a writer holding the key, with a bug: authentic, still checked field by field
        ("bad_header", winfile.encode(header_for(name_for("evil", 4), a, records="many"), {"A": a}, secret=SECRET)),
    ]):
        cases[land(share, name_for("evil", seq), data)] = reason
    # a signed header edited in place (same length, CRC fixed): the bytes no longer match the MAC
    good = sorted((share / "nodes" / "g1").glob("*.nsw"))[0]
    hb, payload = split(good.read_bytes())
    assert b'"packets":5000' in hb
    forged = name_for("evil", 5)
    hb = hb.replace(b'"packets":5000', b'"packets":5001')
    cases[land(share, forged, container(hb, payload))] = "bad_hmac"
    aggregate(share, "--secret", str(template / "secret.key"))
    assert reasons(share) == cases
    assert_exact(share)


def _wait4(args: list[str], limit_as: int, timeout: float = 120) -> tuple[int, int, str]:
    """Run a wing with RLIMIT_AS; (exit code, peak RSS in bytes, stderr)."""
    err = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"hostile-{os.getpid()}.err", "w+")

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))

    p = subprocess.Popen(wing_command(args), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=limit)
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            p.kill()
            p.wait()
            raise AssertionError(f"{args} did not finish in {timeout}s")
        time.sleep(0.05)
    p.returncode = os.waitstatus_to_exitcode(status)
    err.seek(0)
    text = err.read()
    err.close()
    os.unlink(err.name)
    return p.returncode, ru.ru_maxrss * 1024, text


def test_decompression_bomb_is_refused_before_anything_is_allocated(template, tmp_path):
    """A 263 KB window whose blob declares an 8.6 GB value array: refused from the blob's own
    header (too_large). Before, the aggregator allocated and filled 8.6 GB (peak RSS 8.6 GB,
    30 s here); under a 2 GiB address-space limit it failed to allocate (bad_payload)."""
    share = share_from(template, tmp_path)
    bomb = land(share, name_for("evil", 0), bomb_window(name_for("evil", 0)))
    assert (share / "nodes" / "evil" / bomb).stat().st_size < 300_000
    # the same blob under a header that claims 2^30 links: refused from the header alone
    big = land(share, name_for("evil", 1), bomb_window(name_for("evil", 1), packets=1 << 30, records=1 << 30))
    hb, payload = split((share / "nodes" / "evil" / big).read_bytes())
    h = json.loads(hb)
    h["payload"]["blobs"][0]["nvals"] = 1 << 30
    (share / "nodes" / "evil" / big).write_bytes(container(canonical(h), payload))
    rc, peak, err = _wait4(["aggregator", "run", "--shared", str(share), "--once"], 2 << 30)
    assert rc == 0, err
    assert peak < 1 << 30, f"peak RSS {peak / 2 ** 20:.0f} MiB"
    assert reasons(share) == {bomb: "too_large", big: "too_large"}
    assert_exact(share)


def test_fifos_never_hang_the_aggregator_or_the_status_commands(template, tmp_path):
    share = share_from(template, tmp_path)
    aggregate(share)
    fifo = share / "nodes" / "g1" / name_for("g1", 99).filename
    os.mkfifo(fifo)
    os.mkfifo(share / "status" / "ghost.json")
    (share / "aggregator" / "status.json").unlink()
    os.mkfifo(share / "aggregator" / "status.json")
    aggregate(share, timeout=60)
    assert reasons(share) == {fifo.name: "not_regular_file"}
    assert_exact(share)
    os.mkfifo(share / "quarantine" / "g1" / "x.nsw.reason.json")
    (share / "aggregator" / "status.json").unlink()
    os.mkfifo(share / "aggregator" / "status.json")
    r = run_cli("aggregator", "status", "--shared", str(share), timeout=60)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    (share / "reports" / "cumulative.json").unlink()
    os.mkfifo(share / "reports" / "cumulative.json")
    r = run_cli("aggregator", "report", "--shared", str(share), timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "not a regular file" in r.stderr, r.stderr


def test_a_fifo_swapped_in_after_the_scan_is_refused_not_waited_on(tmp_path):
    """The intake opens each file once, non-blocking, and checks the descriptor: what a FIFO
    swapped in between a scan and the read meets. Before, ``open()`` waited for a writer forever."""
    fifo = tmp_path / name_for("g1", 0).filename
    os.mkfifo(fifo)
    code = ("import sys; from netsense import winfile\n"
            "try:\n    winfile.read(sys.argv[1])\n"
            "except winfile.BadWindowFile as e:\n    print(e.reason)\n")
    r = subprocess.run([sys.executable, "-c", code, str(fifo)], capture_output=True, text=True, timeout=30)
    assert r.stdout.strip() == "not_regular_file", r.stderr


def test_garbage_status_documents_and_reports_cost_nothing(template, tmp_path):
    share = share_from(template, tmp_path)
    status = share / "status"
    real = json.loads((status / "g1.json").read_text())
    garbage = {
        "a1": "[1, 2]",
        "a2": json.dumps({**real, "node": "a2", "last_window": [1]}),
        "a3": json.dumps({**real, "node": "a3", "last_window": {**real["last_window"], "seq": "7"}}),
        "a4": "[" * DEEP + "]" * DEEP,
        "a5": '{"node": "a5", "x": ' + "[" * DEEP + "]" * DEEP + "}",
        "a6": json.dumps({**real, "node": "a6", "skipped": "lots"}),
    }
    for node, text in garbage.items():
        (status / f"{node}.json").write_text(text)
    aggregate(share)
    assert_exact(share)
    assert not reasons(share)
    # the status command, over garbage in every other JSON file it reads
    (share / "quarantine" / "g1").mkdir(parents=True)
    (share / "quarantine" / "g1" / "a.nsw.reason.json").write_text("[1]")
    (share / "quarantine" / "g1" / "b.nsw.reason.json").write_text('{"reason": {"nested": []}}')
    (share / "aggregator" / "status.json").write_text("[1, 2]")
    r = run_cli("aggregator", "status", "--shared", str(share))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "g1 " in r.stdout and "quarantine: unknown 2" in r.stdout
    (share / "aggregator" / "status.json").write_text("[" * DEEP + "]" * DEEP)
    (share / "reports" / "cumulative.json").write_text(json.dumps({"nodes": [1], "analytics": "x"}))
    r = run_cli("aggregator", "status", "--shared", str(share), "--format", "json")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert json.loads(r.stdout)["nodes"]["g1"]["health"] in ("up", "finished")
    r = run_cli("aggregator", "report", "--shared", str(share))
    assert r.returncode == 1 and "Traceback" not in r.stderr and "not a netsense report" in r.stderr, r.stderr
    # a collector whose own status was mangled starts over instead of crashing on it
    (status / "g1.json").write_text(json.dumps({**real, "state": "running",
                                                "last_window": {**real["last_window"], "position": None}}))
    r = run_cli("collector", "run", "--shared", str(share), "--node", "g1", "--window-packets", "5000",
                "--source", f"synthetic:{GOOD['g1']}")
    assert r.returncode == 0, r.stderr
    aggregate(share)
    assert_exact(share)


# ----------------------------------------------------------------------------- fuzz, in-process

VALUES = [None, [], {}, "x", -1, 2 ** 64, 10 ** 30, 1.5, float("nan"), True, [[[[[[]]]]]], {"a": {"b": {"c": []}}}]
FIELDS = winfile.WINDOW_FIELDS + ("hmac",)
PAYLOAD_PATHS = [("payload", k) for k in ("codec", "bytes", "sha256", "blobs")] + \
    [("payload", "blobs", 0, k) for k in ("name", "offset", "bytes", "nvals", "nrows", "ncols", "dtype")]


def _set(h: dict, path, value) -> dict:
    h = copy.deepcopy(h)
    d = h
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value
    return h


def _check(data: bytes, name: WindowName, secret: bytes | None = None):
    """What the aggregator's intake does with bytes: None if accepted, else the BadWindowFile reason."""
    from netsense.aggregator.sums import Sums

    try:
        a = winfile.check_window(winfile.decode(data, secret=secret) if secret else winfile.decode(data), name)
    except BadWindowFile as e:
        return e.reason
    s = Sums.take(a)  # what the aggregator does next: sorted unique keys, exact values
    assert len(s.keys) < 2 or (s.keys[1:] > s.keys[:-1]).all()
    return None


def _header_mutants(name: WindowName):
    a = small_matrix(2)
    base = header_for(name, a)
    payload = winfile.serialize({"A": a})
    h0 = {**base, "payload": payload.table}
    for path in [(f,) for f in FIELDS] + PAYLOAD_PATHS:
        for v in VALUES:
            yield path, v, canonical(_set(h0, path, v)), payload.data
        if len(path) == 1:
            rest = {k: v for k, v in h0.items() if k != path[0]}
            yield path, "missing", canonical(rest), payload.data
    hb = canonical(h0)
    yield ("deep",), DEEP, hb[:-1] + b',"zz":' + b"[" * DEEP + b"]" * DEEP + b"}", payload.data
    yield ("deep-string",), DEEP, hb[:-1] + b',"zz":"' + b'\\"' * DEEP + b"}", payload.data
    yield ("not-utf8",), 0, hb[:-1] + b',"zz":"\xff\xfe"}', payload.data
    yield ("array",), 0, b"[" + hb + b"]", payload.data


def test_fuzz_every_header_field(tmp_path):
    name = name_for("fuzz", 0)
    seen = {}
    for path, v, hb, payload in _header_mutants(name):
        data = container(hb, payload)
        for secret in (None, SECRET):
            if secret:  # a writer holding the key: the MAC is right, the content is not
                try:
                    h = json.loads(hb)
                except (ValueError, RecursionError):
                    continue
                if not isinstance(h, dict):
                    continue
                data = container(canonical(signed(h, secret)), payload)
            seen[(path, repr(v), bool(secret))] = _check(data, name, secret)
    refused = {k: r for k, r in seen.items() if r}
    # each field's wrong types are refused; the few harmless values pass
    for f in ("records", "packets", "skipped", "anonymization", "node", "run", "seq", "start", "end", "kind"):
        bad = [v for v in (None, [], {}, 1.5, True) if (f, v) not in (("anonymization", None), ("skipped", {}))]
        assert all(seen[((f,), repr(v), secret)] for v in bad for secret in (False, True)), f
    assert seen[(("deep",), repr(DEEP), False)] == "bad_header"
    assert seen[(("host",), repr("x"), False)] is None and seen[(("created",), repr(-1), False)] is None
    assert len(refused) > 300


def _payload_mutants(seed: int):
    rng = np.random.default_rng(seed)
    for compression in ("lz4", "zstd"):
        a = small_matrix(seed)
        p = winfile.serialize({"A": a}, compression)
        blob = p.data
        positions = list(range(min(len(blob), 320))) + rng.integers(0, len(blob), 150).tolist()
        for i in positions:
            for op in (0xFF, 0x01, 0x80):
                b = bytearray(blob)
                b[i] ^= op
                yield a, bytes(b)
        for cut in rng.integers(1, len(blob), 20).tolist():
            yield a, blob[:cut]
            yield a, blob + blob[:cut]


def test_fuzz_payload_bytes_with_a_recomputed_checksum():
    """Byte flips in the GraphBLAS blob (the SHA-256 recomputed, so they reach deserialization):
    the reader refuses them or yields a valid traffic matrix, and never crashes."""
    name = name_for("fuzz", 1)
    outcomes = {}
    for seed in (3, 4):
        for a, blob in _payload_mutants(seed):
            p = total(a)
            h = header_for(name, a, records=p, packets=p)
            table = {"codec": "graphblas-suitesparse-lz4", "bytes": len(blob),
                     "sha256": hashlib.sha256(blob).hexdigest(),
                     "blobs": [{"name": "A", "offset": 0, "bytes": len(blob), "nvals": int(a.nvals), "nrows": N,
                                "ncols": N, "dtype": "UINT64"}]}
            r = _check(winfile.pack(h, winfile.Payload(table, blob)), name)
            outcomes[r] = outcomes.get(r, 0) + 1
    assert set(outcomes) <= {None, "bad_payload", "wrong_content", "wrong_shape", "too_large"}, outcomes
    assert outcomes.get("bad_payload") and outcomes.get("wrong_content")


def test_fuzz_status_documents(template, tmp_path):
    from netsense.aggregator.status import format_status, gather_status

    real = json.loads((template / "plain" / "status" / "g1.json").read_text())
    share = tmp_path / "shared"
    (share / "status").mkdir(parents=True)
    keys = list(real) + ["last_window." + k for k in real["last_window"]] + ["skipped.x"]
    n = 0
    for key in keys:
        for v in VALUES + ["missing"]:
            doc = copy.deepcopy(real)
            d, k = (doc["last_window"], key.split(".")[1]) if key.startswith("last_window.") else \
                (doc["skipped"], "x") if key == "skipped.x" else (doc, key)
            if v == "missing":
                d.pop(k, None)
            else:
                d[k] = v
            text = json.dumps(doc)
            got = statusdoc.parse(text, "g1")
            assert got is None or isinstance(got, dict)
            if got is not None and got.get("last_window"):
                lw = got["last_window"]  # what a resuming collector uses
                assert all(type(lw[f]) is int for f in ("seq", "start", "position"))
            (share / "status" / "g1.json").write_text(text)
            format_status(gather_status(share))
            n += 1
    for text in ("", "[]", "null", "[" * DEEP, "{" * DEEP, '{"node":"g1"' + ',"a":[' * 1000, "\ud800", "\x00"):
        assert statusdoc.parse(text, "g1") is None
    assert n > 200


def test_fuzzed_files_in_a_real_run_are_all_quarantined_with_exact_counts(template, tmp_path):
    """A sample of the refused mutants, each under its own name, landed next to the good windows."""
    share = share_from(template, tmp_path)
    want = {}
    seq = 0
    for path, v, hb, payload in _header_mutants(name_for("fuzz", 0)):
        if path[-1] not in ("records", "packets", "skipped", "node", "seq", "kind", "anonymization", "nvals",
                            "bytes", "blobs", "deep", "array", "not-utf8"):
            continue
        name = name_for("fuzz", seq)
        if path[0] not in ("deep", "array", "not-utf8"):
            h = json.loads(hb)
            for k, x in (("identity", name.identity), ("seq", name.seq)):
                if path != (k,):
                    h[k] = x
            hb = canonical(h)
        reason = _check(container(hb, payload), name)
        if reason is None:
            continue
        want[land(share, name, container(hb, payload))] = reason
        seq += 1
    assert len(want) > 50
    aggregate(share)
    assert reasons(share) == want
    assert_exact(share)
