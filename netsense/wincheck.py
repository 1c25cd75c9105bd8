"""Validation of a window file's header fields and matrix: every value checked, none trusted.

A window file arrives from the share with a valid CRC and SHA-256, which only
prove its writer computed them.  Before this module, a crafted header with
``records`` as a list, ``skipped`` as a string or a non-string
``anonymization`` passed the container checks and crashed the aggregator later
(in a report, a Parquet row, a comparison), on every restart, since the file
stays in ``nodes/``; ``node``, ``run`` and ``seq`` were never compared with
the name, so traffic could be credited to another node; and a matrix whose
UINT64 values wrap to 0 satisfied the packet-count check.

Split from ``winfile`` (the container format) because these rules are about
what a *window* means, and both daemons' documents of it (the field table in
shared_fs_layout.md) change with them, not with the bytes.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import BadWindowFile
from .matrix import N

KIND = "window"
FIELDS = ("kind", "identity", "node", "run", "seq", "start", "end", "first_ts_ns", "last_ts_ns",
          "source", "records", "packets", "skipped", "anonymization", "created", "host", "payload")
OPTIONAL = ("hmac", "via")  # hmac: with --secret; via: upstream windows of a child aggregator
# Counts above 2^53 are no real window (10^6 seconds at 10^10 packets/s) and would lose
# exactness in every JSON reader that uses doubles; the sums of many stay within int64 too.
MAX_COUNT = 1 << 53
# A window's matrix may hold at most 2^27 links: 1024 default windows' (2^17 packets) worth,
# room for an upstream window carrying a whole rack's period.  Deserializing it costs at most
# 32 bytes per link (4 GiB at the bound); the blob header check (grbblob) holds it to that.
MAX_WINDOW_NVALS = 1 << 27
_INT64 = 1 << 63


def _is_int(v) -> bool:
    return type(v) is int  # bool is an int subclass, and True == 1 must not pass as a count


def _count(h: dict, k: str) -> int:
    v = h[k]
    if not _is_int(v) or not 0 <= v < MAX_COUNT:
        raise BadWindowFile("bad_header", f"{k} is {v!r:.80}, expected an integer in [0, 2^53)")
    return v


def check_header(h: dict, name) -> None:
    """Every window header field type- and range-checked, and the identity against the name."""
    if h.get("kind") != KIND:
        raise BadWindowFile("wrong_kind", f"kind {h.get('kind')!r:.80}, expected {KIND!r}")
    missing = [f for f in FIELDS if f not in h]
    if missing:
        raise BadWindowFile("bad_header", f"missing fields {missing}")
    strings = ("identity", "node", "run", "source", "host")
    wrong = [k for k in strings if not isinstance(h[k], str)]
    wrong += [k for k in ("seq", "start", "end") if not _is_int(h[k]) or not 0 <= h[k] < _INT64]
    wrong += [k for k in ("first_ts_ns", "last_ts_ns") if h[k] is not None and not (
        _is_int(h[k]) and -_INT64 <= h[k] < _INT64)]
    if h["anonymization"] is not None and not isinstance(h["anonymization"], str):
        wrong.append("anonymization")
    c = h["created"]
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c):
        wrong.append("created")
    if "hmac" in h and not isinstance(h["hmac"], str):
        wrong.append("hmac")
    if "via" in h and not (isinstance(h["via"], list) and len(h["via"]) <= 4096 and all(
            isinstance(v, str) and len(v) == 12 for v in h["via"])):
        wrong.append("via")
    if wrong:
        raise BadWindowFile("bad_header", f"fields of the wrong type or range: {wrong}")
    ours = (h["identity"], h["node"], h["run"], h["seq"], h["start"], h["end"])
    theirs = (name.identity, name.node, name.run, name.seq, name.start, name.end)
    if ours != theirs:
        raise BadWindowFile("name_mismatch", f"header says {h['identity']:.200} {h['start']}-{h['end']}, name "
                                             f"says {name.identity} {name.start}-{name.end}")
    records, packets = _count(h, "records"), _count(h, "packets")
    if packets > records:
        raise BadWindowFile("bad_header", f"{packets} packets counted from {records} records")
    sk = h["skipped"]
    if not isinstance(sk, dict) or not all(isinstance(k, str) and _is_int(v) and 0 <= v < MAX_COUNT
                                           for k, v in sk.items()):
        raise BadWindowFile("bad_header", f"skipped is not an object of reason -> count: {sk!r:.200}")
    blobs = h["payload"]["blobs"]
    a = next((b for b in blobs if b["name"] == "A"), None)
    if a is not None:
        if a["nvals"] > MAX_WINDOW_NVALS:
            raise BadWindowFile("too_large", f"matrix A declares {a['nvals']} links, limit {MAX_WINDOW_NVALS}")
        if a["nvals"] > packets:  # every entry is a link that carried at least one packet
            raise BadWindowFile("wrong_content", f"{a['nvals']} links but {packets} packets")


def check_arrays(d: dict, packets: int, what: str = "A") -> None:
    """The hypersparse CSR arrays of a deserialized window matrix (``Matrix.ss.unpack``) must be a
    real traffic matrix: GraphBLAS does not check what it deserializes, and the aggregator's
    merges index with these arrays and assume sorted unique links.

    Checked: row pointers from 0 to nvals, never decreasing; rows strictly increasing; columns
    below 2^32 and strictly increasing within a row; every value at least 1; and the values'
    exact sum (in Python integers: UINT64 arithmetic wraps) equal to the header's ``packets``.
    """
    rows, ptr, cols, vals = d["rows"], d["indptr"], d["col_indices"], d["values"]
    n = len(cols)
    iso = bool(d.get("is_iso"))
    problem = None
    if len(ptr) != len(rows) + 1 or int(ptr[0]) != 0 or int(ptr[-1]) != n or len(vals) != (1 if iso and n else n):
        problem = "inconsistent array lengths"
    elif len(rows) and (int(rows[-1]) >= N or (len(rows) > 1 and not (rows[1:] > rows[:-1]).all())):
        problem = "rows out of range or out of order"
    elif len(rows) and not (ptr[1:] >= ptr[:-1]).all():
        problem = "decreasing row pointers"
    elif n and int(cols.max()) >= N:
        problem = "columns out of range"
    elif n > 1:
        up = cols[1:] > cols[:-1]
        ends = ptr[1:-1]
        ends = ends[(ends > 0) & (ends < n)] - 1  # a row's last entry may be followed by a smaller column
        up[ends.astype(np.intp)] = True
        if not up.all():
            problem = "columns out of order or repeated within a row"
    if problem:
        raise BadWindowFile("wrong_content", f"{what}: not a traffic matrix ({problem})")
    if n == 0:
        total = 0
    elif iso:
        total = int(vals[0]) * n
        low = int(vals[0])
    else:
        v = vals.astype(np.uint64, copy=False)
        low = int(v.min())
        # each half sums below 2^64 for fewer than 2^32 entries; recombined exactly in Python ints
        total = (int(np.sum(v >> np.uint64(32), dtype=np.uint64)) << 32) + int(
            np.sum(v & np.uint64(0xFFFFFFFF), dtype=np.uint64))
    if n and low < 1:
        raise BadWindowFile("wrong_content", f"{what} holds links with 0 packets")
    if total != packets:
        raise BadWindowFile("wrong_content", f"matrix sums to {total}, header says {packets} packets")
