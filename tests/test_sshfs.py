"""The shared directory behind a real network mount: sshfs over a private sshd on loopback.

Two sshfs mounts of one exported folder play two hosts: three collectors land windows through
mount A, the aggregator daemon reads through mount B.  inotify on B never hears of files created
through A, so the daemon must poll (``--observer polling``; ``auto`` must choose polling there),
and every window must still be consumed exactly once.  Skips cleanly where FUSE, sshd, sshfs or
ssh-keygen is missing or the mount fails.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

import oracle
from conftest import Proc, read_json, wait_for

pytestmark = pytest.mark.slow

SSHD = "/usr/sbin/sshd"
SPECS = {f"host{i}": f"synthetic:seed={40 + i},packets={30000 + 4001 * i},rate=20000,hosts=2000,pace={pace}"
         for i, pace in ((1, 8000), (2, 20000), (3, 20000))}
WINDOW = ["--window-packets", "8192", "--window-seconds", "1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            return s.recv(4).startswith(b"SSH")
    except OSError:
        return False


def _mounted(path: Path) -> str | None:
    """File-system type of the mount at exactly ``path``, if one is there."""
    real = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[1].replace("\\040", " ") == real:
                return parts[2]
    return None


def _unmount(path: Path) -> None:
    if _mounted(path) is None:
        return
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    attempts = [[tool, "-u", str(path)], [tool, "-u", "-z", str(path)]] if tool else [["umount", str(path)]]
    for args in attempts:  # -z (lazy) only if something still holds the mount busy
        if subprocess.run(args, capture_output=True, timeout=30).returncode == 0:
            return


def _sshfs_cache_options() -> str:
    """Options that make every stat and readdir go to the server, so polling sees new files:
    sshfs 3 has ``dir_cache=no`` (plus the kernel's FUSE timeouts); sshfs 2 had ``cache=no``."""
    out = subprocess.run(["sshfs", "-V"], capture_output=True, text=True, timeout=30)
    m = re.search(r"SSHFS version (\d+)", out.stdout + out.stderr)
    if m and int(m.group(1)) < 3:
        return "cache=no,entry_timeout=0,attr_timeout=0,negative_timeout=0"
    return "dir_cache=no,entry_timeout=0,attr_timeout=0,negative_timeout=0"


@pytest.fixture
def sshfs_mounts(tmp_path, request):
    """(export dir, mount A, mount B): one folder served by a private sshd, mounted twice."""
    missing = [t for t in ("sshfs", "ssh-keygen", "ssh") if shutil.which(t) is None]
    if not os.path.exists(SSHD):
        missing.append(SSHD)
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")
    if not os.path.exists("/dev/fuse") or not os.access("/dev/fuse", os.R_OK | os.W_OK):
        pytest.skip("/dev/fuse is absent or not usable")
    if shutil.which("fusermount3") is None and shutil.which("fusermount") is None:
        pytest.skip("fusermount(3) is not installed")
    if not os.path.isdir("/run/sshd"):  # sshd's privilege-separation directory
        if os.geteuid() != 0:
            pytest.skip("/run/sshd is missing and only root may create it")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)

    d = tmp_path / "ssh"
    d.mkdir()
    for key in ("host_key", "client_key"):
        r = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], capture_output=True,
                           text=True, timeout=60)
        if r.returncode != 0:
            pytest.skip(f"ssh-keygen failed: {r.stderr.strip()}")
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    user = os.environ.get("USER") or __import__("pwd").getpwuid(os.geteuid()).pw_name
    export, mnt_a, mnt_b = tmp_path / "export", tmp_path / "mnt-a", tmp_path / "mnt-b"
    for p in (export, mnt_a, mnt_b):
        p.mkdir()

    sshd = None
    for _attempt in range(3):  # a free port may be taken between probing and binding
        port = _free_port()
        cfg = d / "sshd_config"
        cfg.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d / 'host_key'}
