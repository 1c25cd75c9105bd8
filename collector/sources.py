"""Source specs (``kind:argument[?key=val,...]``) -> an open traffic source yielding ``Records``.

A source also says who it is: ``run`` is a 12-hex fingerprint that makes
window identities deterministic for replayable inputs (same files, same
options, same windowing -> same identities, so a restarted collector cannot
double-count) and random for live ones.

Every source keeps ``Records.position`` equal to the number of records it has
yielded so far, across all its files: a restarted replayable run resumes by
skipping that many records.

Kinds and where they live:

* ``pcap:`` files, directories and globs are replayed here with
  ``collector.pcap``; ``pcap:-`` (stdin) and FIFOs are live and live in
  ``collector.stream``, ``?follow=1`` in ``collector.follow``, and ``iface:``
  (AF_PACKET capture) in ``collector.iface``.
* ``csv:`` and ``parquet:`` are in ``collector.tabular``, ``access-log:`` in
  ``collector.accesslog``, ``synthetic:`` in ``collector.synthetic``.
"""
from __future__ import annotations

import glob
import dataclasses
import hashlib
import logging
import os
import re
import secrets
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

from netsense.addresses import str_to_ip
from netsense.cli_support import parse_number
from netsense.errors import ConfigError, SourceError

from .capture_files import CAPTURE_MAGICS, natural_key
from .records import Records

log = logging.getLogger("netsense.collector.sources")

KINDS = ("pcap", "iface", "csv", "parquet", "access-log", "synthetic")
SPEC_HELP = (
    "pcap:PATH (classic pcap or pcapng, .gz/.zst too; PATH is a file, a directory or a quoted glob: "
    "files in name order), "
    "pcap:DIR?follow=1[,settle=S] (keep reading a directory, or glob, of rotating captures as files "
    "appear; live; settle: seconds a compressed file must keep its size, 0..3600, default 5), "
    "pcap:- (a capture on stdin, e.g. tcpdump -U -w -; a FIFO works too; live), "
    "iface:NAME (capture from a Linux interface, or 'any'; needs root or CAP_NET_RAW; live), "
    "csv:PATH[?sep=tab] and parquet:PATH (columns src,dst[,packets][,ts]; without ts all rows get the "
    "file's mtime), "
    "access-log:PATH?server=IP (Apache/nginx common or combined log: one request = one packet, "
    "client -> IP), "
    "synthetic:seed=N,packets=N,rate=PPS,hosts=N,alpha=A,realtime=0|1,pace=PPS,start=T,batch=N (seeded "
    "heavy-tailed traffic; seed 0..2^64-1, packets 0..2^53 with 0 endless, rate 0.001..1e9, hosts 1..2^24, "
    "alpha 1<x<=100, pace 0..1e9 with 0 unthrottled, start 0..9e9 epoch seconds, batch 1..2^24)"
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


def _live_run() -> str:
    return secrets.token_hex(6)


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


# --------------------------------------------------------------------------- spec syntax

# Options follow the *last* "?" when what follows it looks like key=value[,key=value]; anything
# else is part of the path, so globs such as eth0-??.pcap keep working.
_OPTIONS = re.compile(r"[A-Za-z_]+=[^,]*(?:,[A-Za-z_]+=[^,]*)*")


def split_options(arg: str) -> tuple[str, dict]:
    """``PATH?k=v,k2=v2`` -> (PATH, {k: v, k2: v2}); no options -> (arg, {})."""
    head, sep, tail = arg.rpartition("?")
    if not sep or not _OPTIONS.fullmatch(tail):
        return arg, {}
    opts = {}
    for part in tail.split(","):
        k, _, v = part.partition("=")
        opts[k.lower()] = v.strip()
    return head, opts


def check_options(spec: str, opts: dict, known: tuple) -> None:
    unknown = sorted(set(opts) - set(known))
    if unknown:
        expected = ", ".join(known) if known else "none"
        raise ConfigError(f"source {spec!r}: unknown option {unknown[0]!r} (options: {expected})")


def bool_option(spec: str, opts: dict, key: str, default: bool = False) -> bool:
    v = opts.get(key)
    if v is None:
        return default
    if v.lower() in ("1", "true", "yes", "on"):
        return True
    if v.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"source {spec!r}: {key} must be 0 or 1, got {v!r}")


