"""Periodic checkpoints, written in the background, and what they let us forget.

A checkpoint bounds the replay of a restart: recovery loads the checkpoint the
ledger names and sums again only the windows committed after it.  Writing one
(serializing million-link sums, about 0.5 s) would stall every transaction
behind it, so a due checkpoint is written by a background thread after the
commit's reports, and the first ledger line after it is complete names it
(``ready``).  Only then do older checkpoints and the period files superseded by
restatements stop being needed (``forget_before``).
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from netsense.errors import LandingError
from netsense.faults import failpoint
from netsense.layout import CUMULATIVE_PREFIX, checkpoint_file

from .ledger import Ledger, prune_checkpoints, write_checkpoint
from .state import State


class Checkpointer:
    def __init__(self, ckpt_dir: Path, period_dir: Path, *, rebase_min_links: int, every_seconds: float,
                 every_windows: int):
        self.ckpt_dir = ckpt_dir
        self.period_dir = period_dir
        self.rebase_min_links = rebase_min_links
        self.every_seconds = every_seconds
        self.every_windows = every_windows
        self.last = time.monotonic()
        self.thread: threading.Thread | None = None  # writing a checkpoint in the background
        self._error: Exception | None = None
        self._written: str | None = None
        self.ready: str | None = None        # written after a commit, named by the next line
        self.referenced: str | None = None   # named by the last committed line
        self.superseded: list = []           # (generation, period file) replaced by a restatement

    def abandon(self) -> None:
        """A rollback: let an in-flight checkpoint finish, then forget it (it may hold uncommitted state)."""
        if self.thread is not None:
            self.thread.join()
        self.thread = self._error = self._written = None

    def recovered(self, referenced: str | None, superseded: list) -> None:
        """Start over from a freshly loaded committed state."""
        self.last = time.monotonic()
        self.ready = None
        self.referenced = referenced
        self.superseded = superseded

    def due(self, ledger: Ledger, consumed: list) -> bool:
        """Often enough to bound the replay after a restart."""
        return bool(consumed) and (
            time.monotonic() - self.last >= self.every_seconds
            or ledger.windows_since_checkpoint + len(consumed) >= self.every_windows)

    def idle_due(self, ledger: Ledger) -> bool:
        """Idle with a replay pending for this long: checkpoint so a later restart replays nothing."""
        return bool(ledger.replay) and time.monotonic() - self.last >= self.every_seconds

    def start(self, st: State, gen: int, background: bool, may_write=lambda: True) -> None:
        """Checkpoint the state of generation ``gen`` (what the ledger says up to line ``gen``).

        The snapshot is taken here, in the daemon's thread: the sums are
        immutable, so references suffice; the bookkeeping is copied. Writing it
        happens on a background thread (GraphBLAS, zstd and the writes release
        the GIL), so the next transactions do not wait for it. A failure is
        raised by the next commit as a storage error (the daemon then rolls
        back to the ledger's state).
        """
        base = None
        if st.delta.nvals > max(self.rebase_min_links, st.cumulative.nvals // 4):
            # Rewrite the cumulative base only when the delta has grown to a quarter of it:
            # each checkpoint then costs O(delta), and rebasing adds O(1) amortized per entry.
            base = st.cumulative
            st.rebase(checkpoint_file(gen, CUMULATIVE_PREFIX))
        header, mats = st.to_checkpoint()
        header = json.loads(json.dumps(header))  # a copy: the period tables keep changing

        def write() -> None:
            if background:
                try:  # Linux: a thread id lowers only this thread; the transactions keep the CPU
                    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
                except (OSError, AttributeError):
                    pass
            try:
                if not may_write():  # fenced: the lease may be someone else's by now
                    raise LandingError("the lease is not fresh; checkpoint not written")
                if base is not None:
                    write_checkpoint(self.ckpt_dir, gen, {"base": True}, {"cumulative": base},
                                     prefix=CUMULATIVE_PREFIX)
                name = write_checkpoint(self.ckpt_dir, gen, header, mats)
                failpoint("agg.checkpoint")
                self._written = name
            except Exception as e:  # noqa: BLE001 - handed to the daemon's thread
                self._error = e

        self.last = time.monotonic()
        if background:
            self.thread = threading.Thread(target=write, name="checkpoint", daemon=True)
            self.thread.start()
        else:
            write()
            self.reap()

    def reap(self) -> None:
        """Collect a finished background checkpoint; raise its failure as a storage error."""
        if self.thread is not None:
            if self.thread.is_alive():
                return
            self.thread = None
        if self._written:  # complete on disk: the next ledger line names it
            self.ready, self._written = self._written, None
        err, self._error = self._error, None
        if err is not None:
            self.ready = None
            raise LandingError(f"checkpoint failed: {err}") from err

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()
        self.reap()

    def forget_before(self, upto: int, ledger: Ledger, st: State) -> None:
        """A checkpoint of generation ``upto`` is now the recovery point: drop what only older ones needed."""
        prune_checkpoints(self.ckpt_dir, ledger.checkpoint, st.base_file)
        keep = []
        for gen, f in self.superseded:
            if gen <= upto:
                try:
                    (self.period_dir / f).unlink()
                except OSError:
                    pass
            else:
                keep.append((gen, f))
        self.superseded = keep
