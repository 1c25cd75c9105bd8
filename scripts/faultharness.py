"""Long-run fault scenarios of the crash harness (issue 11), mixed into its rounds.

``scripts/crashtest.py`` plans a scenario as a kill point of kind ``scenario <name>`` in the
aggregator's queue.  The aggregator life that takes it starts as ``SCENARIOS[name]`` says (a
failpoint, ``--lease-ttl 3``) and is then driven by the scenario's generator, one step per tick of
the round's loop (collectors keep being killed and restarted meanwhile).  The scenario checks what
the product must do during its fault; the round ends, as every round, in a drain compared exactly
with the oracle.  Files put in landing folders are added to the round's ``injected`` list.

frozen-holder   SIGSTOP the holder past its lease; a standby takes over and commits; SIGCONT: the
                old holder exits non-zero ("stopping without writing"), the ledger's epochs never
                go back, and no file its successor committed is rewritten
clock-skew      a standby with NETSENSE_CLOCK_SKEW=120 refuses the live lease (exit 1)
recover-kill    agg.recover:1 SIGKILLs at the start of recovery
recover-eio     agg.ledger:1:eio,agg.recover:2:eio: a failed commit, a failed rollback; it commits again
ledger-deleted  rm aggregator/ledger.jsonl under the daemon: it stops ("vanished") without
                recreating it; ``aggregator repair`` runs before the next start
disk-full       the round's share is a 64 MiB tmpfs, filled for 3-5 s while the aggregator is idle
                (it must stay up), then emptied: everything continues
fifo            a FIFO under a valid window name: quarantined (not_regular_file), no hang
flood           2,000 junk files under valid names: quarantined (bad_magic) while good windows are
                still committed (no good window waits while more than FLOOD_LIMIT are handled)

A generator returns "fired" (the fault was applied; failed checks are errors, or known failures
for ``KNOWN_FAILING``) or "retry" (it could not be applied yet: retried later, like a failpoint
not reached).
"""
from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from oracle import read_json

from netsense.layout import WindowName

LEASE_TTL = ["--lease-ttl", "3"]
TMPFS_SIZE = "64m"
# A good window landing mid-transaction waits for the rest of it and for the next one, each refusing
# at most 256 junk files (aggregator.intake.MAX_QUARANTINES_PER_STEP) before it commits: 512, plus slack.
FLOOD, FLOOD_LIMIT = 2000, 768
JUNK_START = 1_767_225_660       # 2026-01-01T00:01:00Z, after every synthetic slot: scans put good windows first
COMMIT = re.compile(r"generation \d+ committed")
FENCED, TAKEOVER, BUSY = "stopping without writing", "taking over the expired lease", "another aggregator holds"
# Product bugs found by a scenario, reported and not yet fixed: that scenario's failed checks, and
# the damage they name in its round (``Round.known_damage``), are listed as known failures.
KNOWN_FAILING: dict = {}  # scenario -> product bug it exposes (none open: frozen-holder's were fixed in 2c2611f)
ROLLED_BACK = "another aggregator holds this share"  # recover()'s epoch check, reached by a fenced holder's rollback


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable              # generator (round, point) -> "fired" | "retry"
    failpoint: str | None = None
    lease_ttl: bool = False    # this life's aggregators run with --lease-ttl 3
    tmpfs: bool = False        # the round's share on a size-limited tmpfs


# ----------------------------------------------------------------------------- helpers


def until(pred, timeout: float, every: float = 0.1):
    """Yield (one round tick each) until ``pred()`` holds (True) or ``timeout`` passes (False)."""
    deadline, due = time.monotonic() + timeout, 0.0
    while True:
        now = time.monotonic()
        if now >= due:
            if pred():
                return True
            due = now + every
        if now > deadline:
            return False
        yield


def pause(seconds: float):
    yield from until(lambda: False, seconds)


def dead(proc) -> bool:
    return proc.poll() is not None


class Log:
    """Commits in a child's log, read incrementally (a flood writes thousands of lines)."""

    def __init__(self, proc):
        self.proc, self.pos, self.commits = proc, 0, 0

    def update(self) -> "Log":
        try:
            with open(self.proc.log, "rb") as f:
                f.seek(self.pos)
                new = f.read()
        except OSError:
            return self
        cut = new.rfind(b"\n") + 1  # whole lines only
        self.pos += cut
        self.commits += len(COMMIT.findall(new[:cut].decode(errors="replace")))
        return self


