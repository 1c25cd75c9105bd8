"""Intake: turn the landed files of one scan into a batch of checked windows.

Every file in a landing folder is hostile until checked.  A file is either
taken into the batch (a valid, new window), dropped or archived (a duplicate
of a window already consumed: the CRDT's idempotence), left for the next scan
(unreadable right now), or moved to ``quarantine/`` with a reason file: the
daemon logs, counts and quarantines a bad file and never dies on one.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from netsense import landing, winfile
from netsense.errors import BadWindowFile
from netsense.faults import failpoint
from netsense.layout import REASON_SUFFIX, Layout, iso

from .config import AggregatorConfig
from .ledger import Ledger
from .state import State
from .sums import Sums
from .topology import refuse_feedback

log = logging.getLogger("netsense.aggregator")
MAX_QUARANTINES_PER_STEP = 256  # two fsyncs each: a transaction stays well inside its lease


@dataclass
class Batch:
    items: list = field(default_factory=list)       # (header, Sums, file name) to sum
    consumed: list = field(default_factory=list)    # (identity, sha prefix, file name) for the ledger line
    ids: dict = field(default_factory=dict)         # identity -> sha prefix, within this batch
    to_archive: list = field(default_factory=list)  # (path, node) to move once committed
    refused: int = 0                                # files quarantined on the way


class Intake:
    def __init__(self, layout: Layout, cfg: AggregatorConfig, counters: dict):
        self.layout = layout
        self.cfg = cfg
        self.counters = counters

    def quarantine(self, path: Path, node_dir: str, reason: str, detail: str = "") -> None:
        """Move a refused file to quarantine/<node>/, its reason file written first.

        Reason before rename: a crash in between leaves an orphan reason file
        (reused by the next attempt), never a quarantined file without a reason.
        """
        qdir = self.layout.quarantine(node_dir)
        qdir.mkdir(parents=True, exist_ok=True)
        target = qdir / path.name
        n = 1
        while target.exists():
            target = qdir / f"{path.name}.{n}"
            n += 1
        info = {"file": path.name, "node_folder": node_dir, "reason": reason, "detail": detail,
                "quarantined_at": iso(time.time())}
        landing.write_text(target.with_name(target.name + REASON_SUFFIX), json.dumps(info, indent=1) + "\n")
        try:
            os.rename(path, target)
        except FileNotFoundError:
            return
        except OSError as e:
            log.error("cannot quarantine %s: %s", path, e)
            return
        self.counters["quarantined"] += 1
        self.counters[f"quarantined:{reason}"] = self.counters.get(f"quarantined:{reason}", 0) + 1
        log.warning("quarantined %s: %s %s", path.name, reason, detail)

    def archive(self, path: Path, node: str) -> None:
        adir = self.layout.archive(node)
        adir.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(path, adir / path.name)
        except OSError as e:
            log.warning("cannot archive %s (%s); it will be recognised as consumed on the next scan", path, e)

    def gather(self, cands, ledger: Ledger, state: State) -> Batch:
        """Check scanned candidates in order until ``batch_files`` windows are taken."""
        b = Batch()
        refused_before = self.counters["quarantined"]
        for c in cands:
            if len(b.consumed) >= self.cfg.batch_files:
                break
            b.refused = self.counters["quarantined"] - refused_before
            if b.refused >= MAX_QUARANTINES_PER_STEP:
                break  # the rest wait for the next transactions: each stays short (100,000 junk files took 90 s)
            if c.name is None:
                self.quarantine(c.path, c.node_dir, "bad_name", "not a window file name")
                continue
            if c.name.node != c.node_dir:
                self.quarantine(c.path, c.node_dir, "wrong_folder", f"node {c.name.node} in nodes/{c.node_dir}")
                continue
            try:
                # One open, then fstat on the descriptor: a FIFO, symlink or device swapped in after
                # the scan is refused (not_regular_file) instead of hanging or being followed; the
                # size limit, the bounded header parse and the HMAC (before any field is read) are
                # all checked inside read().
                parsed = winfile.read(c.path, self.cfg.max_file_bytes, secret=self.cfg.secret,
                                      max_size=self.cfg.max_file_bytes)
                failpoint("agg.read")
                # Topology (issue 11): this aggregator's own sums coming back through a loop of --parent.
                refuse_feedback(c.name, parsed.header, state.instance)
                sha = parsed.header["payload"]["sha256"][:16]
                ident = c.name.identity
                seen = ledger.consumed.get(ident) or b.ids.get(ident)
                if seen is None and state.covers(ident):
                    # Consumed before the recovery point: the ledger was compacted into the checkpoint,
                    # which keeps identities as per-run ranges, not content hashes. Same identity: a copy.
                    seen = sha
                if seen is not None:
                    self._seen_before(c, ident, sha, seen, ledger)
                    continue
                a = winfile.check_window(parsed, c.name)
                span, period = c.name.end - c.name.start, state.period_seconds
                if span > period or period % span:
                    # A period must hold whole windows: a 60 s window in 10 s periods would label
                    # its packets with a time range they were not in.
                    raise BadWindowFile("period_mismatch", f"a {span} s window does not fit {period} s periods: "
                                        f"run the aggregator with --period-seconds a multiple of {span}, or the "
                                        f"collector with --window-seconds dividing {period}")
                anon = parsed.header["anonymization"]
                if (state.nodes or b.items) and anon != state.anonymization:
                    raise BadWindowFile("anonymization_mismatch",
                                        f"window key {anon}, this directory's reports use {state.anonymization}")
                state.anonymization = anon
            except FileNotFoundError:
                continue  # moved away between scan and read (another tool); the rescan decides
            except BadWindowFile as e:
                self.quarantine(c.path, c.node_dir, e.reason, e.detail)
                continue
            except OSError as e:
                log.warning("cannot read %s now (%s); will retry", c.path, e)
                continue
            b.items.append((parsed.header, Sums.take(a), c.path.name))
            b.ids[ident] = sha
            b.consumed.append((ident, sha, c.path.name))
            b.to_archive.append((c.path, c.name.node))
        b.refused = self.counters["quarantined"] - refused_before
        return b

    def _seen_before(self, c, ident: str, sha: str, seen: str, ledger: Ledger) -> None:
        """A window identity already consumed: the same content is a duplicate, other content a conflict."""
        if seen == sha:
            self.counters["duplicates"] += 1
            archived = self.layout.archive(c.name.node) / c.path.name
            if ident in ledger.unsnapshotted or not archived.is_file():
                # Recovery may need to read it, or its archive move failed after the commit (this is
                # the only copy of a consumed window): keep it, in archive/.
                log.info("archiving %s: window %s was already consumed", c.path.name, ident)
                self.archive(c.path, c.name.node)
            else:
                log.info("dropping %s: window %s was already consumed", c.path.name, ident)
                c.path.unlink()
        else:
            self.counters["conflicts"] += 1
            self.quarantine(c.path, c.node_dir, "conflict", f"window {ident} was consumed with different content")
