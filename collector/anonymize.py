"""Prefix-preserving IPv4 anonymization, bit-compatible with cryptopANT's ``scramble_ip4``.

cryptopANT (USC/ISI; the library the MIT/IEEE/Amazon Anonymized Network Sensing
Graph Challenge used) is a Crypto-PAn variant.  This module reproduces its IPv4
path exactly, from its key file to the output address, without linking it or
OpenSSL: AES and Blowfish are implemented here in numba (validated against
FIPS-197 and the published Blowfish vectors in ``tests/test_anonymize.py``);
the legacy MD5/SHA1 key types use ``hashlib`` and are slow but exact.

API: ``Anonymizer.from_keyfile(path, pass_bits=16, create=True, cipher="aes")``
reads a cryptopANT key file (or creates one: os.urandom, mode 0600, temp file
then link/rename in the same directory); ``anonymize(uint32 array)`` maps
addresses, ``deanonymize`` inverts (cryptopANT's ``unscramble_ip4``), and
``fingerprint`` = ``"cryptopant-<cipher>:"`` + 16 hex digits of a SHA-256 over
the cipher code, key, pad and pass_bits: it names the mapping (windows
anonymized differently never carry the same fingerprint) without revealing
the key.

What cryptopANT does (src/cryptopANT.c, transcribed into words):

* **Key file**: one line ``c4:c6:key:pad:mac:iv`` of lowercase hex fields,
  ``c4``/``c6`` being the IPv4/IPv6 cipher (01 md5, 02 blowfish, 03 aes,
  04 sha1).  A new file gets a 16-byte key, a 32-byte pad, an empty mac and a
  16-byte iv, mode 0600.  Reading accepts fields of up to 32 bytes; any
  non-hex character ends a field.  AES uses the key as AES-128/192/256 by its
  length; Blowfish takes the key bytes as they are.
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
  C cache is shared across pass_bits values within one process).

Speed (``scripts/bench_anonymize.py``):

* The addresses a call has not seen before are sorted and the per-bit blocks
  of a prefix shared with the previous address are not recomputed (the flips
  of indices up to the common prefix length are copied), so a whole /24 of
  hosts costs at most 8 blocks per address beyond the first.
* Four bit indices are encrypted at a time, interleaved.  AES runs on AES-NI
  (aesenc via LLVM intrinsics) where the CPU has it and a FIPS-197 self-test
  passes, else on T-tables (``NETSENSE_ANON_AESNI=0`` forces the tables).
* Results go into a bounded two-generation hash cache (``cache_entries`` per
  generation, hot entries promoted) shared across calls, i.e. across windows,
  so a window costs one hash probe per packet plus the new addresses (probes
  are prefetched 16 ahead: new addresses mean random accesses into many MiB).  Call
  ``anonymize`` on the raw src/dst columns: that is cheaper than
  ``np.unique(..., return_inverse=True)`` followed by a lookup.

Everything numba compiles lives in this file (numba's ``cache=True`` keys on the
defining file only).
"""
from __future__ import annotations

import functools
import hashlib
import os
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from netsense.errors import ConfigError

__all__ = [
    "Anonymizer", "KeyFileError", "KeyState", "CIPHERS",
    "parse_keyfile", "format_keyfile", "generate_keystate",
    "aes_encrypt_block", "aesni_encrypt_block", "blowfish_encrypt_block", "scramble_ip4_literal",
]

SCRAMBLE_MD5 = 0x01
SCRAMBLE_BLOWFISH = 0x02
SCRAMBLE_AES = 0x03
SCRAMBLE_SHA1 = 0x04
CIPHERS = {"md5": SCRAMBLE_MD5, "blowfish": SCRAMBLE_BLOWFISH, "aes": SCRAMBLE_AES,
           "sha1": SCRAMBLE_SHA1}
_NAMES = {v: k for k, v in CIPHERS.items()}

MAX_BLK_LENGTH = 32     # cryptopANT's bound on every key-file field, in bytes
_M32 = 0xFFFFFFFF


class KeyFileError(ConfigError, ValueError):
    """A key file that cryptopANT would reject (or that this module cannot use)."""


# --------------------------------------------------------------------------- key files

@dataclass(frozen=True)
class KeyState:
    """The fields of a cryptopANT key file (``scramble_state_t``).  repr never shows key material."""

    c4: int
    c6: int
    key: bytes = field(repr=False)
    pad: bytes = field(repr=False)
    mac: bytes = field(default=b"", repr=False)
    iv: bytes = field(default=b"", repr=False)


