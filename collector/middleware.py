"""WSGI and ASGI middleware: record every request as one client -> server event.

    from netsense.collector.sensor import Sensor
    from netsense.collector.middleware import NetsenseWSGIMiddleware, NetsenseASGIMiddleware

    sensor = Sensor("/mnt/netsense", "web1").start()
    app = NetsenseWSGIMiddleware(app, sensor)                 # Flask, Django, any WSGI app
    app = NetsenseASGIMiddleware(app, sensor)                 # Starlette, FastAPI, any ASGI app

The server side of the event is ``server_address`` when given (set it when the
server listens on 0.0.0.0 behind a name, or to the address clients see),
otherwise what the server reports for the connection: WSGI ``SERVER_ADDR``
(mod_wsgi, uWSGI, ...), then ``SERVER_NAME``; ASGI ``scope["server"][0]``.  The
client is WSGI ``REMOTE_ADDR`` / ASGI ``scope["client"][0]``; IPv6 clients are
counted as skipped (``not_ipv4``).

Servers that give only a host name (the standard library's ``wsgiref`` sends
``SERVER_NAME=localhost`` and no ``SERVER_ADDR``): the
name is resolved to the server's own IPv4 address once per name and cached.
Loopback names (``localhost``, ``*.localhost``, ``localhost.localdomain``) are
127.0.0.1 without any look-up; any other name goes through the system resolver
(``getaddrinfo(name, None, AF_INET)``: /etc/hosts, then whatever nsswitch says),
at most ``MAX_SERVER_NAMES`` distinct names per middleware, so a server that
copies a client's Host header into ``SERVER_NAME`` cannot make it look up
names without bound.  The first address wins and is logged once (INFO).  A name
that does not resolve, and a request without any server address, is logged
once (WARNING) and its requests are counted as skipped with reason
``server_unresolved`` (not ``not_ipv4``: they are IPv4 requests whose server
address is unknown); pass ``server_address=`` to fix it.

Sensing never breaks the application: ``Sensor.record`` does not raise, and
should anything else fail here, the error is logged once and counted in
``errors``, and the request goes on untouched.  Behind a reverse proxy the
client is the proxy; use the proxy's own middleware (e.g. werkzeug's
``ProxyFix``, uvicorn's ``--proxy-headers``) before this one if the real client
should be recorded.
"""
from __future__ import annotations

import logging
import socket
import threading

from .records import REASONS, SERVER_UNRESOLVED
from .sensor import parse_address

log = logging.getLogger("netsense.middleware")

UNRESOLVED = REASONS[SERVER_UNRESOLVED]
MAX_SERVER_NAMES = 16   # distinct host names one middleware resolves; more are counted unresolved
LOOPBACK = "127.0.0.1"


def _is_loopback_name(name: str) -> bool:
    return name in ("localhost", "localhost.localdomain") or name.endswith(".localhost")


def resolve_server_name(name: str) -> str | None:
    """The IPv4 address (dotted quad) of this server's own host name, or None.

    Loopback names are 127.0.0.1 without a look-up; others go through the system resolver
    (``getaddrinfo``, IPv4 only), first address.  Never raises."""
    key = name.strip().rstrip(".").lower()
    if not key:
        return None
    if _is_loopback_name(key):
        return LOOPBACK
    try:
        infos = socket.getaddrinfo(key, None, socket.AF_INET)
    except (OSError, UnicodeError, ValueError):
        return None
    for family, _type, _proto, _canon, sockaddr in infos:
        if family == socket.AF_INET and parse_address(sockaddr[0]) is not None:
            return sockaddr[0]
    return None


def _configured(server_address):
    if server_address is None:
        return None
    if parse_address(server_address) is None:
        raise ValueError(f"server_address {server_address!r} is not an IPv4 address")
    return server_address


