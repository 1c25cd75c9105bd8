"""What a capture file looks like from outside: its magic numbers and the name order of rotating files.

Separate so that the replaying sources (``collector.sources``) and the live
follower of a directory (``collector.follow``) can share these without
importing each other; it imports nothing from the wing.
"""
from __future__ import annotations

import re

# Magic numbers of classic pcap (both byte orders, us/ns, Kuznetzov) and pcapng.
CAPTURE_MAGICS = frozenset({
    b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d",
    b"\x34\xcd\xb2\xa1", b"\xa1\xb2\xcd\x34", b"\x0a\x0d\x0d\x0a"})
COMPRESSED_MAGICS = (b"\x1f\x8b", b"\x28\xb5\x2f\xfd")


def natural_key(name: str) -> tuple:
    """Name order with digit runs compared as numbers: cap, cap1, cap2, ..., cap10 (tcpdump -C)."""
    parts = re.split(r"(\d+)", name)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name