def _read_hex_field(data: bytes, pos: int, maxlen: int) -> tuple[bytes, int]:
    """cryptopANT's ``readhexstring``: hex byte pairs up to a non-hex char (consumed) or EOF."""
    out = bytearray()
    hexd = b"0123456789abcdefABCDEF"
    while True:
        if pos >= len(data):
            return bytes(out), pos
        c = data[pos]
        pos += 1
        if c not in hexd:
            return bytes(out), pos
        if len(out) == maxlen:
            raise KeyFileError("key file field longer than %d bytes" % maxlen)
        if pos >= len(data) or data[pos] not in hexd:
            raise KeyFileError("key file field has an odd number of hex digits")
        out.append(int(data[pos - 1:pos + 1], 16))
        pos += 1


def parse_keyfile(data: bytes) -> KeyState:
    """Parse a key file the way ``scramble_readstate`` does (plus validation of what we use)."""
    if isinstance(data, str):
        data = data.encode("ascii")
    pos = 0
    fields = []
    for maxlen in (1, 1, MAX_BLK_LENGTH, MAX_BLK_LENGTH, MAX_BLK_LENGTH, MAX_BLK_LENGTH):
        f, pos = _read_hex_field(data, pos, maxlen)
        fields.append(f)
    c4, c6, key, pad, mac, iv = fields
    if len(c4) != 1 or len(c6) != 1:
        raise KeyFileError("key file does not start with the two cipher codes (e.g. '03:03:')")
    state = KeyState(c4[0], c6[0], key, pad, mac, iv)
    if state.c4 not in _NAMES:
        raise KeyFileError("unsupported IPv4 cipher code %02x" % state.c4)
    if state.c4 == SCRAMBLE_AES and len(key) not in (16, 24, 32):
        raise KeyFileError("AES key must be 16, 24 or 32 bytes, not %d" % len(key))
    if state.c4 == SCRAMBLE_BLOWFISH and not key:
        raise KeyFileError("empty Blowfish key")
    return state


def format_keyfile(state: KeyState) -> bytes:
    """``scramble_savestate``'s format: ``%02x:%02x:key:pad:mac:iv\\n``."""
    return ("%02x:%02x:%s:%s:%s:%s\n" % (state.c4, state.c6, state.key.hex(), state.pad.hex(),
                                         state.mac.hex(), state.iv.hex())).encode("ascii")


def generate_keystate(cipher: str = "aes") -> KeyState:
    """A fresh key as ``scramble_init_from_file`` makes one (16-byte key, 32-byte pad, 16-byte iv, no mac)."""
    try:
        code = CIPHERS[cipher]
    except KeyError:
        raise ValueError("cipher must be one of %s" % sorted(CIPHERS)) from None
    return KeyState(code, code, key=os.urandom(16), pad=os.urandom(MAX_BLK_LENGTH), mac=b"",
                    iv=os.urandom(16))


def _fsync_dir(d: str) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _create_keyfile(path: str, cipher: str) -> None:
    """Write a new key file atomically with mode 0600; never replaces a key someone else made.

    The key is written to a temp file in the same directory, then hard-linked
    into place (fails if the name exists: a concurrent creator wins and both use
    its key).  On file systems without hard links it falls back to rename.
    """
    path = os.path.abspath(path)
    d, base = os.path.split(path)
    tmp = os.path.join(d, ".%s.tmp-%d-%s" % (base, os.getpid(), secrets.token_hex(4)))
    data = format_keyfile(generate_keystate(cipher))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:
            os.rename(tmp, path)
        _fsync_dir(d)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


# --------------------------------------------------------------------------- AES tables

def _aes_tables():
    exp = [0] * 255
    log = [0] * 256
    x = 1
    for i in range(255):
        exp[i] = x
        log[x] = i
        x ^= ((x << 1) ^ (0x11B if x & 0x80 else 0))   # x *= 3 in GF(2^8)
    sbox = [0] * 256
    for a in range(256):
        b = exp[(255 - log[a]) % 255] if a else 0
        s = b
        for r in range(1, 5):
            s ^= ((b << r) | (b >> (8 - r))) & 0xFF
        sbox[a] = s ^ 0x63

    def xt(v):
        return ((v << 1) ^ (0x11B if v & 0x80 else 0)) & 0xFF

    te0 = [(xt(s) << 24) | (s << 16) | (s << 8) | (xt(s) ^ s) for s in sbox]

    def rotr(w, n):
        return ((w >> n) | (w << (32 - n))) & _M32

    return (np.array(sbox, dtype=np.int64), np.array(te0, dtype=np.int64),
            np.array([rotr(w, 8) for w in te0], dtype=np.int64),
            np.array([rotr(w, 16) for w in te0], dtype=np.int64),
            np.array([rotr(w, 24) for w in te0], dtype=np.int64))


