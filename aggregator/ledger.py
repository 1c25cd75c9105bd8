"""The durable ledger: which windows have been summed, committed atomically with the sums.

A transaction (generation N) commits by appending one line to
``aggregator/ledger.jsonl`` naming N, the lease epoch of the writer, the window
files it consumed (identity, payload SHA-256 prefix, file name) and the
checkpoint to recover from, then fsync.  The appended line is the commit point.

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

**Compaction.** Once a checkpoint is the recovery point, the lines before it
are history the checkpoint already holds (the windows as per-run ranges, the
sums, the periods), so the ledger is rewritten atomically as one base line
(``{"base": K, "checkpoint": ..., "epoch": ...}``) plus the lines after K.
The ledger, and the start-up that reads it, stay bounded by the checkpoint
interval, not by how long the share has existed.

**Never cut behind valid lines.** Only a torn *last* line (incomplete, or its
CRC wrong) is from a transaction that never committed; it is dropped, and its
windows, still in the landing folders, are summed again, once.  Anything else
(a damaged line with valid lines after it, a gap or a repeated generation, an
epoch going back: two writers) stops the aggregator with ``LedgerDamaged``,
which says what was found; ``netsense-aggregator repair`` rebuilds the state.

**Fencing.** ``commit`` appends only if the file is still the one this process
last wrote (same inode, same size): a second writer, a compaction by a newer
holder, or a deleted ledger is found before a byte is written.
"""
from __future__ import annotations

import json
import logging
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from netsense import landing, winfile
from netsense.errors import BadWindowFile, LedgerDamaged, StateError
from netsense.faults import failpoint
from netsense.layout import (CHECKPOINT_PREFIX, CUMULATIVE_PREFIX, LEDGER_FILE, STATE_SUFFIX, checkpoint_file,
                             checkpoint_file_gen, period_sum_file)

from .sums import Sums

log = logging.getLogger("netsense.aggregator")
CHECKPOINT_KIND = "checkpoint"
REPAIR_HINT = "stop every aggregator on this share, then run: netsense-aggregator repair --shared DIR"


def _crc(obj) -> int:
    return zlib.crc32(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())


def _line(rec: dict) -> bytes:
    rec = dict(rec)
    rec["crc"] = _crc(rec)
    return (json.dumps(rec, separators=(",", ":")) + "\n").encode()


def parse_line(raw: bytes) -> dict | None:
    """A ledger line's record, or None if it is torn or damaged (incomplete, not JSON, CRC wrong)."""
    if not raw.endswith(b"\n"):
        return None
    try:
        rec = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(rec, dict):
        return None
    crc = rec.pop("crc", None)
    if crc != _crc(rec):
        return None
    if "base" in rec:
        ok = type(rec["base"]) is int and rec["base"] >= 0
    else:
        ok = type(rec.get("gen")) is int and isinstance(rec.get("windows"), list) and all(
            isinstance(w, list) and len(w) in (2, 3) and all(isinstance(x, str) for x in w) for w in rec["windows"])
        ok = ok and all(isinstance(f, list) and len(f) == 3 for f in rec.get("final", []))
    ok = ok and (rec.get("checkpoint") is None or isinstance(rec.get("checkpoint"), str))
    ok = ok and type(rec.get("epoch", 0)) is int
    return rec if ok else None


def _newer(a: str | None, b: str | None) -> str | None:
    """The checkpoint of the later generation (lines after a compaction may name older ones)."""
    if a is None or b is None:
        return a or b
    return b if checkpoint_file_gen(b) >= checkpoint_file_gen(a) else a


