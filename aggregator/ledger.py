"""The durable ledger: which windows have been summed, committed atomically with the sums.

A transaction (generation N) commits by appending one line to
``aggregator/ledger.jsonl`` naming N, the window files it consumed (identity,
payload SHA-256 prefix, file name) and the checkpoint to recover from, then
fsync.  The appended line is the commit point.

Checkpoints (``aggregator/state/checkpoint-N.nsc``: the summed matrices and
their bookkeeping, written with the atomic helper) are taken only every so
often — every ``--checkpoint-seconds`` or ``--checkpoint-windows``, when idle,
at exit — because serializing million-link running sums on every transaction
would cost more than the transaction.  A periodic checkpoint is written after
the transaction's reports and named by the next line.  Between checkpoints
the ledger is a write-ahead log: on start the checkpoint named by the last
line is loaded and the windows of every later line are summed again from
``archive/`` (where consumed files go), and the periods each line made final
are marked final again, which rebuilds exactly the committed state.  Those
window files, and period files a restatement superseded, are kept until a
newer checkpoint is named (retention and duplicate removal skip them).

A torn last line, and any checkpoint newer than the last good line, are from
a transaction that never committed and are dropped, so its windows (still in
the landing folders) are summed again, once.
"""
from __future__ import annotations

import json
import logging
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from netsense import landing, winfile
from netsense.errors import BadWindowFile, StateError
from netsense.faults import failpoint
from netsense.layout import (CHECKPOINT_PREFIX, CUMULATIVE_PREFIX, LEDGER_FILE, STATE_SUFFIX, checkpoint_file,
                             checkpoint_file_gen, period_sum_file)

from .sums import Sums

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
    # Generations committed after the checkpoint:
    # [(gen, [(identity, sha, file name), ...], [(period start, version, period file), ...])]
    replay: list = field(default_factory=list)
    # identity -> file name of the windows in ``replay``: their files must stay until the next checkpoint
    unsnapshotted: dict = field(default_factory=dict)

    def _record(self, gen: int, checkpoint: str | None, windows: list, final: list) -> None:
        self.generation = gen
        self.checkpoint = checkpoint
        for w in windows:
            self.consumed[w[0]] = w[1]
        self.replay.append((gen, [tuple(w) for w in windows], [tuple(f) for f in final]))
        upto = checkpoint_file_gen(checkpoint)
        if self.replay[0][0] <= upto:  # a newer checkpoint holds the oldest generations: forget them
            self.replay = [r for r in self.replay if r[0] > upto]
            self.unsnapshotted = {w[0]: w[2] for r in self.replay for w in r[1]}
        else:
            for w in windows:
                self.unsnapshotted[w[0]] = w[2]

    @property
    def windows_since_checkpoint(self) -> int:
        return len(self.unsnapshotted)

    @classmethod
    def load(cls, directory: Path) -> "Ledger":
        path = directory / LEDGER_FILE
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
                led._record(rec["gen"], rec["checkpoint"], rec["windows"], rec.get("final", []))
                good_bytes += len(raw)
        if good_bytes != path.stat().st_size:
            with open(path, "r+b") as f:  # cut the torn tail so the next append starts on a clean line
                f.truncate(good_bytes)
                os.fsync(f.fileno())
        return led

    def commit(self, gen: int, checkpoint: str | None, windows: list[tuple[str, str, str]],
               final: list[tuple[int, int, str]] = ()) -> None:
        """Append generation ``gen`` durably; after this returns the transaction is committed.

        ``windows``: (identity, payload SHA-256 prefix, file name) of each consumed window;
        ``final``: (start, version, period file) of each period this generation made final or
        restated, in order, so that a replay repeats the decision instead of re-deciding it;
        ``checkpoint``: the checkpoint to recover from (this generation's own, or an earlier one).
        """
        rec = {"gen": gen, "checkpoint": checkpoint, "windows": [list(w) for w in windows]}
        if final:
            rec["final"] = [list(f) for f in final]
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
        self._record(gen, checkpoint, windows, list(final))


def write_checkpoint(directory: Path, gen: int, header: dict, sums: dict[str, Sums],
                     prefix: str = CHECKPOINT_PREFIX) -> str:
    """Write a checkpoint (or, with prefix "cumulative", a cumulative base file) for generation ``gen``.

    The sums are saved as GraphBLAS serializations in the window container, so
    any GraphBLAS user can open them.
    """
    name = checkpoint_file(gen, prefix)
    mats = {k: s.to_matrix() for k, s in sums.items()}
    # zstd: checkpoints are written off the critical path, where bytes (I/O that competes with the
    # ledger's fsyncs) cost more than CPU.
    landing.atomic_write(directory / name, winfile.encode({"kind": CHECKPOINT_KIND, "gen": gen, **header},
                                                          mats, compression="zstd"), replace=True)
    return name


def write_period_file(directory: Path, period_id: str, gen: int, matrix: Sums) -> str:
    """Save a final period's sum (needed only if a late window restates it)."""
    name = period_sum_file(period_id, gen)
    landing.atomic_write(directory / name, winfile.encode({"kind": "period", "period": period_id, "gen": gen},
                                                          {"period": matrix.to_matrix()}), replace=True)
    return name


def read_checkpoint(directory: Path, name: str) -> tuple[dict, dict[str, Sums]]:
    try:
        parsed = winfile.read(directory / name, max_payload=1 << 40)
    except (OSError, BadWindowFile) as e:
        raise StateError(f"committed checkpoint {name} is unreadable: {e}") from None
    sums = {b["name"]: Sums.take(parsed.matrix(b["name"])) for b in parsed.header["payload"]["blobs"]}
    return parsed.header, sums


def prune_checkpoints(directory: Path, keep: str, base: str | None = None) -> None:
    """Remove every checkpoint and base file but the committed ones (older and uncommitted newer ones)."""
    for p in list(directory.glob(f"{CHECKPOINT_PREFIX}-*{STATE_SUFFIX}")) + list(directory.glob(f"{CUMULATIVE_PREFIX}-*{STATE_SUFFIX}")):
        if p.name not in (keep, base):
            try:
                p.unlink()
            except OSError:
                pass
