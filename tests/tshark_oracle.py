"""An independent oracle: what tshark says a capture holds, reduced to the counting rule.

A packet counts when the first network-layer protocol tshark dissects after the link layer
is IPv4 ("ip" in frame.protocols) with both addresses present, and neither address is
255.255.255.255.  Everything here is tshark's dissection plus a few lines of Python.
"""
from __future__ import annotations

import shutil
import subprocess

import numpy as np

LINK_LAYER = {"frame", "eth", "ethertype", "vlan", "sll", "null", "loop", "ppp", "pppoes", "pppoed", "mpls", "raw",
              "chdlc", "pw", "ieee8021ad", "juniper", "ipv4", "llc"}


def available() -> bool:
    return shutil.which("tshark") is not None


def ip_to_int(s: str) -> int:
    a, b, c, d = (int(x) for x in s.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d


def counted_pairs(path) -> tuple[np.ndarray, np.ndarray]:
    out = subprocess.run(["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "frame.protocols", "-e", "ip.src",
                          "-e", "ip.dst", "-E", "occurrence=f", "-E", "separator=\t"],
                         capture_output=True, text=True, check=False).stdout
    src, dst = [], []
    for line in out.splitlines():
        protos, _, rest = line.partition("\t")
        s, _, d = rest.partition("\t")
        first = next((p for p in protos.split(":") if p not in LINK_LAYER), None)
        if first != "ip" or not s or not d:
            continue
        if s == "255.255.255.255" or d == "255.255.255.255":
            continue
        src.append(ip_to_int(s))
        dst.append(ip_to_int(d))
    return np.array(src, np.uint64), np.array(dst, np.uint64)
