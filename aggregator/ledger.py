"""The durable ledger: which windows have been summed, committed atomically with the sums.

Two files make one transaction (generation N):

1. ``aggregator/state/checkpoint-N.nsc`` — the summed matrices and their
   bookkeeping, written with the atomic helper (netsense container format);
2. one line appended to ``aggregator/ledger.jsonl`` naming generation N, its
   checkpoint and the window identities it consumed, then fsync.

The appended line is the commit point.  On start the last line whose CRC
verifies names the checkpoint to load; a torn last line, and any checkpoint
newer than it, are from a transaction that never committed and are dropped,
so its windows (still in the landing folders) are summed again, once.
"""
from __future__ import annotations

import json
import logging
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import graphblas as gb

from collector import landing, winfile
from collector.faults import failpoint
from collector.errors import BadWindowFile, StateError

log = logging.getLogger("netsense.aggregator")
CHECKPOINT_KIND = "checkpoint"


def _crc(obj) -> int:
    return zlib.crc32(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())


@dataclass
class Ledger:
    """In-memory view of ``ledger.jsonl``: identity -> payload SHA-256 prefix."""

    path: Path
    generation: int = 0
    checkpoint: str | None = None
    consumed: dict = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path) -> "Ledger":
        path = directory / "ledger.jsonl"
        led = cls(path)
        if not path.exists():
            return led
        good_bytes = 0
        with open(path, "rb") as f:
            for raw in f:
                try:
                    rec = json.loads(raw)
                    crc = rec.pop("crc")
                    if not raw.endswith(b"\n") or crc != _crc(rec) or rec["gen"] != led.generation + 1:
                        raise ValueError("bad line")
                except (ValueError, KeyError, TypeError, AttributeError):  # AttributeError: JSON but not an object
                    log.warning("ledger: ignoring an uncommitted or torn entry after generation %d", led.generation)
                    break
                led.generation = rec["gen"]
                led.checkpoint = rec["checkpoint"]
                for ident, sha in rec["windows"]:
                    led.consumed[ident] = sha
                good_bytes += len(raw)
        if good_bytes != path.stat().st_size:
            with open(path, "r+b") as f:  # cut the torn tail so the next append starts on a clean line
                f.truncate(good_bytes)
                os.fsync(f.fileno())
        return led

    def commit(self, gen: int, checkpoint: str, windows: list[tuple[str, str]]) -> None:
        """Append generation ``gen`` durably; after this returns the transaction is committed."""
        rec = {"gen": gen, "checkpoint": checkpoint, "windows": [list(w) for w in windows]}
        rec["crc"] = _crc(rec)
        line = (json.dumps(rec, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            half = len(line) // 2
            os.write(fd, line[:half])
            failpoint("agg.ledger")  # a crash here leaves a torn line, which load() discards
            os.write(fd, line[half:])
            os.fsync(fd)
        finally:
            os.close(fd)
        landing.fsync_dir(self.path.parent)
        self.generation = gen
        self.checkpoint = checkpoint
        for ident, sha in windows:
            self.consumed[ident] = sha


def checkpoint_name(gen: int, prefix: str = "checkpoint") -> str:
    return f"{prefix}-{gen:010d}.nsc"


def write_checkpoint(directory: Path, gen: int, header: dict, matrices: dict[str, gb.Matrix],
                     prefix: str = "checkpoint") -> str:
    """Write a checkpoint (or, with prefix "cumulative", a cumulative base file) for generation ``gen``."""
    name = checkpoint_name(gen, prefix)
    landing.atomic_write(directory / name, winfile.encode({"kind": CHECKPOINT_KIND, "gen": gen, **header},
                                                          matrices), replace=True)
    return name


def write_period_file(directory: Path, period_id: str, gen: int, matrix: gb.Matrix) -> str:
    """Save a final period's sum (needed only if a late window restates it)."""
    name = f"period-{period_id}-g{gen:010d}.nsc"
    landing.atomic_write(directory / name, winfile.encode({"kind": "period", "period": period_id, "gen": gen},
                                                          {"period": matrix}), replace=True)
    return name


def read_checkpoint(directory: Path, name: str) -> tuple[dict, dict[str, gb.Matrix]]:
    try:
        parsed = winfile.read(directory / name, max_payload=1 << 40)
    except (OSError, BadWindowFile) as e:
        raise StateError(f"committed checkpoint {name} is unreadable: {e}") from None
    mats = {b["name"]: parsed.matrix(b["name"]) for b in parsed.header["payload"]["blobs"]}
    return parsed.header, mats


def prune_checkpoints(directory: Path, keep: str, base: str | None = None) -> None:
    """Remove every checkpoint and base file but the committed ones (older and uncommitted newer ones)."""
    for p in list(directory.glob("checkpoint-*.nsc")) + list(directory.glob("cumulative-*.nsc")):
        if p.name not in (keep, base):
            try:
                p.unlink()
            except OSError:
                pass
