"""IPv4 addresses as both daemons hold them: big-endian uint32 (10.0.0.1 == 0x0A000001).

Matrix indices, window headers' top lists and reports all use this one
convention; these two functions are the only text <-> integer conversions.
"""
from __future__ import annotations


def ip_to_str(a: int) -> str:
    """Dotted quad for a big-endian uint32 address."""
    a = int(a)
    return f"{a >> 24 & 255}.{a >> 16 & 255}.{a >> 8 & 255}.{a & 255}"


def str_to_ip(s: str) -> int:
    """Parse a dotted quad (or a decimal integer) into a big-endian uint32 address."""
    s = s.strip()
    if s.isdigit():
        v = int(s)
        if v > 0xFFFFFFFF:
            raise ValueError(f"address out of range: {s}")
        return v
    parts = s.split(".")
    if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
        raise ValueError(f"not an IPv4 address: {s!r}")
    a, b, c, d = (int(p) for p in parts)
    return (a << 24) | (b << 16) | (c << 8) | d
