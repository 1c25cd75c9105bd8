"""collector.anonymize and its parts: cryptopANT-compatible prefix-preserving IPv4 anonymization.

Where the known-answer vectors come from:

* FIPS-197 (AES, appendices B and C) and Eric Young's published Blowfish
  vectors (also checked against OpenSSL's BF_ecb_encrypt when written).
* ``UPSTREAM_*``: the first 24 lines of cryptopANT's own regression files
  ``test/ip4s``, ``test/ip4s.anon.aes`` and ``test/ip4s.anon.blowfish`` with
  its public test keys ``test/keyfile.aes`` / ``test/keyfile.blowfish``
  (github.com/DNS-OARC/cryptopANT; its ``make test`` runs ``scramble_ips`` with
  the default pass4 = 0).
* ``C_VECTORS``: produced by compiling cryptopANT's ``src/cryptopANT.c`` (IPv4 path,
  transcribed from the upstream source, with its /24 cache) against OpenSSL 3 with a
  ``scramble_ips``-like driver, on the same public test keys, for pass_bits 0, 8,
  16, 24 and all four key types.  That build reproduced the upstream files
  above exactly.  The C source is not part of this repository.
"""
from __future__ import annotations

import ipaddress
import os
import re
import stat
import threading

import numpy as np
import pytest

from netsense.collector import cipher_aes, cipher_blowfish, scramble
from netsense.collector.anonymize import Anonymizer
from netsense.collector.cryptopant_keys import (KeyFileError, KeyState, format_keyfile, generate_keystate,
                                                parse_keyfile)
from netsense.collector.scramble import scramble_ip4_literal

# cryptopANT's public test keys (test/keyfile.*): published with its source, not secrets.
KEYFILES = {
    "aes": "03:03:86bdbaa5d5a46ef72354297d42eb4e66:"
           "48ffc62219372bbf05a28f65d25ccacb1c697e8fd0b108f3fd216ecd765647d1::"
           "f0732d8b37ae4c666b4a1a011cf10e79\n",
    "blowfish": "02:02:fc308dfe0b0e1013ad495a22dcc99fdb:"
                "5edf984b83e96d7b4aec7e02dd3906a3757ec37432941b58b3314d2c674d7899::"
                "e969424ec03a2086e8046bb344d9bbb6\n",
    "md5": "01:01:1debb169b5e8d129069d7ce93f5f0260:"
           "796dfe4ffa1b3ecda108a4a2903790fa0c7e21558969f3c3f63eca417fccf3b1::"
           "09686ecc8d82dae05150015263104f7c\n",
    "sha1": "04:04:55d8f320632073391140940048ebabcf:"
            "b26b1606c8efd2f8a4aa6e9d0af62cfb1196e6f655133197a6f51588ae336636::"
            "81cc51d43231d6cdb6b59904b6aa481e\n",
}

UPSTREAM_IN = """207.88.68.228 217.6.219.66 219.15.149.24 82.144.225.142 199.72.26.1 65.39.187.130
136.142.151.29 68.22.151.166 67.112.221.239 211.28.176.89 216.90.28.106 24.108.122.20 217.227.18.155
198.92.211.138 193.226.2.64 211.239.31.18 208.139.196.71 131.111.109.24 62.177.202.250 4.46.99.113
61.214.234.133 212.89.18.1 194.98.8.100 195.175.30.123"""
UPSTREAM_OUT = {
    "aes": """217.247.204.108 199.127.191.144 197.230.230.72 79.234.36.74 211.146.19.181 92.48.5.134
136.183.148.249 88.14.172.180 94.67.11.195 200.195.213.177 198.206.19.183 19.210.248.39 199.196.57.237
210.150.203.134 212.212.62.151 200.119.42.253 203.125.167.230 134.100.68.4 60.27.217.44 2.76.240.101
63.13.88.77 206.100.26.122 214.116.60.8 215.113.84.91""",
    "blowfish": """221.182.123.194 192.82.69.135 194.163.191.5 32.183.68.143 210.131.56.139 61.230.90.69
153.208.187.115 56.235.48.108 63.165.192.220 204.48.104.133 193.86.131.176 110.7.89.221 192.201.196.187
211.162.139.88 214.129.44.17 204.185.17.154 206.79.30.242 147.84.7.224 66.9.17.159 119.197.4.96
64.69.153.58 200.131.97.128 213.127.116.48 212.66.167.243""",
}