def float_option(spec: str, opts: dict, key: str, default: float, minimum: float, maximum: float) -> float:
    """A numeric option in [minimum, maximum]: NaN, infinities and values outside are ``ConfigError``."""
    v = opts.get(key)
    if v is None:
        return default
    try:
        return parse_number(v, minimum, maximum)
    except ValueError as e:
        raise ConfigError(f"source {spec!r}: {key}: {e}") from None


def _listable(name: str) -> bool:
    """Directory members considered: no hidden files, temp files or _SUCCESS/_metadata markers."""
    return not name.startswith((".", "_"))


def expand_paths(spec: str, kind: str, arg: str) -> tuple[list[Path], bool]:
    """A file, a directory (its files, in name order) or a glob (matches, in name order).

    Returns (files, single) where ``single`` says ``arg`` named one file.
    """
    if not arg:
        raise ConfigError(f"source {spec!r}: {kind}: needs a path")
    p = Path(arg).expanduser()
    try:
        if p.is_dir():
            files = [f for f in p.iterdir() if _listable(f.name) and f.is_file()]
            if not files:
                raise SourceError(f"source {spec!r}: directory {p} holds no files")
            return sorted(files, key=lambda f: natural_key(f.name)), False
        if p.is_file():
            return [p], True
    except PermissionError as e:
        raise SourceError(f"source {spec!r}: cannot read {p}: {e.strerror}") from None
    if glob.has_magic(arg):
        files = [Path(f) for f in glob.glob(os.path.expanduser(arg))
                 if _listable(os.path.basename(f)) and os.path.isfile(f)]
        if not files:
            raise SourceError(f"source {spec!r}: no file matches {arg}")
        return sorted(files, key=lambda f: natural_key(str(f))), False
    if p.exists():
        raise SourceError(f"source {spec!r}: {p} is not a regular file or directory")
    raise SourceError(f"source {spec!r}: {p} does not exist")


def identities(spec: str, files: list[Path]) -> list[tuple]:
    try:
        return [_file_identity(f) for f in files]
    except OSError as e:
        raise SourceError(f"source {spec!r}: cannot read {e.filename}: {e.strerror}") from None


def restamp(batches: Iterator[Records]) -> Iterator[Records]:
    """Re-number ``position`` as the cumulative count of records yielded (across files)."""
    pos = 0
    for rec in batches:
        pos += len(rec)
        yield rec if rec.position == pos else replace(rec, position=pos)


# --------------------------------------------------------------------------- pcap

def looks_like_capture(path: Path) -> bool:
    """Whether a file starts with a capture magic (looking inside .gz/.zst)."""
    from .pcap import open_capture

    try:
        with open_capture(path) as f:
            return f.read(4) in CAPTURE_MAGICS
    except Exception:  # unreadable, corrupt .gz (zlib.error), missing zstandard (CaptureError), ...
        return False


def _open_pcap(spec: str, arg: str, node: str, windowing: tuple) -> Source:
    path_arg, opts = split_options(arg)
    check_options(spec, opts, ("follow", "settle"))
    follow = bool_option(spec, opts, "follow")
    if "settle" in opts and not follow:
        raise ConfigError(f"source {spec!r}: settle only applies with follow=1")
    if path_arg == "-":
        if follow:
            raise ConfigError(f"source {spec!r}: follow=1 needs a directory, not stdin")
        from . import stream

        stream.check_stdin(spec)
        return Source(spec, _live_run(), True, lambda stop: stream.stream_batches(spec, None, stop))
    if follow:
        from .follow import DEFAULT_SETTLE, MAX_SETTLE, follow_batches, follow_target

        settle = float_option(spec, opts, "settle", DEFAULT_SETTLE, 0.0, MAX_SETTLE)
        directory, pattern = follow_target(spec, path_arg)
        return Source(spec, _live_run(), True,
                      lambda stop: follow_batches(spec, directory, pattern, settle, stop))
    p = Path(path_arg).expanduser()
    try:
        mode = p.stat().st_mode
    except OSError:
        mode = 0
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):  # a named pipe (or /dev/stdin): a live stream
        from . import stream

        return Source(spec, _live_run(), True, lambda stop: stream.stream_batches(spec, p, stop))
    files, single = expand_paths(spec, "pcap", path_arg)
    if not single:
        kept = [f for f in files if looks_like_capture(f)]
        for f in files:
            if f not in kept:
                log.warning("%s: skipping %s: not a capture file", spec, f)
        if not kept:
            raise SourceError(f"source {spec!r}: no capture files in {path_arg}")
        files = kept
    ids = identities(spec, files)
    # One file keeps the fingerprint it always had (and a directory holding just that file gets it too).
    run = _fingerprint(node, "pcap", ids[0] if len(ids) == 1 else tuple(ids), windowing)
    return Source(spec, run, False, lambda stop: restamp(_replay_captures(spec, files, stop)))