PidFile {d / 'sshd.pid'}
AuthorizedKeysFile {d / 'authorized_keys'}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
LogLevel INFO
""")
        log = open(d / "sshd.log", "ab")
        sshd = subprocess.Popen([SSHD, "-D", "-f", str(cfg), "-e"], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        try:
            wait_for(lambda: sshd.poll() is not None or _accepts(port), 20, what="sshd listening")
        except AssertionError:
            pass
        if sshd.poll() is None and _accepts(port):
            break
        sshd.terminate()
        sshd.wait(10)
        sshd = None
    if sshd is None:
        pytest.skip(f"sshd did not start: {(d / 'sshd.log').read_text(errors='replace')[-500:]}")

    def finish():
        for m in (mnt_b, mnt_a):
            _unmount(m)
        sshd.terminate()
        try:
            sshd.wait(10)
        except subprocess.TimeoutExpired:
            sshd.kill()
            sshd.wait(10)

    request.addfinalizer(finish)
    opts = (f"IdentityFile={d / 'client_key'},IdentitiesOnly=yes,BatchMode=yes,StrictHostKeyChecking=no,"
            f"UserKnownHostsFile=/dev/null,LogLevel=ERROR,reconnect,{_sshfs_cache_options()}")
    for m in (mnt_a, mnt_b):
        r = subprocess.run(["sshfs", "-p", str(port), "-o", opts, f"{user}@127.0.0.1:{export}", str(m)],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            pytest.skip(f"sshfs mount failed: {r.stderr.strip()}")
        try:
            wait_for(lambda: _mounted(m) is not None, 20, what=f"{m} mounted")
        except AssertionError:
            pytest.skip(f"sshfs reported success but {m} is not mounted")
    return export, mnt_a, mnt_b


def test_sshfs_mount_seen_as_network_fs(sshfs_mounts):
    from netsense.aggregator.watch import choose_observer, fs_type

    export, mnt_a, mnt_b = sshfs_mounts
    (mnt_a / "nodes").mkdir()
    assert fs_type(mnt_b / "nodes") == "fuse.sshfs"
    assert choose_observer("auto", mnt_b / "nodes") == "polling"
    if fs_type(export) in ("ext4", "xfs", "btrfs", "tmpfs"):  # the same folder seen locally
        assert choose_observer("auto", export) == "inotify"
    # A file created through one mount is visible through the other at once (no stale cache).
    (mnt_a / "nodes" / "probe").write_bytes(b"x")
    assert (mnt_b / "nodes" / "probe").read_bytes() == b"x"
    assert "probe" in os.listdir(mnt_b / "nodes")
    (mnt_b / "nodes" / "probe").unlink()
    assert "probe" not in os.listdir(mnt_a / "nodes")


def test_three_collectors_and_a_polling_daemon_through_sshfs(sshfs_mounts, tmp_path):
    ct = oracle  # the independent reference and checker
    export, mnt_a, mnt_b = sshfs_mounts
    shared_a, shared_b = mnt_a / "netsense", mnt_b / "netsense"
    shared_a.mkdir()
    (shared_a / "nodes").mkdir()
    from netsense.aggregator.watch import choose_observer

    assert choose_observer("auto", shared_b / "nodes") == "polling"
    exp = ct.Expected.of([ct.synthetic_traffic(n, s) for n, s in SPECS.items()])

    agg = Proc(["aggregator", "run", "--shared", str(shared_b), "--observer", "polling", "--period-seconds", "2",
                "--rescan-seconds", "0.5"], tmp_path / "agg.log")
    cols = []
    try:
        wait_for(lambda: (read_json(export / "netsense" / "aggregator" / "lease.json") or {}).get("pid") == agg.p.pid,
                 120, what="aggregator holding the lease")
        args = {n: ["collector", "run", "--shared", str(shared_a), "--node", n, "--source", s, *WINDOW,
                    "--status-interval", "0.5"] for n, s in SPECS.items()}
        cols = [Proc(a, tmp_path / f"{n}.log") for n, a in args.items()]
        # Crash host1 mid-run (SIGKILL: no open window landed, status behind) and restart it: it
        # cleans its temp files and resumes through the mount; re-landed windows are duplicates.
        def host1_files():
            return [p for d in ("nodes", "archive") for p in (export / "netsense" / d).glob("host1/*.nsw")]

        wait_for(lambda: len(host1_files()) >= 2 or cols[0].p.poll() is not None, 120, what="host1 landing windows")
        finishing = cols
        if cols[0].p.poll() is None:
            cols[0].p.kill()
            assert cols[0].wait() == -signal.SIGKILL
            cols.append(Proc(args["host1"], tmp_path / "host1-restart.log"))
            finishing = cols[1:]
        for c in finishing:
            assert c.wait(240) == 0, c.output()
        want = exp.total["valid_packets"]
        # The daemon, not a final drain, consumes everything, through its own mount.
        doc = wait_for(lambda: (lambda d: d if d and d["analytics"]["valid_packets"] >= want else None)(
            read_json(export / "netsense" / "reports" / "cumulative.json")), 180, what="cumulative report")
        assert doc["analytics"] == exp.total
        wait_for(lambda: not list((export / "netsense" / "nodes").glob("*/*.nsw")), 60, what="landing folders empty")
    finally:
        for c in cols:
            if c.p.poll() is None:
                c.stop()
        rc = agg.stop(120)
    out = agg.output()
    assert rc == 0, out
    assert "with the polling observer" in out, out
    assert "Traceback" not in out, out
    shared = export / "netsense"
    bad, facts = ct.verify(shared, exp)
    assert bad == [], "\n".join(bad)
    # Exactly once: the ledger's lines name each window identity once, and with what the
    # checkpoint's ranges cover they are all of them.
    lines, covered = ct.consumed_identities(shared)
    assert len(lines) == len(set(lines)) and set(lines) <= covered
    idents = sorted(covered)
    assert len(idents) == facts["windows"]
    # A window the killed host1 landed after its last status write is landed again by the restart:
    # counted as landed if the aggregator had archived it already, as already present otherwise.
    status = [read_json(shared / "status" / f"{n}.json") for n in SPECS]
    assert sum(s["windows_landed"] + s["windows_already_present"] for s in status) == len(idents)
    assert len(list((shared / "archive").glob("*/*.nsw"))) == len(idents)
    assert not ct.temp_files(shared).get("nodes")
