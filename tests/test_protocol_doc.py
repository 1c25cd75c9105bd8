"""shared_fs_layout.md is the protocol: its tables and tree must match the code."""
from __future__ import annotations

import re

from conftest import ROOT

from netsense import layout, statusdoc, winfile
from netsense.collector.records import REASONS

DOC = (ROOT / "shared_fs_layout.md").read_text()


def section(title: str) -> str:
    m = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^#+ |\Z)", DOC, re.S | re.M)
    assert m, f"section {title!r} missing"
    return m.group(1)


def table(title: str) -> list[list[str]]:
    rows = [l for l in section(title).splitlines() if l.startswith("|")]
    return [[c.strip() for c in r.strip("|").split("|")] for r in rows[2:]]


def test_name_grammar_matches_layout():
    doc = {r[0]: r[1].strip("`") for r in table("Names")}
    assert doc == layout.GRAMMAR
    example = re.search(r"`([a-z0-9][^`<>]*\.nsw)`", section("Names")).group(1)
    assert layout.WindowName.parse(example).filename == example


def test_tree_top_level_matches_layout():
    tree = re.search(r"```\n(.*?)```", section("Directory tree"), re.S).group(1)
    top = re.findall(r"^[├└]── (\w+)/", tree, re.M)
    assert tuple(top) == layout.TREE


def test_window_header_fields_match_winfile():
    fields = winfile.WINDOW_FIELDS + winfile.OPTIONAL_FIELDS
    assert tuple(r[0] for r in table("Window file format (version 1)")[-len(fields):]) == fields


def test_prefix_table_matches_winfile():
    rows = table("Window file format (version 1)")
    magic = re.search(r"`([0-9A-F ]+)`", rows[0][2]).group(1)
    assert bytes.fromhex(magic) == winfile.MAGIC
    assert rows[1][2].endswith(f"= {winfile.FORMAT_VERSION}")
    assert int(rows[7][0]) == winfile.PREFIX_SIZE
    assert "1 MiB" in rows[3][2] and winfile.MAX_HEADER == 1 << 20


def test_skip_reasons_match_records():
    assert [r[0] for r in table("Skip reasons")] == list(REASONS.values())


def test_quarantine_reasons_match_the_code():
    code = "".join(p.read_text() for d in ("netsense", "collector", "aggregator") for p in (ROOT / d).glob("*.py"))
    used = set(re.findall(r'BadWindowFile\("([a-z_]+)"', code))
    used |= set(re.findall(r'quarantine\([^()]*?, "([a-z_]+)"', code))
    assert {r[0] for r in table("Quarantine reasons")} == used


def _tree_block(top: str) -> list[str]:
    """The entries one level under ``top/`` in the document's directory tree."""
    tree = re.search(r"```\n(.*?)```", section("Directory tree"), re.S).group(1)
    block = re.search(rf"^[├└]── {top}/.*?\n((?:│   .*\n|    .*\n)+)", tree, re.M).group(1)
    return re.findall(r"^(?:│|\s)   [├└]── (\S+)", block, re.M)


def test_aggregator_private_names_match_layout():
    entries = _tree_block("aggregator")
    assert {e.split("/")[0] for e in entries} == {layout.LEASE_FILE, layout.LEDGER_FILE, layout.CHECKPOINTS_DIR,
                                                  layout.PERIOD_SUMS_DIR, layout.AGGREGATOR_STATUS_FILE}
    shapes = {e.split("/", 1)[1] for e in entries if "/" in e}
    assert shapes == {
        layout.checkpoint_file(0).replace("0000000000", "<gen>"),
        layout.checkpoint_file(0, layout.CUMULATIVE_PREFIX).replace("0000000000", "<gen>"),
        layout.period_sum_file("<ID>", 0).replace("0000000000", "<gen>"),
    }
    assert layout.checkpoint_file_gen(layout.checkpoint_file(42)) == 42


def test_report_names_match_layout():
    entries = {e.split("/")[0] for e in _tree_block("reports")}
    assert entries == {layout.CUMULATIVE_REPORT, layout.LATEST_REPORT, layout.PERIOD_REPORTS_DIR, layout.HISTORY_DIR,
                       layout.HISTORY_VERSIONS_DIR}
    assert f"<file>{layout.REASON_SUFFIX}" in section("Directory tree")


def test_status_document_matches_statusdoc():
    text = section("Status files")
    assert f"`{statusdoc.SCHEMA}`" in text
    states = re.search(r"`state` \(([^)]*)\)", text).group(1)
    assert re.findall(r"`(\w+)`", states) == list(statusdoc.STATES)