@dataclass
class Ledger:
    """In-memory view of ``ledger.jsonl``: identity -> payload SHA-256 prefix of the lines it holds."""

    path: Path
    generation: int = 0
    checkpoint: str | None = None
    epoch: int = 0                 # the newest writer's epoch
    base: int = 0                  # generations <= base live only in the checkpoint (compacted away)
    consumed: dict = field(default_factory=dict)
    # Generations committed after the checkpoint:
    # [(gen, [(identity, sha, file name), ...], [(period start, version, period file), ...])]
    replay: list = field(default_factory=list)
    # identity -> file name of the windows in ``replay``: their files must stay until the next checkpoint
    unsnapshotted: dict = field(default_factory=dict)
    lines: list = field(default_factory=list)   # (gen, raw line) kept for compaction
    _ino: int | None = None
    _size: int = 0

    def _record(self, gen: int, checkpoint: str | None, windows: list, final: list) -> None:
        self.generation = gen
        self.checkpoint = _newer(self.checkpoint, checkpoint)
        for w in windows:
            self.consumed[w[0]] = w[1]
        self.replay.append((gen, [tuple(w) for w in windows], [tuple(f) for f in final]))
        upto = checkpoint_file_gen(self.checkpoint)
        if self.replay[0][0] <= upto:  # a newer checkpoint holds the oldest generations: forget them
            self.replay = [r for r in self.replay if r[0] > upto]
            self.unsnapshotted = {w[0]: w[2] for r in self.replay for w in r[1]}
        else:
            for w in windows:
                self.unsnapshotted[w[0]] = w[2]

    @property
    def windows_since_checkpoint(self) -> int:
        return len(self.unsnapshotted)

    @property
    def empty(self) -> bool:
        return self.generation == 0 and self.base == 0

    @classmethod
    def load(cls, directory: Path) -> "Ledger":
        path = directory / LEDGER_FILE
        led = cls(path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return led
        except OSError as e:
            raise StateError(f"cannot read {path}: {e.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            raw_lines = f.read().splitlines(keepends=True)
        recs = [parse_line(r) for r in raw_lines]
        good_bytes = st.st_size
        if recs and recs[-1] is None:  # a torn last line: a transaction that never committed
            good_bytes -= len(raw_lines[-1])
            log.warning("ledger: dropping a torn last line after generation %s (an uncommitted transaction)",
                        next((r.get("gen", r.get("base")) for r in reversed(recs) if r), 0))
            recs, raw_lines = recs[:-1], raw_lines[:-1]
        for i, (rec, raw) in enumerate(zip(recs, raw_lines)):
            where = f"{path}: line {i + 1} of {len(recs)}"
            if rec is None:
                raise LedgerDamaged(f"{where} is damaged but {len(recs) - i - 1} later line(s) are valid; "
                                    f"committed lines are never cut; {REPAIR_HINT}")
            epoch = rec.get("epoch", 0)
            if epoch < led.epoch:
                raise LedgerDamaged(f"{where} was written at lease epoch {epoch} after a line of epoch {led.epoch}: "
                                    f"two aggregators committed; {REPAIR_HINT}")
            led.epoch = epoch
            if "base" in rec:
                if i != 0:
                    raise LedgerDamaged(f"{where} is a compaction base line but not the first line; {REPAIR_HINT}")
                led.base = led.generation = rec["base"]
                led.checkpoint = rec.get("checkpoint")
                led.lines.append((rec["base"], raw))
                continue
            gen = rec["gen"]
            if gen != led.generation + 1:
                what = "repeats" if gen <= led.generation else "skips to"
                raise LedgerDamaged(f"{where} {what} generation {gen} after generation {led.generation}; {REPAIR_HINT}")
            led._record(gen, rec["checkpoint"], rec["windows"], rec.get("final", []))
            led.lines.append((gen, raw))
        if good_bytes != st.st_size:
            with open(path, "r+b") as f:  # cut only the torn tail, so the next append starts on a clean line
                f.truncate(good_bytes)
                os.fsync(f.fileno())
        led._ino, led._size = st.st_ino, good_bytes
        return led

    def _open_checked(self):
        """Open for appending, refusing if someone else has changed the file since we last wrote it."""
        if self._ino is None and self.empty:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
            return fd
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except FileNotFoundError:
            raise LedgerDamaged(f"{self.path} vanished while this aggregator ran (deleted?); nothing more is "
                                f"written; {REPAIR_HINT}") from None
        st = os.fstat(fd)
        if (st.st_ino, st.st_size) != (self._ino, self._size):
            os.close(fd)
            raise LedgerDamaged(f"{self.path} changed under this aggregator (inode {st.st_ino}, {st.st_size} "
                                f"bytes; expected inode {self._ino}, {self._size} bytes): another aggregator wrote "
                                f"it; this one stops without writing; {REPAIR_HINT}")
        return fd

    def commit(self, gen: int, checkpoint: str | None, windows: list[tuple[str, str, str]],
               final: list[tuple[int, int, str]] = (), epoch: int = 0) -> None:
        """Append generation ``gen`` durably; after this returns the transaction is committed.

        ``windows``: (identity, payload SHA-256 prefix, file name) of each consumed window;
        ``final``: (start, version, period file) of each period this generation made final or
        restated, in order, so that a replay repeats the decision instead of re-deciding it;
        ``checkpoint``: the checkpoint to recover from (this generation's own, or an earlier one);
        ``epoch``: the writer's lease epoch.
        """
        rec = {"gen": gen, "epoch": epoch, "checkpoint": checkpoint, "windows": [list(w) for w in windows]}
        if final:
            rec["final"] = [list(f) for f in final]
        line = _line(rec)
        fd = self._open_checked()
        try:
            half = len(line) // 2
            os.write(fd, line[:half])
            failpoint("agg.ledger")  # a crash here leaves a torn line, which load() discards
            os.write(fd, line[half:])
            os.fsync(fd)
            self._ino = os.fstat(fd).st_ino
        finally:
            os.close(fd)
        landing.fsync_dir(self.path.parent)
        self._size += len(line)
        self.epoch = epoch
        self.lines.append((gen, line))
        self._record(gen, checkpoint, windows, list(final))

    def compact(self, epoch: int) -> None:
        """Rewrite the ledger as a base line at the checkpoint's generation plus the lines after it."""
        upto = checkpoint_file_gen(self.checkpoint)
        if upto <= self.base or upto > self.generation:
            return
        fd = self._open_checked()  # the same fence as an append: only the writer of record compacts
        os.close(fd)
        keep = [(g, raw) for g, raw in self.lines if g > upto]
        base = (upto, _line({"base": upto, "epoch": epoch, "checkpoint": self.checkpoint}))
        data = base[1] + b"".join(raw for _, raw in keep)
        landing.atomic_write(self.path, data, replace=True)
        st = os.stat(self.path)
        self._ino, self._size = st.st_ino, len(data)
        self.lines = [base, *keep]
        self.base = upto
        self.consumed = {w[0]: w[1] for r in self.replay for w in r[1]}


def last_epoch(directory: Path) -> int:
    """The newest epoch in the ledger's last line (the floor for the next lease), 0 if none."""
    path = directory / LEDGER_FILE
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - (1 << 20)))
            lines = f.read().splitlines(keepends=True)
    except OSError:
        return 0
    for raw in reversed(lines):
        rec = parse_line(raw)
        if rec is not None:
            return rec.get("epoch", 0)
    return 0


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


