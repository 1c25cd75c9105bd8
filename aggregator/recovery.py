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

from netsense import landing, winfile
from netsense.errors import BadWindowFile, NetsenseError, StateError
from netsense.layout import STATE_SUFFIX, Layout, WindowName

from .config import AggregatorConfig
from .ledger import Ledger, prune_checkpoints, read_checkpoint
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
              layout.period_reports(), layout.history(), *qdirs):
        landing.remove_stale_temps(d)


def recover(layout: Layout, cfg: AggregatorConfig, upstream: bool) -> tuple[Ledger, State, list]:
    """(ledger, state of its last generation, period files superseded but still named by the checkpoint)."""
    prepare(layout)
    ckpt_dir = layout.checkpoints()
    ledger = Ledger.load(layout.aggregator())
    if ledger.checkpoint:
        header, mats = read_checkpoint(ckpt_dir, ledger.checkpoint)
        base = read_checkpoint(ckpt_dir, header["base_file"])[1]["cumulative"] if header["base_file"] else None
        state = State.from_checkpoint(ledger.generation, header, mats, base)
        if state.period_seconds != cfg.period_seconds:
            raise NetsenseError(f"this shared directory aggregates {state.period_seconds}s periods; "
                                f"restart with --period-seconds {state.period_seconds}")
        prune_checkpoints(ckpt_dir, ledger.checkpoint, state.base_file)
        log.info("recovered generation %d: %d windows consumed so far", ledger.generation, len(ledger.consumed))
        for s in state.unpublished:  # reports may lag the committed state: bring them up to date
            if s in state.periods:
                state.periods[s].dirty = True
    else:
        state = State(cfg.period_seconds)
        prune_checkpoints(ckpt_dir, "")
    state.upstream = upstream
    state.top_n = cfg.top_n
    in_checkpoint = {p.file for p in state.periods.values() if p.file}
    if ledger.replay:
        replay(layout, ledger, state, cfg.max_file_bytes)
    return ledger, state, tidy_period_files(layout, ledger, state, in_checkpoint)


def tidy_period_files(layout: Layout, ledger: Ledger, state: State, in_checkpoint: set) -> list:
    """Delete period files no committed state names (a crash before their ledger line); keep the
    ones the loaded checkpoint names until a newer checkpoint replaces it (returned as superseded)."""
    current = {p.file for p in state.periods.values() if p.file}
    for f in layout.period_sums().glob(f"period-*{STATE_SUFFIX}"):
        if f.name not in current and f.name not in in_checkpoint:
            f.unlink(missing_ok=True)
    return [(ledger.generation, f) for f in sorted(in_checkpoint - current)]


def replay(layout: Layout, ledger: Ledger, state: State, max_file_bytes: int) -> None:
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
                    cand = winfile.read(path, max_file_bytes)
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
            p = state.periods[start]
            p.final, p.version, p.file, p.dirty = True, version, file, True
            done.append(p)
        state.queue_upstream(done)
        state.generation = gen
        n += len(items)
    log.info("replayed %d window(s) of %d generation(s) committed after the checkpoint (%.2fs)", n,
             len(ledger.replay), time.perf_counter() - t0)