C_IN = """0.0.0.0 0.0.0.1 1.2.3.4 10.0.0.1 10.0.0.2 10.0.1.1 10.255.255.255 18.26.4.9 63.255.255.255
64.0.0.0 127.0.0.1 128.0.0.1 130.79.68.128 172.16.5.4 191.255.255.255 192.0.2.1 192.168.1.1
192.168.1.200 203.0.113.77 223.255.255.255 224.0.0.251 239.255.255.250 240.0.0.1 255.255.255.255"""
C_VECTORS = {
    ("aes", 0): """5.19.78.187 5.19.78.186 4.230.134.108 13.242.197.21 13.242.197.22 13.242.196.6
13.83.74.37 25.113.207.34 61.15.179.199 93.129.209.200 102.27.248.66 132.23.111.145 135.165.201.15
167.250.97.0 178.154.179.30 213.157.40.90 213.10.196.209 213.10.196.111 223.93.68.193 192.69.148.206
236.135.198.4 227.196.54.19 240.0.0.1 255.255.255.255""",
    ("aes", 8): """0.19.78.187 0.19.78.186 1.230.134.108 10.242.197.21 10.242.197.22 10.242.196.6
10.83.74.37 18.113.207.34 63.15.179.199 64.129.209.200 127.27.248.66 128.23.111.145 130.165.201.15
172.250.97.0 191.154.179.30 192.157.40.90 192.10.196.209 192.10.196.111 203.93.68.193 223.69.148.206
224.135.198.4 239.196.54.19 240.0.0.1 255.255.255.255""",
    ("aes", 16): """0.0.78.187 0.0.78.186 1.2.134.108 10.0.197.21 10.0.197.22 10.0.196.6 10.255.74.37
18.26.207.34 63.255.179.199 64.0.209.200 127.0.248.66 128.0.111.145 130.79.201.15 172.16.97.0
191.255.179.30 192.0.40.90 192.168.196.209 192.168.196.111 203.0.68.193 223.255.148.206 224.0.198.4
239.255.54.19 240.0.0.1 255.255.255.255""",
    ("aes", 24): """0.0.0.187 0.0.0.186 1.2.3.108 10.0.0.21 10.0.0.22 10.0.1.6 10.255.255.37 18.26.4.34
63.255.255.199 64.0.0.200 127.0.0.66 128.0.0.145 130.79.68.15 172.16.5.0 191.255.255.30 192.0.2.90
192.168.1.209 192.168.1.111 203.0.113.193 223.255.255.206 224.0.0.4 239.255.255.19 240.0.0.1
255.255.255.255""",
    ("blowfish", 0): """115.166.11.211 115.166.11.210 114.39.77.191 122.186.144.167 122.186.144.165
122.186.145.153 122.98.152.212 97.150.3.119 67.31.53.30 60.42.124.47 16.80.79.179 145.104.251.96
146.224.118.101 170.161.57.121 181.172.177.231 215.185.203.126 215.39.87.77 215.39.87.233 216.33.8.55
199.111.166.176 228.109.212.51 235.13.150.85 240.0.0.1 255.255.255.255""",
    ("blowfish", 16): """0.0.11.211 0.0.11.210 1.2.77.191 10.0.144.167 10.0.144.165 10.0.145.153
10.255.152.212 18.26.3.119 63.255.53.30 64.0.124.47 127.0.79.179 128.0.251.96 130.79.118.101
172.16.57.121 191.255.177.231 192.0.203.126 192.168.87.77 192.168.87.233 203.0.8.55 223.255.166.176
224.0.212.51 239.255.150.85 240.0.0.1 255.255.255.255""",
    ("md5", 0): """35.138.71.0 35.138.71.1 34.178.156.255 40.239.70.188 40.239.70.191 40.239.71.164
40.58.165.59 62.16.177.65 6.167.101.8 125.48.61.69 77.18.66.146 141.10.210.6 142.207.38.181
174.99.163.25 190.89.55.211 195.212.59.54 195.48.100.5 195.48.100.191 207.172.252.48 209.216.127.99
238.71.120.180 228.238.12.15 240.0.0.1 255.255.255.255""",
    ("md5", 16): """0.0.71.0 0.0.71.1 1.2.156.255 10.0.70.188 10.0.70.191 10.0.71.164 10.255.165.59
18.26.177.65 63.255.101.8 64.0.61.69 127.0.66.146 128.0.210.6 130.79.38.181 172.16.163.25
191.255.55.211 192.0.59.54 192.168.100.5 192.168.100.191 203.0.252.48 223.255.127.99 224.0.120.180
239.255.12.15 240.0.0.1 255.255.255.255""",
    ("sha1", 0): """70.119.221.159 70.119.221.158 71.247.55.7 78.79.48.254 78.79.48.252 78.79.49.1
78.149.10.238 81.79.51.81 108.238.177.32 9.2.208.159 49.116.74.222 177.64.227.126 178.114.47.0
152.142.27.39 129.39.41.87 211.242.248.158 211.105.168.126 211.105.168.176 223.138.67.42 193.66.72.45
228.91.200.76 233.64.167.244 240.0.0.1 255.255.255.255""",
    ("sha1", 16): """0.0.221.159 0.0.221.158 1.2.55.7 10.0.48.254 10.0.48.252 10.0.49.1 10.255.10.238
18.26.51.81 63.255.177.32 64.0.208.159 127.0.74.222 128.0.227.126 130.79.47.0 172.16.27.39
191.255.41.87 192.0.248.158 192.168.168.126 192.168.168.176 203.0.67.42 223.255.72.45 224.0.200.76
239.255.167.244 240.0.0.1 255.255.255.255""",
}

