"""Flow tables as traffic: CSV and Parquet files with columns ``src, dst[, packets][, ts]``.

Each row stands for ``packets`` packets (default 1) from ``src`` to ``dst`` at
``ts``.  Everything is streamed (``pyarrow.csv.open_csv`` blocks,
``ParquetFile.iter_batches``) and converted with vectorized pyarrow/numpy
code; rows are expanded with ``np.repeat`` in bounded pieces, so neither a huge
file nor a huge ``packets`` value is ever held in memory whole.

Bad values never raise, they are counted: a row whose ``src`` or ``dst`` is not
an IPv4 address (unparseable, IPv6) gives ``packets`` records skipped as
``not_ipv4``; a row whose ``packets`` is not a whole number in [0, 2^32] or
whose ``ts`` cannot be read gives one ``malformed_record``; a CSV line with the
wrong number of fields is counted as ``malformed_record`` too.

Column names are matched case-insensitively; other columns are ignored.
Addresses: dotted quads or integers (big-endian value; Parquet int32 columns
are read as the unsigned 32-bit pattern), or 4-byte binary values.  ``ts``:
epoch seconds (integer or fractional), ISO 8601 (no zone = UTC) or a Parquet
timestamp/date.  Without a ``ts`` column every row is stamped with the file's
modification time, so its windows close on packet counts only.
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from netsense.errors import ConfigError, SourceError

from .records import COUNTED, MALFORMED_RECORD, NOT_IPV4, REASONS, Records, make_records

log = logging.getLogger("netsense.collector.tabular")

COLUMNS = ("src", "dst", "packets", "ts")
MAX_PACKETS = 1 << 32          # a row may stand for at most this many packets
MAX_BATCH = 1 << 20            # records per yielded batch (a big row spans several)
CSV_BLOCK = 4 << 20            # bytes per CSV block
PARQUET_BATCH = 1 << 16        # rows per Parquet batch
MAX_TS_S = 9_223_372_035       # seconds that still fit int64 nanoseconds
NS = 1_000_000_000
SEPARATORS = {"comma": ",", "tab": "\t", "semicolon": ";", "pipe": "|", "space": " "}


# --------------------------------------------------------------------------- column parsers

def _np_bool(arr) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _as_binary(arr):
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.large_binary() if pa.types.is_large_string(arr.type) else pa.binary())
    return arr


def _is_text(t) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
            or pa.types.is_large_binary(t))


def _digits(arr, regex: str, dtype=pa.int64()) -> tuple[np.ndarray, np.ndarray]:
    """Values of the first regex group (ASCII digits) where it matches, and where it matched."""
    m = pc.extract_regex(arr, regex)
    ok = _np_bool(m.is_valid())
    field = m.field(0)
    if ok.all():
        vals = field.cast(pa.string()).cast(dtype)
    else:
        vals = pc.if_else(pa.array(ok), field, pa.scalar(b"0", field.type)).cast(pa.string()).cast(dtype)
    return np.asarray(vals.to_numpy(zero_copy_only=False)), ok


_QUAD = (r"^\s*(?P<a>[0-9]{1,3})\.(?P<b>[0-9]{1,3})\.(?P<c>[0-9]{1,3})\.(?P<d>[0-9]{1,3})\s*$")


def parse_addresses(arr, allow_int: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A pyarrow column of IPv4 addresses -> (uint32 big-endian values, valid mask)."""
    t = arr.type
    n = len(arr)
    if pa.types.is_integer(t):
        valid = _np_bool(arr.is_valid())
        v = pc.fill_null(arr, 0).to_numpy(zero_copy_only=False)
        if t == pa.int32():                      # Java/Spark style: the unsigned pattern in a signed int
            return v.view(np.uint32), valid
        if pa.types.is_unsigned_integer(t):
            ok = valid & (v <= 0xFFFFFFFF)
        else:
            v = v.astype(np.int64)
            ok = valid & (v >= 0) & (v <= 0xFFFFFFFF)
        return np.where(ok, v, 0).astype(np.uint32), ok
    if pa.types.is_fixed_size_binary(t) and t.byte_width == 4:
        valid = _np_bool(arr.is_valid())
        raw = np.frombuffer(arr.buffers()[1], np.uint8, count=4 * (arr.offset + n))[4 * arr.offset:]
        return np.where(valid, raw.view(">u4").astype(np.uint32), 0).astype(np.uint32), valid
    arr = _as_binary(arr)
    if not (pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type)):
        raise TypeError(f"cannot read IPv4 addresses from a {t} column")
    out = np.zeros(n, np.uint32)
    ok = np.zeros(n, bool)
    if n == 0:
        return out, ok
    m = pc.extract_regex(arr, _QUAD)
    quad = _np_bool(m.is_valid())
    if quad.any():
        parts = []
        for k in "abcd":
            f = pc.if_else(pa.array(quad), m.field(k), pa.scalar(b"0", m.field(k).type))
            parts.append(np.asarray(f.cast(pa.string()).cast(pa.int64()).to_numpy(zero_copy_only=False)))
        a, b, c, d = parts
        good = quad & (a < 256) & (b < 256) & (c < 256) & (d < 256)
        out[good] = ((a << 24) | (b << 16) | (c << 8) | d)[good].astype(np.uint32)
        ok |= good
    if allow_int:
        vals, isint = _digits(arr, r"^\s*\+?(?P<v>[0-9]{1,10})\s*$")
        good = isint & (vals <= 0xFFFFFFFF)
        out[good] = vals[good].astype(np.uint32)
        ok |= good
    return out, ok


