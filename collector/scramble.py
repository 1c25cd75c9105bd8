"""cryptopANT's ``scramble_ip4``: the per-bit pad that makes the mapping prefix-preserving.

This is the algorithm the compatibility promise is about (bit-for-bit
cryptopANT output for the same key file).  What src/cryptopANT.c does,
transcribed into words:

* **Addresses** are handled as host-order integers (1.2.3.4 = 0x01020304, the
  convention of this project's uint32 columns).  ``pad4`` is the first 4 pad
  bytes read as a little-endian uint32 (the code copies the pad over a struct
  and reads a native ``uint32_t``; big-endian builds byte-swap to match).
* **Bits passed through**: ``pbits = max(pass_bits, class_bits)`` where
  class_bits preserves the classful prefix: 1 bit for class A (0/1), 2 for B
  (10), 3 for C (110), 4 for D (1110) and *all 32* for class E
  (240.0.0.0/4, passed through unchanged).  This happens for every pass_bits.
* **Per-bit pad**: for each bit index ``i`` (counted from the most significant,
  0..31) with ``i >= pbits``: ``v = (x & top_i_bits) | (pad4 >> i)``; the
  cipher input block is ``v`` stored little-endian in bytes 0..3 followed by
  pad bytes 4.. (16 bytes for AES, 8 for Blowfish, 16 hashed for MD5, 20 for
  SHA1); the pad bit is bit 0 of the first output byte.  The output is
  ``x ^ flips`` where bit ``31 - i`` of ``flips`` is that pad bit.  Since the
  block for index ``i`` only depends on the top ``i`` bits of ``x``, common
  prefixes are preserved exactly.
* **Cache**: the C code keeps a 2^24-entry table of the top 24 flip bits per
  /24.  With a constant pass_bits it never changes a result (a hit resumes the
  loop at bit 24 with the same bits a recomputation would give), so it is not
  reproduced; results equal a process that uses one pass_bits throughout (the
  C cache is shared across pass_bits values within one process).  The cache
  this project keeps instead is ``addrcache.py``.

``scramble_ip4_literal`` transcribes that loop line by line (slow, through the
public block functions) as the reference the fast kernels are tested against.
The fast kernels take their addresses sorted and do not recompute the per-bit
blocks of a prefix shared with the previous address (the flips of indices up to
the common prefix length are copied), so a whole /24 of hosts costs at most 8
blocks per address beyond the first; the remaining indices go four at a time
through the interleaved cipher kernels.  The legacy MD5/SHA1 key types use
``hashlib`` and are slow but exact.

numba's ``cache=True`` only notices edits to the file a kernel is defined in,
and the kernels here inline the cipher kernels of ``cipher_aes.py`` and
``cipher_blowfish.py``: after editing those, touch this file (or delete its
``__pycache__/scramble.*.nbi``/``.nbc``), or the cached kernels keep the old code.
"""
from __future__ import annotations

import hashlib

import numba as nb
import numpy as np

from .cipher_aes import aes_encrypt_block, aes_lsb4, aesni_x4
from .cipher_blowfish import bf_lsb4, blowfish_encrypt_block
from .cryptopant_keys import (MAX_BLK_LENGTH, SCRAMBLE_AES, SCRAMBLE_BLOWFISH, SCRAMBLE_MD5,
                              SCRAMBLE_SHA1, KeyFileError, KeyState)

__all__ = ["scramble_kernel", "scramble_kernel_aesni", "scramble_hash", "scramble_ip4_literal"]

_M32 = 0xFFFFFFFF
_CLASS_BITS = np.array([1] * 8 + [2] * 4 + [3] * 2 + [4] + [32], dtype=np.int64)


@nb.njit(cache=True, inline="always")
def _clz32(y):
    n = 0
    if y < 0x10000:
        n += 16
        y <<= 16
    if y < 0x1000000:
        n += 8
        y <<= 8
    if y < 0x10000000:
        n += 4
        y <<= 4
    if y < 0x40000000:
        n += 2
        y <<= 2
    if y < 0x80000000:
        n += 1
    return n


