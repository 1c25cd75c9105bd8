"""Both command lines log in UTC with a trailing ``Z``, as text or as one JSON object per line."""
from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone

from conftest import run_cli

STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
SOURCE = "synthetic:seed=7,packets=9000,rate=20000"


def utc_seconds(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


def json_lines(stderr: str) -> list[dict]:
    lines = stderr.splitlines()
    assert lines, "nothing was logged"
    docs = [json.loads(line) for line in lines]  # every line is one object, or this raises
    for d in docs:
        assert isinstance(d, dict) and set(d) >= {"ts", "level", "logger", "msg"}, d
        assert STAMP.fullmatch(d["ts"]), d
        assert d["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") and d["logger"].startswith("netsense")
    return docs


def test_collector_logs_json_one_object_per_line(shared):
    t0 = time.time()
    r = run_cli("collector", "run", "--shared", str(shared), "--node", "j1", "--source", SOURCE,
                "--window-packets", "3000", "--log-format", "json", "-v")
    assert r.returncode == 0, r.stderr
    docs = json_lines(r.stderr)
    landed = [d for d in docs if d["level"] == "DEBUG" and d["msg"].startswith("landed ")]
    assert len(landed) == 3 == len(list((shared / "nodes" / "j1").glob("*.nsw"))), docs  # -v: every landed window
    assert all(t0 - 2 <= utc_seconds(d["ts"]) <= time.time() + 2 for d in docs), docs
    r = run_cli("aggregator", "run", "--shared", str(shared), "--once", "--log-format", "json")
    assert r.returncode == 0, r.stderr
    assert any("committed" in d["msg"] for d in json_lines(r.stderr))


def test_text_logs_are_utc_with_a_z(shared):
    t0 = time.time()
    r = run_cli("collector", "run", "--shared", str(shared), "--node", "t1", "--source", SOURCE)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines
    for line in lines:
        stamp, logger, level, _msg = line.split(" ", 3)
        assert STAMP.fullmatch(stamp) and logger.startswith("netsense") and level in ("INFO", "WARNING"), line
        # UTC, whatever the zone of this host: the stamp is the wall clock's UTC reading.
        assert t0 - 2 <= utc_seconds(stamp) <= time.time() + 2, line
    r = run_cli("aggregator", "run", "--shared", str(shared), "--once", env={"TZ": "America/New_York"})
    assert r.returncode == 0, r.stderr
    stamps = [line.split(" ", 1)[0] for line in r.stderr.splitlines()]
    assert stamps and all(STAMP.fullmatch(s) and abs(utc_seconds(s) - time.time()) < 60 for s in stamps), r.stderr
    # -q: warnings and errors only.
    r = run_cli("collector", "run", "--shared", str(shared), "--node", "t2", "--source", SOURCE, "-q")
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_verbosity_options_have_help_texts():
    for args in (("collector", "run"), ("aggregator", "run"), ("aggregator", "repair"),
                 ("collector", "import-graphchallenge")):
        r = run_cli(*args, "--help")
        assert r.returncode == 0, r.stderr
        text = " ".join(r.stdout.split())
        for opt, words in (("-v, --verbose", "ebug"), ("-q, --quiet", "warnings and errors only"),
                           ("--log-format [text|json]", "one object per line")):
            m = re.search(re.escape(opt) + r" (.{0,200})", text)
            assert m and words in m.group(1), (args, opt, text)
