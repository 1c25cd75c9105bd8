"""Blowfish for cryptopANT's ``02`` key type, in numba, as OpenSSL's ``BF_set_key``/``BF_ecb_encrypt``.

cryptopANT encrypts one 8-byte Blowfish block per anonymized address bit with
OpenSSL; this reproduces that cipher without linking OpenSSL, so the block
kernel can be inlined into the numba scramble loop (``scramble.py``).  It is
validated against Eric Young's published Blowfish vectors in
``tests/test_anonymize.py``.

The initial P-array and S-boxes (the first 1042 words of pi's fraction) are
computed on first use rather than pasted as a table; ``bf_lsb4`` computes four
blocks interleaved and keeps only the bit cryptopANT uses.
"""
from __future__ import annotations

import functools

import numba as nb
import numpy as np

from .cipher_aes import bswap32

__all__ = ["blowfish_encrypt_block", "blowfish_schedule", "bf_lsb4"]

_M32 = 0xFFFFFFFF


@functools.lru_cache(maxsize=1)
def _blowfish_init() -> np.ndarray:
    """Blowfish's initial P-array and S-boxes: the first 1042 32-bit words of pi's fraction."""
    nwords = 18 + 1024
    bits = 32 * nwords + 64
    one = 1 << bits

    def atan_inv(x):
        total = term = one // x
        x2 = x * x
        k, sign = 1, -1
        while term:
            term //= x2
            total += sign * (term // (2 * k + 1))
            sign, k = -sign, k + 1
        return total

    frac = ((16 * atan_inv(5) - 4 * atan_inv(239)) - (3 << bits)) >> 64
    words = [(frac >> (32 * (nwords - 1 - i))) & _M32 for i in range(nwords)]
    return np.array(words, dtype=np.int64)


@nb.njit(cache=True, inline="always")
def _bf_f(x, S):
    return ((((S[x >> 24] + S[256 + ((x >> 16) & 255)]) & 0xFFFFFFFF) ^ S[512 + ((x >> 8) & 255)])
            + S[768 + (x & 255)]) & 0xFFFFFFFF


@nb.njit(cache=True)
def _bf_encrypt_words(P, S, l, r):
    l ^= P[0]
    for i in range(1, 17, 2):
        r ^= _bf_f(l, S) ^ P[i]
        l ^= _bf_f(r, S) ^ P[i + 1]
    r ^= P[17]
    return r, l


@nb.njit(cache=True)
def _bf_key_schedule(init, key):
    P = init[:18].copy()
    S = init[18:].copy()
    n = key.size
    j = 0
    for i in range(18):
        d = 0
        for _ in range(4):
            d = (d << 8) | key[j]
            j += 1
            if j >= n:
                j = 0
        P[i] ^= d
    l = 0
    r = 0
    for i in range(0, 18, 2):
        l, r = _bf_encrypt_words(P, S, l, r)
        P[i] = l
        P[i + 1] = r
    for i in range(0, 1024, 2):
        l, r = _bf_encrypt_words(P, S, l, r)
        S[i] = l
        S[i + 1] = r
    return P, S


def blowfish_schedule(key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """OpenSSL ``BF_set_key``: any length 1..72 bytes (longer keys are cut to 72)."""
    key = bytes(key)[:72]
    if not key:
        raise ValueError("empty Blowfish key")
    return _bf_key_schedule(_blowfish_init(), np.frombuffer(key, dtype=np.uint8).astype(np.int64))


def blowfish_encrypt_block(key: bytes, block: bytes) -> bytes:
    """Encrypt one 8-byte block with Blowfish (ECB, big-endian halves as OpenSSL's BF_ecb_encrypt)."""
    if len(block) != 8:
        raise ValueError("Blowfish block must be 8 bytes")
    P, S = blowfish_schedule(key)
    l, r = _bf_encrypt_words(P, S, int.from_bytes(block[:4], "big"), int.from_bytes(block[4:], "big"))
    return int(l).to_bytes(4, "big") + int(r).to_bytes(4, "big")


@nb.njit(cache=True, inline="always")
def bf_lsb4(v0, v1, v2, v3, P, S, r0):
    """Bit 0 of byte 0 of Blowfish(LE32(v) || pad[4:8]) for four values v, interleaved."""
    l0 = bswap32(v0) ^ P[0]
    l1 = bswap32(v1) ^ P[0]
    l2 = bswap32(v2) ^ P[0]
    l3 = bswap32(v3) ^ P[0]
    r1 = r0
    r2 = r0
    r3 = r0
    rr = r0
    for i in range(1, 17, 2):
        p = P[i]
        rr ^= _bf_f(l0, S) ^ p
        r1 ^= _bf_f(l1, S) ^ p
        r2 ^= _bf_f(l2, S) ^ p
        r3 ^= _bf_f(l3, S) ^ p
        p = P[i + 1]
        l0 ^= _bf_f(rr, S) ^ p
        l1 ^= _bf_f(r1, S) ^ p
        l2 ^= _bf_f(r2, S) ^ p
        l3 ^= _bf_f(r3, S) ^ p
    p = P[17]
    return ((rr ^ p) >> 24) & 1, ((r1 ^ p) >> 24) & 1, ((r2 ^ p) >> 24) & 1, ((r3 ^ p) >> 24) & 1