def up(rnd, proc, timeout: float = 120):
    """The aggregator holds the lease and watches (recovery done); an error if it died first."""
    lease = rnd.shared / "aggregator" / "lease.json"
    yield from until(lambda: dead(proc) or (rnd.is_up(proc, lease) and "watching" in proc.output()), timeout)
    if not dead(proc) and "watching" in proc.output():
        return True
    rnd.error(f"aggregator exited {proc.poll()} (or never started watching) before its scenario:\n{proc.tail()}")
    proc.kill()
    rnd.agg = None
    return False


def stop(rnd) -> None:
    if rnd.agg is not None:
        rnd.stop_aggregator()


def end(rnd, agg, when: str) -> str:
    """The scenario's aggregator must have stayed up ``when``; stop it (SIGTERM: exit 0) and report."""
    if dead(agg):
        rnd.error(f"the aggregator exited {agg.rc} {when}:\n{agg.tail()}")
        rnd.agg = None
    stop(rnd)
    return "fired"


def good_waiting(shared: Path, exclude: set = frozenset()) -> list[str]:
    """Regular window files waiting in the landing folders (other than ``exclude``)."""
    out = []
    for d in (shared / "nodes").glob("*"):
        try:
            out += [e.name for e in os.scandir(d) if e.name.endswith(".nsw") and not e.name.startswith(".")
                    and e.name not in exclude and e.is_file(follow_symlinks=False)]
        except OSError:
            pass
    return out


def junk_name(rnd, node: str, seq: int) -> str:
    start = JUNK_START + rnd.rng.randrange(8)
    return WindowName(node, start, start + 1, f"{rnd.rng.randrange(1 << 48):012x}", seq).filename


def landing_node(rnd) -> str:
    """A synthetic collector's landing folder of this round."""
    node = rnd.rng.choice([j.node for j in rnd.jobs if j.source.startswith("synthetic:")])
    (rnd.shared / "nodes" / node).mkdir(parents=True, exist_ok=True)
    return node


def ledger_epochs(shared: Path) -> list:
    path, out = shared / "aggregator" / "ledger.jsonl", []
    for line in path.read_bytes().splitlines() if path.exists() else []:
        try:
            out.append(json.loads(line).get("epoch", 0))
        except ValueError:
            pass  # a torn last line
    return out


# ----------------------------------------------------------------------------- scenarios


