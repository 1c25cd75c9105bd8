"""Repair: rebuild the committed state exactly from what the share holds, or refuse.

The aggregator stops with ``LedgerDamaged`` when its ledger holds something a
single writer could not have written (a damaged line before valid ones, a gap
or a repeated generation, an epoch going back: two aggregators committed), or
when the ledger is missing while archived windows, checkpoints or reports say
that windows were counted.  It never guesses; this module is what the
operator runs then (``netsense-aggregator repair``, with every aggregator on
the share stopped).

What is exact, whatever happened: every consumed window is, by the protocol,
either inside a checkpoint (its identity in the checkpoint's per-run ranges)
or still in ``archive/`` (retention never trims a window the log still
needs), or in ``nodes/`` (a crash between commit and archive).  So the state
is the newest readable checkpoint plus every window file whose identity that
checkpoint does not cover, each counted once (copies dropped by identity and
content; the same identity with different content is refused).  Repair
refuses when it cannot be exact: a window a valid ledger line names after the
checkpoint is nowhere to be found, or the reports say more windows were
consumed than the checkpoint and the files account for (retention trimmed the
archive of a share whose ledger was lost).

The old ledger is kept beside the new one as ``ledger.jsonl.damaged-<stamp>``;
the new ledger is one base line naming a fresh checkpoint.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field, replace

from netsense import winfile
from netsense.errors import BadWindowFile, StateError
from netsense.layout import CHECKPOINT_PREFIX, STATE_SUFFIX, Layout, WindowName, checkpoint_file_gen, stamp
from netsense.lease import Lease

from . import recovery
from .checkpointer import Checkpointer
from .config import AggregatorConfig
from .ledger import _line, last_epoch, parse_line, read_checkpoint, write_period_file
from .publish import Publisher
from .state import State
from .sums import Sums

log = logging.getLogger("netsense.aggregator")
BATCH = 256


class RepairRefused(StateError):
    """The share does not hold enough to rebuild the state exactly."""


@dataclass
class RepairSummary:
    checkpoint: str | None = None        # the base the state was rebuilt on
    generation: int = 0                  # the new ledger's base generation
    windows_added: int = 0               # windows summed on top of the checkpoint
    packets_added: int = 0
    copies_dropped: int = 0
    ledger_lines: int = 0                # valid lines in the old ledger
    damaged_lines: int = 0
    kept_as: str | None = None
    notes: list = field(default_factory=list)


def _valid_lines(layout: Layout) -> tuple[list[dict], int]:
    try:
        raw = layout.ledger().read_bytes().splitlines(keepends=True)
    except FileNotFoundError:
        return [], 0
    recs = [parse_line(r) for r in raw]
    return [r for r in recs if r is not None], sum(r is None for r in recs)


def _newest_checkpoint(layout: Layout, cfg: AggregatorConfig, period_seconds_given: bool
                       ) -> tuple[str | None, State]:
    """The newest checkpoint that reads back whole (with its cumulative base), or an empty state."""
    names = sorted((p.name for p in layout.checkpoints().glob(f"{CHECKPOINT_PREFIX}-*{STATE_SUFFIX}")),
                   key=checkpoint_file_gen, reverse=True)
    for name in names:
        try:
            header, mats = read_checkpoint(layout.checkpoints(), name)
            base = read_checkpoint(layout.checkpoints(), header["base_file"])[1]["cumulative"] \
                if header["base_file"] else None
            st = State.from_checkpoint(checkpoint_file_gen(name), header, mats, base)
            if period_seconds_given and st.period_seconds != cfg.period_seconds:
                raise RepairRefused(f"this share aggregates {st.period_seconds}s periods (checkpoint {name}); "
                                    f"repair without --period-seconds")
            return name, st
        except (StateError, KeyError, TypeError, ValueError) as e:
            log.warning("repair: checkpoint %s is not usable (%s); trying an older one", name, e)
    return None, State(cfg.period_seconds if period_seconds_given else _reported_period(layout, cfg.period_seconds))


def _reported_period(layout: Layout, default: int) -> int:
    """With no checkpoint left, the period length the published period reports used."""
    for f in sorted(layout.period_reports().glob("*.json"))[:1]:
        try:
            seconds = json.loads(f.read_text())["period"]["seconds"]
            if type(seconds) is int and seconds > 0:
                return seconds
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return default


def _window_files(layout: Layout, max_bytes: int, secret: bytes | None) -> tuple[dict, list]:
    """identity -> (path, parsed) of every valid window file in archive/ and nodes/; and conflicts."""
    found: dict = {}
    conflicts = []
    for top in (layout.root / "archive", layout.nodes()):
        if not top.is_dir():
            continue
        for d in sorted(top.iterdir()):
            if not d.is_dir() or d.is_symlink():
                continue
            for f in sorted(d.iterdir()):
                name = WindowName.parse(f.name)
                if name is None or name.node != d.name:
                    continue
                try:
                    parsed = winfile.read(f, max_bytes)
                    if secret is not None:
                        winfile.verify_hmac(parsed, secret)
                    winfile.check_window(parsed, name)
                except (OSError, BadWindowFile):
                    continue  # not ours to judge here: the daemon's intake quarantines bad files
                sha = parsed.header["payload"]["sha256"][:16]
                prev = found.get(name.identity)
                if prev is None:
                    found[name.identity] = (f, name, sha)
                elif prev[2] != sha:
                    conflicts.append(name.identity)
    return found, conflicts


def repair(cfg: AggregatorConfig, period_seconds_given: bool = False) -> RepairSummary:
    layout = Layout(cfg.shared)
    s = RepairSummary()
    lease = Lease(layout.lease(), cfg.lease_ttl)
    lines, s.damaged_lines = _valid_lines(layout)
    s.ledger_lines = len(lines)
    lease.acquire(max([last_epoch(layout.aggregator())] + [r.get("epoch", 0) for r in lines]))
    try:
        recovery.prepare(layout)
        s.checkpoint, st = _newest_checkpoint(layout, cfg, period_seconds_given)
        cfg = replace(cfg, period_seconds=st.period_seconds)
        base_gen = checkpoint_file_gen(s.checkpoint)
        st.find_final = lambda start: recovery.find_final(layout, st, start)
        found, conflicts = _window_files(layout, cfg.max_file_bytes, cfg.secret)
        if conflicts:
            raise RepairRefused(f"windows {conflicts[:3]} exist twice with different content: remove the wrong "
                                f"copies (compare them with netsense-aggregator status), then repair again")
        named = {w[0] for r in lines if r.get("gen", 0) > base_gen for w in r.get("windows", [])}
        missing = sorted(i for i in named if i not in found and not st.covers(i))
        if missing:
            raise RepairRefused(f"{len(missing)} window(s) committed after {s.checkpoint or 'the start'} are in no "
                                f"checkpoint and missing from archive/ and nodes/ (e.g. {missing[:3]}): an exact "
                                f"rebuild is impossible")
        todo = sorted((v for i, v in found.items() if not st.covers(i)), key=lambda v: (v[1].start, v[1].identity))
        s.copies_dropped = sum(1 for i in found if st.covers(i))
        load_final = lambda p: recovery.load_period_sum(layout, p)  # noqa: E731
        for k in range(0, len(todo), BATCH):
            items = []
            for path, name, _ in todo[k:k + BATCH]:
                parsed = winfile.read(path, cfg.max_file_bytes)
                items.append((parsed.header, Sums.take(winfile.check_window(parsed, name)), path.name))
                st.anonymization = parsed.header["anonymization"]
                s.packets_added += parsed.header["packets"]
            st.apply_batch(items, load_final)
        s.windows_added = len(todo)
        _check_against_reports(layout, st, s)
        # Above every generation anything on the share names (lines, checkpoints, period files):
        # the new ones must never reuse a name another writer's generation already took.
        seen = [checkpoint_file_gen(f.name) for f in layout.checkpoints().glob(f"*-*{STATE_SUFFIX}")
                if f.name[-len(STATE_SUFFIX) - 10:-len(STATE_SUFFIX)].isdigit()]
        seen += [int(f.name[-len(STATE_SUFFIX) - 10:-len(STATE_SUFFIX)]) for f in layout.period_sums().glob(
            f"period-*-g*{STATE_SUFFIX}") if f.name[-len(STATE_SUFFIX) - 10:-len(STATE_SUFFIX)].isdigit()]
        gen = max([base_gen, st.generation, *seen] + [r.get("gen", r.get("base", 0)) for r in lines]) + 1
        st.generation = s.generation = gen
        st.upstream, st.top_n = False, cfg.top_n
        for p in st.finalize(set(), set(), cfg.grace_periods * cfg.period_seconds):
            p.version += 1
            p.file, p.evictable = f"period-{p.id}-g{gen:010d}{STATE_SUFFIX}", True
            write_period_file(layout.period_sums(), p.id, gen, p.matrix, meta=p.meta())
        ck = Checkpointer(layout.checkpoints(), layout.period_sums(), rebase_min_links=0, every_seconds=0,
                          every_windows=1)
        ck.start(st, gen, background=False)
        s.kept_as = _replace_ledger(layout, gen, ck.ready, lease.epoch)
        for path, name, _ in todo:  # counted from nodes/: they are consumed now
            if path.parent.parent == layout.nodes():
                adir = layout.archive(name.node)
                adir.mkdir(parents=True, exist_ok=True)
                os.replace(path, adir / path.name)
        Publisher(layout, cfg.top_n, 0).publish(st, load_final, force=True)
        return s
    finally:
        lease.release()


def _check_against_reports(layout: Layout, st: State, s: RepairSummary) -> None:
    """Refuse if the reports counted more windows per node than the rebuilt state holds."""
    try:
        doc = json.loads(layout.cumulative_report().read_text())
        nodes = doc.get("nodes") if isinstance(doc, dict) else None
    except (OSError, ValueError):
        return
    for node, stats in (nodes or {}).items():
        had = stats.get("windows", 0) if isinstance(stats, dict) else 0
        now = st.nodes.get(node, {}).get("windows", 0)
        if isinstance(had, int) and had > now:
            raise RepairRefused(f"reports/cumulative.json counted {had} windows of node {node}, but only {now} are "
                                f"in the newest checkpoint and the window files (trimmed by --retain-days/-gb?): "
                                f"an exact rebuild is impossible")


def _replace_ledger(layout: Layout, gen: int, checkpoint: str | None, epoch: int) -> str | None:
    from netsense import landing

    path = layout.ledger()
    kept = None
    if path.exists():
        kept = f"{path.name}.damaged-{stamp(int(time.time()))}"
        os.replace(path, path.with_name(kept))
    landing.atomic_write(path, _line({"base": gen, "epoch": epoch, "checkpoint": checkpoint}), replace=True)
    return kept
