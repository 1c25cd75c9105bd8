"""Prefix-preserving IPv4 anonymization, bit-compatible with cryptopANT's ``scramble_ip4``.

cryptopANT (USC/ISI; the library the MIT/IEEE/Amazon Anonymized Network Sensing
Graph Challenge used) is a Crypto-PAn variant.  This package reproduces its
IPv4 path exactly, from its key file to the output address, without linking it
or OpenSSL, so anonymized windows from here can be joined with data anonymized
by cryptopANT with the same key.  ``Anonymizer`` (this module) is the entry
point; the pieces live beside it, one concern each:

* ``cryptopant_keys``: the key file (parse, format, generate, create) and cipher codes;
* ``cipher_aes``, ``cipher_blowfish``: the block ciphers in numba (AES also on AES-NI);
* ``scramble``: cryptopANT's per-bit pad loop, fast kernels and a literal transcription;
* ``addrcache``: results kept across calls (windows) in a bounded hash table.

API: ``Anonymizer.from_keyfile(path, pass_bits=16, create=True, cipher="aes")``
reads a cryptopANT key file (or creates one); ``anonymize(uint32 array)`` maps
addresses, ``deanonymize`` inverts (cryptopANT's ``unscramble_ip4``), and
``fingerprint`` = ``"cryptopant-<cipher>:"`` + 16 hex digits of a SHA-256 over
the cipher code, key, pad and pass_bits: it names the mapping (windows
anonymized differently never carry the same fingerprint) without revealing
the key.

Speed (``scripts/bench_anonymize.py``): a call looks every address up in the
cache, sorts the ones it has not seen and scrambles those (sharing the blocks
of common prefixes, four cipher blocks at a time, AES on AES-NI where
available), then caches them.  So a window costs one hash probe per packet plus
the new addresses: call ``anonymize`` on the raw src/dst columns, which is
cheaper than ``np.unique(..., return_inverse=True)`` followed by a lookup.
"""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import numpy as np

from .addrcache import cache_fill, cache_insert, cache_lookup, new_table
from .cipher_aes import aes_key_schedule, aes_round1_consts, aesni_ok, aesni_round_keys, to_i64
from .cipher_blowfish import blowfish_schedule
from .cryptopant_keys import (CIPHER_NAMES, MAX_BLK_LENGTH, SCRAMBLE_AES, SCRAMBLE_BLOWFISH,
                              SCRAMBLE_MD5, SCRAMBLE_SHA1, KeyFileError, KeyState, create_keyfile,
                              parse_keyfile)
from .scramble import scramble_hash, scramble_kernel, scramble_kernel_aesni

__all__ = ["Anonymizer"]