def parse_packets(arr) -> tuple[np.ndarray, np.ndarray]:
    """Packet counts -> (uint64 counts, valid mask): whole numbers in [0, 2^32]."""
    t = arr.type
    if pa.types.is_integer(t):
        valid = _np_bool(arr.is_valid())
        v = pc.fill_null(arr, 0).to_numpy(zero_copy_only=False)
        if not pa.types.is_unsigned_integer(t):
            valid &= v >= 0
            v = np.where(valid, v, 0)
        v = v.astype(np.uint64)
        return v, valid & (v <= MAX_PACKETS)
    if pa.types.is_floating(t):
        v = pc.fill_null(arr, -1.0).to_numpy(zero_copy_only=False).astype(np.float64)
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(v) & (v >= 0) & (v <= MAX_PACKETS) & (v == np.floor(v))
        return np.where(valid, v, 0).astype(np.uint64), valid
    arr = _as_binary(arr)
    vals, ok = _digits(arr, r"^\s*\+?(?P<v>[0-9]{1,19})(?:\.0*)?\s*$", pa.uint64())
    return vals.astype(np.uint64), ok & (vals <= MAX_PACKETS)


_TS_NUM = r"^\s*(?P<i>[0-9]{1,10})(?:\.(?P<f>[0-9]{0,9})[0-9]*)?\s*$"
_TS_ISO = (r"^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]+)?)?"
           r"\s*(?:Z|z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?\s*$")
_TS_ZONED = r"(?:Z|z|[+-][0-9]{2}(?::?[0-9]{2})?)\s*$"
_UNIT_NS = {"s": NS, "ms": 1_000_000, "us": 1000, "ns": 1}


