"""Web-server access logs as traffic: each request is one packet from the client to the server.

Apache and nginx "common" and "combined" formats (and anything else that
starts with the client address and has a ``[10/Oct/2000:13:55:36 -0700]``
time field):

    127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 ...

The log holds only the client, so the server's address comes from the spec
(``access-log:PATH?server=IP``).  Files are read in blocks, split into lines
with numpy and parsed with one vectorized regular expression (pyarrow), so
a multi-gigabyte log streams at memory speed.  Lines that do not parse count
as ``malformed_record``, clients that are not IPv4 addresses (IPv6, host
names) as ``not_ipv4``; blank lines are ignored.  .gz/.zst logs are read too.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from netsense.errors import SourceError

from .records import COUNTED, MALFORMED_RECORD, NOT_IPV4, Records, make_records
from .tabular import _np_bool, fill_ts, parse_addresses

log = logging.getLogger("netsense.collector.accesslog")

BLOCK_BYTES = 4 << 20
NS = 1_000_000_000

LINE = (r"^(?P<client>[^\s\[\]]+)\s+\S+\s+.*?\[(?P<day>[0-9]{1,2})/(?P<mon>[A-Za-z]{3})/(?P<year>[0-9]{4})"
        r":(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})(?:[.,](?P<frac>[0-9]{1,9}))?"
        r"(?:\s+(?P<zsign>[+-])(?P<zh>[0-9]{2})(?P<zm>[0-9]{2}))?\]")
BLANK = r"^\s*$"
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm), vectorized."""
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    doy = (153 * ((m + 9) % 12) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _ints(m, name: str, ok: np.ndarray, default: bytes = b"0") -> np.ndarray:
    f = m.field(name)
    f = pc.if_else(pa.array(ok), f, pa.scalar(default, f.type))
    f = pc.if_else(pc.equal(pc.binary_length(f), 0), pa.scalar(default, f.type), f)  # absent optional group
    return np.asarray(f.cast(pa.string()).cast(pa.int64()).to_numpy(zero_copy_only=False))


def parse_lines(lines) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Binary array of log lines (blank ones already removed) -> (ts_ns, ts ok, client, reason)."""
    n = len(lines)
    m = pc.extract_regex(lines, LINE)
    ok = _np_bool(m.is_valid())
    client, client_ok = parse_addresses(m.field("client"), allow_int=False) if n else (np.zeros(0, np.uint32),
                                                                                        np.zeros(0, bool))
    mon = pc.index_in(pc.utf8_capitalize(m.field("mon").cast(pa.string())), value_set=pa.array(MONTHS))
    mon = np.asarray(pc.fill_null(mon, -1).to_numpy(zero_copy_only=False)).astype(np.int64) + 1
    ok &= mon >= 1
    day, year = _ints(m, "day", ok), _ints(m, "year", ok)
    hour, minute, second = _ints(m, "hour", ok), _ints(m, "minute", ok), _ints(m, "second", ok)
    frac = m.field("frac")
    frac = pc.if_else(pa.array(ok), frac, pa.scalar(b"", frac.type)).cast(pa.string())
    frac = np.asarray(pc.utf8_rpad(frac, width=9, padding="0").cast(pa.int64()).to_numpy(zero_copy_only=False))
    west = _np_bool(pc.equal(m.field("zsign"), pa.scalar(b"-", m.field("zsign").type)))
    zone_s = np.where(west, -1, 1) * (_ints(m, "zh", ok) * 3600 + _ints(m, "zm", ok) * 60)
    ok &= (day >= 1) & (day <= 31) & (hour < 24) & (minute < 60) & (second <= 60) & (year >= 1970)
    secs = days_from_civil(year, np.where(ok, mon, 1), day) * 86400 + hour * 3600 + minute * 60 + second - zone_s
    ok &= (secs >= 0) & (secs < 9_223_372_035)
    ts = np.where(ok, secs, 0) * NS + np.where(ok, frac, 0)
    reason = np.where(ok, np.where(client_ok, COUNTED, NOT_IPV4), MALFORMED_RECORD).astype(np.uint8)
    return ts, ok, client, reason


def _line_arrays(stream) -> Iterator[pa.Array]:
    """Blocks of the stream as binary arrays of lines (each with its newline), without copying per line."""
    carry = b""
    while True:
        data = stream.read(BLOCK_BYTES)
        if not data:
            if carry:
                yield pa.array([carry], pa.binary())
            return
        buf = carry + data
        cut = buf.rfind(b"\n") + 1
        if not cut:  # one line longer than a block: keep reading
            carry = buf
            continue
        carry, body = buf[cut:], buf[:cut]
        ends = np.flatnonzero(np.frombuffer(body, np.uint8) == 10) + 1
        offsets = np.concatenate(([0], ends)).astype(np.int32 if len(body) < 1 << 31 else np.int64)
        typ = pa.binary() if offsets.dtype == np.int32 else pa.large_binary()
        yield pa.Array.from_buffers(typ, len(ends), [None, pa.py_buffer(offsets), pa.py_buffer(body)])


def batches(spec: str, files: list[Path], server: int, stop) -> Iterator[Records]:
    """Records for every non-blank line of every file, in order (positions are restamped by the caller)."""
    from .pcap import CaptureError, open_capture

    carry = None
    for path in files:
        try:
            with open_capture(path) as f:
                for lines in _line_arrays(f):
                    blank = _np_bool(pc.match_substring_regex(lines, BLANK))
                    if blank.any():
                        lines = lines.filter(pa.array(~blank))
                    if not len(lines):
                        continue
                    ts, ok, client, reason = parse_lines(lines)
                    ts, carry = fill_ts(ts, ok, carry)
                    yield make_records(ts, client, np.full(len(ts), server, np.uint32), reason)
                    if stop():
                        return
        except CaptureError as e:
            raise SourceError(f"source {spec!r}: {e}") from None
        except (OSError, EOFError) as e:
            raise SourceError(f"source {spec!r}: {path}: {getattr(e, 'strerror', None) or e}") from None