_M32 = 0xFFFFFFFF


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """np.unique(a) for 1-D a; np.unique itself is many times slower (numpy 2.x, uint32)."""
    s = np.sort(a)
    if s.size < 2:
        return s
    keep = np.empty(s.size, dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


class Anonymizer:
    """cryptopANT-compatible prefix-preserving IPv4 anonymization of uint32 address arrays.

    ``anonymize(a)[k] == scramble_ip4(a[k], pass_bits)`` of cryptopANT with the
    same key file (addresses as host-order integers).  Calls on one instance
    are serialized by an internal lock (the cache is shared state).

    ``cache_entries`` bounds the cache: two generations of that many addresses
    each (16 bytes of table per entry and generation at load 1/2, i.e. 32 MiB
    for the default 2^20).  ``aesni``: None picks AES-NI where it is available
    and passes a FIPS-197 self-test, False forces the portable tables.
    """

    def __init__(self, state: KeyState, pass_bits: int = 16, cache_entries: int = 1 << 20,
                 aesni: bool | None = None):
        if not 0 <= int(pass_bits) <= 32:
            raise ValueError("pass_bits must be within 0..32")
        if state.c4 not in CIPHER_NAMES:
            raise KeyFileError("unsupported IPv4 cipher code %02x" % state.c4)
        self.pass_bits = int(pass_bits)
        self.cipher = CIPHER_NAMES[state.c4]
        self._state = state
        pad = (bytes(state.pad[:MAX_BLK_LENGTH]) + bytes(MAX_BLK_LENGTH))[:MAX_BLK_LENGTH]
        self._pad = pad
        self._pad4 = int.from_bytes(pad[:4], "little")
        dummy = np.zeros(1, dtype=np.int64)
        self._rk, self._nr, self._c, self._P, self._S, self._r0 = dummy, 0, dummy, dummy, dummy, 0
        if state.c4 == SCRAMBLE_AES:
            self._rk, self._nr = aes_key_schedule(state.key)
            self._c = aes_round1_consts(self._rk, pad)
            self._rkx = aesni_round_keys(self._rk)
            self._pad_lo = to_i64(bytes(4) + pad[4:8])
            self._pad_hi = to_i64(pad[8:16])
        elif state.c4 == SCRAMBLE_BLOWFISH:
            self._P, self._S = blowfish_schedule(state.key)
            self._r0 = int.from_bytes(pad[4:8], "big")
        h = hashlib.sha256(b"cryptopANT-ip4\0%d\0%s\0%s\0%d" % (
            state.c4, state.key.hex().encode(), pad.hex().encode(), self.pass_bits))
        #: identifies the mapping (cipher, key, pad, pass_bits); reveals nothing about the key
        self.fingerprint = "cryptopant-%s:%s" % (self.cipher, h.hexdigest()[:16])
        self.cache_entries = max(1, int(cache_entries))
        self._slots = 1 << max(4, (2 * self.cache_entries - 1).bit_length())
        self._tables = None
        self._count = np.zeros(1, dtype=np.int64)
        self._old_used = False     # the old generation is empty until the first rotation
        self._lock = threading.Lock()
        self.blocks = 0        # cipher blocks computed so far (statistics)
        #: AES on AES-NI (None: automatically where available and verified)
        self.aesni = state.c4 == SCRAMBLE_AES and (aesni_ok() if aesni is None else bool(aesni))
        if self.aesni and not aesni_ok():
            raise RuntimeError("AES-NI is not available here (or NETSENSE_ANON_AESNI=0)")

    def __repr__(self) -> str:
        return "Anonymizer(%s, pass_bits=%d)" % (self.fingerprint, self.pass_bits)

    @classmethod
    def from_keyfile(cls, path, pass_bits: int = 16, create: bool = True, cipher: str = "aes",
                     cache_entries: int = 1 << 20, aesni: bool | None = None) -> "Anonymizer":
        """Read a cryptopANT key file; if absent and ``create``, make one (``cipher``, mode 0600)."""
        path = os.fspath(path)
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            if not create:
                raise
            create_keyfile(path, cipher)
            data = Path(path).read_bytes()
        return cls(parse_keyfile(data), pass_bits=pass_bits, cache_entries=cache_entries, aesni=aesni)

    # ------------------------------------------------------------------ core

    def _compute(self, u: np.ndarray) -> np.ndarray:
        """Uncached scramble of uint32 ``u`` (sorted gives the most prefix sharing)."""
        u = np.ascontiguousarray(u, dtype=np.uint32)
        if self._state.c4 in (SCRAMBLE_MD5, SCRAMBLE_SHA1):
            return scramble_hash(u, self.pass_bits, self._pad4, self._state.c4, self._pad)
        out = np.empty(u.size, dtype=np.uint32)
        if self.aesni:
            self.blocks += scramble_kernel_aesni(u, out, self.pass_bits, self._pad4, self._rkx,
                                                  self._nr, self._pad_lo, self._pad_hi)
            return out
        self.blocks += scramble_kernel(u, out, self.pass_bits, self._pad4, self._state.c4,
                                        self._rk, self._nr, self._c, self._P, self._S, self._r0)
        return out

    def _rotate(self) -> None:
        cur, old = self._tables
        old.fill(0)
        self._tables = (old, cur)
        self._count[0] = 0
        self._old_used = True

    def anonymize(self, addrs: np.ndarray) -> np.ndarray:
        """Scramble an array of IPv4 addresses (uint32, host order); same shape, uint32."""
        a = np.asarray(addrs)
        if a.dtype != np.uint32:
            if a.size and (a.min() < 0 or a.max() > _M32):
                raise ValueError("addresses must fit in uint32")
            a = a.astype(np.uint32)
        shape = a.shape
        flat = np.ascontiguousarray(a).reshape(-1)
        if self.pass_bits >= 32 or flat.size == 0:
            return flat.copy().reshape(shape)
        with self._lock:
            if self._tables is None:
                self._tables = (new_table(self._slots), new_table(self._slots))
            cur, old = self._tables
            out = np.empty(flat.size, dtype=np.uint32)
            miss = np.empty(flat.size, dtype=np.int64)
            n_miss = cache_lookup(flat, out, miss, cur, old, self._old_used, self._count,
                                   self.cache_entries)
            if n_miss:
                miss = miss[:n_miss]
                u = _sorted_unique(flat[miss])    # sorted, for prefix sharing
                res = self._compute(u)
                if self._count[0] + u.size > self.cache_entries:
                    self._rotate()
                cache_insert(u, res, self._tables[0], self._count, self.cache_entries)
                if cache_fill(flat, miss, out, self._tables[0]):   # more than the cache holds
                    m = flat[miss]
                    out[miss] = res[np.searchsorted(u, m)]
        return out.reshape(shape)

    def anonymize_uncached(self, addrs: np.ndarray) -> np.ndarray:
        """Like ``anonymize`` without touching the cache (sorts the distinct addresses itself)."""
        a = np.asarray(addrs, dtype=np.uint32)
        flat = a.reshape(-1)
        if flat.size == 0:
            return flat.copy().reshape(a.shape)
        order = np.argsort(flat)
        srt = flat[order]
        first = np.empty(srt.size, dtype=bool)
        first[0] = True
        np.not_equal(srt[1:], srt[:-1], out=first[1:])
        res = self._compute(srt[first])
        out = np.empty_like(flat)
        out[order] = res[np.cumsum(first) - 1]
        return out.reshape(a.shape)

    def deanonymize(self, addrs: np.ndarray) -> np.ndarray:
        """cryptopANT's ``unscramble_ip4`` (needs the key): the original addresses back."""
        y = np.asarray(addrs, dtype=np.uint32)
        guess = y.reshape(-1).copy()
        target = guess.copy()
        for _ in range(33):
            res = self.anonymize_uncached(guess) ^ target
            if not res.any():
                return guess.reshape(y.shape)
            guess ^= res
        raise AssertionError("unscramble did not converge")  # unreachable for a bijection

    def cache_stats(self) -> dict:
        return {"entries": int(self._count[0]), "cap_per_generation": self.cache_entries,
                "blocks": self.blocks}