AESNI = cipher_aes.aesni_ok()
PATHS = [pytest.param(False, id="tables"),
         pytest.param(True, id="aesni", marks=pytest.mark.skipif(not AESNI, reason="no AES-NI"))]


def ips(text: str) -> np.ndarray:
    return np.array([int(ipaddress.IPv4Address(s)) for s in text.split()], dtype=np.uint32)


def keyfile(tmp_path, name: str):
    p = tmp_path / ("keyfile." + name)
    p.write_text(KEYFILES[name])
    return p


def anon(tmp_path, name="aes", pass_bits=16, aesni=None, **kw) -> Anonymizer:
    return Anonymizer.from_keyfile(keyfile(tmp_path, name), pass_bits=pass_bits, create=False,
                                   aesni=aesni, **kw)


def common_prefix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x = (a ^ b).astype(np.uint64)
    n = np.zeros(x.shape, dtype=np.int64)
    for bit in range(31, -1, -1):   # count leading equal bits
        still = (n == 31 - bit) & ((x >> np.uint64(bit)) & np.uint64(1) == 0)
        n += still
    return n


# --------------------------------------------------------------------------- block ciphers

FIPS197 = [  # (key, plaintext, ciphertext): FIPS-197 appendix C.1-C.3 and appendix B
    ("000102030405060708090a0b0c0d0e0f", "00112233445566778899aabbccddeeff",
     "69c4e0d86a7b0430d8cdb78070b4c55a"),
    ("000102030405060708090a0b0c0d0e0f1011121314151617", "00112233445566778899aabbccddeeff",
     "dda97ca4864cdfe06eaf70a0ec0d7191"),
    ("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
     "00112233445566778899aabbccddeeff", "8ea2b7ca516745bfeafc49904b496089"),
    ("2b7e151628aed2a6abf7158809cf4f3c", "3243f6a8885a308d313198a2e0370734",
     "3925841d02dc09fbdc118597196a0b32"),
]


@pytest.mark.parametrize("key,pt,ct", FIPS197)
def test_aes_fips197(key, pt, ct):
    assert cipher_aes.aes_encrypt_block(bytes.fromhex(key), bytes.fromhex(pt)).hex() == ct
    if AESNI:
        assert cipher_aes.aesni_encrypt_block(bytes.fromhex(key), bytes.fromhex(pt)).hex() == ct


def test_aes_paths_agree_on_random_blocks():
    if not AESNI:
        pytest.skip("no AES-NI")
    rng = np.random.default_rng(5)
    for n in (16, 24, 32):
        for _ in range(50):
            key, pt = rng.bytes(n), rng.bytes(16)
            assert cipher_aes.aes_encrypt_block(key, pt) == cipher_aes.aesni_encrypt_block(key, pt)