def frozen_holder(rnd, p):
    holder = rnd.agg
    if not (yield from up(rnd, holder)):
        return "retry"
    yield from pause(rnd.rng.uniform(0.0, 2.0))
    lease, periods = rnd.shared / "aggregator" / "lease.json", rnd.shared / "aggregator" / "periods"
    os.kill(holder.p.pid, signal.SIGSTOP)
    rnd.event(f"SIGSTOP holder pid {holder.p.pid}, epoch {(read_json(lease) or {}).get('epoch')}")
    standby, committed = None, {}
    try:
        if not (yield from until(lambda: (read_json(lease) or {}).get("expires", 1e300) < time.time(), 30)):
            rnd.error("the frozen holder's lease did not expire within 30s")
        standby = rnd.spawn_aggregator("standby", lease_ttl=True)
        took = yield from until(lambda: dead(standby) or TAKEOVER in standby.output(), 120)
        if not took or dead(standby):
            rnd.error(f"the standby did not take over the expired lease (rc {standby.poll()}):\n{standby.tail()}")
        else:
            sl = Log(standby)
            worked = yield from until(lambda: dead(standby) or sl.update().commits >= 1, 60)
            rnd.event(f"standby pid {standby.p.pid} took over, {'committed' if worked else 'did not commit'}")
            yield from pause(rnd.rng.uniform(0.0, 1.0))
    finally:
        committed = {f.name: f.stat().st_ino for f in periods.glob("*.nsc")}  # the successor's files so far
        if not dead(holder):
            os.kill(holder.p.pid, signal.SIGCONT)
    if standby is None or TAKEOVER not in standby.output():  # nothing to fence: the holder goes on
        if standby is not None:
            standby.stop()
        stop(rnd)
        return "fired"
    if not (yield from until(lambda: dead(holder), 60)):
        rnd.error(f"the resumed holder still runs 60s after SIGCONT although its lease was taken over:\n{holder.tail()}")
        holder.kill()
    elif holder.rc != 0 and FENCED not in holder.output() and ROLLED_BACK in holder.output():
        rnd.check_failed(p.name, f"the resumed holder rolled back and exited {holder.rc} with LedgerDamaged, not "
                         f"{FENCED!r}:\n{holder.tail(3)}")
    elif holder.rc == 0 or FENCED not in holder.output():
        rnd.error(f"the resumed holder exited {holder.rc} without saying {FENCED!r}:\n{holder.tail()}")
    else:
        rnd.event(f"resumed holder exited {holder.rc}: {FENCED}")
    epochs = ledger_epochs(rnd.shared)
    if epochs != sorted(epochs):
        rnd.error(f"the ledger's epochs go back after the takeover (the old holder committed again): {epochs}")
    rewritten = [n for n, ino in committed.items() if (periods / n).exists() and (periods / n).stat().st_ino != ino]
    if rewritten:
        rnd.check_failed(p.name, f"the resumed holder rewrote {len(rewritten)} period file(s) its successor had "
                         f"committed: {rewritten[:3]}", damage="periods")
    rnd.agg = standby
    return end(rnd, standby, "(the standby) while the old holder was fenced")


def clock_skew(rnd, p):
    holder = rnd.agg
    if not (yield from up(rnd, holder)):
        return "retry"
    yield from pause(rnd.rng.uniform(0.0, 1.5))
    skewed = rnd.spawn_aggregator("skewed", env={"NETSENSE_CLOCK_SKEW": "120"}, lease_ttl=True)
    if not (yield from until(lambda: dead(skewed), 120)) or skewed.rc != 1 or BUSY not in skewed.output():
        rnd.error(f"a standby whose clock runs 120s ahead did not refuse the live lease (rc {skewed.poll()}):\n"
                  f"{skewed.tail()}")
        skewed.stop()
    else:
        rnd.event(f"skewed standby refused: {skewed.tail(1)}")
    if not dead(holder) and (read_json(rnd.shared / "aggregator" / "lease.json") or {}).get("pid") != holder.p.pid:
        rnd.error("the lease no longer names the live holder after a skewed standby tried")
    return end(rnd, holder, "(the holder) beside a skewed standby")


def recover_kill(rnd, p):
    agg = rnd.agg
    if not (yield from until(lambda: dead(agg), 120)):
        rnd.error(f"not killed at agg.recover within 120s:\n{agg.tail()}")
        stop(rnd)
    elif agg.rc != -signal.SIGKILL or "watching" in agg.output():
        rnd.error(f"exited {agg.rc} instead of dying at the start of recovery:\n{agg.tail()}")
    rnd.agg = None
    return "fired"


def recover_eio(rnd, p):
    agg = rnd.agg
    if not (yield from up(rnd, agg)):
        return "retry"
    ledger_eio, recover_eio = "injected I/O error at failpoint agg.ledger", "injected I/O error at failpoint agg.recover"
    if not (yield from until(lambda: dead(agg) or ledger_eio in agg.output(), 60)):
        stop(rnd)  # no commit reached: retried later
        return "retry"
    if not dead(agg):
        rolled = yield from until(lambda: dead(agg) or recover_eio in agg.output(), 30)
        after = lambda: len(COMMIT.findall(agg.output().partition(recover_eio)[2]))  # noqa: E731
        resumed = rolled and (yield from until(lambda: dead(agg) or after() >= 1, 60))
        if not dead(agg) and not resumed:
            rnd.error(f"after a failed commit: {'no commit' if rolled else 'no failed rollback'} followed:\n"
                      f"{agg.tail()}")
    return end(rnd, agg, "on injected I/O errors instead of retrying")


