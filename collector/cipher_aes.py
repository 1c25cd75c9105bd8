"""AES for cryptopANT's per-bit pad, in numba: portable T-tables and an AES-NI path.

cryptopANT's ``03`` key type spends one AES block per anonymized address bit,
so this cipher is the hot loop of anonymization.  It is implemented here, not
linked from OpenSSL, so there is no C dependency and the block kernels can be
inlined into the numba scramble loops (``scramble.py``); it is validated against
FIPS-197 in ``tests/test_anonymize.py``.

* **T-tables** (derived from GF(2^8) at import, not pasted): ``aes_encrypt_block``
  is the whole cipher (tests and the literal reference transcription);
  ``aes_lsb4`` computes only what the one output bit cryptopANT uses needs,
  for four blocks interleaved so that four independent chains overlap in the
  pipeline.
* **AES-NI**: where the CPU has it, the same cipher on aesenc/aesenclast (LLVM
  intrinsics emitted from numba), about 7x faster; ``aesni_x4`` keeps four
  blocks in xmm registers through all rounds.  ``aesni_ok`` compiles and checks
  it against FIPS-197 once and the tables serve if anything fails
  (``NETSENSE_ANON_AESNI=0`` forces the tables).
"""
from __future__ import annotations

import functools
import os

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = [
    "aes_encrypt_block", "aesni_encrypt_block", "aes_key_schedule", "aes_round1_consts", "aes_lsb4",
    "aesni_ok", "aesni_round_keys", "aesni_x4", "bswap32", "to_i64",
]

_M32 = 0xFFFFFFFF


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


def aes_key_schedule(key: bytes) -> tuple[np.ndarray, int]:
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
    rk, nr = aes_key_schedule(bytes(key))
    w = [int.from_bytes(block[i:i + 4], "big") for i in range(0, 16, 4)]
    out = _aes_encrypt_words(rk, nr, w[0], w[1], w[2], w[3])
    return b"".join(int(o).to_bytes(4, "big") for o in out)


def aes_round1_consts(rk: np.ndarray, pad: bytes) -> np.ndarray:
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
def bswap32(v):
    return ((v & 0xFF) << 24) | ((v & 0xFF00) << 8) | ((v >> 8) & 0xFF00) | (v >> 24)


@nb.njit(cache=True, inline="always")
def _aes_round1(v, rk, c):
    s0 = bswap32(v) ^ rk[0]
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
def aes_lsb4(v0, v1, v2, v3, rk, nr, c):
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
# lowest byte of ``lo``), round keys likewise.  ``aesni_ok`` compiles and checks
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
def aesni_x4(typingctx, rkx, nr, a, b, c, d, hi):
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


def aesni_round_keys(rk: np.ndarray) -> np.ndarray:
    """Round-key words (big-endian) as little-endian int64 pairs, the layout of the xmm registers."""
    raw = b"".join(int(w).to_bytes(4, "big") for w in rk)
    return np.frombuffer(raw, dtype="<i8").astype(np.int64)


def to_i64(b: bytes) -> int:
    return int.from_bytes(b, "little", signed=True)


def aesni_encrypt_block(key: bytes, block: bytes) -> bytes:
    """AES of one block on the AES-NI path (raises if unavailable); for tests."""
    rk, nr = aes_key_schedule(bytes(key))
    lo, hi = _aesni_encrypt_words(aesni_round_keys(rk), nr, to_i64(block[:8]), to_i64(block[8:16]))
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
def aesni_ok() -> bool:
    if os.environ.get("NETSENSE_ANON_AESNI", "1") == "0" or not _target_has_aes():
        return False
    try:
        return aesni_encrypt_block(bytes(range(16)), bytes.fromhex("00112233445566778899aabbccddeeff")) \
            == bytes.fromhex("69c4e0d86a7b0430d8cdb78070b4c55a")
    except Exception:   # no AES-NI / not x86 / compile failure: the T-tables serve
        return False