BLOWFISH = [  # (key, plaintext, ciphertext): Eric Young's Blowfish test vectors
    ("0000000000000000", "0000000000000000", "4ef997456198dd78"),
    ("ffffffffffffffff", "ffffffffffffffff", "51866fd5b85ecb8a"),
    ("3000000000000000", "1000000000000001", "7d856f9a613063f2"),
    ("1111111111111111", "1111111111111111", "2466dd878b963c9d"),
    ("0123456789abcdef", "1111111111111111", "61f9c3802281b096"),
    ("fedcba9876543210", "0123456789abcdef", "0aceab0fc6a0a28d"),
    ("7ca110454a1a6e57", "01a1d6d039776742", "59c68245eb05282b"),
    ("f0", "fedcba9876543210", "f9ad597c49db005e"),                       # 1-byte key
    ("f0e1d2c3b4a5968778695a4b3c2d1e0f0011223344556677", "fedcba9876543210",
     "05044b62fa52d080"),                                                   # 24-byte key
]


@pytest.mark.parametrize("key,pt,ct", BLOWFISH)
def test_blowfish_vectors(key, pt, ct):
    assert cipher_blowfish.blowfish_encrypt_block(bytes.fromhex(key), bytes.fromhex(pt)).hex() == ct


def test_blowfish_init_is_pi():
    w = cipher_blowfish._blowfish_init()
    assert [hex(int(v)) for v in (w[0], w[1], w[17], w[18], w[-1])] == \
        ["0x243f6a88", "0x85a308d3", "0x8979fb1b", "0xd1310ba6", "0x3ac372e6"]


# --------------------------------------------------------------------------- compatibility

@pytest.mark.parametrize("aesni", PATHS)
@pytest.mark.parametrize("cipher", ["aes", "blowfish"])
def test_cryptopant_upstream_regression_vectors(tmp_path, cipher, aesni):
    an = anon(tmp_path, cipher, pass_bits=0, aesni=aesni)
    assert an.anonymize(ips(UPSTREAM_IN)).tolist() == ips(UPSTREAM_OUT[cipher]).tolist()


C_CASES = [pytest.param(c, p, None, id=f"{c}-{p}") for c, p in sorted(C_VECTORS) if c != "aes"] + [
    pytest.param("aes", p, q.values[0], id=f"aes-{p}-{q.id}", marks=q.marks)
    for p in (0, 8, 16, 24) for q in PATHS]


@pytest.mark.parametrize("cipher,pass_bits,aesni", C_CASES)
def test_cryptopant_c_vectors(tmp_path, cipher, pass_bits, aesni):
    an = anon(tmp_path, cipher, pass_bits=pass_bits, aesni=aesni)
    x = ips(C_IN)
    want = ips(C_VECTORS[cipher, pass_bits])
    assert an.anonymize(x).tolist() == want.tolist()
    assert an.anonymize_uncached(x[::-1]).tolist() == want[::-1].tolist()
    state = parse_keyfile(KEYFILES[cipher].encode())
    assert [scramble_ip4_literal(state, int(v), pass_bits) for v in x] == want.tolist()


@pytest.mark.parametrize("cipher,aesni", [pytest.param("blowfish", None, id="blowfish")] + [
    pytest.param("aes", q.values[0], id=f"aes-{q.id}", marks=q.marks) for q in PATHS])
def test_fast_kernel_matches_literal_transcription(tmp_path, cipher, aesni):
    rng = np.random.default_rng(11)
    x = np.concatenate([rng.integers(0, 2 ** 32, 60, dtype=np.uint64).astype(np.uint32),
                        (0xC0A80000 + rng.integers(0, 300, 20)).astype(np.uint32)])  # shared prefixes
    state = parse_keyfile(KEYFILES[cipher].encode())
    for pass_bits in (0, 3, 16, 29, 31, 32):
        an = Anonymizer(state, pass_bits=pass_bits, aesni=aesni)
        want = [scramble_ip4_literal(state, int(v), pass_bits) for v in x]
        assert an.anonymize(x).tolist() == want, pass_bits