def parse_ts(arr) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps -> (int64 ns since the epoch, valid mask)."""
    t = arr.type
    n = len(arr)
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        valid = _np_bool(arr.is_valid())
        if pa.types.is_date32(t):
            raw, factor = pc.fill_null(arr.cast(pa.int32()), 0).to_numpy().astype(np.int64), 86400 * NS
        elif pa.types.is_date64(t):
            raw, factor = pc.fill_null(arr.cast(pa.int64()), 0).to_numpy(), 1_000_000
        else:
            raw, factor = pc.fill_null(arr.cast(pa.int64()), 0).to_numpy(), _UNIT_NS[t.unit]
        limit = np.iinfo(np.int64).max // factor
        valid &= (raw >= 0) & (raw <= limit)
        return np.where(valid, raw, 0) * factor, valid
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        v = pc.fill_null(arr, -1).to_numpy(zero_copy_only=False).astype(np.float64)
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(v) & (v >= 0) & (v <= MAX_TS_S)
        if pa.types.is_integer(t):
            iv = pc.fill_null(arr, 0).to_numpy(zero_copy_only=False).astype(np.int64)
            return np.where(valid, iv, 0) * NS, valid
        return np.round(np.where(valid, v, 0) * NS).astype(np.int64), valid
    arr = _as_binary(arr)
    out = np.zeros(n, np.int64)
    ok = np.zeros(n, bool)
    if n == 0:
        return out, ok
    m = pc.extract_regex(arr, _TS_NUM)
    num = _np_bool(m.is_valid())
    if num.any():
        mask = pa.array(num)
        i = pc.if_else(mask, m.field("i"), pa.scalar(b"0", m.field("i").type)).cast(pa.string())
        f = pc.if_else(mask, m.field("f"), pa.scalar(b"", m.field("f").type)).cast(pa.string())
        secs = np.asarray(i.cast(pa.int64()).to_numpy(zero_copy_only=False))
        frac = np.asarray(pc.utf8_rpad(f, width=9, padding="0").cast(pa.int64()).to_numpy(zero_copy_only=False))
        good = num & (secs <= MAX_TS_S)
        out[good] = (secs * NS + frac)[good]
        ok |= good
    iso = _np_bool(pc.match_substring_regex(arr, _TS_ISO)) & ~num
    if iso.any():
        idx = np.flatnonzero(iso)
        text = pc.utf8_trim_whitespace(arr.take(pa.array(idx)).cast(pa.string()))
        zoned = _np_bool(pc.match_substring_regex(text, _TS_ZONED))
        for sel, typ in ((zoned, pa.timestamp("ns", "UTC")), (~zoned, pa.timestamp("ns"))):
            if not sel.any():
                continue
            sub, where = text.filter(pa.array(sel)), idx[sel]
            try:
                vals = np.asarray(sub.cast(typ).cast(pa.int64()).to_numpy(zero_copy_only=False))
                good = np.ones(len(vals), bool)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                vals, good = _iso_slow(sub.to_pylist())
            out[where[good]] = vals[good]
            ok[where[good]] = True
    return out, ok


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)


def _iso_slow(texts: list) -> tuple[np.ndarray, np.ndarray]:
    """ISO 8601 forms pyarrow's cast does not take (comma fractions, +HH zones, ...), one by one."""
    vals = np.zeros(len(texts), np.int64)
    good = np.zeros(len(texts), bool)
    for k, s in enumerate(texts):
        try:
            dt = datetime.fromisoformat(s.replace(",", ".").replace("z", "Z"))
        except ValueError:
            continue
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        us = (dt - _EPOCH) // _US
        if 0 <= us <= MAX_TS_S * 1_000_000:
            vals[k], good[k] = us * 1000, True
    return vals, good


def fill_ts(ts: np.ndarray, ok: np.ndarray, carry: int | None) -> tuple[np.ndarray, int | None]:
    """Give records without a usable time the previous good one (or the next, at the start).

    Skipped records still belong to a window, and a made-up time of 0 would
    open a window in 1970.
    """
    if len(ts) == 0:
        return ts, carry
    if ok.all():
        return ts, int(ts[-1])
    if not ok.any():
        return np.full(len(ts), carry or 0, np.int64), carry
    idx = np.maximum.accumulate(np.where(ok, np.arange(len(ts)), -1))
    first = carry if carry is not None else int(ts[np.argmax(ok)])
    filled = np.where(idx >= 0, ts[np.maximum(idx, 0)], first)
    return filled, int(filled[-1])


