"""WSGI and ASGI middleware: record every request as one client -> server event.

    from netsense.collector.sensor import Sensor
    from netsense.collector.middleware import NetsenseWSGIMiddleware, NetsenseASGIMiddleware

    sensor = Sensor("/mnt/netsense", "web1").start()
    app = NetsenseWSGIMiddleware(app, sensor)                 # Flask, Django, any WSGI app
    app = NetsenseASGIMiddleware(app, sensor)                 # Starlette, FastAPI, any ASGI app

The server side of the event is ``server_address`` when given (set it when the
server listens on 0.0.0.0 behind a name, or to the address clients see),
otherwise what the server reports for the connection: WSGI ``SERVER_ADDR``
(mod_wsgi, uWSGI, ...), then ``SERVER_NAME`` when it is an IPv4 literal (never
resolved through DNS: a host name is counted as skipped, ``not_ipv4``); ASGI
``scope["server"][0]``.  The client is WSGI ``REMOTE_ADDR`` / ASGI
``scope["client"][0]``; IPv6 clients are counted as skipped (``not_ipv4``).

Sensing never breaks the application: ``Sensor.record`` does not raise, and
should anything else fail here, the error is logged once and counted in
``errors``, and the request goes on untouched.  Behind a reverse proxy the
client is the proxy; use the proxy's own middleware (e.g. werkzeug's
``ProxyFix``, uvicorn's ``--proxy-headers``) before this one if the real client
should be recorded.
"""
from __future__ import annotations

import logging

from .sensor import parse_address

log = logging.getLogger("netsense.middleware")


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

    def __call__(self, environ, start_response):
        try:
            dst = self.server_address
            if dst is None:
                dst = environ.get("SERVER_ADDR") or environ.get("SERVER_NAME")
            self.sensor.record(environ.get("REMOTE_ADDR"), dst)
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
