"""Traffic sources: spec parsing, pcap files/directories/globs/stdin/FIFOs/follow, AF_PACKET capture,
CSV, Parquet and access logs.  Every kind also runs once through the real collector
(``run_collector``) and the landed windows' totals are checked against the status file."""
from __future__ import annotations

import gzip
import io
import os
import random
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # pcapgen / conftest, whatever the import mode
import pcapgen as g  # noqa: E402
from conftest import read_json, wait_for  # noqa: E402

from netsense import winfile  # noqa: E402
from netsense.collector import iface, sources, stream, tabular  # noqa: E402
from netsense.errors import ConfigError, SourceError  # noqa: E402
from netsense.collector.pcap import read_capture  # noqa: E402
from netsense.addresses import str_to_ip  # noqa: E402
from netsense.collector.records import COUNTED, MALFORMED_RECORD, NOT_IPV4  # noqa: E402
from netsense.collector.run import Collector, CollectorConfig, run_collector  # noqa: E402

NS = 1_000_000_000
T0 = 1_767_225_600 * NS  # 2026-01-01T00:00:00Z
WINDOWING = (1 << 17, 60)


# --------------------------------------------------------------------------- helpers

def frames(n, first=0, src="10.0.0.1", dst="10.0.0.2", t0=T0, step=NS // 100):
    return [(t0 + (first + i) * step, g.eth(g.ipv4(src, dst, (first + i).to_bytes(4, "big")))) for i in range(n)]


def capture(n, **kw) -> bytes:
    return g.pcap(frames(n, **kw))


def open_(spec, node="n1"):
    return sources.open_source(spec, node=node, windowing=WINDOWING)


def drain(source, stop=lambda: False):
    return list(source.batches(stop))


def rows(batches):
    """[(ts, src, dst, reason)] over batches."""
    out = []
    for b in batches:
        out += list(zip(b.ts_ns.tolist(), b.src.tolist(), b.dst.tolist(), b.reason.tolist()))
    return out


def check_positions(batches):
    assert [b.position for b in batches] == np.cumsum([len(b) for b in batches]).tolist()


def landed(shared, node="n1") -> dict:
    """Totals over the window files a node landed, from their headers."""
    tot = {"windows": 0, "packets": 0, "records": 0, "skipped": {}}
    for p in sorted((shared / "nodes" / node).glob("*.nsw")):
        h = winfile.read_header(p)
        tot["windows"] += 1
        tot["packets"] += h["packets"]
        tot["records"] += h["records"]
        for k, v in h["skipped"].items():
            tot["skipped"][k] = tot["skipped"].get(k, 0) + v
    return tot


def pair_count(shared, src, dst, node="n1") -> int:
    n = 0
    for p in (shared / "nodes" / node).glob("*.nsw"):
        v = winfile.read(p).matrix("A").get(str_to_ip(src), str_to_ip(dst))
        n += int(v or 0)
    return n


def cfg(shared, spec, node="n1", **kw):
    kw.setdefault("status_interval", 0.1)
    return CollectorConfig(shared, node, spec, **kw)


def collect(shared, spec, node="n1", **kw) -> dict:
    """Run a finite source through the collector; check the landed windows against its status."""
    run_collector(cfg(shared, spec, node, **kw))
    st = read_json(shared / "status" / f"{node}.json")
    tot = landed(shared, node)
    assert st["state"] == "finished"
    assert (st["packets"], st["records"], st["skipped"], st["windows_landed"]) == \
           (tot["packets"], tot["records"], tot["skipped"], tot["windows"])
    return st


class Background:
    """A live collector in a thread; ``finish()`` stops it and returns its final status."""

    def __init__(self, shared, spec, node="n1", **kw):
        self.shared, self.node, self.stop, self.error = shared, node, threading.Event(), None
        self.collector = Collector(cfg(shared, spec, node, **kw))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.collector.run(self.stop)
        except BaseException as e:  # surfaced by finish()
            self.error = e

    def status(self):
        return read_json(self.shared / "status" / f"{self.node}.json") or {}

    def wait_records(self, n, timeout=10.0):
        wait_for(lambda: self.collector.summary.records_read >= n or self.error or not self.thread.is_alive(),
                 timeout, what=f"{n} records read")

    def finish(self, timeout=10.0) -> dict:
        self.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "collector did not stop"
        if self.error:
            raise self.error
        st = self.status()
        tot = landed(self.shared, self.node)
        assert (st["packets"], st["records"], st["skipped"], st["windows_landed"]) == \
               (tot["packets"], tot["records"], tot["skipped"], tot["windows"])
        return st


# --------------------------------------------------------------------------- specs

def test_options_follow_the_last_question_mark_only_when_they_look_like_options():
    assert sources.split_options("/cap/dir?follow=1,settle=2") == ("/cap/dir", {"follow": "1", "settle": "2"})
    assert sources.split_options("/cap/eth0-??.pcap") == ("/cap/eth0-??.pcap", {})
    assert sources.split_options("/a?b/x.log?server=10.0.0.1") == ("/a?b/x.log", {"server": "10.0.0.1"})
    assert sources.split_options("plain") == ("plain", {})


def test_spec_help_names_every_kind():
    from click.testing import CliRunner

    from netsense.collector.cli import main

    for kind in sources.KINDS:
        assert f"{kind}:" in sources.SPEC_HELP
    out = CliRunner().invoke(main, ["run", "--help"]).output
    assert "access-log:PATH?server=IP" in out and "iface:NAME" in out


@pytest.mark.parametrize("spec, error, words", [
    ("nope:x", ConfigError, "unknown source"),
    ("pcap:/does/not/exist.pcap", SourceError, "does not exist"),
    ("pcap:/does/not/*.pcap", SourceError, "no file matches"),
    ("pcap:{tmp}?follow=1,bogus=1", ConfigError, "unknown option 'bogus'"),
    ("pcap:{tmp}?settle=3", ConfigError, "settle only applies with follow=1"),
    ("pcap:{tmp}?follow=maybe", ConfigError, "follow must be 0 or 1"),
    ("pcap:-?follow=1", ConfigError, "needs a directory"),
    ("pcap:{tmp}/missing/x?follow=1", SourceError, "does not exist"),
    ("pcap:{tmp}", SourceError, "no capture files"),
    ("access-log:{tmp}/a.log", ConfigError, "server=IP"),
    ("access-log:{tmp}/a.log?server=::1", ConfigError, "IPv4"),
    ("csv:{tmp}/a.log", SourceError, "needs src and dst columns"),
    ("csv:{tmp}/a.log?sep=xx", ConfigError, "sep must be"),
    ("parquet:{tmp}/a.log", SourceError, "not a readable Parquet file"),
    ("iface:", ConfigError, "interface name"),
    ("iface:nosuchif0", SourceError, "no interface 'nosuchif0'"),
])
def test_bad_specs_fail_early_with_the_spec_in_the_message(tmp_path, spec, error, words):
    (tmp_path / "a.log").write_text("a,b\n1,2\n")
    spec = spec.format(tmp=tmp_path)
    if spec.startswith("iface:") and not hasattr(socket, "AF_PACKET"):
        pytest.skip("no AF_PACKET here")
    with pytest.raises(error) as e:
        open_(spec)
    assert words in str(e.value)
    if spec.split(":")[0] in sources.KINDS:
        assert spec in str(e.value)


# --------------------------------------------------------------------------- pcap replay

def write_rotation(d: Path) -> dict:
    """Captures named like tcpdump -C (cap, cap1, cap2, cap10), one gzipped, plus files to ignore."""
    d.mkdir(exist_ok=True)
    parts = {"cap": (0, 5), "cap1": (5, 7), "cap2": (12, 3), "cap10": (15, 6)}
    for name, (first, n) in parts.items():
        data = capture(n, first=first)
        if name == "cap2":
            (d / name).write_bytes(gzip.compress(data))
        else:
            (d / name).write_bytes(data)
    (d / "README.txt").write_text("not a capture\n")
    (d / ".cap3.tmp").write_bytes(capture(50))  # a writer's temp file: hidden names are ignored
    return parts


def test_pcap_directory_and_glob_read_files_in_name_order(tmp_path):
    d = tmp_path / "caps"
    write_rotation(d)
    batches = drain(open_(f"pcap:{d}"))
    ts = [r[0] for r in rows(batches)]
    assert ts == [T0 + i * (NS // 100) for i in range(21)]  # cap, cap1, cap2, cap10: numeric order
    check_positions(batches)
    # Same files, same fingerprint, however they are named on the command line; a glob works too.
    assert open_(f"pcap:{d}").run == open_(f"pcap:{d}/cap*").run == open_(f"pcap:{d}/").run
    assert rows(drain(open_(f"pcap:{d}/cap*"))) == rows(batches)
    # A directory holding one capture fingerprints like that file; the file keeps its historic fingerprint.
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(d / "cap", one / "x.pcap")
    ident = sources._file_identity(d / "cap")
    assert open_(f"pcap:{one}").run == open_(f"pcap:{d}/cap").run == \
        sources._fingerprint("n1", "pcap", ident, WINDOWING)
    # Content decides: a changed order (renamed files) or another node gives another run.
    before = open_(f"pcap:{d}").run
    (d / "cap10").rename(d / "cap0")
    assert open_(f"pcap:{d}").run != before
    assert open_(f"pcap:{d}", node="n2").run != open_(f"pcap:{d}").run
    assert not open_(f"pcap:{d}").live


def test_pcap_directory_run_lands_every_packet_and_resumes_by_position(tmp_path):
    """A truncated last record in the first file must not shift positions: a restart skips
    exactly the records already landed, across file boundaries."""
    d = tmp_path / "caps"
    d.mkdir()
    (d / "a.pcap").write_bytes(capture(9)[:-3])          # 8 whole records + a truncated one
    (d / "b.pcap").write_bytes(capture(11, first=9))
    (d / "c.pcap").write_bytes(capture(4, first=20, src="10.9.9.9"))
    spec, kw = f"pcap:{d}", dict(window_packets=5, window_seconds=3600)

    whole = collect(tmp_path / "s1", spec, **kw)
    assert whole["packets"] == 8 + 11 + 4 and whole["skipped"] == {"truncated_record": 1}

    # Interrupted after the first file's batches, then restarted: the same totals, nothing twice.
    shared = tmp_path / "s2"
    first = Collector(cfg(shared, spec, **kw))
    stop = threading.Event()
    inner = first.source.batches

    def one_file(stop_fn):
        for rec in inner(stop_fn):
            yield rec
            if rec.extra_skipped:  # the end of a.pcap
                stop.set()

    first.source.batches = one_file
    first.run(stop)
    assert read_json(shared / "status" / "n1.json")["state"] == "stopped"
    again = collect(shared, spec, **kw)
    assert again["packets"] == whole["packets"] and again["records"] == whole["records"]
    assert landed(shared)["packets"] == whole["packets"]
    assert pair_count(shared, "10.9.9.9", "10.0.0.2") == 4


# --------------------------------------------------------------------------- framing live streams

def pcapng_capture() -> tuple[bytes, int]:
    """Two sections, two interfaces (us and ns), packets of both; returns (bytes, packets)."""
    ip = g.ipv4("10.0.0.1", "10.0.0.2", b"x" * 10)
    data = g.shb() + g.idb(1) + g.idb(101, tsresol=9)
    n = 0
    for i in range(30):
        data += g.epb(g.eth(ip), units=1_767_225_600_000_000 + i, ifid=0)
        data += g.epb(ip, units=1_767_225_600_000_000_000 + i, ifid=1)
        n += 2
        if i == 10:
            data += g.nrb()
    data += g.shb(">") + g.idb(1, ">") + b"".join(g.epb(g.eth(ip), 5 + i, 0, ">") for i in range(7))
    return data, n + 7


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_framer_cuts_any_byte_stream_into_the_same_records(kind):
    data, n = (capture(40), 40) if kind == "pcap" else pcapng_capture()
    want = rows(read_capture(io.BytesIO(data)))
    assert len(want) == n
    rnd = random.Random(7)
    for trial in range(20):
        fr, got, i = stream.Framer(), [], 0
        while i < len(data):
            step = rnd.choice([1, 2, 3, 7, 16, 100, 1000])
            fr.feed(data[i:i + step])
            i += step
            chunk = fr.take()
            if chunk:
                got += rows(stream._parse("t", chunk))
        tail = fr.take(final=True)
        assert tail is None or not rows(stream._parse("t", tail))
        assert got == want


def test_framer_reports_a_cut_stream_and_stops_at_a_malformed_record():
    data = capture(5)
    fr = stream.Framer()
    fr.feed(data[:-4])
    got = stream._parse("t", fr.take())
    tail = stream._parse("t", fr.take(final=True))
    assert sum(map(len, got)) == 4 and tail[-1].extra_skipped == {"truncated_record": 1}
    bad = bytearray(capture(5))
    third = 24 + 2 * (16 + len(frames(1)[0][1]))
    bad[third + 8:third + 12] = (1 << 30).to_bytes(4, "little")  # the 3rd record's caplen: impossible
    fr = stream.Framer()
    fr.feed(bytes(bad))
    out = stream._parse("t", fr.take())
    assert fr.broken and sum(map(len, out)) == 2 and out[-1].extra_skipped == {"malformed_record": 1}
    assert fr.take(final=True) is None
    fr = stream.Framer()
    fr.feed(b"hello, this is not a capture")
    with pytest.raises(SourceError, match="not a pcap"):
        stream._parse("t", fr.take())


def test_stdin_source_is_live_and_lands_everything_through_the_collector(tmp_path):
    """pcap:- with a writer that pauses mid-record: packets are counted as they arrive, and the
    collector finishes when the stream ends."""
    data, total = capture(300), 300
    r, w = os.pipe()
    saved = os.dup(0)
    os.dup2(r, 0)
    os.close(r)
    try:
        a, b = open_("pcap:-"), open_("pcap:-")
        assert a.live and a.run != b.run
        bg = Background(tmp_path / "s", "pcap:-", window_packets=64)
        cut = 24 + 100 * (16 + len(frames(1)[0][1])) + 5  # 100 records and 5 bytes of the 101st
        os.write(w, data[:cut])
        bg.wait_records(100)
        time.sleep(0.3)
        assert bg.collector.summary.records_read == 100  # the partial record waits for its bytes
        os.write(w, data[cut:])
        os.close(w)
        w = None
        bg.thread.join(10)
        st = bg.finish()
    finally:
        if w is not None:
            os.close(w)
        os.dup2(saved, 0)
        os.close(saved)
    assert st["state"] == "finished" and st["live"] and st["packets"] == total and st["skipped"] == {}


def test_fifo_is_a_live_stream_and_quiet_streams_still_yield(tmp_path):
    fifo = tmp_path / "cap.fifo"
    os.mkfifo(fifo)
    src = open_(f"pcap:{fifo}")
    assert src.live
    data = capture(50)

    def writer():
        time.sleep(0.6)  # the reader must not block meanwhile
        with open(fifo, "wb") as f:
            f.write(data[:500])
            f.flush()
            time.sleep(0.6)
            f.write(data[500:])

    t = threading.Thread(target=writer)
    t.start()
    stamps, batches = [], []
    for b in src.batches(lambda: False):
        stamps.append(time.monotonic())
        batches.append(b)
    t.join()
    assert sum(map(len, batches)) == 50 and batches[-1].position == 50
    assert max(np.diff(stamps)) < 0.5  # a batch, empty if need be, at least every 0.5 s


# --------------------------------------------------------------------------- follow

def test_follow_reads_rotating_files_as_they_appear(tmp_path):
    d = tmp_path / "rot"
    d.mkdir()
    (d / "eth0-1.pcap").write_bytes(capture(40, first=0))
    (d / "notes.txt").write_text("ignored\n")
    bg = Background(tmp_path / "s", f"pcap:{d}/eth0-*?follow=1,settle=0.3", window_packets=16)
    assert bg.collector.source.live
    bg.wait_records(40)
    # The newest file is read while it grows, a complete record at a time.
    second = capture(30, first=40, src="10.0.0.3")
    with open(d / "eth0-2.pcap", "wb") as f:
        f.write(second[:700])
        f.flush()
        bg.wait_records(40 + (700 - 24) // (16 + len(frames(1)[0][1])))
        f.write(second[700:])
    bg.wait_records(70)
    # Rotation to a compressed file: read once it settles (it is the newest).
    (d / "eth0-3.pcap.gz").write_bytes(gzip.compress(capture(20, first=70, src="10.0.0.4")))
    (d / "other-9.pcap").write_bytes(capture(5))  # not matched by the pattern
    bg.wait_records(90)
    st = bg.finish()
    assert st["state"] == "stopped" and st["packets"] == 90 and st["skipped"] == {}
    assert pair_count(tmp_path / "s", "10.0.0.3", "10.0.0.2") == 30
    assert pair_count(tmp_path / "s", "10.0.0.4", "10.0.0.2") == 20


def test_follow_finishes_a_file_with_a_partial_record_once_a_newer_one_exists(tmp_path):
    d = tmp_path / "rot"
    d.mkdir()
    (d / "a.pcap").write_bytes(capture(10)[:-5])
    src = open_(f"pcap:{d}?follow=1")
    got, stamps, t_start = [], [], time.monotonic()

    def stop():
        return sum(map(len, got)) >= 19 or time.monotonic() - t_start > 5

    for b in src.batches(stop):
        got.append(b)
        stamps.append(time.monotonic())
        if len(stamps) == 4:
            (d / "b.pcap").write_bytes(capture(10, first=10))
    assert sum(map(len, got)) == 19
    assert sum(b.extra_skipped.get("truncated_record", 0) for b in got) == 1
    check_positions(got)
    assert max(np.diff(stamps)) < 0.5


# --------------------------------------------------------------------------- interfaces

needs_af_packet = pytest.mark.skipif(
    not hasattr(socket, "AF_PACKET") or os.geteuid() != 0 or not os.path.exists("/sys/class/net/lo"),
    reason="needs Linux AF_PACKET, root and a loopback interface")


def send_udp(n, src="127.0.0.3", dst="127.0.0.2"):
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind((dst, 0))  # a listener, so the kernel sends no ICMP port-unreachable back
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind((src, 0))
    for i in range(n):
        tx.sendto(i.to_bytes(4, "big"), rx.getsockname())
    tx.close()
    rx.close()


@needs_af_packet
def test_iface_lo_counts_each_packet_once_through_the_collector(tmp_path):
    shared = tmp_path / "s"
    bg = Background(shared, "iface:lo", window_packets=1 << 17)

    def capturing():  # the socket is bound once the collector asks for its first batch
        send_udp(1, "127.0.0.9", "127.0.0.2")
        time.sleep(0.05)
        return bg.collector.summary.records_read > 0

    wait_for(capturing, 10, what="capture on lo")
    before = bg.collector.summary.records_read
    send_udp(50)
    bg.wait_records(before + 50)
    time.sleep(0.3)  # time for a second copy of each packet to show up, if there were one
    st = bg.finish()
    assert st["live"] and st["state"] == "stopped"
    # The kernel shows each loopback packet twice (outgoing, then incoming); one is dropped.
    assert pair_count(shared, "127.0.0.3", "127.0.0.2") == 50
    assert st["packets"] >= 50


@needs_af_packet
@pytest.mark.parametrize("name, cooked", [("lo", True), ("any", None)])
def test_iface_cooked_mode_and_any(name, cooked):
    got, stamps = [], []
    deadline = time.monotonic() + 3
    a, b = str_to_ip("127.0.0.5"), str_to_ip("127.0.0.6")
    seen = 0
    for batch in iface.iface_batches("iface:" + name, name, lambda: time.monotonic() > deadline, cooked=cooked):
        stamps.append(time.monotonic())
        got.append(batch)
        if len(got) == 1:  # bound and capturing: send
            send_udp(20, "127.0.0.5", "127.0.0.6")
        seen += int(((batch.src == a) & (batch.dst == b)).sum())
        if len(got) > 2 and seen >= 20:
            deadline = 0  # a duplicate would arrive with its original; one more batch to be sure
    pairs = [r for r in rows(got) if r[1] == a and r[2] == b]
    assert len(pairs) == 20 and all(r[3] == COUNTED for r in pairs)
    assert max(np.diff(stamps)) < 0.5
    check_positions(got)


# --------------------------------------------------------------------------- csv / parquet

CSV = """\ufeffSRC,Dst,packets,ts,comment
10.0.0.1,10.0.0.2,3,2026-01-01T00:00:00Z,dotted
167772161,167772162,1,1767225600.5,integers
10.0.0.1,10.0.0.3,,2026-01-01T00:00:01+00:00,no count
::1,10.0.0.2,2,1767225601,ipv6 source: two not_ipv4 records
10.0.0.1,not-an-address,1,1767225601,unparseable
10.0.0.1,10.0.0.2,4294967297,1767225601,over the cap
10.0.0.1,10.0.0.2,1,yesterday,bad time
10.0.0.1,10.0.0.2,1,1767225602,too,many,fields
10.0.0.7,10.0.0.8,0,1767225602,zero packets: no record
10.0.0.7,10.0.0.8,5,2026-01-01 00:00:03,naive ISO is UTC
"""


def test_csv_rows_expand_and_bad_rows_are_counted_not_raised(tmp_path):
    p = tmp_path / "flows.csv"
    p.write_text(CSV)
    src = open_(f"csv:{p}")
    batches = drain(src)
    check_positions(batches)
    recs = rows(batches)
    counted = [(r[1], r[2]) for r in recs if r[3] == COUNTED]
    a, b, c8 = str_to_ip("10.0.0.1"), str_to_ip("10.0.0.2"), str_to_ip("10.0.0.8")
    assert counted.count((a, b)) == 4 and counted.count((str_to_ip("10.0.0.7"), c8)) == 5
    reasons = [r[3] for r in recs]
    assert reasons.count(NOT_IPV4) == 3 and reasons.count(MALFORMED_RECORD) == 3  # no count, cap, bad time
    assert sum(b.extra_skipped.get("malformed_record", 0) for b in batches) == 1  # the 5-field line
    assert recs[0][0] == T0 and recs[3][0] == T0 + NS // 2
    assert [r[0] for r in recs if r[2] == c8] == [T0 + 3 * NS] * 5
    # A row with an unreadable time takes the previous row's time (never 1970).
    assert min(r[0] for r in recs) == T0
    # Deterministic: the same content elsewhere is the same run.
    shutil.copy(p, tmp_path / "copy.csv")
    assert open_(f"csv:{tmp_path / 'copy.csv'}").run == src.run and not src.live


def test_csv_without_ts_uses_the_file_mtime_and_streams_in_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(tabular, "CSV_BLOCK", 256)
    monkeypatch.setattr(tabular, "MAX_BATCH", 100)
    p = tmp_path / "flows.tsv.gz"
    body = "src\tdst\tpackets\n" + "".join(f"10.0.{i % 7}.1\t10.1.0.{i % 5}\t{i % 3}\n" for i in range(300))
    body += "10.0.0.1\t10.0.0.2\t1000\n"  # one row larger than a batch
    p.write_bytes(gzip.compress(body.encode()))
    os.utime(p, ns=(T0 + 42, T0 + 42))
    run1 = open_(f"csv:{p}").run
    batches = drain(open_(f"csv:{p}"))
    assert max(map(len, batches)) <= 100 and len(batches) > 12
    recs = rows(batches)
    assert len(recs) == sum(i % 3 for i in range(300)) + 1000
    assert {r[0] for r in recs} == {T0 + 42} and {r[3] for r in recs} == {COUNTED}
    check_positions(batches)
    os.utime(p, ns=(T0 + 43, T0 + 43))  # the times are the mtime: it is part of the run's identity
    assert open_(f"csv:{p}").run != run1


def test_csv_through_the_collector(tmp_path):
    p = tmp_path / "flows.csv"
    p.write_text(CSV)
    st = collect(tmp_path / "s", f"csv:{p}", window_packets=3, window_seconds=1)
    assert st["packets"] == 3 + 1 + 5
    assert st["skipped"] == {"malformed_record": 4, "not_ipv4": 3}
    assert pair_count(tmp_path / "s", "10.0.0.7", "10.0.0.8") == 5


def write_parquet(path, n=1000):
    import pyarrow as pa
    import pyarrow.parquet as pq

    i = np.arange(n)
    v6 = i % 100 == 1
    src = pa.array(["fe80::1" if k % 100 == 1 else f"10.2.0.{k % 200}" for k in i])
    dst = pa.array((0x0A030000 + i % 17).astype(np.uint32))
    packets = pa.array(i % 4, pa.int64())
    ts = pa.array(((T0 // 1_000_000) + i * 10).astype(np.int64), pa.timestamp("ms", tz="UTC"))
    pq.write_table(pa.table({"src": src, "dst": dst, "Packets": packets, "ts": ts, "junk": i}), path,
                   row_group_size=300)
    return int((i % 4)[~v6].sum()), int((i % 4)[v6].sum())


def test_parquet_through_the_collector(tmp_path, monkeypatch):
    monkeypatch.setattr(tabular, "PARQUET_BATCH", 128)
    d = tmp_path / "flows"
    d.mkdir()
    good1, v6_1 = write_parquet(d / "part-0.parquet")
    good2, v6_2 = write_parquet(d / "part-1.parquet", 500)
    (d / "_SUCCESS").write_text("")
    src = open_(f"parquet:{d}")
    batches = drain(src)
    check_positions(batches)
    assert rows(batches)[0][0] == T0 + 10_000_000  # row 0 stands for 0 packets; row 1 is 10 ms later
    st = collect(tmp_path / "s", f"parquet:{d}", window_packets=500, window_seconds=2)
    assert st["packets"] == good1 + good2 and st["skipped"] == {"not_ipv4": v6_1 + v6_2}
    assert st["run"] == sources.open_source(f"parquet:{d}", node="n1", windowing=(500, 2)).run


# --------------------------------------------------------------------------- access logs

LOG = """\
203.0.113.7 - frank [01/Jan/2026:00:00:00 +0000] "GET /apache_pb.gif HTTP/1.0" 200 2326
203.0.113.7 - - [01/Jan/2026:01:00:01 +0100] "GET / HTTP/1.1" 200 12 "-" "curl/8.0"

2001:db8::1 - - [01/Jan/2026:00:00:02 +0000] "GET / HTTP/1.1" 200 12 "-" "curl/8.0"
this line is not a log line
198.51.100.2 - - [31/Dec/2025:19:00:03 -0500] "POST /login HTTP/2.0" 302 0 "https://x/[a]" "Mozilla/5.0"
crawler.example.org - - [01/Jan/2026:00:00:04 +0000] "GET /robots.txt HTTP/1.1" 404 0
198.51.100.2 - - [01/Foo/2026:00:00:05 +0000] "GET / HTTP/1.1" 200 1
"""


def test_access_log_requests_are_client_to_server_packets(tmp_path):
    p = tmp_path / "access.log"
    p.write_text(LOG)
    src = open_(f"access-log:{p}?server=192.0.2.80")
    batches = drain(src)
    recs = rows(batches)
    server = str_to_ip("192.0.2.80")
    assert len(recs) == 7  # the blank line is not a record
    assert [r[3] for r in recs] == [COUNTED, COUNTED, NOT_IPV4, MALFORMED_RECORD, COUNTED, NOT_IPV4,
                                    MALFORMED_RECORD]
    assert [r[0] for r in recs if r[3] == COUNTED] == [T0, T0 + NS, T0 + 3 * NS]
    assert {r[2] for r in recs} == {server}
    assert open_(f"access-log:{p}?server=192.0.2.81").run != src.run  # the server is part of the content
    gz = tmp_path / "access.log.1.gz"
    gz.write_bytes(gzip.compress(LOG.encode()))
    st = collect(tmp_path / "s", f"access-log:{tmp_path}/access.log*?server=192.0.2.80", window_seconds=2)
    assert st["packets"] == 6 and st["skipped"] == {"malformed_record": 4, "not_ipv4": 4}
    assert pair_count(tmp_path / "s", "203.0.113.7", "192.0.2.80") == 4