def test_other_key_sizes_and_short_pad_match_literal():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 2 ** 32, 40, dtype=np.uint64).astype(np.uint32)
    for c4, klen, plen in [(3, 24, 32), (3, 32, 32), (3, 16, 6), (2, 7, 32), (2, 32, 3)]:
        state = KeyState(c4, c4, key=rng.bytes(klen), pad=rng.bytes(plen))
        want = [scramble_ip4_literal(state, int(v), 16) for v in x]
        for aesni in ([False, True] if AESNI and c4 == 3 else [None]):
            assert Anonymizer(state, 16, aesni=aesni).anonymize(x).tolist() == want


# --------------------------------------------------------------------------- properties

@pytest.mark.parametrize("aesni", PATHS)
@pytest.mark.parametrize("pass_bits", [0, 8, 16])
def test_prefix_preservation(tmp_path, pass_bits, aesni):
    an = anon(tmp_path, "aes", pass_bits=pass_bits, aesni=aesni)
    rng = np.random.default_rng(pass_bits)
    a = rng.integers(0, 0xF0000000, 20000, dtype=np.uint64).astype(np.uint32)
    # partners sharing a prefix of every length 0..32 with a
    k = rng.integers(0, 33, a.size)
    flip = np.where(k < 32, np.uint64(1) << (31 - np.minimum(k, 31)).astype(np.uint64), 0)
    below = np.where(k < 31, (np.uint64(1) << (31 - np.minimum(k, 31)).astype(np.uint64)) - 1, 0)
    b = ((a.astype(np.uint64) ^ flip) ^ (rng.integers(0, 2 ** 32, a.size, dtype=np.uint64) & below))
    b = b.astype(np.uint32)
    b = np.where(b >= 0xF0000000, a, b).astype(np.uint32)   # class E is passed through whole
    ea, eb = an.anonymize(a), an.anonymize(b)
    assert (common_prefix(ea, eb) == common_prefix(a, b)).all()
    top = np.uint32((0xFFFFFFFF << (32 - pass_bits)) & 0xFFFFFFFF) if pass_bits else np.uint32(0)
    assert ((ea & top) == (a & top)).all()
    # cryptopANT also keeps the classful prefix (1, 2, 3, 4 bits for classes A-D)
    cls = scramble._CLASS_BITS[a >> 28]
    keep = ((np.uint64(0xFFFFFFFF) << (32 - cls).astype(np.uint64)) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    assert ((ea & keep) == (a & keep)).all()
    # and changes something below the passed bits for nearly every address
    assert (ea != a).mean() > 0.99


def test_class_e_and_pass_32_are_identity(tmp_path):
    an = anon(tmp_path, "aes", pass_bits=16)
    e = np.array([0xF0000000, 0xF1234567, 0xFFFFFFFE, 0xFFFFFFFF], dtype=np.uint32)
    assert an.anonymize(e).tolist() == e.tolist()
    x = np.arange(0, 2 ** 32, 2 ** 20, dtype=np.uint64).astype(np.uint32)
    assert anon(tmp_path, "aes", pass_bits=32).anonymize(x).tolist() == x.tolist()


@pytest.mark.parametrize("cipher", ["aes", "blowfish"])
def test_bijective(tmp_path, cipher):
    an = anon(tmp_path, cipher, pass_bits=16)
    rng = np.random.default_rng(3)
    a = np.unique(rng.integers(0, 2 ** 32, 100_000, dtype=np.uint64).astype(np.uint32))
    assert np.unique(an.anonymize(a)).size == a.size
    # exhaustively: with 16 bits passed, a /16 is permuted onto itself
    net = (np.uint32(0x0A010000) + np.arange(1 << 16, dtype=np.uint32)).astype(np.uint32)
    out = an.anonymize(net)
    assert np.array_equal(np.sort(out), net)
    assert (out != net).mean() > 0.99
    assert an.deanonymize(out).tolist() == net.tolist()


def test_deanonymize_inverts(tmp_path):
    for pass_bits in (0, 16):
        an = anon(tmp_path, "aes", pass_bits=pass_bits)
        rng = np.random.default_rng(pass_bits)
        a = rng.integers(0, 2 ** 32, 5000, dtype=np.uint64).astype(np.uint32)
        assert an.deanonymize(an.anonymize(a)).tolist() == a.tolist()
    # cryptopANT's own -r mode on its regression file
    assert anon(tmp_path, "aes", 0).deanonymize(ips(UPSTREAM_OUT["aes"])).tolist() == \
        ips(UPSTREAM_IN).tolist()


# --------------------------------------------------------------------------- cache and API

def test_cache_hits_compute_nothing_and_agree(tmp_path):
    an = anon(tmp_path, "aes", pass_bits=16)
    rng = np.random.default_rng(4)
    a = rng.integers(0, 2 ** 32, 50_000, dtype=np.uint64).astype(np.uint32)
    first = an.anonymize(a)
    blocks = an.blocks
    assert blocks > 0
    assert an.anonymize(a[::-1]).tolist() == first[::-1].tolist()
    assert an.blocks == blocks                       # all served from the cache
    assert an.anonymize_uncached(a).tolist() == first.tolist()


def test_small_cache_rotates_and_stays_exact(tmp_path):
    an = anon(tmp_path, "aes", pass_bits=16, cache_entries=1000)
    ref = anon(tmp_path, "aes", pass_bits=16)
    rng = np.random.default_rng(6)
    pool = rng.integers(0, 2 ** 32, 5000, dtype=np.uint64).astype(np.uint32)
    for _ in range(20):
        w = pool[(rng.zipf(1.3, 3000) - 1) % pool.size]
        assert an.anonymize(w).tolist() == ref.anonymize_uncached(w).tolist()
        assert an.cache_stats()["entries"] <= 1000


def test_shapes_dtypes_and_empty(tmp_path):
    an = anon(tmp_path, "aes")
    a = np.array([[167772161, 3232235777], [1, 4026531840]], dtype=np.int64)
    out = an.anonymize(a)
    assert out.shape == (2, 2) and out.dtype == np.uint32
    assert out.ravel().tolist() == an.anonymize(a.ravel().astype(np.uint32)).tolist()
    assert an.anonymize(np.array([], dtype=np.uint32)).shape == (0,)
    with pytest.raises(ValueError):
        an.anonymize(np.array([2 ** 32], dtype=np.int64))
    with pytest.raises(ValueError):
        an.anonymize(np.array([-1], dtype=np.int64))
    with pytest.raises(ValueError):
        Anonymizer(parse_keyfile(KEYFILES["aes"].encode()), pass_bits=33)


# --------------------------------------------------------------------------- key files

KEYLINE = re.compile(r"^03:03:[0-9a-f]{32}:[0-9a-f]{64}::[0-9a-f]{32}\n$")


def test_keyfile_created_0600_and_reread_identically(tmp_path):
    path = tmp_path / "anon.key"
    an = Anonymizer.from_keyfile(path, pass_bits=16)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    assert KEYLINE.match(text)
    assert not [p for p in os.listdir(tmp_path) if p != "anon.key"]    # no temp files left
    again = Anonymizer.from_keyfile(path, pass_bits=16)
    assert path.read_text() == text                                     # not regenerated
    assert again.fingerprint == an.fingerprint
    rng = np.random.default_rng(9)
    a = rng.integers(0, 2 ** 32, 10_000, dtype=np.uint64).astype(np.uint32)
    assert again.anonymize(a).tolist() == an.anonymize(a).tolist()
    assert format_keyfile(parse_keyfile(text.encode())).decode() == text


def test_keyfile_mode_ignores_umask(tmp_path):
    old = os.umask(0)
    try:
        Anonymizer.from_keyfile(tmp_path / "k", cipher="blowfish")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "k").st_mode) == 0o600
    assert (tmp_path / "k").read_text().startswith("02:02:")