_SBOX, _TE0, _TE1, _TE2, _TE3 = _aes_tables()
_CLASS_BITS = np.array([1] * 8 + [2] * 4 + [3] * 2 + [4] + [32], dtype=np.int64)


def _aes_key_schedule(key: bytes) -> tuple[np.ndarray, int]:
    """FIPS-197 KeyExpansion: round-key words (big-endian) and the number of rounds."""
    nk = len(key) // 4
    if len(key) not in (16, 24, 32):
        raise ValueError("AES key must be 16, 24 or 32 bytes")
    nr = nk + 6
    sb = _SBOX
    w = [int.from_bytes(key[4 * i:4 * i + 4], "big") for i in range(nk)]
    rcon = 1
    for i in range(nk, 4 * (nr + 1)):
        t = w[i - 1]
        if i % nk == 0:
            t = ((t << 8) | (t >> 24)) & _M32
            t = (int(sb[t >> 24]) << 24) | (int(sb[(t >> 16) & 255]) << 16) \
                | (int(sb[(t >> 8) & 255]) << 8) | int(sb[t & 255])
            t ^= rcon << 24
            rcon = ((rcon << 1) ^ (0x11B if rcon & 0x80 else 0)) & 0xFF
        elif nk > 6 and i % nk == 4:
            t = (int(sb[t >> 24]) << 24) | (int(sb[(t >> 16) & 255]) << 16) \
                | (int(sb[(t >> 8) & 255]) << 8) | int(sb[t & 255])
        w.append(w[i - nk] ^ t)
    return np.array(w, dtype=np.int64), nr


@nb.njit(cache=True)
def _aes_encrypt_words(rk, nr, s0, s1, s2, s3):
    """Full AES encryption of one block given as 4 big-endian words (T-table form)."""
    s0 ^= rk[0]
    s1 ^= rk[1]
    s2 ^= rk[2]
    s3 ^= rk[3]
    k = 4
    for _ in range(1, nr):
        t0 = _TE0[s0 >> 24] ^ _TE1[(s1 >> 16) & 255] ^ _TE2[(s2 >> 8) & 255] ^ _TE3[s3 & 255] ^ rk[k]
        t1 = _TE0[s1 >> 24] ^ _TE1[(s2 >> 16) & 255] ^ _TE2[(s3 >> 8) & 255] ^ _TE3[s0 & 255] ^ rk[k + 1]
        t2 = _TE0[s2 >> 24] ^ _TE1[(s3 >> 16) & 255] ^ _TE2[(s0 >> 8) & 255] ^ _TE3[s1 & 255] ^ rk[k + 2]
        t3 = _TE0[s3 >> 24] ^ _TE1[(s0 >> 16) & 255] ^ _TE2[(s1 >> 8) & 255] ^ _TE3[s2 & 255] ^ rk[k + 3]
        s0, s1, s2, s3 = t0, t1, t2, t3
        k += 4
    o0 = ((_SBOX[s0 >> 24] << 24) | (_SBOX[(s1 >> 16) & 255] << 16)
          | (_SBOX[(s2 >> 8) & 255] << 8) | _SBOX[s3 & 255]) ^ rk[k]
    o1 = ((_SBOX[s1 >> 24] << 24) | (_SBOX[(s2 >> 16) & 255] << 16)
          | (_SBOX[(s3 >> 8) & 255] << 8) | _SBOX[s0 & 255]) ^ rk[k + 1]
    o2 = ((_SBOX[s2 >> 24] << 24) | (_SBOX[(s3 >> 16) & 255] << 16)
          | (_SBOX[(s0 >> 8) & 255] << 8) | _SBOX[s1 & 255]) ^ rk[k + 2]
    o3 = ((_SBOX[s3 >> 24] << 24) | (_SBOX[(s0 >> 16) & 255] << 16)
          | (_SBOX[(s1 >> 8) & 255] << 8) | _SBOX[s2 & 255]) ^ rk[k + 3]
    return o0, o1, o2, o3


