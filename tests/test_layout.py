"""Unit tests for netsense/layout.py: window names, node names, stamps, paths."""
from __future__ import annotations

from pathlib import Path

import pytest

from netsense.errors import ConfigError
from netsense.layout import (ARCHIVE_DIR, NODES_DIR, PERIOD_ID, TREE, Layout, WindowName, check_node, iso,
                              parse_stamp, stamp)

GOOD = "node-1_20261122T013900Z_20261122T014000Z_0123456789ab-00000042.nsw"


def test_stamp_round_trip_and_format():
    assert stamp(0) == "19700101T000000Z"
    assert stamp(1_795_311_540) == "20261122T013900Z"
    for s in (0, 59, 1_700_000_040, 1_795_311_599, 4_102_444_800, -1):
        assert parse_stamp(stamp(s)) == s
    assert iso(0) == "1970-01-01T00:00:00Z"


def test_window_name_filename_and_identity():
    n = WindowName("node-1", 1_795_311_540, 1_795_311_600, "0123456789ab", 42)
    assert n.filename == GOOD
    assert n.identity == "node-1/0123456789ab/42"
    assert WindowName.parse(n.filename) == n


@pytest.mark.parametrize("n", [
    WindowName("a", 0, 60, "000000000000", 0),
    WindowName("x.y-z", 1_700_000_040, 1_700_000_100, "ffffffffffff", 99_999_999),
    WindowName("9" * 63, 1_700_000_000, 1_700_003_600, "abcdef012345", 123_456_789_012),  # seq > 8 digits
])
def test_window_name_round_trip(n):
    assert WindowName.parse(n.filename) == n
    assert WindowName.parse(n.filename).filename == n.filename


@pytest.mark.parametrize("bad", [
    ".tmp-" + GOOD + ".1234.deadbeef",           # temp name
    "." + GOOD,                                  # hidden
    GOOD + ".tmp",
    GOOD[:-4],                                   # no suffix
    GOOD.replace(".nsw", ".NSW"),
    "Node-1" + GOOD[6:],                         # uppercase node
    GOOD.replace("0123456789ab", "0123456789AB"),  # uppercase run
    GOOD.replace("T013900Z", "t013900z"),        # lowercase stamp letters
    "dir/" + GOOD,                               # path separators
    "node/1" + GOOD[6:],
    "node\\1" + GOOD[6:],
    "../" + GOOD,
    ".." + GOOD[6:],                             # node '..'
    "a..b" + GOOD[6:],                           # '..' inside node
    "-node" + GOOD[6:],                          # node must start with a letter or digit
    "node\n1" + GOOD[6:],                        # control characters
    "node\x001" + GOOD[6:],
    "node\t1" + GOOD[6:],
    GOOD + "\n",                                 # trailing newline
    GOOD.replace("20261122T013900Z", "2026112T013900Z"),   # short stamp
    GOOD.replace("20261122T013900Z", "20261122T0139Z"),
    GOOD.replace("20261122T013900Z", "20261322T013900Z"),  # month 13
    GOOD.replace("20261122T013900Z", "20260230T013900Z"),  # Feb 30
    GOOD.replace("20261122T013900Z", "20261122T013960Z"),  # second 60
    GOOD.replace("20261122T013900Z", "20261122T250000Z"),  # hour 25
    GOOD.replace("20261122T013900Z", "00000101T000000Z"),  # year 0
    GOOD.replace("20261122T013900Z", "٢٠٢٦١١٢٢T013900Z"),  # non-ASCII digits
    GOOD.replace("00000042", "٠٠٠٠٠٠٤٢"),
    GOOD.replace("00000042", "0000042"),         # seq shorter than 8 digits
    GOOD.replace("0123456789ab", "0123456789a"),  # run not 12 hex digits
    GOOD.replace("0123456789ab", "0123456789abc"),
    GOOD.replace("-00000042", "_00000042"),
    "a" * 64 + GOOD[6:],                         # node too long
    "",
    "nsw",
])
def test_parse_rejects(bad):
    assert WindowName.parse(bad) is None


@pytest.mark.parametrize("good", ["a", "node-1", "host.example.org", "0", "a" * 63, "10.0.0.1", "a-", "a."])
def test_check_node_accepts(good):
    assert check_node(good) == good


@pytest.mark.parametrize("bad", ["", "A", "Node", "-a", ".a", "a..b", "..", "a/b", "a\\b", "a b", "a_b",
                                 "a\n", "a\nb", "\na", "a\x00", "a\t", "a" * 64, "ä", "٣", None, 5, b"abc"])
def test_check_node_rejects(bad):
    with pytest.raises(ConfigError):
        check_node(bad)


def test_period_id_grammar():
    assert PERIOD_ID.match("20261122T013900Z")
    assert not PERIOD_ID.match("20261122T013900Z\n")
    assert not PERIOD_ID.match("../20261122T0139")


def test_layout_paths(tmp_path):
    lay = Layout(str(tmp_path))
    assert isinstance(lay.root, Path)
    assert lay.landing("n1") == tmp_path / NODES_DIR / "n1"
    assert lay.archive("n1") == tmp_path / ARCHIVE_DIR / "n1"
    assert lay.status("n1") == tmp_path / "status" / "n1.json"
    for bad in ("../x", "A", "a/b"):
        with pytest.raises(ConfigError):
            lay.landing(bad)
        with pytest.raises(ConfigError):
            lay.status(bad)
    lay.ensure()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(TREE)
    lay.ensure()  # idempotent
    lay.ensure(lay.landing("n2"))
    assert lay.landing("n2").is_dir()
