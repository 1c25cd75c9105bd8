"""A read-only shared directory at start-up: one line from each daemon, never a traceback.

As root, permission bits do not stop writes, so the share is made read-only for real: a
read-only bind mount of a directory (``mount --bind DIR RO && mount -o remount,ro,bind RO``),
remounted read-write in place when a test needs the share back.  Skipped where mounting is
not possible (not root, no mount(8), a sandbox that refuses).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import Proc, read_json, run_cli, wait_for

SOURCE = "synthetic:seed={seed},packets=5000,rate=20000"


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def readonly_view(tmp_path):
    """``(src, view)``: ``view`` shows ``src`` read-only; ``view.writable()`` flips it read-write."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("read-only bind mounts need root and mount(8)")
    src, view = tmp_path / "share", tmp_path / "view"
    src.mkdir()
    view.mkdir()
    if not _mount("--bind", str(src), str(view)):
        pytest.skip("cannot bind-mount here")
    try:
        if not _mount("-o", "remount,ro,bind", str(view)):
            pytest.skip("cannot remount a bind mount read-only here")
        probe = view / ".probe"
        try:
            probe.write_bytes(b"")
        except OSError:
            pass
        else:
            probe.unlink()
            pytest.skip("the read-only bind mount still takes writes here")
        yield src, view
    finally:
        subprocess.run(["umount", str(view)], capture_output=True)


def one_line(r: subprocess.CompletedProcess) -> str:
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    lines = out.splitlines()
    assert len(lines) == 1, out
    return lines[0]


def test_a_fresh_read_only_share_is_refused_in_one_line_by_both_daemons(readonly_view):
    """Nothing on the share yet (no nodes/, no aggregator/): both daemons exit 1 at start with one
    line naming the share and the reason.  The collector refuses rather than spooling: it cannot
    even create its landing folder, which on a share that never worked is a wrong mount, not an
    outage to ride out.  ``--once`` does not spend its storage retries (8 s) on a read-only share."""
    _, ro = readonly_view
    r = run_cli("collector", "run", "--shared", str(ro), "--node", "n1", "--source", SOURCE.format(seed=1),
                timeout=60)
    assert r.returncode == 1
    line = one_line(r)
    assert line.startswith(f"Error: cannot use the shared directory {ro}: ") and "Read-only file system" in line
    assert line.endswith("check that it is mounted and writable"), line
    r = run_cli("aggregator", "run", "--shared", str(ro), "--once", timeout=60)
    assert r.returncode == 1
    line = one_line(r)
    assert line.startswith(f"Error: cannot use the shared directory {ro}: ") and "Read-only file system" in line
    assert line.endswith("check that it is mounted and writable"), line
    assert list(ro.iterdir()) == []


def test_an_existing_share_gone_read_only(readonly_view, tmp_path):
    """A share that worked (its tree exists) and is read-only when the daemons start:
    ``aggregator run --once`` exits 1 with one line (it cannot take its lease).  A collector of a
    node new to the share exits 1 with one line (it cannot create nodes/NODE/).  A collector of a
    node whose folder exists starts and spools the window it cannot land, warning without a
    traceback, and lands it once the share is writable again (README: "finished windows wait in
    memory and are retried"), then exits 0; the next drain counts it."""
    src, ro = readonly_view
    r = run_cli("collector", "run", "--shared", str(src), "--node", "n1", "--source", SOURCE.format(seed=1))
    assert r.returncode == 0, r.stderr
    r = run_cli("aggregator", "run", "--shared", str(src), "--once")
    assert r.returncode == 0, r.stderr

    r = run_cli("aggregator", "run", "--shared", str(ro), "--once", timeout=60)
    assert r.returncode == 1
    line = one_line(r)
    assert line.startswith(f"Error: cannot use the shared directory {ro}: ") and "lease.json" in line, line
    assert "Read-only file system" in line and line.endswith("check that it is mounted and writable"), line

    r = run_cli("collector", "run", "--shared", str(ro), "--node", "new1", "--source", SOURCE.format(seed=3),
                timeout=60)
    assert r.returncode == 1
    line = one_line(r)
    assert line.startswith(f"Error: cannot use the shared directory {ro}: ") and "nodes/new1" in line, line

    # Node n1 again, on another capture (a new run): its folder is there, the share refuses the window.
    col = Proc(["collector", "run", "--shared", str(ro), "--node", "n1", "--source", SOURCE.format(seed=2)],
               tmp_path / "n1.log")
    try:
        wait_for(lambda: "spooling locally and retrying" in col.output() or col.p.poll() is not None, 60,
                 what="the collector to spool its window")
        assert col.p.poll() is None, col.output()
        assert len(list((src / "nodes" / "n1").glob("*.nsw"))) == 0  # the first run's window is archived
        assert _mount("-o", "remount,rw,bind", str(ro))
        assert col.wait(120) == 0, col.output()
    finally:
        if col.p.poll() is None:
            col.stop()
    out = col.output()
    assert "Traceback" not in out and "Read-only file system" in out, out
    assert len(list((src / "nodes" / "n1").glob("*.nsw"))) == 1
    r = run_cli("aggregator", "run", "--shared", str(src), "--once")
    assert r.returncode == 0, r.stderr
    doc = read_json(Path(src) / "reports" / "cumulative.json")
    assert {n: s["packets"] for n, s in doc["nodes"].items()} == {"n1": 10000}
    assert doc["analytics"]["valid_packets"] == 10000