def ledger_deleted(rnd, p):
    agg = rnd.agg
    if not (yield from up(rnd, agg)):
        return "retry"
    log = Log(agg)
    if not (yield from until(lambda: dead(agg) or log.update().commits >= 1, 60)) or dead(agg):
        stop(rnd)  # it must have written the ledger in this life, or it would rightly create it afresh
        return "retry"
    yield from pause(rnd.rng.uniform(0.0, 1.5))
    ledger = rnd.shared / "aggregator" / "ledger.jsonl"
    ledger.unlink()
    rnd.event("deleted aggregator/ledger.jsonl")
    if not (yield from until(lambda: dead(agg), 120)):
        rnd.error(f"the aggregator still runs 120s after its ledger was deleted:\n{agg.tail()}")
        agg.stop()
    elif agg.rc in (0, -signal.SIGKILL) or "vanished" not in agg.output():
        rnd.error(f"after its ledger was deleted the aggregator exited {agg.rc} without saying 'vanished':\n"
                  f"{agg.tail()}")
    else:
        rnd.event(f"aggregator exited {agg.rc}: ledger vanished")
    if ledger.exists():
        rnd.error("the deleted ledger was recreated by the aggregator that lost it")
    rnd.agg = None
    rep = rnd.spawn(["aggregator", "repair", "--shared", str(rnd.shared)], "repair")
    if not (yield from until(lambda: dead(rep), 300)) or rep.rc != 0:
        rnd.error(f"repair exited {rep.poll()}:\n{rep.tail()}")
        rep.kill()
    else:
        rnd.event(f"repair: {rep.tail(1)}")
    return "fired"


def fill(path: Path) -> int:
    """Write ``path`` until the file system is full; the bytes written."""
    total, fd = 0, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12):
            while True:
                try:
                    total += os.write(fd, b"\xa5" * size)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return total


def disk_full(rnd, p):
    agg = rnd.agg
    if not rnd.on_tmpfs:
        rnd.error("disk-full planned in a round whose share is not on a tmpfs")
        stop(rnd)
        return "fired"
    if not (yield from up(rnd, agg)):
        return "retry"
    quiet = lambda: time.time() - agg.log.stat().st_mtime  # noqa: E731
    idle = yield from until(lambda: dead(agg) or (not good_waiting(rnd.shared) and quiet() > 0.5), 20)
    filler, log = rnd.shared / ".filler", Log(agg).update()
    n0 = log.commits
    rnd.disk_full, rnd.enospc_until = True, float("inf")
    try:
        rnd.event(f"disk full: {fill(filler)} bytes of filler, aggregator {'idle' if idle else 'busy'}")
        died = yield from until(lambda: dead(agg), rnd.rng.uniform(3.0, 5.0))
    finally:
        filler.unlink(missing_ok=True)
        rnd.disk_full, rnd.enospc_until = False, time.monotonic() + 15
    rnd.event("filler deleted")
    resumed = died or (yield from until(lambda: dead(agg) or log.update().commits > n0, 90))
    if not resumed and good_waiting(rnd.shared):
        rnd.error(f"no commit within 90s after the disk had room again, windows waiting:\n{agg.tail()}")
    return end(rnd, agg, "while the disk was full" if died else "after the disk had room again")


def quarantined_as(shared: Path, node: str, name: str) -> str | None:
    docs = [read_json(r) or {} for r in (shared / "quarantine" / node).glob(f"{name}*.reason.json")]
    return next((d.get("reason") for d in docs if d.get("file") == name), None)


def fifo(rnd, p):
    agg = rnd.agg
    if not (yield from up(rnd, agg)):
        return "retry"
    node = landing_node(rnd)
    name = junk_name(rnd, node, rnd.rng.randrange(10 ** 8))
    path, log = rnd.shared / "nodes" / node / name, Log(agg).update()
    n0 = log.commits
    os.mkfifo(path)
    rnd.injected.append((node, name, "not_regular_file"))
    rnd.event(f"FIFO nodes/{node}/{name}")
    done = lambda: not os.path.lexists(path) and quarantined_as(rnd.shared, node, name) == "not_regular_file"  # noqa
    if not (yield from until(lambda: dead(agg) or done(), 60)) and not dead(agg):
        rnd.error(f"the FIFO was not quarantined as not_regular_file within 60s:\n{agg.tail()}")
    if not (yield from until(lambda: dead(agg) or log.update().commits > n0, 60)) and good_waiting(rnd.shared, {name}):
        rnd.error(f"no commit within 60s of the FIFO, windows waiting (hung?):\n{agg.tail()}")
    return end(rnd, agg, "after a FIFO landed")


