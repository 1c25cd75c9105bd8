"""Container header bytes -> header dict: bounded first, authenticated second, parsed last.

A header is up to 1 MiB of JSON another host wrote.  Parsing it with
``json.loads`` first, as the reader used to, let a header nested 200,000 deep
raise ``RecursionError`` out of the reader (through every ``except
ValueError``), with or without ``--secret``: the MAC was computed over the
canonical JSON of the *parsed* header, so it could only be checked after the
parse.  The on-disk format is unchanged, and every signed window stays valid:

1. ``scan`` lexes the bytes once (strings and brackets only, no recursion):
   the nesting depth, and where the top-level ``"hmac"`` member is;
2. ``verify_mac`` removes that member from the bytes, which gives exactly the
   canonical JSON the writer signed (``pack`` writes canonical JSON), and
   checks the MAC over those bytes;
3. only then ``parse`` hands the bytes the MAC covers to ``json.loads``.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re

from . import sharejson
from .errors import BadWindowFile

MAX_DEPTH = sharejson.MAX_DEPTH  # a window header nests 4 deep (payload.blobs[i].name)
_HMAC_MEMBER = re.compile(rb'"hmac":"([0-9a-f]{64})"')


def canonical(header: dict) -> bytes:
    """The one serialization writers use: sorted keys, no spaces, ASCII."""
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")


def mac(secret: bytes, header: dict) -> str:
    """HMAC-SHA256 (hex) of the canonical JSON of every field but ``hmac``."""
    unsigned = {k: v for k, v in header.items() if k != "hmac"}
    return hmac.new(secret, canonical(unsigned), hashlib.sha256).hexdigest()


def scan(hb: bytes) -> tuple[int, list]:
    """(bracket depth, top-level ``"hmac":"<hex>"`` members as (start, end, mac)) of header
    bytes, without parsing them: what must be known before ``json.loads`` may run.

    Unescaped quotes occur in JSON only around strings, so the raw bytes ``"hmac":"`` are
    always a key and its value, never text inside a string; a member counts when it sits
    at depth 1, in the top-level object (the bytes before it leave exactly one open bracket).
    """
    depth = sharejson.nesting_depth(hb, MAX_DEPTH)
    macs = []
    if depth <= MAX_DEPTH:
        for m in _HMAC_MEMBER.finditer(hb):
            if _open_at(hb[:m.start()]) == 1:
                macs.append((m.start(), m.end(), m.group(1).decode()))
            else:
                macs.append(None)  # nested: no writer puts one there
    return depth, macs


def _open_at(prefix: bytes) -> int:
    """Brackets still open at the end of ``prefix``."""
    sk = sharejson.skeleton(prefix)
    return sk.count(b"[") + sk.count(b"{") - sk.count(b"]") - sk.count(b"}")


def verify_mac(hb: bytes, macs: list, secret: bytes) -> tuple[bytes, str]:
    """The header bytes the MAC covers and the MAC, or ``bad_hmac``.

    The MAC is over the canonical JSON of every other field; the writer's header *is*
    canonical JSON, so removing the ``"hmac"`` member (and one comma) from the bytes gives
    exactly the signed bytes, with no parsing: the HMAC is checked before any field is read.
    """
    if len(macs) != 1 or macs[0] is None:
        raise BadWindowFile("bad_hmac", "missing or invalid HMAC for the configured --secret")
    a, b, signature = macs[0]
    if hb[a - 1:a] == b",":
        a -= 1
    elif hb[b:b + 1] == b",":
        b += 1
    signed = hb[:a] + hb[b:]
    if not hmac.compare_digest(signature, hmac.new(secret, signed, hashlib.sha256).hexdigest()):
        raise BadWindowFile("bad_hmac", "missing or invalid HMAC for the configured --secret")
    return signed, signature


def parse(hb: bytes, secret: bytes | None, max_bytes: int) -> dict:
    """Header bytes -> dict: bounded scan, then (with ``secret``) the HMAC, then ``json.loads``."""
    depth, macs = scan(hb)
    if depth > MAX_DEPTH:
        raise BadWindowFile("bad_header", f"header nested more than {MAX_DEPTH} deep")
    signature = None
    if secret is not None:
        hb, signature = verify_mac(hb, macs, secret)  # parse only what the MAC covers
    if len(hb) > max_bytes:
        raise BadWindowFile("too_large", f"header of {len(hb)} bytes, limit {max_bytes}")
    try:
        header = json.loads(hb.decode("utf-8"))  # the scan above bounded the depth json.loads can reach
    except ValueError as ex:
        raise BadWindowFile("bad_header", f"unreadable header: {ex}") from None
    if not isinstance(header, dict):
        raise BadWindowFile("bad_header", f"the header is a JSON {type(header).__name__}, not an object")
    if signature is not None:
        header["hmac"] = signature
    return header