def aes_encrypt_block(key: bytes, block: bytes) -> bytes:
    """Encrypt one 16-byte block with AES-128/192/256 (ECB, i.e. the bare cipher)."""
    if len(block) != 16:
        raise ValueError("AES block must be 16 bytes")
    rk, nr = _aes_key_schedule(bytes(key))
    w = [int.from_bytes(block[i:i + 4], "big") for i in range(0, 16, 4)]
    out = _aes_encrypt_words(rk, nr, w[0], w[1], w[2], w[3])
    return b"".join(int(o).to_bytes(4, "big") for o in out)


def _aes_round1_consts(rk: np.ndarray, pad: bytes) -> np.ndarray:
    """Round-1 contributions of the constant block words 1..3 (pad bytes 4..15) plus round key 1."""
    p = (pad + bytes(16))[:16]
    s1, s2, s3 = (int.from_bytes(p[i:i + 4], "big") ^ int(rk[i // 4]) for i in (4, 8, 12))
    T0, T1, T2, T3 = ([int(v) for v in t] for t in (_TE0, _TE1, _TE2, _TE3))
    c0 = T1[(s1 >> 16) & 255] ^ T2[(s2 >> 8) & 255] ^ T3[s3 & 255] ^ int(rk[4])
    c1 = T0[s1 >> 24] ^ T1[(s2 >> 16) & 255] ^ T2[(s3 >> 8) & 255] ^ int(rk[5])
    c2 = T0[s2 >> 24] ^ T1[(s3 >> 16) & 255] ^ T3[s1 & 255] ^ int(rk[6])
    c3 = T0[s3 >> 24] ^ T2[(s1 >> 8) & 255] ^ T3[s2 & 255] ^ int(rk[7])
    return np.array([c0, c1, c2, c3], dtype=np.int64)


@nb.njit(cache=True, inline="always")
def _bswap32(v):
    return ((v & 0xFF) << 24) | ((v & 0xFF00) << 8) | ((v >> 8) & 0xFF00) | (v >> 24)


@nb.njit(cache=True, inline="always")
def _aes_round1(v, rk, c):
    s0 = _bswap32(v) ^ rk[0]
    return (_TE0[s0 >> 24] ^ c[0], _TE3[s0 & 255] ^ c[1], _TE2[(s0 >> 8) & 255] ^ c[2],
            _TE1[(s0 >> 16) & 255] ^ c[3])


@nb.njit(cache=True, inline="always")
def _aes_round(t0, t1, t2, t3, rk, k):
    return (_TE0[t0 >> 24] ^ _TE1[(t1 >> 16) & 255] ^ _TE2[(t2 >> 8) & 255] ^ _TE3[t3 & 255] ^ rk[k],
            _TE0[t1 >> 24] ^ _TE1[(t2 >> 16) & 255] ^ _TE2[(t3 >> 8) & 255] ^ _TE3[t0 & 255] ^ rk[k + 1],
            _TE0[t2 >> 24] ^ _TE1[(t3 >> 16) & 255] ^ _TE2[(t0 >> 8) & 255] ^ _TE3[t1 & 255] ^ rk[k + 2],
            _TE0[t3 >> 24] ^ _TE1[(t0 >> 16) & 255] ^ _TE2[(t1 >> 8) & 255] ^ _TE3[t2 & 255] ^ rk[k + 3])


@nb.njit(cache=True, inline="always")
def _aes_tail(t0, t1, t2, t3, rk, k):
    u0 = _TE0[t0 >> 24] ^ _TE1[(t1 >> 16) & 255] ^ _TE2[(t2 >> 8) & 255] ^ _TE3[t3 & 255] ^ rk[k]
    return (_SBOX[u0 >> 24] ^ (rk[k + 4] >> 24)) & 1


@nb.njit(cache=True, inline="always")
def _aes_lsb4(v0, v1, v2, v3, rk, nr, c):
    """Bit 0 of byte 0 of AES(LE32(v) || pad[4:16]) for four values v, interleaved.

    Only the work that bit needs: round 1 reuses the precomputed contributions
    ``c`` of the constant words, round nr-1 computes column 0 only and the last
    round byte 0 only.  Four independent chains overlap in the pipeline.
    """
    a0, a1, a2, a3 = _aes_round1(v0, rk, c)
    b0, b1, b2, b3 = _aes_round1(v1, rk, c)
    c0, c1, c2, c3 = _aes_round1(v2, rk, c)
    d0, d1, d2, d3 = _aes_round1(v3, rk, c)
    k = 8
    for _ in range(2, nr - 1):
        a0, a1, a2, a3 = _aes_round(a0, a1, a2, a3, rk, k)
        b0, b1, b2, b3 = _aes_round(b0, b1, b2, b3, rk, k)
        c0, c1, c2, c3 = _aes_round(c0, c1, c2, c3, rk, k)
        d0, d1, d2, d3 = _aes_round(d0, d1, d2, d3, rk, k)
        k += 4
    return (_aes_tail(a0, a1, a2, a3, rk, k), _aes_tail(b0, b1, b2, b3, rk, k),
            _aes_tail(c0, c1, c2, c3, rk, k), _aes_tail(d0, d1, d2, d3, rk, k))


# --------------------------------------------------------------------------- AES-NI
#
# Where the CPU has AES-NI, the same cipher runs on the aesenc/aesenclast
# instructions (LLVM intrinsics emitted from numba), about 7x faster than the
# T-tables above.  A 16-byte block is two little-endian int64 halves (byte 0 =
# lowest byte of ``lo``), round keys likewise.  ``_aesni_ok`` compiles and checks
# it against FIPS-197 once and falls back to the tables if anything fails (no
# AES-NI, non-x86, or NUMBA_CPU_NAME=generic builds without the feature).

def _make_aesni_round(llvm_name):
    @intrinsic
    def aes_round(typingctx, lo, hi, klo, khi):
        sig = types.UniTuple(types.int64, 2)(types.int64, types.int64, types.int64, types.int64)

        def codegen(context, builder, signature, args):
            i32 = ir.IntType(32)
            v2 = ir.VectorType(ir.IntType(64), 2)

            def pack(a, b):
                v = builder.insert_element(ir.Constant(v2, ir.Undefined), a, ir.Constant(i32, 0))
                return builder.insert_element(v, b, ir.Constant(i32, 1))

            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v2, [v2, v2]),
                                                llvm_name)
            r = builder.call(fn, [pack(args[0], args[1]), pack(args[2], args[3])])
            return context.make_tuple(builder, signature.return_type,
                                      [builder.extract_element(r, ir.Constant(i32, 0)),
                                       builder.extract_element(r, ir.Constant(i32, 1))])
        return sig, codegen
    return aes_round


_aesenc = _make_aesni_round("llvm.x86.aesni.aesenc")
_aesenclast = _make_aesni_round("llvm.x86.aesni.aesenclast")


@nb.njit(cache=True, inline="always")
def _aesni_encrypt(rkx, nr, lo, hi):
    lo ^= rkx[0]
    hi ^= rkx[1]
    for r in range(1, nr):
        lo, hi = _aesenc(lo, hi, rkx[2 * r], rkx[2 * r + 1])
    lo, hi = _aesenclast(lo, hi, rkx[2 * nr], rkx[2 * nr + 1])
    return lo, hi


@intrinsic
def _aesni_x4(typingctx, rkx, nr, a, b, c, d, hi):
    """AES-encrypt four blocks (low halves a..d, common high half ``hi``); their low halves.

    All rounds run in one piece of IR so the states stay in xmm registers;
    aesenc has a latency of several cycles but a throughput of one or more per
    cycle, so four independent blocks in flight cost little more than one.
    """
    if not (isinstance(rkx, types.Array) and rkx.dtype == types.int64 and rkx.ndim == 1):
        return None
    i64 = types.int64
    sig = types.UniTuple(i64, 4)(rkx, i64, i64, i64, i64, i64, i64)

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        v2 = ir.VectorType(ir.IntType(64), 2)
        mod = builder.module
        enc = cgutils.get_or_insert_function(mod, ir.FunctionType(v2, [v2, v2]), "llvm.x86.aesni.aesenc")
        last = cgutils.get_or_insert_function(mod, ir.FunctionType(v2, [v2, v2]),
                                              "llvm.x86.aesni.aesenclast")
        data = context.make_array(signature.args[0])(context, builder, value=args[0]).data
        base = builder.bitcast(data, v2.as_pointer())

        def round_key(r):
            return builder.load(builder.gep(base, [r], source_etype=v2), align=8, typ=v2)

        nrv = args[1]
        k0 = round_key(ir.Constant(ir.IntType(64), 0))
        ptrs = []
        for lo in args[2:6]:
            v = builder.insert_element(ir.Constant(v2, ir.Undefined), lo, ir.Constant(i32, 0))
            v = builder.insert_element(v, args[6], ir.Constant(i32, 1))
            ptrs.append(cgutils.alloca_once_value(builder, builder.xor(v, k0)))
        with cgutils.for_range_slice(builder, ir.Constant(ir.IntType(64), 1), nrv,
                                     ir.Constant(ir.IntType(64), 1)) as (r, _):
            k = round_key(r)
            for p in ptrs:
                builder.store(builder.call(enc, [builder.load(p), k]), p)
        k = round_key(nrv)
        outs = [builder.extract_element(builder.call(last, [builder.load(p), k]), ir.Constant(i32, 0))
                for p in ptrs]
        return context.make_tuple(builder, signature.return_type, outs)
    return sig, codegen


@nb.njit(cache=True)
def _aesni_encrypt_words(rkx, nr, lo, hi):
    return _aesni_encrypt(rkx, nr, lo, hi)


def _aesni_round_keys(rk: np.ndarray) -> np.ndarray:
    """Round-key words (big-endian) as little-endian int64 pairs, the layout of the xmm registers."""
    raw = b"".join(int(w).to_bytes(4, "big") for w in rk)
    return np.frombuffer(raw, dtype="<i8").astype(np.int64)


def _to_i64(b: bytes) -> int:
    return int.from_bytes(b, "little", signed=True)


def aesni_encrypt_block(key: bytes, block: bytes) -> bytes:
    """AES of one block on the AES-NI path (raises if unavailable); for tests."""
    rk, nr = _aes_key_schedule(bytes(key))
    lo, hi = _aesni_encrypt_words(_aesni_round_keys(rk), nr, _to_i64(block[:8]), _to_i64(block[8:16]))
    return (int(lo) & (2 ** 64 - 1)).to_bytes(8, "little") + (int(hi) & (2 ** 64 - 1)).to_bytes(8, "little")


def _target_has_aes() -> bool:
    """Whether numba compiles for an x86-64 target with the AES feature.

    Checked before compiling anything: LLVM aborts the process (it does not
    raise) when asked to select aesenc for a target without it, e.g. under
    NUMBA_CPU_NAME=generic.
    """
    try:
        import llvmlite.binding as ll
        from numba.core import config
        if not ll.get_process_triple().startswith(("x86_64", "amd64")):
            return False
        feats = config.CPU_FEATURES
        if feats is None:
            feats = ll.get_host_cpu_features().flatten()
        return "+aes" in feats.split(",")
    except Exception:
        return False


@functools.lru_cache(maxsize=1)
def _aesni_ok() -> bool:
    if os.environ.get("NETSENSE_ANON_AESNI", "1") == "0" or not _target_has_aes():
        return False
    try:
        return aesni_encrypt_block(bytes(range(16)), bytes.fromhex("00112233445566778899aabbccddeeff")) \
            == bytes.fromhex("69c4e0d86a7b0430d8cdb78070b4c55a")
    except Exception:   # no AES-NI / not x86 / compile failure: the T-tables serve
        return False


# --------------------------------------------------------------------------- Blowfish

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


def _blowfish_schedule(key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """OpenSSL ``BF_set_key``: any length 1..72 bytes (longer keys are cut to 72)."""
    key = bytes(key)[:72]
    if not key:
        raise ValueError("empty Blowfish key")
    return _bf_key_schedule(_blowfish_init(), np.frombuffer(key, dtype=np.uint8).astype(np.int64))


def blowfish_encrypt_block(key: bytes, block: bytes) -> bytes:
    """Encrypt one 8-byte block with Blowfish (ECB, big-endian halves as OpenSSL's BF_ecb_encrypt)."""
    if len(block) != 8:
        raise ValueError("Blowfish block must be 8 bytes")
    P, S = _blowfish_schedule(key)
    l, r = _bf_encrypt_words(P, S, int.from_bytes(block[:4], "big"), int.from_bytes(block[4:], "big"))
    return int(l).to_bytes(4, "big") + int(r).to_bytes(4, "big")


@nb.njit(cache=True, inline="always")
def _bf_lsb4(v0, v1, v2, v3, P, S, r0):
    """Bit 0 of byte 0 of Blowfish(LE32(v) || pad[4:8]) for four values v, interleaved."""
    l0 = _bswap32(v0) ^ P[0]
    l1 = _bswap32(v1) ^ P[0]
    l2 = _bswap32(v2) ^ P[0]
    l3 = _bswap32(v3) ^ P[0]
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


# --------------------------------------------------------------------------- scrambling

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
def _scramble_kernel(u, out, pass_bits, pad4, cipher, rk, nr, c, P, S, r0):
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
                b0, b1, b2, b3 = _aes_lsb4(v0, v1, v2, v3, rk, nr, c)
            else:
                b0, b1, b2, b3 = _bf_lsb4(v0, v1, v2, v3, P, S, r0)
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
def _scramble_kernel_aesni(u, out, pass_bits, pad4, rkx, nr, pad_lo, pad_hi):
    """``_scramble_kernel`` for AES on AES-NI; block = LE32(v) | pad_lo (pad bytes 4..7 << 32), pad_hi."""
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
            b0, b1, b2, b3 = _aesni_x4(
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


def _scramble_hash(u: np.ndarray, pass_bits: int, pad4: int, cipher: int, pad: bytes) -> np.ndarray:
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


# --------------------------------------------------------------------------- cache

@intrinsic
def _prefetch(typingctx, arr, idx):
    """Hint the cache line of ``arr[idx]`` into the CPU caches (llvm.prefetch; never faults)."""
    if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
        return None
    sig = types.void(arr, types.int64)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, value=args[0]).data
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0")
        ptr = builder.bitcast(builder.gep(data, [args[1]]), i8p)
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return sig, codegen


# Probes of addresses this far ahead are prefetched: a new address's slot is a
# random access into tables of many MiB, so misses would otherwise go one DRAM
# latency at a time.
_AHEAD = 16


@nb.njit(cache=True, inline="always")
def _slot(x, mask):
    h = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    h = (((h >> 16) ^ h) * 0x45D9F3B) & 0xFFFFFFFF
    return ((h >> 16) ^ h) & mask


@nb.njit(cache=True)
def _cache_lookup(addrs, out, miss, cur, old, use_old, count, cap):
    """out[j] for cached/pass-through addresses; positions of the rest go to ``miss``.

    A slot holds ``(address + 1) << 32 | result`` (0 = empty; class E
    addresses, the only ones where +1 could overflow, are never stored:
    cryptopANT passes them unchanged).  Linear probing, load <= 1/2.  Hits in
    the old generation are promoted while the current one has room.
    """
    mask = cur.size - 1
    n_miss = 0
    n = addrs.size
    for j in range(n):
        if j + _AHEAD < n:
            hp = _slot(np.int64(addrs[j + _AHEAD]), mask)
            _prefetch(cur, hp)
            if use_old:
                _prefetch(old, hp)
        x = np.int64(addrs[j])
        if x >= 0xF0000000:
            out[j] = x
            continue
        kx = x + 1
        h = _slot(x, mask)
        found = False
        while True:
            e = np.int64(cur[h])
            if ((e >> 32) & 0xFFFFFFFF) == kx:
                out[j] = e & 0xFFFFFFFF
                found = True
                break
            if e == 0:
                break
            h = (h + 1) & mask
        if found:
            continue
        h2 = _slot(x, mask)
        while use_old:
            e = np.int64(old[h2])
            if ((e >> 32) & 0xFFFFFFFF) == kx:
                out[j] = e & 0xFFFFFFFF
                found = True
                if count[0] < cap:     # promote into the empty slot the probe above ended on
                    cur[h] = e
                    count[0] += 1
                break
            if e == 0:
                break
            h2 = (h2 + 1) & mask
        if not found:
            miss[n_miss] = j
            n_miss += 1
    return n_miss


@nb.njit(cache=True)
def _cache_fill(addrs, miss, out, cur):
    """out[miss] from the current generation; returns how many were not there."""
    mask = cur.size - 1
    absent = 0
    n = miss.size
    for q in range(n):
        if q + _AHEAD < n:
            _prefetch(cur, _slot(np.int64(addrs[miss[q + _AHEAD]]), mask))
        j = miss[q]
        x = np.int64(addrs[j])
        kx = x + 1
        h = _slot(x, mask)
        while True:
            e = np.int64(cur[h])
            if ((e >> 32) & 0xFFFFFFFF) == kx:
                out[j] = e & 0xFFFFFFFF
                break
            if e == 0:
                absent += 1
                break
            h = (h + 1) & mask
    return absent


@nb.njit(cache=True)
def _cache_insert(u, res, cur, count, cap):
    mask = cur.size - 1
    n = u.size
    for j in range(n):
        if j + _AHEAD < n:
            _prefetch(cur, _slot(np.int64(u[j + _AHEAD]), mask))
        x = np.int64(u[j])
        if x >= 0xF0000000:
            continue
        kx = x + 1
        h = _slot(x, mask)
        while True:
            e = np.int64(cur[h])
            if ((e >> 32) & 0xFFFFFFFF) == kx:
                break
            if e == 0:
                if count[0] >= cap:
                    return
                cur[h] = (kx << 32) | np.int64(res[j])
                count[0] += 1
                break
            h = (h + 1) & mask


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """np.unique(a) for 1-D a; np.unique itself is many times slower (numpy 2.x, uint32)."""
    s = np.sort(a)
    if s.size < 2:
        return s
    keep = np.empty(s.size, dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def _table(slots: int) -> np.ndarray:
    """A zeroed int64 hash table with its pages touched now rather than during the first windows.

    (Transparent huge pages were tried: with the probes prefetched they gained
    little, and the first huge-page allocation of a process sometimes took 100+ ms.)
    """
    t = np.zeros(slots, dtype=np.int64)
    t.fill(0)
    return t


# --------------------------------------------------------------------------- API

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
        if state.c4 not in _NAMES:
            raise KeyFileError("unsupported IPv4 cipher code %02x" % state.c4)
        self.pass_bits = int(pass_bits)
        self.cipher = _NAMES[state.c4]
        self._state = state
        pad = (bytes(state.pad[:MAX_BLK_LENGTH]) + bytes(MAX_BLK_LENGTH))[:MAX_BLK_LENGTH]
        self._pad = pad
        self._pad4 = int.from_bytes(pad[:4], "little")
        dummy = np.zeros(1, dtype=np.int64)
        self._rk, self._nr, self._c, self._P, self._S, self._r0 = dummy, 0, dummy, dummy, dummy, 0
        if state.c4 == SCRAMBLE_AES:
            self._rk, self._nr = _aes_key_schedule(state.key)
            self._c = _aes_round1_consts(self._rk, pad)
            self._rkx = _aesni_round_keys(self._rk)
            self._pad_lo = _to_i64(bytes(4) + pad[4:8])
            self._pad_hi = _to_i64(pad[8:16])
        elif state.c4 == SCRAMBLE_BLOWFISH:
            self._P, self._S = _blowfish_schedule(state.key)
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
        self.aesni = state.c4 == SCRAMBLE_AES and (_aesni_ok() if aesni is None else bool(aesni))
        if self.aesni and not _aesni_ok():
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
            _create_keyfile(path, cipher)
            data = Path(path).read_bytes()
        return cls(parse_keyfile(data), pass_bits=pass_bits, cache_entries=cache_entries, aesni=aesni)

    # ------------------------------------------------------------------ core

    def _compute(self, u: np.ndarray) -> np.ndarray:
        """Uncached scramble of uint32 ``u`` (sorted gives the most prefix sharing)."""
        u = np.ascontiguousarray(u, dtype=np.uint32)
        if self._state.c4 in (SCRAMBLE_MD5, SCRAMBLE_SHA1):
            return _scramble_hash(u, self.pass_bits, self._pad4, self._state.c4, self._pad)
        out = np.empty(u.size, dtype=np.uint32)
        if self.aesni:
            self.blocks += _scramble_kernel_aesni(u, out, self.pass_bits, self._pad4, self._rkx,
                                                  self._nr, self._pad_lo, self._pad_hi)
            return out
        self.blocks += _scramble_kernel(u, out, self.pass_bits, self._pad4, self._state.c4,
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
                self._tables = (_table(self._slots), _table(self._slots))
            cur, old = self._tables
            out = np.empty(flat.size, dtype=np.uint32)
            miss = np.empty(flat.size, dtype=np.int64)
            n_miss = _cache_lookup(flat, out, miss, cur, old, self._old_used, self._count,
                                   self.cache_entries)
            if n_miss:
                miss = miss[:n_miss]
                u = _sorted_unique(flat[miss])    # sorted, for prefix sharing
                res = self._compute(u)
                if self._count[0] + u.size > self.cache_entries:
                    self._rotate()
                _cache_insert(u, res, self._tables[0], self._count, self.cache_entries)
                if _cache_fill(flat, miss, out, self._tables[0]):   # more than the cache holds
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