def test_keyfile_absent_without_create(tmp_path):
    with pytest.raises(FileNotFoundError):
        Anonymizer.from_keyfile(tmp_path / "missing", create=False)
    assert not (tmp_path / "missing").exists()


def test_concurrent_creation_yields_one_key(tmp_path):
    path = tmp_path / "k"
    prints, errors = [], []

    def make():
        try:
            prints.append(Anonymizer.from_keyfile(path).fingerprint)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(prints)) == 1
    assert Anonymizer.from_keyfile(path).fingerprint == prints[0]
    assert os.listdir(tmp_path) == ["k"]


def test_keyfile_parsing_like_cryptopant():
    s = parse_keyfile(KEYFILES["aes"].upper().encode())      # hex digits in either case
    assert s == parse_keyfile(KEYFILES["aes"].encode())
    assert s.c4 == 3 and len(s.key) == 16 and len(s.pad) == 32 and s.mac == b"" and len(s.iv) == 16
    assert parse_keyfile(b"03:03:" + b"11" * 16 + b":" + b"22" * 32).iv == b""   # fields may end at EOF
    for bad in [b"3:03:" + b"11" * 16 + b":" + b"22" * 32,                       # odd digit count
                b"0303:" + b"11" * 16,                                            # c4 too long
                b"03:03:" + b"11" * 33 + b":" + b"22" * 32,                       # key > 32 bytes
                b"03:03:" + b"11" * 15 + b":" + b"22" * 32,                       # AES key length
                b"07:07:" + b"11" * 16 + b":" + b"22" * 32,                       # unknown cipher
                b"", b"\n"]:
        with pytest.raises(KeyFileError):
            parse_keyfile(bad)


