"""Shared test helpers: real processes, real directories, polling with deadlines."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_PCAPS = ROOT.parent / "shared" / "pcaps"
# scripts/oracle.py, the one independent oracle (numpy/scipy analytics, tshark's reading of a
# capture, a drained share checked against both), shared with the crash harness and benches.
if str(ROOT / "scripts") not in sys.path:
    sys.path.insert(0, str(ROOT / "scripts"))


def wing_command(args) -> list[str]:
    """``["collector", "run", ...]`` -> ``[python, "-m", "netsense.collector", "run", ...]``.

    Tests name a wing as a user names its command (``netsense-collector``); the module is
    installed under the project's name.
    """
    wing, *rest = args
    return [sys.executable, "-m", f"netsense.{wing}", *rest]


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)  # polling interval, bounded by the deadline above


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


class Proc:
    """A daemon started as a real process with ``python -m``; stopped with SIGTERM."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None):
        self.log = log
        self.fh = open(log, "wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.p = subprocess.Popen(wing_command(args), stdout=self.fh, stderr=subprocess.STDOUT,
                                  cwd=ROOT, env=env)

    def stop(self, timeout: float = 60) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        rc = self.p.wait(timeout)
        self.fh.close()
        return rc

    def wait(self, timeout: float = 120) -> int:
        rc = self.p.wait(timeout)
        self.fh.close()
        return rc

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(wing_command(args), capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          env=dict(os.environ, **env) if env else None)


@pytest.fixture
def shared(tmp_path) -> Path:
    d = tmp_path / "shared"
    d.mkdir()
    return d


def shared_pcaps(sub: str) -> Path:
    """A folder of captures: ``../shared/pcaps/<sub>``, or ``$NETSENSE_PCAPS_<SUB>`` to use your own."""
    d = Path(os.environ.get(f"NETSENSE_PCAPS_{sub.upper()}", SHARED_PCAPS / sub))
    if not d.is_dir():
        pytest.skip(f"{d} is absent (the shared captures are not mounted here)")
    return d
