"""cryptopANT key files: the one line that fixes a mapping, read and written exactly as cryptopANT does.

A key file must mean the same mapping here and in cryptopANT's own tools (so
anonymized data stays joinable with data anonymized elsewhere with the same
key), so parsing follows its ``scramble_readstate`` byte for byte instead of a
stricter format of our own.  What src/cryptopANT.c does, transcribed into words:

* **Format**: one line ``c4:c6:key:pad:mac:iv`` of lowercase hex fields,
  ``c4``/``c6`` being the IPv4/IPv6 cipher (01 md5, 02 blowfish, 03 aes,
  04 sha1).  A new file gets a 16-byte key, a 32-byte pad, an empty mac and a
  16-byte iv, mode 0600.
* **Reading** accepts fields of up to 32 bytes; any non-hex character ends a
  field.  AES uses the key as AES-128/192/256 by its length; Blowfish takes the
  key bytes as they are.  Beyond that, ``parse_keyfile`` rejects what this
  project cannot use (unknown cipher codes, AES key lengths, empty Blowfish
  keys) as ``KeyFileError`` at start-up rather than at the first window.

``create_keyfile`` makes a new key (os.urandom, mode 0600 whatever the umask,
temp file then link/rename in the same directory), so collectors started at
once on one path end up sharing one key instead of each overwriting the other's.
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field

from netsense.errors import ConfigError

__all__ = [
    "SCRAMBLE_MD5", "SCRAMBLE_BLOWFISH", "SCRAMBLE_AES", "SCRAMBLE_SHA1", "CIPHERS", "CIPHER_NAMES",
    "MAX_BLK_LENGTH", "KeyFileError", "KeyState",
    "parse_keyfile", "format_keyfile", "generate_keystate", "create_keyfile",
]

SCRAMBLE_MD5 = 0x01
SCRAMBLE_BLOWFISH = 0x02
SCRAMBLE_AES = 0x03
SCRAMBLE_SHA1 = 0x04
CIPHERS = {"md5": SCRAMBLE_MD5, "blowfish": SCRAMBLE_BLOWFISH, "aes": SCRAMBLE_AES,
           "sha1": SCRAMBLE_SHA1}
CIPHER_NAMES = {v: k for k, v in CIPHERS.items()}

MAX_BLK_LENGTH = 32     # cryptopANT's bound on every key-file field, in bytes


class KeyFileError(ConfigError, ValueError):
    """A key file that cryptopANT would reject (or that ``Anonymizer`` cannot use)."""


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
    if state.c4 not in CIPHER_NAMES:
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


def create_keyfile(path: str, cipher: str) -> None:
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
