"""scripts/demo: its arguments are parsed before anything is created."""
from __future__ import annotations

import subprocess
import sys

from conftest import ROOT, read_json

DEMO = ROOT / "scripts" / "demo"


def test_demo_help_prints_usage_and_creates_nothing(tmp_path):
    for flag in ("--help", "-h"):
        r = subprocess.run([sys.executable, str(DEMO), flag], cwd=tmp_path, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("usage: scripts/demo [-h] [DIR]") and "shared directory" in r.stdout, r.stdout
        assert list(tmp_path.iterdir()) == []  # no directory named --help (nor anything else) here ...
        assert not (ROOT / flag).exists()      # ... nor where the demo runs its daemons from
    r = subprocess.run([sys.executable, str(DEMO), "one", "two"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "unrecognized arguments: two" in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []


def test_demo_runs_into_a_relative_dir_of_the_callers_cwd(tmp_path):
    r = subprocess.run([sys.executable, str(DEMO), "share"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"shared directory: {tmp_path / 'share'}" in r.stdout
    doc = read_json(tmp_path / "share" / "reports" / "cumulative.json")
    assert sorted(doc["nodes"]) == ["db1", "web1", "web2"]
    assert all(n["packets"] == 400_000 for n in doc["nodes"].values())
    assert not (ROOT / "share").exists()