def _replay_captures(spec: str, files: list[Path], stop) -> Iterator[Records]:
    from .pcap import CaptureError, open_capture, read_capture

    for path in files:
        try:
            with open_capture(path) as f:
                for rec in read_capture(f):
                    yield rec
                    if stop():
                        return
        except CaptureError as e:
            raise SourceError(f"source {spec!r}: {path}: {e}") from None
        except OSError as e:
            raise SourceError(f"source {spec!r}: {path}: {e.strerror or e}") from None


# --------------------------------------------------------------------------- the others

def _open_iface(spec: str, arg: str) -> Source:
    from .iface import check_iface, iface_batches

    name, opts = split_options(arg)
    check_options(spec, opts, ())
    check_iface(spec, name)
    return Source(spec, _live_run(), True, lambda stop: iface_batches(spec, name, stop))


def _open_tabular(spec: str, kind: str, arg: str, node: str, windowing: tuple) -> Source:
    from . import tabular

    path_arg, opts = split_options(arg)
    check_options(spec, opts, ("sep",) if kind == "csv" else ())
    files, _ = expand_paths(spec, kind, path_arg)
    sep = tabular.separator(spec, opts.get("sep"), files) if kind == "csv" else None
    tables = [tabular.probe(spec, kind, f, sep) for f in files]
    ids = identities(spec, files)
    # Without a ts column the file's mtime stamps its rows, so it is part of the content.
    ids = [i if t.ts else (*i, t.mtime_ns) for i, t in zip(ids, tables)]
    run = _fingerprint(node, kind, sep, tuple(ids), windowing)
    return Source(spec, run, False, lambda stop: restamp(tabular.batches(spec, tables, stop)))


def _open_access_log(spec: str, arg: str, node: str, windowing: tuple) -> Source:
    from . import accesslog

    path_arg, opts = split_options(arg)
    check_options(spec, opts, ("server",))
    if not opts.get("server"):
        raise ConfigError(f"source {spec!r}: access-log needs the server's address: access-log:PATH?server=IP")
    try:
        server = str_to_ip(opts["server"])
    except ValueError:
        raise ConfigError(f"source {spec!r}: server must be an IPv4 address, got {opts['server']!r}") from None
    files, _ = expand_paths(spec, "access-log", path_arg)
    run = _fingerprint(node, "access-log", server, tuple(identities(spec, files)), windowing)
    return Source(spec, run, False, lambda stop: restamp(accesslog.batches(spec, files, server, stop)))


def open_source(spec: str, *, node: str, windowing: tuple) -> Source:
    """Parse ``spec`` and open it; raises ConfigError/SourceError with a clear message."""
    kind, sep, arg = spec.partition(":")
    if not sep or kind not in KINDS:
        raise ConfigError(f"unknown source {spec!r}; expected one of: {SPEC_HELP}")
    if kind == "synthetic":
        from .synthetic import SyntheticSpec, generate

        s = SyntheticSpec.parse(arg)
        # pace only throttles; it must not change identities (same input, same windows).
        run = _live_run() if s.realtime else _fingerprint(node, "synthetic", dataclasses.replace(s, pace=0.0),
                                                            windowing)
        return Source(spec, run, s.realtime, lambda stop: generate(s, stop))
    if kind == "pcap":
        return _open_pcap(spec, arg, node, windowing)
    if kind == "iface":
        return _open_iface(spec, arg)
    if kind in ("csv", "parquet"):
        return _open_tabular(spec, kind, arg, node, windowing)
    return _open_access_log(spec, arg, node, windowing)
