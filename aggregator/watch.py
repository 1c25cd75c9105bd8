"""Finding landed window files: watchdog events for latency, a rescan for truth.

inotify only sees changes made through the local kernel, so on NFS, Lustre,
CephFS or sshfs files written by other hosts raise no event; there a polling
observer is needed.  Either way events only *wake* the aggregator early:
what gets consumed is always decided by a scan of the landing folders, so a
lost or coalesced event delays a window by at most one rescan interval and
never loses it.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from netsense.cli_support import fs_type  # noqa: F401  (one reading of /proc/self/mounts; tests import it here)
from netsense.layout import NODE_NAME, WindowName

log = logging.getLogger("netsense.aggregator")
NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "ceph", "fuse.sshfs", "fuse.cephfs", "gpfs",
              "beegfs", "glusterfs", "fuse.glusterfs", "9p", "afs", "fuse", "fuseblk", "fuse.s3fs", "virtiofs"}


def choose_observer(kind: str, path: Path) -> str:
    if kind != "auto":
        return kind
    t = fs_type(path)
    return "polling" if t in NETWORK_FS or t.startswith("fuse") else "inotify"


class Wakeup:
    """Starts a watchdog observer on ``nodes/`` that sets ``event`` on any final-name change."""

    def __init__(self, nodes_dir: Path, kind: str, event: threading.Event, poll_seconds: float = 1.0):
        self.kind = kind
        self.event = event
        self.observer = None
        self.nodes_dir = nodes_dir
        self.poll_seconds = poll_seconds

    def start(self) -> None:
        from watchdog.events import FileSystemEventHandler

        event = self.event

        class Handler(FileSystemEventHandler):
            def on_any_event(self, ev):
                name = os.path.basename(getattr(ev, "dest_path", "") or ev.src_path)
                if not name.startswith("."):
                    event.set()

        if self.kind == "polling":
            from watchdog.observers.polling import PollingObserver

            self.observer = PollingObserver(timeout=self.poll_seconds)
        else:
            from watchdog.observers import Observer

            self.observer = Observer()
        self.nodes_dir.mkdir(parents=True, exist_ok=True)
        self.observer.schedule(Handler(), str(self.nodes_dir), recursive=True)
        self.observer.daemon = True
        try:
            self.observer.start()
        except OSError as e:  # e.g. inotify watch limit reached: the rescan still works
            log.warning("%s observer failed to start (%s); relying on the periodic rescan", self.kind, e)
            self.observer = None

    def stop(self) -> None:
        if self.observer is not None:
            # watchdog's inotify thread logs an ERROR for an event that races the stop
            # ("queue_events() called when the thread is inactive"); it is harmless, so keep
            # it out of the daemon's log while stopping.
            lg = logging.getLogger("watchdog.observers.inotify")
            level = lg.level
            lg.setLevel(logging.CRITICAL)
            try:
                self.observer.stop()
                self.observer.join(timeout=5)
            finally:
                lg.setLevel(level)


@dataclass(frozen=True)
class Candidate:
    path: Path
    name: WindowName | None  # None: a final-looking name that does not parse (quarantined)
    node_dir: str


def scan(nodes_dir: Path) -> tuple[list[Candidate], list[str]]:
    """List landed files under ``nodes/*/``.  Returns (candidates, problems).

    Names starting with '.' (temp files, NFS silly-renames) are skipped
    silently; symlinks and other non-regular entries are reported, never followed.
    """
    out, problems = [], []
    try:
        node_entries = list(os.scandir(nodes_dir))
    except FileNotFoundError:
        return out, problems
    for nd in node_entries:
        if nd.name.startswith("."):
            continue
        if not nd.is_dir(follow_symlinks=False):
            problems.append(f"{nd.path}: not a directory (symlink or file); ignored")
            continue
        if not NODE_NAME.match(nd.name) or ".." in nd.name:
            problems.append(f"{nd.path}: invalid node folder name; ignored")
            continue
        try:
            entries = list(os.scandir(nd.path))
        except OSError as e:
            problems.append(f"{nd.path}: {e.strerror}")
            continue
        for e in entries:
            if e.name.startswith("."):
                continue
            out.append(Candidate(Path(e.path), WindowName.parse(e.name), nd.name))
    out.sort(key=lambda c: (c.name.start, c.name.node, c.name.run, c.name.seq) if c.name else (0, "", "", -1))
    return out, problems