class _Base:
    def __init__(self, app, sensor, server_address=None):
        self.app = app
        self.sensor = sensor
        self.server_address = _configured(server_address)
        self.errors = 0

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        if self.errors == 1:
            log.error("netsense: sensing a request failed (%r); requests are served as usual, "
                      "further failures are only counted in .errors", exc)


class NetsenseWSGIMiddleware(_Base):
    """WSGI: record ``REMOTE_ADDR -> server`` for each request, then call the app unchanged."""

    def __init__(self, app, sensor, server_address=None):
        super().__init__(app, sensor, server_address)
        self._servers: dict = {}             # SERVER_ADDR/SERVER_NAME -> what to record, None: unresolved
        self._names = 0                      # host names looked up so far
        self._names_lock = threading.Lock()  # one look-up per name, even with many request threads

    def _server(self, value):
        """What to record as the server for ``SERVER_ADDR or SERVER_NAME``: an address literal as it
        is (IPv6 ones then count as not_ipv4), a host name as its IPv4 address; None: unknown."""
        try:
            return self._servers[value]
        except (KeyError, TypeError):
            pass
        with self._names_lock:
            if value in self._servers:
                return self._servers[value]
            if len(self._servers) >= 4 * MAX_SERVER_NAMES:
                self._servers = {k: v for k, v in self._servers.items() if not (type(k) is str and v == k)}  # keep names
            if isinstance(value, str) and value and (":" in value or parse_address(value) is not None):
                self._servers[value] = value  # an address literal
                return value
            if not isinstance(value, str) or not value:
                self._servers[None] = None
                log.warning("netsense: the WSGI server gives neither SERVER_ADDR nor SERVER_NAME; its requests are "
                            "counted as skipped (%s): pass server_address= to NetsenseWSGIMiddleware", UNRESOLVED)
                return None
            if self._names >= MAX_SERVER_NAMES:
                if self._names == MAX_SERVER_NAMES:
                    self._names += 1
                    log.warning("netsense: the WSGI server reported more than %d different SERVER_NAMEs (%r now); "
                                "requests naming new ones are counted as skipped (%s): pass server_address= to "
                                "NetsenseWSGIMiddleware", MAX_SERVER_NAMES, value, UNRESOLVED)
                return None
            self._names += 1
            ip = resolve_server_name(value)
            self._servers[value] = ip
        if ip is None:
            log.warning("netsense: the WSGI server names itself %r (SERVER_NAME, no SERVER_ADDR), which does not "
                        "resolve to an IPv4 address; its requests are counted as skipped (%s): pass "
                        "server_address= to NetsenseWSGIMiddleware", value, UNRESOLVED)
        else:
            log.info("netsense: the WSGI server names itself %r (SERVER_NAME, no SERVER_ADDR); recording its "
                     "requests to %s (pass server_address= to choose another address)", value, ip)
        return ip

    def _sense(self, environ) -> None:
        src = environ.get("REMOTE_ADDR")
        dst = self.server_address
        if dst is None:
            dst = self._server(environ.get("SERVER_ADDR") or environ.get("SERVER_NAME"))
            if dst is None and parse_address(src) is not None:
                self.sensor.skip(UNRESOLVED)  # an IPv4 client, the server's address unknown
                return
        self.sensor.record(src, dst)  # an IPv6 (or no) client counts as not_ipv4, as ever

    def __call__(self, environ, start_response):
        try:
            self._sense(environ)
        except Exception as e:
            self._failed(e)
        return self.app(environ, start_response)


class NetsenseASGIMiddleware(_Base):
    """ASGI 3: record ``client -> server`` for each http and websocket connection; other scope
    types (lifespan) pass through untouched."""

    async def __call__(self, scope, receive, send):
        try:
            if scope.get("type") in ("http", "websocket"):
                client = scope.get("client")
                dst = self.server_address
                if dst is None:
                    server = scope.get("server")
                    dst = server[0] if server else None
                self.sensor.record(client[0] if client else None, dst)
        except Exception as e:
            self._failed(e)
        await self.app(scope, receive, send)
