"""Recovery: rebuild the last committed state from the checkpoint and the ledger.

The ledger is a write-ahead log.  Its last good line names a checkpoint; the
lines after it list the windows committed since (each with the SHA-256 prefix
of its content) and the periods they made final.  Recovery loads the
checkpoint, sums those windows again from ``archive/`` (or ``nodes/``, after a
crash between a commit and its archive step), and marks the logged periods
final again: decisions are replayed, never made again, so the rebuilt state is
exactly the committed one whatever has changed on the share since.
"""
from __future__ import annotations

import logging
import time

from netsense import landing, sharejson, winfile
from netsense.errors import BadWindowFile, LeaseLost, LedgerDamaged, NetsenseError, StateError
from netsense.faults import failpoint
from netsense.layout import STATE_SUFFIX, Layout, WindowName, checkpoint_file_gen, stamp

from .config import AggregatorConfig
from .ledger import REPAIR_HINT, Ledger, find_period_file, prune_checkpoints, read_checkpoint, read_period_meta
from .state import Period, State
from .sums import Sums

log = logging.getLogger("netsense.aggregator")


def load_period_sum(layout: Layout, p: Period):
    """The saved sum of a final period (needed when a late window restates it)."""
    header, mats = read_checkpoint(layout.period_sums(), p.file)
    return mats["period"]


def prepare(layout: Layout) -> None:
    """Create the tree and remove temp files: only the lease holder writes these, so every temp is stale."""
    layout.ensure()
    layout.ensure(layout.checkpoints(), layout.period_sums(), layout.period_reports())
    q = layout.quarantine()
    qdirs = [p for p in q.iterdir() if p.is_dir()] if q.exists() else []
    for d in (layout.aggregator(), layout.checkpoints(), layout.period_sums(), layout.reports(),
              layout.period_reports(), layout.history(), layout.history_versions(), *qdirs):
        landing.remove_stale_temps(d)


def check_fresh(layout: Layout) -> None:
    """An empty or missing ledger is a fresh start only if nothing a commit leaves behind exists.

    Archived windows, checkpoints and reports are written only after a ledger line committed
    them; finding any with no ledger means the ledger was deleted or lost, and starting afresh
    would silently drop everything counted so far.
    """
    found = []
    archive = layout.root / "archive"
    if archive.is_dir():
        for d in archive.iterdir():
            if d.is_dir() and any(f.suffix == ".nsw" for f in d.iterdir()):
                found.append("consumed windows in archive/")
                break
    if any(layout.checkpoints().glob(f"*{STATE_SUFFIX}")):
        found.append("checkpoints in aggregator/state/")
    cum = sharejson.read_object(layout.cumulative_report(), max_bytes=256 << 20)
    if cum and isinstance(cum.get("generation"), int) and cum["generation"] > 0:
        found.append("reports/cumulative.json (generation %d)" % cum["generation"])
    if found:
        raise LedgerDamaged(f"{layout.ledger()} is missing or empty, but {' and '.join(found)} exist: the ledger "
                            f"was deleted or lost, and starting afresh would drop everything counted so far; "
                            f"{REPAIR_HINT}")


def recover(layout: Layout, cfg: AggregatorConfig, upstream: bool, epoch: int = 0) -> tuple[Ledger, State, list]:
    """(ledger, state of its last generation, period files superseded but still named by the checkpoint).

    ``epoch``: this holder's lease epoch; a ledger already written at a newer one means another
    aggregator holds the share.
    """
    prepare(layout)
    failpoint("agg.recover")
    ckpt_dir = layout.checkpoints()
    ledger = Ledger.load(layout.aggregator())
    if ledger.empty:
        check_fresh(layout)
    if epoch and ledger.epoch > epoch:
        raise LeaseLost(f"{layout.ledger()} was written at lease epoch {ledger.epoch}, newer than this "
                        f"aggregator's {epoch}: another aggregator took this share over")
    if ledger.checkpoint:
        header, mats = read_checkpoint(ckpt_dir, ledger.checkpoint)
        base = read_checkpoint(ckpt_dir, header["base_file"])[1]["cumulative"] if header["base_file"] else None
        # The checkpoint's own generation: the replay below moves it on line by line, so a restated
        # period is brought back from the period file of the generation before the line, never a later one.
        state = State.from_checkpoint(checkpoint_file_gen(ledger.checkpoint), header, mats, base)
        if state.period_seconds != cfg.period_seconds:
            raise NetsenseError(f"this shared directory aggregates {state.period_seconds}s periods; "
                                f"restart with --period-seconds {state.period_seconds}")
        prune_checkpoints(ckpt_dir, ledger.checkpoint, state.base_file)
        log.info("recovered generation %d: %d windows consumed so far", ledger.generation,
                 state.counters.get("windows_consumed", 0))
        for s in state.unpublished:  # reports may lag the committed state: bring them up to date
            if s in state.periods:
                state.periods[s].dirty = True
    else:
        state = State(cfg.period_seconds)
        prune_checkpoints(ckpt_dir, "")
    state.upstream = upstream
    state.top_n = cfg.top_n
    state.find_final = lambda start: find_final(layout, state, start)
    in_checkpoint = {p.file for p in state.periods.values() if p.file}
    if ledger.replay:
        replay(layout, ledger, state, cfg.max_file_bytes, cfg.secret)
    superseded = tidy_period_files(layout, ledger, state, in_checkpoint)
    for p in list(state.periods.values()):
        if p.final and p.file and not p.evictable:  # final by a replayed line: was its file written with it?
            p.evictable = read_period_meta(layout.period_sums(), p.file) is not None
        state.evict(p)  # final and published: its period file holds it
    return ledger, state, superseded