@nb.njit(cache=True, inline="always")
def _top_bits(n):
    """Mask of the n most significant of 32 bits (0 <= n <= 32)."""
    return (0xFFFFFFFF << (32 - n)) & 0xFFFFFFFF


@nb.njit(cache=True)
def scramble_kernel(u, out, pass_bits, pad4, cipher, rk, nr, c, P, S, r0):
    """scramble_ip4 for every u[k] (best sorted; any order is correct).

    The flips for bit indices up to the common prefix length with the previous
    address are identical (index i depends on the top i bits only) and copied;
    the rest are computed, one cipher block each.  Returns the number of blocks.
    """
    blocks = 0
    prev = np.int64(-1)
    prev_flips = np.int64(0)
    for k in range(u.size):
        x = np.int64(u[k])
        pb = max(pass_bits, _CLASS_BITS[x >> 28])
        if pb >= 32:
            out[k] = x
            continue
        start = pb
        flips = np.int64(0)
        if prev >= 0:
            y = x ^ prev
            lcp = 32 if y == 0 else _clz32(y)
            if lcp >= pb:     # same class, so same pb: share flips of indices pb..lcp
                if lcp >= 31:
                    flips = prev_flips
                    start = 32
                else:
                    flips = prev_flips & _top_bits(lcp + 1)
                    start = lcp + 1
        i = start
        while i < 32:     # four bit indices at a time (beyond 31: computed, ignored)
            v0 = (x & _top_bits(i)) | (pad4 >> i)
            v1 = (x & _top_bits(min(i + 1, 32))) | (pad4 >> min(i + 1, 31))
            v2 = (x & _top_bits(min(i + 2, 32))) | (pad4 >> min(i + 2, 31))
            v3 = (x & _top_bits(min(i + 3, 32))) | (pad4 >> min(i + 3, 31))
            if cipher == 3:
                b0, b1, b2, b3 = aes_lsb4(v0, v1, v2, v3, rk, nr, c)
            else:
                b0, b1, b2, b3 = bf_lsb4(v0, v1, v2, v3, P, S, r0)
            flips |= b0 << (31 - i)
            if i + 1 < 32:
                flips |= b1 << (30 - i)
            if i + 2 < 32:
                flips |= b2 << (29 - i)
            if i + 3 < 32:
                flips |= b3 << (28 - i)
            i += 4
        blocks += 32 - start
        out[k] = x ^ flips
        prev = x
        prev_flips = flips
    return blocks


@nb.njit(cache=True)
def scramble_kernel_aesni(u, out, pass_bits, pad4, rkx, nr, pad_lo, pad_hi):
    """``scramble_kernel`` for AES on AES-NI; block = LE32(v) | pad_lo (pad bytes 4..7 << 32), pad_hi."""
    blocks = 0
    prev = np.int64(-1)
    prev_flips = np.int64(0)
    for k in range(u.size):
        x = np.int64(u[k])
        pb = max(pass_bits, _CLASS_BITS[x >> 28])
        if pb >= 32:
            out[k] = x
            continue
        start = pb
        flips = np.int64(0)
        if prev >= 0:
            y = x ^ prev
            lcp = 32 if y == 0 else _clz32(y)
            if lcp >= pb:
                if lcp >= 31:
                    flips = prev_flips
                    start = 32
                else:
                    flips = prev_flips & _top_bits(lcp + 1)
                    start = lcp + 1
        i = start
        while i < 32:     # four bit indices at a time (beyond 31: computed, ignored)
            b0, b1, b2, b3 = aesni_x4(
                rkx, nr,
                ((x & _top_bits(i)) | (pad4 >> i)) | pad_lo,
                ((x & _top_bits(min(i + 1, 32))) | (pad4 >> min(i + 1, 31))) | pad_lo,
                ((x & _top_bits(min(i + 2, 32))) | (pad4 >> min(i + 2, 31))) | pad_lo,
                ((x & _top_bits(min(i + 3, 32))) | (pad4 >> min(i + 3, 31))) | pad_lo,
                pad_hi)
            flips |= (b0 & 1) << (31 - i)
            if i + 1 < 32:
                flips |= (b1 & 1) << (30 - i)
            if i + 2 < 32:
                flips |= (b2 & 1) << (29 - i)
            if i + 3 < 32:
                flips |= (b3 & 1) << (28 - i)
            i += 4
        blocks += 32 - start
        out[k] = x ^ flips
        prev = x
        prev_flips = flips
    return blocks


