"""Source specs (``kind:argument``) -> an open traffic source yielding ``Records``.

A source also says who it is: ``run`` is a 12-hex fingerprint that makes
window identities deterministic for replayable inputs (same capture, same
windowing -> same identities, so a restarted collector cannot double-count)
and unique for live ones.
"""
from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from .errors import ConfigError, SourceError
from .records import Records

KINDS = ("pcap", "synthetic")
SPEC_HELP = (
    "pcap:PATH (classic pcap or pcapng file; .gz/.zst compressed too), "
    "synthetic:seed=N,packets=N,rate=PPS,hosts=N,alpha=A,realtime=0|1 (seeded heavy-tailed traffic)"
)


@dataclass
class Source:
    """An opened source: ``batches(stop)`` yields Records; ``live`` means wall-clock windows."""

    spec: str
    run: str
    live: bool
    batches: Callable[[Callable[[], bool]], Iterator[Records]]


def _fingerprint(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


def _file_identity(path: Path) -> tuple:
    """Content-based identity of a capture: size plus a hash of its head and tail.

    Content, not path or mtime, so the same capture copied elsewhere keeps its
    window identities.
    """
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        if st.st_size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read(1 << 20))
    return (st.st_size, h.hexdigest())


def open_source(spec: str, *, node: str, windowing: tuple) -> Source:
    """Parse ``spec`` and open it; raises ConfigError/SourceError with a clear message."""
    kind, sep, arg = spec.partition(":")
    if not sep or kind not in KINDS:
        raise ConfigError(f"unknown source {spec!r}; expected one of: {SPEC_HELP}")
    if kind == "synthetic":
        from .synthetic import SyntheticSpec, generate

        s = SyntheticSpec.parse(arg)
        run = secrets.token_hex(6) if s.realtime else _fingerprint(node, "synthetic", s, windowing)
        return Source(spec, run, s.realtime, lambda stop: generate(s, stop))
    path = Path(arg)
    if not path.is_file():
        raise SourceError(f"pcap: {path} is not a readable file")
    try:
        ident = _file_identity(path)
    except OSError as e:
        raise SourceError(f"pcap: cannot read {path}: {e.strerror}") from None
    run = _fingerprint(node, "pcap", ident, windowing)

    def batches(stop):
        from .pcap import CaptureError, open_capture, read_capture

        try:
            with open_capture(path) as f:
                for rec in read_capture(f):
                    yield rec
                    if stop():
                        return
        except CaptureError as e:
            raise SourceError(f"pcap: {path}: {e}") from None
        except OSError as e:
            raise SourceError(f"pcap: {path}: {e.strerror or e}") from None

    return Source(spec, run, False, batches)
