"""Live capture from a directory of rotating capture files (``pcap:DIR?follow=1``), read as they appear.

The newest file is framed as it grows with ``collector.stream.Framer``;
finished and compressed files are read whole with ``collector.pcap``.
"""
from __future__ import annotations

import fnmatch
import glob
import logging
import os
import time
from pathlib import Path
from typing import Iterator

from netsense.errors import ConfigError, SourceError

from .capture_files import CAPTURE_MAGICS, COMPRESSED_MAGICS, natural_key
from .records import Records
from .stream import CHUNK_BYTES, READ_BYTES, TICK, Framer, _Emitter

log = logging.getLogger("netsense.collector.livecap")  # the name the live sources had as one module

DEFAULT_SETTLE = 5.0      # follow: seconds a compressed/empty file must keep its size to be complete
MAX_SETTLE = 3600.0       # ... at most an hour (a rotation interval longer than that still works: a later file ends it)


def follow_target(spec: str, arg: str) -> tuple[Path, str | None]:
    """(directory, name pattern or None) for ``follow=1``: a directory, a glob in one directory, or a file."""
    p = Path(arg).expanduser()
    if p.is_dir():
        return p, None
    directory, name = p.parent, p.name
    if glob.has_magic(str(directory)):
        raise ConfigError(f"source {spec!r}: with follow=1 only the file name may be a pattern")
    if not directory.is_dir():
        raise SourceError(f"source {spec!r}: directory {directory} does not exist")
    return directory, name  # a glob of names, or one (possibly future) file name


def follow_batches(spec: str, directory: Path, pattern: str | None, settle: float, stop) -> Iterator[Records]:
    """Read the capture files of ``directory`` in name order as they appear, forever (until stopped).

    The newest file is read as it grows, a complete record at a time.  A file
    is finished (its incomplete tail, if any, reported as truncated_record)
    once a file with a later name exists and everything up to its end has been
    read.  Compressed files cannot be read while written: they are read whole
    once a later file exists or their size has not changed for ``settle``
    seconds.  Names starting with "." are ignored, so writers may write
    ``.name`` and rename it.  A file name is read once: rotation schemes that
    reuse names (tcpdump -W) are not supported.  Files present at start are
    read too, and a restarted collector is a new live run: it reads again the
    files still in the directory, so move finished files away (or narrow the
    glob) before restarting.
    """
    from .pcap import CaptureError, open_capture, read_capture

    done: set[str] = set()
    sizes: dict[str, tuple] = {}   # name -> (size, mtime_ns, monotonic time it was first seen so)
    out = _Emitter(spec)
    cur = None                     # (name, file object, Framer) of the file being read as it grows
    listing_error = 0.0

    def listing() -> list[str]:
        nonlocal listing_error
        try:
            with os.scandir(directory) as it:
                names = [e.name for e in it if not e.name.startswith(".")
                         and (pattern is None or fnmatch.fnmatchcase(e.name, pattern)) and _is_file(e)]
        except OSError as e:
            if time.monotonic() - listing_error > 60:
                log.warning("%s: cannot list %s: %s; retrying", spec, directory, e.strerror or e)
                listing_error = time.monotonic()
            return []
        return sorted(names, key=natural_key)

    def settled(name: str, st) -> bool:
        key = (st.st_size, st.st_mtime_ns)
        old = sizes.get(name)
        if old is None or old[:2] != key:
            sizes[name] = (*key, time.monotonic())
            return False
        return time.monotonic() - old[2] >= settle

    def finish(name: str):
        done.add(name)
        sizes.pop(name, None)

    def restamped(batches):
        for rec in batches:
            out.position += len(rec)
            out.last = time.monotonic()
            yield Records(rec.ts_ns, rec.src, rec.dst, rec.reason, out.position, rec.extra_skipped)

    def wait():
        time.sleep(TICK / 2)
        if out.due():
            yield out.empty()

    try:
        while True:
            if stop():
                if cur is not None:  # the collector takes one more batch after stopping: the complete records
                    yield from out.chunk(cur[2].take())
                return
            if cur is None:
                names = listing()
                todo = [n for n in names if n not in done]
                if not todo:
                    yield from wait()
                    continue
                name = todo[0]
                newer = names[-1] != name and natural_key(names[-1]) > natural_key(name)
                path = directory / name
                try:
                    st = path.stat()
                    with open(path, "rb") as f:
                        head = f.read(4)
                except FileNotFoundError:
                    log.warning("%s: %s disappeared before it was read", spec, path)
                    finish(name)
                    continue
                except OSError as e:
                    raise SourceError(f"source {spec!r}: cannot read {path}: {e.strerror}") from None
                complete = newer or settled(name, st)
                if len(head) < 4 or head[:2] in COMPRESSED_MAGICS:
                    if not complete:  # still being written: wait for it
                        yield from wait()
                        continue
                    if len(head) < 4:
                        if newer:
                            log.info("%s: skipping %s: empty", spec, path)
                            finish(name)
                        else:  # an empty newest file: keep waiting for its header
                            yield from wait()
                        continue
                if head in CAPTURE_MAGICS and not newer:
                    cur = (name, open(path, "rb"), Framer())  # the newest file: read it as it grows
                    log.info("%s: reading %s as it is written", spec, path)
                    continue
                if head not in CAPTURE_MAGICS and head[:2] not in COMPRESSED_MAGICS:
                    log.warning("%s: skipping %s: not a capture file", spec, path)
                    finish(name)
                    continue
                # A complete file (a later one exists, or a settled compressed one): read it whole.
                log.info("%s: reading %s", spec, path)
                try:
                    with open_capture(path) as f:
                        for rec in restamped(read_capture(f)):
                            yield rec
                            if stop():
                                return
                except CaptureError as e:
                    log.error("%s: skipping the rest of %s: %s", spec, path, e)
                except (OSError, EOFError) as e:
                    log.error("%s: skipping the rest of %s: %s", spec, path, getattr(e, "strerror", None) or e)
                finish(name)
                continue

            name, f, fr = cur
            data = f.read(READ_BYTES)
            if data:
                fr.feed(data)
                if len(fr.pending) >= CHUNK_BYTES or out.due():
                    yield from _chunk_or_empty(out, fr.take())
                    if fr.broken:
                        log.error("%s: %s has a malformed record; skipping the rest of it", spec, directory / name)
                        f.close()
                        finish(name)
                        cur = None
                continue
            # At the current end of the file: finish it once a later file exists, else wait for more.
            names = listing()
            if names and natural_key(names[-1]) > natural_key(name):
                while True:  # the writer has moved on: whatever is in the file now is all of it
                    data = f.read(READ_BYTES)
                    if not data:
                        break
                    fr.feed(data)
                yield from _chunk_or_empty(out, fr.take(final=True))
                f.close()
                finish(name)
                cur = None
                continue
            batches = out.chunk(fr.take())
            yield from batches
            if fr.broken:
                log.error("%s: %s has a malformed record; skipping the rest of it", spec, directory / name)
                f.close()
                finish(name)
                cur = None
                continue
            if not batches:
                yield from wait()
    finally:
        if cur is not None:
            if cur[2].pending:
                log.info("%s: stopping with %d bytes of an incomplete record of %s unread",
                         spec, len(cur[2].pending), directory / cur[0])
            cur[1].close()


def _is_file(entry) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def _chunk_or_empty(out: _Emitter, data) -> list[Records]:
    return out.chunk(data) or [out.empty()]
