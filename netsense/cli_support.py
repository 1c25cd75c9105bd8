"""What both command lines share: log set-up, signal handling, option checks.

Both daemons log to standard error in one format (UTC times with a ``Z``; text or
``--log-format json``, one object per line) and stop the same way: the
first SIGTERM or SIGINT sets an event that the run loop checks, so the open
window is landed (collector) or the transaction finished (aggregator) before
the process exits 0.  Their numeric options are ``Finite`` or ``Whole`` (a
closed range, NaN and infinities refused, shown in ``--help``), and
``usable_shared`` refuses at start a ``--shared`` that can never work, so
a bad value is a one-line error, never a traceback.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Callable

import click

from .errors import ConfigError


# --------------------------------------------------------------------------- logging
# Both daemons log to standard error with UTC timestamps marked ``Z`` (hosts of one fleet sit in
# different zones; their logs are read side by side), as text or as one JSON object per line.
LOG_FORMATS = ("text", "json")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def _utc(record: logging.LogRecord) -> str:
    return time.strftime(TIME_FORMAT, time.gmtime(record.created))


class UtcTextFormatter(logging.Formatter):
    """``2026-12-01T21:53:44Z netsense.collector INFO message``."""

    def __init__(self):
        super().__init__("%(asctime)s %(name)s %(levelname)s %(message)s")

    def formatTime(self, record, datefmt=None):  # noqa: N802 (logging's name)
        return _utc(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC, ``Z``), ``level``, ``logger``, ``msg``, and ``exc``
    (the formatted traceback) when there is one; newlines stay escaped inside the object."""

    def format(self, record):
        doc = {"ts": _utc(record), "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


def setup_logging(verbose: int, quiet: bool, log_format: str = "text") -> None:
    """Log to standard error: INFO, DEBUG with ``-v``, WARNING with ``-q``; ``log_format`` text or json."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}, not {log_format!r}")
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else UtcTextFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.captureWarnings(True)  # Python warnings go through the same format (one JSON line each)


def log_options(verbose_help: str = "More detail: debug messages.") -> Callable:
    """``-v/--verbose``, ``-q/--quiet`` and ``--log-format``, the same on every command that logs."""
    def decorate(f):
        f = click.option("--log-format", type=click.Choice(LOG_FORMATS), default="text", show_default=True,
                         help="Log lines on standard error: text (UTC time with a Z, logger, level, message) or "
                              "json (one object per line: ts, level, logger, msg, and exc for a traceback).")(f)
        f = click.option("-q", "--quiet", is_flag=True, help="Log warnings and errors only.")(f)
        f = click.option("-v", "--verbose", count=True, help=verbose_help)(f)
        return f
    return decorate


def stop_on_signals(what: str = "finishing the current step") -> threading.Event:
    """SIGTERM/SIGINT set an event; the run loop finishes its step and exits 0."""
    stop = threading.Event()

    def handler(signum, _frame):
        logging.getLogger("netsense").info("received %s: %s and stopping", signal.Signals(signum).name, what)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


# --------------------------------------------------------------------------- numbers
# Every numeric option of both command lines (and the numeric keys of source specs) has a
# closed range.  click's FloatRange compares NaN false against both bounds and so lets it
# through, and "inf" or "1e300" reach time arithmetic as floats; these types refuse both, with
# the range in the message and, through click, in --help.

DAY = 86_400
WEEK = 7 * DAY
# Window slots and report periods: at most a week.  Slots are UTC-aligned multiples of their
# length and every slot must be nameable (layout.stamp: years 1..9999) and its nanoseconds must
# fit int64 (packet times are int64 ns): a week-long slot near the latest start below stays far
# inside both.
MAX_SLOT_SECONDS = WEEK
# The latest UTC second a time option or a synthetic start may name: 2255-03-14, so that
# nanosecond timestamps (int64, up to 2262-04-11) still fit with years of room.
MAX_EPOCH = 9_000_000_000


def _num(x) -> str:
    if isinstance(x, int):
        return str(x)
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e16 else f"{x:g}"


def _describe(lo, hi, lo_open: bool = False) -> str:
    return f"{_num(lo)}{'<' if lo_open else '<='}x<={_num(hi)}"


def parse_number(text, lo, hi, *, integer: bool = False, lo_open: bool = False):
    """``text`` as a number in [lo, hi] (or (lo, hi] with ``lo_open``); ``ValueError`` says why not.

    Integers are exact: ``1e6`` is accepted for 1000000, ``1.5`` is not a whole number, and
    ``1e999999999`` is compared as a decimal before anything that large is built.  NaN and the
    infinities are never numbers here.
    """
    rng = _describe(lo, hi, lo_open)
    kind = "a whole number" if integer else "a number"
    s = str(text).strip()
    try:
        d = Decimal(s)
    except InvalidOperation:
        raise ValueError(f"{text!r} is not {kind} in the range {rng}") from None
    if not d.is_finite():
        raise ValueError(f"{text!r} is not a finite number; use {kind} in the range {rng}")
    dlo, dhi = Decimal(str(lo)), Decimal(str(hi))  # str: the bound as written (0.1, not its binary value)
    if d < dlo or d > dhi or (lo_open and d == dlo):
        raise ValueError(f"{s} is not in the range {rng}")
    if integer:
        if d != d.to_integral_value():
            raise ValueError(f"{s} is not a whole number; use one in the range {rng}")
        return int(d)
    return float(d)


class Finite(click.FloatRange):
    """A real number in [min, max] (both bounds required): NaN and the infinities are refused."""

    name = "float range"

    def __init__(self, min: float, max: float, min_open: bool = False):
        super().__init__(min, max, min_open=min_open)

    def convert(self, value, param, ctx):
        try:
            return parse_number(value, self.min, self.max, lo_open=self.min_open)
        except ValueError as e:
            self.fail(str(e), param, ctx)


class Whole(click.IntRange):
    """An integer in [min, max] (both bounds required); ``1e6`` is read exactly as 1000000."""

    name = "integer range"

    def __init__(self, min: int, max: int):
        super().__init__(min, max)

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        try:
            return parse_number(value, self.min, self.max, integer=True)
        except ValueError as e:
            self.fail(str(e), param, ctx)


# --------------------------------------------------------------------------- the shared directory
# Kernel pseudo file systems: a path on one of them is never a shared directory (mkdir there
# fails with odd errors such as ENOENT on /proc).
PSEUDO_FS = {"proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "tracefs", "securityfs",
             "bpf", "pstore", "configfs", "efivarfs", "fusectl", "mqueue", "binfmt_misc", "hugetlbfs",
             "rpc_pipefs", "nsfs"}


def fs_type(path) -> str:
    """The file-system type of ``path`` from /proc/self/mounts (longest mount-point prefix)."""
    real = os.path.realpath(path)
    best, kind = "", "unknown"
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1].replace("\\040", " ")
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, kind = mnt, parts[2]
    except OSError:
        pass
    return kind


def check_not_pseudo(path, option: str = "--shared") -> None:
    kind = fs_type(path)
    if kind in PSEUDO_FS:
        raise ConfigError(f"{option} {path} is not a usable shared directory: it is on the kernel's {kind} "
                          f"pseudo file system; give a directory on a local or network file system")


def usable_shared(path: Path, option: str = "--shared") -> None:
    """Refuse at start what can never be a shared directory, before anything is written.

    Only what can never work is refused here: a share that is full or read-only right now
    is the daemons' business (the collector spools and retries), and an OSError from their
    start-up is turned into one line by ``storage_message``.
    """
    check_not_pseudo(path, option)
    if Path(path).exists() and not Path(path).is_dir():
        raise ConfigError(f"{option} {path} is not a directory; give a directory on a local or network file system")


def storage_message(e: OSError, shared) -> str:
    """One line for an OSError that escaped a daemon's start-up (the share refused something)."""
    where = e.filename or shared
    return (f"cannot use the shared directory {shared}: {where}: {e.strerror or e}; check that it is mounted "
            f"and writable")