def _hash_pad_bit(cipher: int, pad: bytes, v: int) -> int:
    blk = v.to_bytes(4, "little") + pad[4:]
    if cipher == SCRAMBLE_MD5:
        return hashlib.md5(blk[:16]).digest()[0] & 1
    return hashlib.sha1(blk[:20]).digest()[0] & 1


def scramble_hash(u: np.ndarray, pass_bits: int, pad4: int, cipher: int, pad: bytes) -> np.ndarray:
    """The legacy MD5/SHA1 key types: same prefix sharing, pure Python (slow)."""
    out = np.empty(u.size, dtype=np.uint32)
    prev, prev_flips = -1, 0
    cls = [int(b) for b in _CLASS_BITS]
    for k, x in enumerate(u.tolist()):
        pb = max(pass_bits, cls[x >> 28])
        if pb >= 32:
            out[k] = x
            continue
        start, flips = pb, 0
        if prev >= 0:
            lcp = 32 - (x ^ prev).bit_length()
            if lcp >= pb:
                start = min(lcp + 1, 32)
                flips = prev_flips & ((_M32 << (32 - start)) & _M32)
        for i in range(start, 32):
            v = (x & ((_M32 << (32 - i)) & _M32)) | (pad4 >> i)
            flips |= _hash_pad_bit(cipher, pad, v) << (31 - i)
        out[k] = x ^ flips
        prev, prev_flips = x, flips
    return out


def scramble_ip4_literal(state: KeyState, x: int, pass_bits: int) -> int:
    """A line-by-line transcription of cryptopANT's ``scramble_ip4`` (without its cache).

    Slow (full cipher blocks through the public block functions); it is the
    reference the fast kernel is tested against.  ``x`` and the result are
    host-order integers (1.2.3.4 = 0x01020304).
    """
    assert 0 <= pass_bits < 33
    b4 = bytearray(MAX_BLK_LENGTH)
    plen = min(len(state.pad), MAX_BLK_LENGTH)
    b4[:plen] = state.pad[:plen]
    ip4pad = int.from_bytes(b4[:4], "little")
    class_bits = [1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 4, 32][x >> 28]
    pbits = max(pass_bits, class_bits)
    output = 0
    m = (_M32 << 1) & _M32
    ip4 = x
    for i in range(31, pbits - 1, -1):
        ip4 &= m
        ip4 |= ip4pad >> i
        b4[:4] = ip4.to_bytes(4, "little")
        if state.c4 == SCRAMBLE_AES:
            outb = aes_encrypt_block(state.key, bytes(b4[:16]))
        elif state.c4 == SCRAMBLE_BLOWFISH:
            outb = blowfish_encrypt_block(state.key, bytes(b4[:8]))
        elif state.c4 == SCRAMBLE_MD5:
            outb = hashlib.md5(bytes(b4[:16])).digest()
        elif state.c4 == SCRAMBLE_SHA1:
            outb = hashlib.sha1(bytes(b4[:20])).digest()
        else:
            raise KeyFileError("unsupported cipher")
        output |= (outb[0] & 1) << (31 - i)
        m = (m << 1) & _M32
    return output ^ x