def expand(counts: np.ndarray, columns: list[np.ndarray], max_rows: int = MAX_BATCH) -> Iterator[list[np.ndarray]]:
    """``np.repeat`` of each column by ``counts``, in pieces of at most ``max_rows`` rows."""
    counts = counts.astype(np.uint64)
    total = int(counts.sum()) if len(counts) else 0
    if total <= max_rows:
        if total:
            reps = counts.astype(np.int64)  # every count is <= 2^32: safe
            yield [np.repeat(c, reps) for c in columns]
        return
    cum = np.cumsum(counts)
    start = 0
    while start < total:
        stop = min(start + max_rows, total)
        i = int(np.searchsorted(cum, start, side="right"))       # first row still to emit
        j = int(np.searchsorted(cum, stop - 1, side="right")) + 1  # one past the last row in the piece
        c = counts[i:j].copy()
        c[0] -= np.uint64(start - (int(cum[i]) - int(counts[i])))
        c[-1] -= np.uint64(int(cum[j - 1]) - stop)
        c = c.astype(np.int64)
        yield [np.repeat(col[i:j], c) for col in columns]
        start = stop


def rows_to_records(src, src_ok, dst, dst_ok, ts, ts_ok, counts, counts_ok, carry):
    """Per-row columns -> record columns (expanded) and the new ts carry.

    Returns (pieces, carry) where pieces yields [ts, src, dst, reason] lists.
    """
    bad = ~(counts_ok & ts_ok)
    reason = np.where(bad, MALFORMED_RECORD, np.where(src_ok & dst_ok, COUNTED, NOT_IPV4)).astype(np.uint8)
    counts = np.where(bad, 1, counts).astype(np.uint64)
    ts, carry = fill_ts(ts, ts_ok, carry)
    return expand(counts, [ts, src, dst, reason], MAX_BATCH), carry


# --------------------------------------------------------------------------- files

@dataclass
class Table:
    path: Path
    kind: str                  # "csv" or "parquet"
    names: dict                # our column name -> the file's column name
    sep: str | None
    mtime_ns: int

    @property
    def ts(self) -> bool:
        return "ts" in self.names


def separator(spec: str, value: str | None, files: list[Path]) -> str:
    if value is None:
        suffixes = {s.lower() for f in files for s in f.suffixes}
        return "\t" if suffixes & {".tsv", ".tab"} else ","
    sep = SEPARATORS.get(value.lower(), value)
    if len(sep) != 1 or sep in "\"\n\r":
        raise ConfigError(f"source {spec!r}: sep must be one character or one of {', '.join(SEPARATORS)}, "
                          f"got {value!r}")
    return sep


def _match_names(spec: str, path: Path, names: list[str]) -> dict:
    lower = {}
    for n in names:
        lower.setdefault(n.strip().lower(), n)
    found = {c: lower[c] for c in COLUMNS if c in lower}
    if "src" not in found or "dst" not in found:
        shown = ", ".join(names[:12]) or "nothing"
        raise SourceError(f"source {spec!r}: {path} needs src and dst columns (its header has: {shown})")
    return found


def _open_text(spec: str, path: Path):
    from .pcap import CaptureError, open_capture  # plain, .gz or .zst, by magic

    try:
        return open_capture(path)
    except CaptureError as e:
        raise SourceError(f"source {spec!r}: {e}") from None
    except OSError as e:
        raise SourceError(f"source {spec!r}: cannot read {path}: {e.strerror}") from None


def probe(spec: str, kind: str, path: Path, sep: str | None) -> Table:
    """Check a file's columns up front, so a wrong file fails before anything is landed."""
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as e:
        raise SourceError(f"source {spec!r}: cannot read {path}: {e.strerror}") from None
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            schema = pq.ParquetFile(path).schema_arrow
        except (pa.ArrowException, OSError) as e:
            raise SourceError(f"source {spec!r}: {path} is not a readable Parquet file: {e}") from None
        names = _match_names(spec, path, schema.names)
        for col, name in names.items():
            t = schema.field(name).type
            if not _type_ok(col, t):
                raise SourceError(f"source {spec!r}: {path}: column {name} has type {t}, which cannot hold "
                                  f"{'addresses' if col in ('src', 'dst') else col}")
        return Table(path, kind, names, None, mtime)
    with _open_text(spec, path) as f:
        try:
            head = f.readline(1 << 20)
        except (OSError, EOFError) as e:
            raise SourceError(f"source {spec!r}: cannot read {path}: {e}") from None
    text = head.decode("utf-8", "replace").lstrip("\ufeff").rstrip("\r\n")  # pyarrow drops a BOM too
    if not text.strip():
        raise SourceError(f"source {spec!r}: {path} is empty; CSV files need a header row naming src and dst")
    names = next(csv.reader([text], delimiter=sep))
    return Table(path, kind, _match_names(spec, path, names), sep, mtime)


