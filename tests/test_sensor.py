"""collector/sensor.py and collector/middleware.py: in-process sensing of a web service.

Every test reads the landed window files back through the aggregator's own
checks (``winfile.read`` + ``check_window``) and compares the summed matrix with
exactly the events recorded.  Synchronization is by polling with deadlines.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import socket
import socketserver
import subprocess
import sys
import threading
import urllib.request
import warnings
from collections import Counter
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import numpy as np
import pytest

from netsense.collector import middleware as middleware_mod
from netsense.collector import sensor as sensor_mod
from netsense import winfile
from netsense.errors import ConfigError
from netsense.layout import WindowName
from netsense.collector.middleware import NetsenseASGIMiddleware, NetsenseWSGIMiddleware
from netsense.addresses import str_to_ip
from netsense.collector.run import Collector
from netsense.collector.sensor import Sensor, parse_address
from conftest import ROOT, read_json, run_cli, wait_for

NODE = "web1"


def ip(s: str) -> int:
    return str_to_ip(s)


def landed(shared: Path, node: str = NODE) -> list[tuple[WindowName, dict, Counter]]:
    """Every landed window of ``node``, validated like the aggregator does, in (run, seq) order."""
    out = []
    for p in sorted((shared / "nodes" / node).glob("*.nsw")):
        name = WindowName.parse(p.name)
        assert name is not None, p.name
        parsed = winfile.read(p)
        a = winfile.check_window(parsed, name)
        rows, cols, vals = a.to_coo()
        out.append((name, parsed.header, Counter({(int(r), int(c)): int(v) for r, c, v in zip(rows, cols, vals)})))
    out.sort(key=lambda t: (t[0].run, t[0].seq))
    return out


def summed(windows) -> Counter:
    total = Counter()
    for _, _, m in windows:
        total.update(m)
    return total


def skipped(windows) -> Counter:
    total = Counter()
    for _, h, _ in windows:
        total.update(h["skipped"])
    return total


def check_accounting(windows):
    """Per window: records = packets + skipped, and the matrix holds exactly ``packets``."""
    for name, h, m in windows:
        assert h["records"] == h["packets"] + sum(h["skipped"].values()), name
        assert sum(m.values()) == h["packets"]
        assert h["source"] == f"sensor:{name.node}"


# -- addresses --------------------------------------------------------------------


@pytest.mark.parametrize("value,expected", [
    ("10.0.0.1", 0x0A000001),
    ("255.255.255.255", 0xFFFFFFFF),
    ("0.0.0.0", 0),
    (0x0A000001, 0x0A000001),
    (np.uint32(7), 7),
    (ipaddress.IPv4Address("1.2.3.4"), 0x01020304),
    ("::ffff:10.0.0.9", 0x0A000009),           # IPv4-mapped: dual-stack listeners report these
    (b"192.168.0.1", 0xC0A80001),
    ("::1", None),
    ("2001:db8::1", None),
    ("fe80::1%eth0", None),
    ("example.com", None),
    ("10.0.0", None),
    ("10.0.0.256", None),
    ("010.0.0.1", None),                        # ambiguous (octal?) forms are refused
    (" 10.0.0.1", None),
    ("", None),
    (None, None),
    (-1, None),
    (1 << 32, None),
    (True, None),
    (1.5, None),
    ([1, 2], None),
    (b"\xff\xfe", None),
])
def test_parse_address(value, expected):
    assert parse_address(value) == expected


def test_invalid_configuration_raises_at_construction(shared):
    with pytest.raises(ConfigError):
        Sensor(shared, "Bad_Node")
    with pytest.raises(ValueError):
        Sensor(shared, NODE, window_seconds=0)


# -- the sensor ----------------------------------------------------------------------


def test_concurrent_records_land_exactly_what_was_recorded(shared):
    """8 threads record str and int addresses, good and bad, while the drain runs every 10 ms;
    the windows (several, because of window_packets) sum to exactly the recorded events."""
    threads, per_thread = 8, 6000
    expected = Counter()
    bad = 0
    plans = []
    for t in range(threads):
        plan = []
        for i in range(per_thread):
            k = (t * 7919 + i * 104729) % 997
            src = f"10.{t}.{k % 7}.{k % 251}"
            dst = "192.168.1.1" if i % 3 else 0xC0A80102
            if i % 50 == 0:
                plan.append(("2001:db8::1" if i % 100 else "garbage", dst))
                bad += 1
                continue
            if i % 5 == 0:
                src = ip(src)  # ints and strs mixed
            plan.append((src, dst))
            expected[(src if isinstance(src, int) else ip(src), dst if isinstance(dst, int) else ip(dst))] += 1
        plans.append(plan)

    s = Sensor(shared, NODE, window_packets=5000, window_seconds=3600, drain_interval=0.01,
               status_interval=0.2).start()
    barrier = threading.Barrier(threads)

    def work(plan):
        barrier.wait()
        rec = s.record
        for a, b in plan:
            rec(a, b)

    workers = [threading.Thread(target=work, args=(p,)) for p in plans]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    s.close()

    windows = landed(shared)
    assert summed(windows) == expected
    assert skipped(windows) == Counter({"not_ipv4": bad})
    assert sum(h["records"] for _, h, _ in windows) == threads * per_thread
    check_accounting(windows)
    assert all(h["packets"] <= 5000 for _, h, _ in windows)
    assert len({n.run for n, _, _ in windows}) == 1
    assert [n.seq for n, _, _ in windows] == list(range(len(windows)))
    assert len(windows) >= sum(expected.values()) // 5000
    st = read_json(shared / "status" / f"{NODE}.json")
    assert st["state"] == "stopped" and st["live"] is True and st["source"] == f"sensor:{NODE}"
    assert st["packets"] == sum(expected.values()) and st["skipped"] == {"not_ipv4": bad}
    assert st["run"] == s.run == windows[0][0].run
    stats = s.stats()
    assert stats["drained"] == threads * per_thread and stats["not_ipv4"] == bad and stats["dropped"] == 0
    assert stats["state"] == "stopped" and stats["failures"] == 0


def test_record_many_vectorized_and_generic(shared):
    src = np.array([ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.1"), -5, 1 << 33, 0xFFFFFFFF], np.int64)
    dst = np.array([ip("10.0.0.9")] * 6, np.int64)
    with Sensor(shared, NODE, window_seconds=3600) as s:
        s.record_many(src, dst)
        s.record_many(src[:3].astype(np.uint32), dst[:3].astype(np.uint32))
        s.record_many(["10.0.0.3", "::1", "10.0.0.3"], ["10.0.0.9", "10.0.0.9", None])
        s.record_many((a for a in ["10.0.0.4"]), iter([ip("10.0.0.9")]))  # iterables too
        with pytest.raises(ValueError):
            s.record_many([1, 2], [3])
    windows = landed(shared)
    d = ip("10.0.0.9")
    assert summed(windows) == Counter({(ip("10.0.0.1"), d): 4, (ip("10.0.0.2"), d): 2, (ip("10.0.0.3"), d): 1,
                                       (ip("10.0.0.4"), d): 1})
    # -5 and 2^33 are not addresses; 255.255.255.255 is the limited broadcast, skipped as for captures
    assert skipped(windows) == Counter({"not_ipv4": 4, "broadcast": 1})
    check_accounting(windows)


class EvilHash:
    def __hash__(self):
        raise ValueError("no hash for you")


def test_bad_inputs_never_raise(shared):
    with Sensor(shared, NODE, window_seconds=3600) as s:
        for junk in (None, [1], {"a": 1}, object(), 1.5, "", "::", b"\xff", -1, 1 << 40, "1.2.3.4.5", EvilHash()):
            s.record(junk, "10.0.0.1")
            s.record("10.0.0.1", junk)
        s.record("10.0.0.1", "10.0.0.2")
    windows = landed(shared)
    assert summed(windows) == Counter({(ip("10.0.0.1"), ip("10.0.0.2")): 1})
    assert skipped(windows) == Counter({"not_ipv4": 24})


def test_windows_close_on_the_wall_clock(shared):
    """With 1-second windows, a window lands while the sensor is still open and idle slots get
    empty windows, so a quiet service differs from a dead one."""
    s = Sensor(shared, NODE, window_seconds=1, status_interval=0.2).start()
    try:
        # one array append, so a single drain takes all ten (no slot boundary can split them)
        s.record_many(np.full(10, ip("10.0.0.1"), np.uint32), np.full(10, ip("10.0.0.2"), np.uint32))
        wait_for(lambda: len(landed(shared)) >= 3, timeout=30, what="three 1-second windows while open")
    finally:
        s.close()
    windows = landed(shared)
    assert summed(windows) == Counter({(ip("10.0.0.1"), ip("10.0.0.2")): 10})
    check_accounting(windows)
    starts = [n.start for n, _, _ in windows]
    assert all(n.end - n.start == 1 for n, _, _ in windows)
    assert starts == list(range(starts[0], starts[0] + len(starts)))  # consecutive slots, no gaps
    assert windows[0][1]["packets"] == 10  # recorded within one drain, before the first slot ended
    assert all(h["packets"] == 0 for _, h, _ in windows[1:])


def test_close_is_idempotent_and_later_records_are_ignored(shared):
    s = Sensor(shared, NODE, window_seconds=3600)
    s.close()          # never started: nothing lands, nothing raises
    s.record("10.0.0.1", "10.0.0.2")
    with pytest.raises(RuntimeError):
        s.start()
    assert not (shared / "nodes").exists()

    s = Sensor(shared, NODE, window_seconds=3600).start()
    assert s.start() is s
    s.record("10.0.0.1", "10.0.0.2")
    s.close()
    s.close()
    s.record("10.0.0.1", "10.0.0.2")
    s.record_many([1], [2])
    assert summed(landed(shared)) == Counter({(ip("10.0.0.1"), ip("10.0.0.2")): 1})


def test_collector_failure_is_retried_without_losing_queued_events(shared, caplog):
    """The shared path is a file at first: the collector fails, the sensor logs it, keeps the
    events and starts a new run once the directory is usable."""
    target = shared / "later"
    target.write_text("not a directory")
    caplog.set_level(logging.ERROR, logger="netsense.sensor")
    s = Sensor(target, NODE, window_seconds=3600).start()
    try:
        s.record("10.0.0.1", "10.0.0.2")
        wait_for(lambda: s.failures >= 1, timeout=30, what="a failed collector run")
        s.record("10.0.0.3", "10.0.0.2")
        target.unlink()
        target.mkdir()
        wait_for(lambda: s.stats()["state"] == "running" and s.stats()["runs"] >= 2, timeout=30,
                 what="a new collector run")
        s.record("10.0.0.4", "10.0.0.2")
    finally:
        s.close()
    windows = landed(target)
    d = ip("10.0.0.2")
    assert summed(windows) == Counter({(ip("10.0.0.1"), d): 1, (ip("10.0.0.3"), d): 1, (ip("10.0.0.4"), d): 1})
    assert any("collector run" in r.getMessage() and "failed" in r.getMessage() for r in caplog.records)


def test_a_stalled_collector_bounds_memory_and_counts_drops(shared, monkeypatch):
    """While landing hangs (a stuck NFS mount), the drain keeps at most ``max_buffered`` events
    and counts the rest as dropped; everything kept lands once landing resumes."""
    release = threading.Event()
    stalled = threading.Event()

    class StuckCollector(Collector):
        def land(self, w, *a, **kw):
            stalled.set()
            release.wait(60)
            return super().land(w, *a, **kw)

    monkeypatch.setattr(sensor_mod, "Collector", StuckCollector)
    s = Sensor(shared, NODE, window_packets=10, window_seconds=3600, drain_interval=0.01, max_buffered=100).start()
    try:
        s.record_many(np.arange(1, 11), np.full(10, 99))   # fills one window: land() hangs
        wait_for(stalled.is_set, timeout=30, what="landing to stall")
        for i in range(300):
            s.record(1000 + i, 99)
        wait_for(lambda: s.stats()["drained"] == 310, timeout=30, what="the drain to take every event")
        st = s.stats()
        assert st["dropped"] > 0 and st["queued"] <= 100
    finally:
        release.set()
        s.close()
    st = s.stats()
    windows = landed(shared)
    assert sum(h["packets"] for _, h, _ in windows) + st["dropped"] == 310
    check_accounting(windows)


def test_a_forgotten_close_still_lands_at_interpreter_exit(shared):
    code = ("import sys; from netsense.collector.sensor import Sensor\n"
            f"s = Sensor({str(shared)!r}, {NODE!r}, window_seconds=3600).start()\n"
            "s.record('10.0.0.1', '10.0.0.2'); s.record('10.0.0.3', '10.0.0.2')\n"
            "sys.exit(0)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    d = ip("10.0.0.2")
    assert summed(landed(shared)) == Counter({(ip("10.0.0.1"), d): 1, (ip("10.0.0.3"), d): 1})
    assert read_json(shared / "status" / f"{NODE}.json")["state"] == "stopped"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_sensor_started_before_fork_is_disabled_in_the_child(shared):
    with Sensor(shared, NODE, window_seconds=3600) as s:
        s.record("10.0.0.1", "10.0.0.2")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() with threads running
            pid = os.fork()
        if pid == 0:  # child: recording is a no-op, closing does nothing and does not hang
            try:
                s.record("10.0.0.9", "10.0.0.9")
                ok = len(s._buf) == 0 or s._buf[-1] != (ip("10.0.0.9") << 32 | ip("10.0.0.9"))
                s.close(timeout=5)
                os._exit(0 if ok else 1)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        s.record("10.0.0.3", "10.0.0.2")
    d = ip("10.0.0.2")
    assert summed(landed(shared)) == Counter({(ip("10.0.0.1"), d): 1, (ip("10.0.0.3"), d): 1})


# -- WSGI -------------------------------------------------------------------------------


def hello_wsgi(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello " + environ["PATH_INFO"].encode()]


def call_wsgi(app, **environ):
    status = []
    body = b"".join(app({"PATH_INFO": "/x", **environ}, lambda s, h, exc_info=None: status.append(s)))
    return status[0], body


def test_wsgi_middleware_direct_calls(shared, monkeypatch, caplog):
    looked_up = []

    def fake_getaddrinfo(host, port, family=0, *args, **kw):  # no DNS from the tests: web.example fails
        looked_up.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(middleware_mod.socket, "getaddrinfo", fake_getaddrinfo)
    caplog.set_level(logging.INFO, logger="netsense.middleware")
    with Sensor(shared, NODE, window_seconds=3600) as s:
        app = NetsenseWSGIMiddleware(hello_wsgi, s)
        assert call_wsgi(app, REMOTE_ADDR="10.1.1.1", SERVER_ADDR="10.2.2.2", SERVER_NAME="web.example") == \
            ("200 OK", b"hello /x")
        call_wsgi(app, REMOTE_ADDR="10.1.1.1", SERVER_NAME="10.3.3.3")        # IPv4-literal SERVER_NAME
        for _ in range(2):  # a host name that does not resolve: server_unresolved, looked up and warned once
            assert call_wsgi(app, REMOTE_ADDR="10.1.1.1", SERVER_NAME="web.example") == ("200 OK", b"hello /x")
        call_wsgi(app, REMOTE_ADDR="10.1.1.5", SERVER_NAME="LocalHost.")      # loopback name: no look-up
        call_wsgi(app, REMOTE_ADDR="2001:db8::7", SERVER_NAME="web.example")  # IPv6 client: not_ipv4 still
        call_wsgi(app, REMOTE_ADDR="2001:db8::7", SERVER_ADDR="10.2.2.2")     # IPv6 client
        call_wsgi(app, SERVER_ADDR="10.2.2.2")                                # no REMOTE_ADDR at all
        fixed = NetsenseWSGIMiddleware(hello_wsgi, s, server_address="10.9.9.9")
        assert call_wsgi(fixed, REMOTE_ADDR="10.1.1.2", SERVER_ADDR="10.2.2.2") == ("200 OK", b"hello /x")
        with pytest.raises(ValueError):
            NetsenseWSGIMiddleware(hello_wsgi, s, server_address="web.example")
    windows = landed(shared)
    assert summed(windows) == Counter({(ip("10.1.1.1"), ip("10.2.2.2")): 1, (ip("10.1.1.1"), ip("10.3.3.3")): 1,
                                       (ip("10.1.1.5"), ip("127.0.0.1")): 1, (ip("10.1.1.2"), ip("10.9.9.9")): 1})
    assert skipped(windows) == Counter({"not_ipv4": 3, "server_unresolved": 2})
    check_accounting(windows)
    assert s.stats()["skipped"] == {"server_unresolved": 2}
    assert looked_up == ["web.example"]
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "web.example" in r.getMessage()]
    assert len(warned) == 1 and "server_unresolved" in warned[0].getMessage()


class BrokenSensor:
    def record(self, src, dst):
        raise RuntimeError("sensor exploded")


def test_middleware_never_breaks_the_app(caplog):
    caplog.set_level(logging.ERROR, logger="netsense.middleware")
    wsgi = NetsenseWSGIMiddleware(hello_wsgi, BrokenSensor())
    for _ in range(3):
        assert call_wsgi(wsgi, REMOTE_ADDR="10.1.1.1") == ("200 OK", b"hello /x")
    assert wsgi.errors == 3
    asgi = NetsenseASGIMiddleware(hello_asgi, BrokenSensor())
    for _ in range(3):
        assert asyncio.run(call_asgi(asgi, {"type": "http", "client": ("10.1.1.1", 5), "server": ("10.2.2.2", 80)}))
    assert asgi.errors == 3
    logged = [r for r in caplog.records if r.name == "netsense.middleware"]
    assert len(logged) == 2  # once per middleware, then only counted


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()


def test_wsgi_middleware_under_a_real_wsgiref_server(shared):
    """A threaded wsgiref server on 127.0.0.1, hit by 4 client threads with urllib."""
    n_threads, per_thread = 4, 25
    with Sensor(shared, NODE, window_seconds=3600) as s:
        app = NetsenseWSGIMiddleware(hello_wsgi, s, server_address="127.0.0.1")
        httpd = make_server("127.0.0.1", 0, app, server_class=ThreadingWSGIServer, handler_class=QuietHandler)
        server = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        server.start()
        try:
            url = f"http://127.0.0.1:{httpd.server_port}/ping"
            bodies = []

            def client():
                for _ in range(per_thread):
                    bodies.append(fetch(url))

            clients = [threading.Thread(target=client) for _ in range(n_threads)]
            for c in clients:
                c.start()
            for c in clients:
                c.join()
        finally:
            httpd.shutdown()
            httpd.server_close()
            server.join(30)
    assert bodies == [b"hello /ping"] * (n_threads * per_thread)
    lo = ip("127.0.0.1")
    windows = landed(shared)
    assert summed(windows) == Counter({(lo, lo): n_threads * per_thread})
    check_accounting(windows)


def test_wsgi_middleware_under_the_standard_library_server_counts_every_request(shared):
    """wsgiref's own server, as-is: it sends SERVER_NAME=localhost and no SERVER_ADDR.  No
    server_address is given; the middleware resolves the name once (loopback: 127.0.0.1) and
    every request counts, end to end through ``aggregator run --once`` (before, every one was
    skipped as not_ipv4 and the report counted nothing)."""
    n = 30
    environs = []

    def app(environ, start_response):
        environs.append({k: environ.get(k) for k in ("SERVER_NAME", "SERVER_ADDR")})
        return hello_wsgi(environ, start_response)

    with Sensor(shared, NODE, window_seconds=3600) as s:
        httpd = make_server("127.0.0.1", 0, NetsenseWSGIMiddleware(app, s), handler_class=QuietHandler)
        server = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        server.start()
        try:
            bodies = [fetch(f"http://127.0.0.1:{httpd.server_port}/w{i}") for i in range(n)]
        finally:
            httpd.shutdown()
            httpd.server_close()
            server.join(30)
    assert bodies == [f"hello /w{i}".encode() for i in range(n)]
    assert all(e["SERVER_ADDR"] is None and parse_address(e["SERVER_NAME"]) is None for e in environs), environs
    r = run_cli("aggregator", "run", "--shared", str(shared), "--once", "--period-seconds", "3600")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not list(shared.glob("quarantine/*/*")), r.stderr
    doc = read_json(shared / "reports" / "cumulative.json")
    assert doc["analytics"]["valid_packets"] == n
    assert doc["top"]["links"] == [{"src": "127.0.0.1", "dst": "127.0.0.1", "packets": n}]
    windows = landed(shared)
    assert skipped(windows) == Counter()
    check_accounting(windows)


# -- ASGI -------------------------------------------------------------------------------


async def hello_asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello " + scope["path"].encode()})


async def call_asgi(app, scope: dict, incoming=None) -> list[dict]:
    incoming = list(incoming or [{"type": "http.request", "body": b"", "more_body": False}])
    sent = []

    async def receive():
        return incoming.pop(0)

    async def send(msg):
        sent.append(msg)

    await app({"path": "/x", **scope}, receive, send)
    return sent


def test_asgi_middleware_direct_calls(shared):
    with Sensor(shared, NODE, window_seconds=3600) as s:
        app = NetsenseASGIMiddleware(hello_asgi, s)
        sent = asyncio.run(call_asgi(app, {"type": "http", "client": ("10.1.1.1", 50000), "server": ("10.2.2.2", 80)}))
        assert sent[0]["status"] == 200 and sent[1]["body"] == b"hello /x"
        sent = asyncio.run(call_asgi(app, {"type": "websocket", "client": ("10.1.1.3", 1), "server": ("10.2.2.2", 80)},
                                     [{"type": "websocket.connect"}]))
        assert [m["type"] for m in sent] == ["websocket.accept", "websocket.close"]
        sent = asyncio.run(call_asgi(app, {"type": "lifespan"},
                                     [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]))
        assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
        asyncio.run(call_asgi(app, {"type": "http", "client": None, "server": ("10.2.2.2", 80)}))  # unix socket peer
        asyncio.run(call_asgi(app, {"type": "http", "client": ("::1", 5), "server": ("::1", 80)}))
        asyncio.run(call_asgi(app, {"type": "http", "client": ("10.1.1.1", 5), "server": ("/run/app.sock", None)}))
        asyncio.run(call_asgi(app, {"type": "http", "client": ("::ffff:10.1.1.4", 5), "server": ("10.2.2.2", 80)}))
        fixed = NetsenseASGIMiddleware(hello_asgi, s, server_address="10.9.9.9")
        asyncio.run(call_asgi(fixed, {"type": "http", "client": ("10.1.1.2", 5), "server": ("10.2.2.2", 80)}))
        asyncio.run(call_asgi(fixed, {"type": "http", "client": ("10.1.1.2", 5)}))  # no server in scope
    windows = landed(shared)
    srv = ip("10.2.2.2")
    assert summed(windows) == Counter({(ip("10.1.1.1"), srv): 1, (ip("10.1.1.3"), srv): 1, (ip("10.1.1.4"), srv): 1,
                                       (ip("10.1.1.2"), ip("10.9.9.9")): 2})
    assert skipped(windows) == Counter({"not_ipv4": 3})  # lifespan is not a request: not recorded at all


def test_asgi_middleware_under_a_real_uvicorn_server(shared):
    uvicorn = pytest.importorskip("uvicorn")
    n = 40
    with Sensor(shared, NODE, window_seconds=3600) as s:
        config = uvicorn.Config(NetsenseASGIMiddleware(hello_asgi, s), host="127.0.0.1", port=0,
                                log_level="warning", lifespan="on", access_log=False)
        server = uvicorn.Server(config)
        t = threading.Thread(target=server.run, daemon=True)
        t.start()
        try:
            wait_for(lambda: server.started or not t.is_alive(), timeout=30, what="uvicorn to start")
            assert server.started
            port = server.servers[0].sockets[0].getsockname()[1]
            bodies = [fetch(f"http://127.0.0.1:{port}/u{i}") for i in range(n)]
        finally:
            server.should_exit = True
            t.join(30)
    assert bodies == [f"hello /u{i}".encode() for i in range(n)]
    lo = ip("127.0.0.1")
    windows = landed(shared)
    assert summed(windows) == Counter({(lo, lo): n})
    check_accounting(windows)


def test_bench_script_record_part_runs(tmp_path):
    """scripts/bench_sensor.py stays runnable (a tiny record() run; the server part needs uvicorn)."""
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_sensor.py"), "--only", "record",
                        "--events", "20000", "--repeats", "1", "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(out.read_text())
    assert [x["threads"] for x in doc["record"]] == [1, 4]
    assert all(x["events"] == 20000 and x["ns_per_event"] > 0 for x in doc["record"])