def write_period_file(directory: Path, period_id: str, gen: int, matrix: Sums, meta: dict | None = None) -> str:
    """Save a final period's sum and bookkeeping (``meta``: ``Period.meta()``).

    Needed only if a late window restates the period: the period then leaves
    memory and the checkpoint, and ``read_period_file`` brings it back.
    """
    name = period_sum_file(period_id, gen)
    header = {"kind": "period", "period": period_id, "gen": gen}
    if meta is not None:
        header["meta"] = meta
    # Never replace: the name is this generation's, so an existing file is either a crashed
    # attempt (recovery deletes files of uncommitted generations before the retry) or another
    # holder's (a paused one, taken over): overwriting it would swap a committed restatement's
    # base for a sum that was never committed. AlreadyLanded is a storage error: roll back.
    landing.atomic_write(directory / name, winfile.encode(header, {"period": matrix.to_matrix()}), replace=False)
    return name


def find_period_file(directory: Path, period_id: str, upto_gen: int) -> str | None:
    """The newest committed period file of ``period_id`` (generation <= ``upto_gen``), if any."""
    best, best_gen = None, -1
    prefix = f"period-{period_id}-g"
    try:
        entries = os.scandir(directory)
    except FileNotFoundError:
        return None
    with entries:
        for e in entries:
            if e.name.startswith(prefix) and e.name.endswith(STATE_SUFFIX):
                g = e.name[len(prefix):-len(STATE_SUFFIX)]
                if g.isdigit() and best_gen < int(g) <= upto_gen:
                    best, best_gen = e.name, int(g)
    return best


def read_period_meta(directory: Path, name: str) -> dict | None:
    """The bookkeeping saved with a period file (None for files written before it was saved there)."""
    try:
        header = winfile.read_header(directory / name, max_header=winfile.MAX_STATE_HEADER)
    except (OSError, BadWindowFile, ValueError) as e:
        raise StateError(f"committed period file {name} is unreadable: {e}") from None
    meta = header.get("meta")
    return meta if isinstance(meta, dict) else None


def read_checkpoint(directory: Path, name: str) -> tuple[dict, dict[str, Sums]]:
    try:
        parsed = winfile.read(directory / name, max_payload=1 << 40, max_header=winfile.MAX_STATE_HEADER)
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