def _type_ok(col: str, t) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    text = _is_text(t)
    if col in ("src", "dst"):
        return text or pa.types.is_integer(t) or (pa.types.is_fixed_size_binary(t) and t.byte_width == 4)
    if col == "packets":
        return text or pa.types.is_integer(t) or pa.types.is_floating(t)
    return text or pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_timestamp(t) \
        or pa.types.is_date(t)


def _csv_batches(spec: str, table: Table, bad_rows: list) -> Iterator[pa.RecordBatch]:
    import pyarrow.csv as pacsv

    def invalid(row):
        bad_rows[0] += 1
        return "skip"

    cols = list(table.names.values())
    with _open_text(spec, table.path) as f:
        reader = pacsv.open_csv(
            f, read_options=pacsv.ReadOptions(block_size=CSV_BLOCK),
            parse_options=pacsv.ParseOptions(delimiter=table.sep, invalid_row_handler=invalid),
            convert_options=pacsv.ConvertOptions(include_columns=cols,
                                                 column_types={c: pa.binary() for c in cols}))
        yield from reader


def _parquet_batches(table: Table) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(table.path)
    yield from pf.iter_batches(batch_size=PARQUET_BATCH, columns=list(table.names.values()))


def batches(spec: str, tables: list[Table], stop) -> Iterator[Records]:
    """Records of every table in order (positions are restamped by the caller)."""
    carry = None
    for table in tables:
        bad_rows = [0]
        reported = 0
        source = _csv_batches(spec, table, bad_rows) if table.kind == "csv" else _parquet_batches(table)
        try:
            for rb in source:
                n = rb.num_rows
                col = {c: rb.column(name) for c, name in table.names.items()}
                src, src_ok = parse_addresses(col["src"])
                dst, dst_ok = parse_addresses(col["dst"])
                if "packets" in col:
                    counts, counts_ok = parse_packets(col["packets"])
                else:
                    counts, counts_ok = np.ones(n, np.uint64), np.ones(n, bool)
                if table.ts:
                    ts, ts_ok = parse_ts(col["ts"])
                else:
                    ts, ts_ok = np.full(n, table.mtime_ns, np.int64), np.ones(n, bool)
                pieces, carry = rows_to_records(src, src_ok, dst, dst_ok, ts, ts_ok, counts, counts_ok, carry)
                extra = {}
                if bad_rows[0] > reported:
                    extra = {REASONS[MALFORMED_RECORD]: bad_rows[0] - reported}
                    reported = bad_rows[0]
                sent = False
                for ts_, src_, dst_, reason_ in pieces:
                    yield make_records(ts_, src_, dst_, reason_, extra_skipped=extra)
                    extra, sent = {}, True
                    if stop():
                        return
                if extra:
                    yield make_records(*(np.empty(0),) * 3, extra_skipped=extra)
                if not sent and stop():
                    return
        except pa.ArrowException as e:
            raise SourceError(f"source {spec!r}: {table.path}: {e}") from None
        except (OSError, EOFError) as e:
            raise SourceError(f"source {spec!r}: {table.path}: {getattr(e, 'strerror', None) or e}") from None
        if bad_rows[0] > reported:  # rows the CSV reader dropped after the last batch
            yield make_records(*(np.empty(0),) * 3, extra_skipped={REASONS[MALFORMED_RECORD]: bad_rows[0] - reported})