def find_final(layout: Layout, state: State, start: int) -> Period | None:
    """Bring back a final period that left memory, from its newest committed period file."""
    name = find_period_file(layout.period_sums(), stamp(start), state.generation)
    meta = read_period_meta(layout.period_sums(), name) if name else None
    if meta is None:
        return None
    meta["file"] = name
    return Period.from_meta(meta)


def tidy_period_files(layout: Layout, ledger: Ledger, state: State, in_checkpoint: set) -> list:
    """Delete period files of uncommitted generations (a crash before their ledger line) and superseded
    versions no checkpoint names; return the superseded ones the loaded checkpoint still names, to
    delete once a newer checkpoint is the recovery point.

    Final periods leave memory (``State.evict``), so the state does not name every committed
    file: the newest file of each period up to the committed generation is its current one.
    """
    newest: dict = {}
    older = []
    current = {p.file for p in state.periods.values() if p.file}
    for f in sorted(layout.period_sums().glob(f"period-*{STATE_SUFFIX}")):
        stem = f.name[:-len(STATE_SUFFIX)]
        pid, _, g = stem[len("period-"):].rpartition("-g")
        if not g.isdigit() or int(g) > ledger.generation:
            if f.name not in current:
                f.unlink(missing_ok=True)
            continue
        prev = newest.get(pid)
        if prev is not None:
            older.append(prev[1])
        newest[pid] = (int(g), f.name)
    keep = []
    for f in older:  # superseded by a newer committed version: needed only if the checkpoint names it
        if f in in_checkpoint or f in current:
            keep.append((ledger.generation, f))
        else:
            (layout.period_sums() / f).unlink(missing_ok=True)
    return keep


def replay(layout: Layout, ledger: Ledger, state: State, max_file_bytes: int, secret: bytes | None = None) -> None:
    """Sum again the windows of the generations committed after the checkpoint.

    Each must have the content the ledger recorded; the periods a generation
    made final are taken from its line, not decided again (node status has
    moved on since).
    """
    t0, n = time.perf_counter(), 0
    load_final = lambda p: load_period_sum(layout, p)  # noqa: E731
    for gen, windows, final in ledger.replay:
        items = []
        for ident, sha, filename in windows:
            name = WindowName.parse(filename)
            if name is None or name.identity != ident:
                raise StateError(f"ledger generation {gen}: {filename!r} is not the file of window {ident}")
            parsed = None
            for path in (layout.archive(name.node) / filename, layout.landing(name.node) / filename):
                try:
                    cand = winfile.read(path, max_file_bytes, secret=secret)  # HMAC checked before parsing
                except (OSError, BadWindowFile):
                    continue
                if cand.header["payload"]["sha256"][:16] == sha:
                    parsed = cand
                    break
            if parsed is None:
                raise StateError(f"cannot recover generation {gen}: window file {filename} (consumed after "
                                 f"the last checkpoint) is missing from archive/ and nodes/, or its content "
                                 f"differs from what the ledger recorded")
            items.append((parsed.header, Sums.take(winfile.check_window(parsed, name)), filename))
            state.anonymization = parsed.header["anonymization"]
        state.apply_batch(items, load_final)
        done = []
        for start, version, file in final:
            p = state.periods.get(start)
            if p is None:  # final before the checkpoint, restated by nothing in this line
                continue
            p.final, p.version, p.file, p.dirty = True, version, file, True
            done.append(p)
        state.queue_upstream(done)
        state.generation = gen
        n += len(items)
    log.info("replayed %d window(s) of %d generation(s) committed after the checkpoint (%.2fs)", n,
             len(ledger.replay), time.perf_counter() - t0)
