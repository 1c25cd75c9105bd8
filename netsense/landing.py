"""Durable, atomic writes into the shared directory — the one helper both daemons use.

Readers only ever open final names, so a file is either absent or complete:
write a temp file in the *same* directory (a rename is only atomic within one
file system), fsync it, rename it to its final name, then fsync the directory so
the rename itself survives a crash.  The Graph Challenge converter writes
straight to the final name; a reader racing it sees half a matrix.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
import secrets
from pathlib import Path

from .errors import AlreadyLanded, LandingError
from .faults import failpoint

TEMP_PREFIX = ".tmp-"  # readers ignore every name starting with "."


def temp_name(final: Path) -> Path:
    """A unique temp path next to ``final`` that readers ignore."""
    return final.with_name(f"{TEMP_PREFIX}{final.name}.{os.getpid()}.{secrets.token_hex(4)}")


def fsync_dir(directory: Path) -> None:
    """Persist a directory entry change (create/rename/unlink)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # some network file systems refuse opening directories; rename is still atomic there
    try:
        os.fsync(fd)
    except OSError:
        pass  # e.g. sshfs/FUSE may return EINVAL for directory fsync
    finally:
        os.close(fd)


@contextmanager
def atomic_file(final: Path | str, *, replace: bool = False):
    """Yield a binary file that appears at ``final`` atomically and durably when the block ends.

    The one landing rule for every file netsense writes: a temp file in the
    same directory, fsync, then a rename — without clobbering unless
    ``replace`` (a no-clobber rename is ``link()``, which fails with EEXIST and
    raises ``AlreadyLanded``) — and an fsync of the directory.  If the block or
    any step fails the temp file is removed; ``OSError`` becomes ``LandingError``.
    """
    final = Path(final)
    tmp = temp_name(final)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        failpoint("col.land.temp")
        if replace:
            os.replace(tmp, final)
        else:
            try:
                os.link(tmp, final)
            except FileExistsError:
                raise AlreadyLanded(f"{final} exists already") from None
            except OSError:
                # File systems without hard links (some FUSE/SMB): check then rename.
                if final.exists():
                    raise AlreadyLanded(f"{final} exists already") from None
                os.rename(tmp, final)
        fsync_dir(final.parent)
    except AlreadyLanded:
        raise
    except OSError as e:
        raise LandingError(f"cannot write {final}: {e.strerror or e}") from e
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


WRITEBACK_CHUNK = 1 << 20


def atomic_write(final: Path | str, data: bytes, *, replace: bool = False) -> Path:
    """Write ``data`` to ``final`` with ``atomic_file``: window files never clobber (``AlreadyLanded``);
    reports, status and checkpoints (``replace=True``) replace the old content atomically.

    Large files are written a MiB at a time, each MiB handed to the kernel for
    write-back at once (``POSIX_FADV_DONTNEED`` starts it without waiting): the
    final fsync then has little left to flush, so a background checkpoint of
    tens of MiB does not hold up the small fsyncs of other writers (the
    aggregator's ledger line) behind one big journal commit.
    """
    view = memoryview(data)
    with atomic_file(final, replace=replace) as f:
        if len(view) <= 4 * WRITEBACK_CHUNK or not hasattr(os, "posix_fadvise"):
            f.write(view)
        else:
            for off in range(0, len(view), WRITEBACK_CHUNK):
                f.write(view[off:off + WRITEBACK_CHUNK])
                f.flush()
                os.posix_fadvise(f.fileno(), off, WRITEBACK_CHUNK, os.POSIX_FADV_DONTNEED)
    return Path(final)


def write_text(final: Path | str, text: str) -> Path:
    """Atomically replace a small text file (reports, status)."""
    return atomic_write(final, text.encode("utf-8"), replace=True)


def remove_stale_temps(directory: Path, final_prefix: str = "") -> int:
    """Delete temp files left in ``directory`` by a crashed writer; return how many.

    Only the caller writes there (a collector its landing folder and, with
    ``final_prefix`` "<node>.json", its own status file; the aggregator its own
    folders), so at start every such temp name is stale.
    """
    n = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for e in entries:
        if e.name.startswith(TEMP_PREFIX + final_prefix) and e.is_file(follow_symlinks=False):
            try:
                os.unlink(e.path)
                n += 1
            except OSError:
                pass
    return n
