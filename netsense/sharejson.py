"""Bounded JSON from the shared directory: read it without trusting it.

Every JSON document on the share (window headers, status documents, reason
files, reports, the aggregator's status) was written by another process,
often on another host, and may have been replaced by anything.  Python's
``json.loads`` is safe for well-formed input only: nesting 200,000 brackets
deep raises ``RecursionError`` (an escape from every ``except ValueError``),
and a path that names a FIFO hangs a plain ``open()`` forever.  This module
is the one place that handles both, so every reader gets the same rules:

* ``nesting_depth`` measures bracket depth outside strings with one regex
  pass (linear, no recursion), so ``loads`` refuses deep input *before*
  ``json.loads`` sees it;
* ``read_bytes`` opens without following a symlink and without blocking,
  refuses anything but a regular file, and reads at most ``max_bytes``;
* ``read`` combines them and returns ``None`` instead of raising, for the
  advisory documents whose absence only costs information.
"""
from __future__ import annotations

import errno
import json
import os
import re
import stat
from pathlib import Path

MAX_DEPTH = 32  # netsense documents nest at most 5 deep; 32 leaves room and keeps the parser shallow
# A JSON string, lexed as JSON lexes it: a quote, then characters or backslash escapes, then a
# quote. An unterminated string runs to the end of the input (where JSON's lexer fails too):
# the match then always succeeds from the quote it starts at, so the scan is linear; a pattern
# that failed there was retried from every later quote, quadratic in the input (hours for 1 MiB
# of backslash-quotes).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.S)
_NOT_BRACKET = bytes(sorted(set(range(256)) - set(b"[]{}")))


class NotRegularFile(OSError):
    """The path is a symlink, FIFO, socket, device or directory: never read."""


def skeleton(data: bytes) -> bytes:
    """The brackets of ``data`` outside strings, in order (C-speed: one regex pass, one translate)."""
    return _STRING.sub(b"", data).translate(None, _NOT_BRACKET)


def nesting_depth(data: bytes, limit: int = MAX_DEPTH) -> int:
    """Deepest bracket nesting of ``data`` outside strings; stops counting once above ``limit``.

    Strings are removed exactly as JSON lexes them, so the depth a parser reaches before
    it fails is never more than this returns: malformed input makes ``json.loads`` fail
    at least as early.
    """
    depth = deepest = 0
    for c in skeleton(data):
        if c == 0x5B or c == 0x7B:  # [ {
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        else:
            depth -= 1
    return deepest


def loads(data: bytes | str, max_bytes: int, max_depth: int = MAX_DEPTH):
    """``json.loads`` for hostile input: raises ``ValueError`` (only) for anything too large,
    too deep, not UTF-8 or not JSON."""
    if len(data) > max_bytes:
        raise ValueError(f"{len(data)} bytes, more than {max_bytes}")
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    depth = nesting_depth(raw, max_depth)
    if depth > max_depth:
        raise ValueError(f"nested more than {max_depth} deep")
    # UTF-8 only (json.loads on bytes would also guess UTF-16/32, where this byte scan of the
    # brackets does not apply); UnicodeDecodeError is a ValueError.
    text = raw.decode("utf-8")
    try:
        return json.loads(text)
    except RecursionError:  # not reachable below MAX_DEPTH; kept so no caller ever sees one
        raise ValueError("nested too deep") from None


def read_bytes(path: Path | str, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` + 1 of them.

    Opened with O_NOFOLLOW | O_NONBLOCK and checked with fstat on the open descriptor, so a
    symlink, FIFO or device swapped in for the file (even between a scan and this call)
    raises ``NotRegularFile`` instead of being followed or hanging the reader.  Returns
    ``max_bytes + 1`` bytes for a larger file, so the caller can tell it is too large.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENXIO, errno.EOPNOTSUPP, errno.EISDIR):
            raise NotRegularFile(e.errno, f"not a regular file: {e.strerror}", str(path)) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(errno.EINVAL, "not a regular file", str(path))
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, min(max_bytes + 1 - size, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read(path: Path | str, max_bytes: int = 1 << 20, max_depth: int = MAX_DEPTH):
    """The JSON value in ``path``, or ``None`` when it is absent, unreadable, not a regular
    file, larger than ``max_bytes``, too deep or not JSON.  Never raises."""
    try:
        return loads(read_bytes(path, max_bytes), max_bytes, max_depth)
    except (OSError, ValueError):
        return None


def read_object(path: Path | str, max_bytes: int = 1 << 20) -> dict | None:
    """``read``, keeping only a JSON object (what every netsense document is)."""
    doc = read(path, max_bytes)
    return doc if isinstance(doc, dict) else None