def test_fingerprint_identifies_mapping_not_key(tmp_path):
    an = anon(tmp_path, "aes", pass_bits=16)
    assert re.fullmatch(r"cryptopant-aes:[0-9a-f]{16}", an.fingerprint)
    state = parse_keyfile(KEYFILES["aes"].encode())
    for secret in (state.key.hex(), state.pad.hex()):
        assert secret[:8] not in an.fingerprint
        assert secret[:8] not in repr(an) and secret[:8] not in repr(state)
    assert anon(tmp_path, "aes", pass_bits=16).fingerprint == an.fingerprint
    assert anon(tmp_path, "aes", pass_bits=8).fingerprint != an.fingerprint
    assert anon(tmp_path, "blowfish").fingerprint.startswith("cryptopant-blowfish:")
    other = Anonymizer(generate_keystate("aes"), pass_bits=16)
    assert other.fingerprint != an.fingerprint


def test_portable_build_falls_back_without_aborting(tmp_path):
    """NUMBA_CPU_NAME=generic has no AES feature: LLVM would abort on aesenc, so it must not try."""
    import subprocess
    import sys
    kf = keyfile(tmp_path, "aes")
    code = ("import numpy as np; from netsense.collector.anonymize import Anonymizer as A; "
            f"a = A.from_keyfile({str(kf)!r}, pass_bits=0, create=False); "
            "print(a.aesni, int(a.anonymize(np.array([3478668516], dtype=np.uint32))[0]))")
    env = dict(os.environ, NUMBA_CPU_NAME="generic")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", str(int(ipaddress.IPv4Address("217.247.204.108")))]


def test_collector_cli_anonymizes_and_aggregator_keeps_keys_apart(tmp_path):
    """End to end: windows carry the key fingerprint; another key's windows are never summed in."""
    import json
    import os

    from conftest import read_json, run_cli

    shared = tmp_path / "shared"
    key = tmp_path / "k.cryptopant"
    args = ["--shared", str(shared), "--window-packets", "5000", "--source", "synthetic:seed=1,packets=12000"]
    r = run_cli("collector", "run", "--node", "anon1", "--anonymize", str(key), *args)
    assert r.returncode == 0, r.stderr
    assert os.stat(key).st_mode & 0o777 == 0o600
    fp = Anonymizer.from_keyfile(key).fingerprint
    r = run_cli("collector", "run", "--node", "anon2", "--anonymize", str(tmp_path / "other.key"), *args)
    assert r.returncode == 0, r.stderr
    r = run_cli("aggregator", "run", "--shared", str(shared), "--once")
    assert r.returncode == 0, r.stderr
    doc = read_json(shared / "reports" / "cumulative.json")
    assert doc["anonymization"] == fp
    assert set(doc["nodes"]) == {"anon1"}  # first in scan order; anon2's windows are refused
    refused = {json.loads(p.read_text())["reason"] for p in (shared / "quarantine").glob("*/*.reason.json")}
    assert refused == {"anonymization_mismatch"}
    # The anonymized matrix is the plain one with addresses mapped through the key.
    from netsense.collector.synthetic import SyntheticSpec, generate
    from oracle import nine
    import numpy as np

    rec = list(generate(SyntheticSpec.parse("seed=1,packets=12000")))
    src = np.concatenate([x.src for x in rec])
    dst = np.concatenate([x.dst for x in rec])
    an = Anonymizer.from_keyfile(key)
    assert doc["analytics"] == nine(an.anonymize(src), an.anonymize(dst))