def flood(rnd, p):
    agg = rnd.agg
    if not (yield from up(rnd, agg)):
        return "retry"
    node = landing_node(rnd)
    d = rnd.shared / "nodes" / node
    tmp, names, t0 = d / f".flood-{os.getpid()}", set(), time.monotonic()
    for seq in range(FLOOD):
        name = junk_name(rnd, node, seq)  # random run ids: no collector's name
        tmp.write_bytes(os.urandom(rnd.rng.randint(64, 1024)))
        os.rename(tmp, d / name)
        names.add(name)
        rnd.injected.append((node, name, "bad_magic"))
    rnd.event(f"flood: {FLOOD} junk files in nodes/{node}/ in {time.monotonic() - t0:.1f}s")
    log, seen, worst = Log(agg), {}, [0, None]

    def check() -> bool:  # per good window waiting: junk handled since it was seen, with no commit since
        left = sum(1 for n in os.listdir(d) if n in names)
        c = log.update().commits
        for g in good_waiting(rnd.shared, names):
            left0, c0 = seen.setdefault(g, (left, c))
            if c != c0:
                seen[g] = (left, c)
            elif left0 - left > worst[0]:
                worst[:] = [left0 - left, g]
        return dead(agg) or left == 0

    if not (yield from until(check, 300)) and not dead(agg):
        rnd.error(f"the flood was not quarantined within 300s:\n{agg.tail()}")
    msg = (f"{worst[0]} junk files quarantined while good window {worst[1]} waited and nothing was committed "
           f"(limit {FLOOD_LIMIT}; {len(seen)} good windows landed meanwhile)")
    rnd.event(f"flood: {msg}")
    if worst[0] > FLOOD_LIMIT and not dead(agg):
        rnd.check_failed(p.name, msg)
    return end(rnd, agg, "during a flood")


SCENARIOS = {s.name: s for s in (
    Scenario("frozen-holder", frozen_holder, lease_ttl=True),
    Scenario("clock-skew", clock_skew, lease_ttl=True),
    Scenario("recover-kill", recover_kill, failpoint="agg.recover:1"),
    Scenario("recover-eio", recover_eio, failpoint="agg.ledger:1:eio,agg.recover:2:eio"),
    Scenario("ledger-deleted", ledger_deleted),
    Scenario("disk-full", disk_full, tmpfs=True),
    Scenario("fifo", fifo),
    Scenario("flood", flood),
)}


def parse_scenarios(spec: str) -> tuple[str, ...]:
    """``all``, ``none`` or ``name,name`` -> names, in the order of ``SCENARIOS``."""
    if spec.strip() in ("all", "none", ""):
        return tuple(SCENARIOS) if spec.strip() == "all" else ()
    names = {s.strip() for s in spec.split(",") if s.strip()}
    if names - set(SCENARIOS):
        raise ValueError(f"unknown scenario(s) {sorted(names - set(SCENARIOS))}; choose from "
                         f"{', '.join(SCENARIOS)}, or all, or none")
    return tuple(s for s in SCENARIOS if s in names)


def tmpfs_mount(path: Path) -> str:
    """Mount a size-limited tmpfs on ``path`` (we must be root): '' or why it failed."""
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(path)],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        return str(e)
    return "" if r.returncode == 0 else (r.stderr.strip() or f"mount exited {r.returncode}")


def tmpfs_umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True, timeout=60).returncode:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=60)


def tmpfs_probe(base: Path) -> str:
    """'' if a tmpfs can be mounted here, else the reason (the disk-full scenario is then left out)."""
    (base / ".tmpfs-probe").mkdir(parents=True, exist_ok=True)
    why = tmpfs_mount(base / ".tmpfs-probe") or tmpfs_umount(base / ".tmpfs-probe") or ""
    (base / ".tmpfs-probe").rmdir()
    return why
