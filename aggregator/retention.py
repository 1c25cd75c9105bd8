"""Retention of consumed window files in ``archive/``: by age and by total size.

Consumed windows are not needed for correctness once a checkpoint holds their
sums, so the archive is then a convenience for audits and re-analysis, and it
must not fill the shared file system.  Windows consumed after the last
checkpoint are still part of the write-ahead log (recovery sums them again)
and are never deleted.  Reports are never deleted.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("netsense.aggregator")


@dataclass(frozen=True)
class RetentionPolicy:
    max_age_seconds: float | None = None  # delete archived windows older than this
    max_bytes: int | None = None          # then delete the oldest until the archive fits

    @property
    def active(self) -> bool:
        return self.max_age_seconds is not None or self.max_bytes is not None


def enforce(archive_root: Path, policy: RetentionPolicy, now: float | None = None,
            keep: set | frozenset = frozenset()) -> tuple[int, int]:
    """Apply ``policy`` to ``archive/*/*`` except the file names in ``keep``; return (files deleted, bytes freed)."""
    if not policy.active or not archive_root.exists():
        return 0, 0
    now = time.time() if now is None else now
    files = []
    for node_dir in os.scandir(archive_root):
        if not node_dir.is_dir(follow_symlinks=False):
            continue
        for e in os.scandir(node_dir.path):
            if e.is_file(follow_symlinks=False) and not e.name.startswith(".") and e.name not in keep:
                st = e.stat(follow_symlinks=False)
                files.append((st.st_mtime, st.st_size, e.path))
    files.sort()
    total = sum(f[1] for f in files)
    deleted = freed = 0
    for mtime, size, path in files:
        too_old = policy.max_age_seconds is not None and now - mtime > policy.max_age_seconds
        too_big = policy.max_bytes is not None and total > policy.max_bytes
        if not (too_old or too_big):
            break  # sorted oldest first: nothing later is older, and the size fits
        try:
            os.unlink(path)
        except OSError as e:
            log.warning("retention: cannot delete %s: %s", path, e)
            continue
        total -= size
        deleted += 1
        freed += size
    if deleted:
        log.info("retention: deleted %d archived window file(s), %.1f MiB", deleted, freed / 2**20)
    return deleted, freed
