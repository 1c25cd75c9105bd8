"""Names and places in the shared directory: the code half of shared_fs_layout.md.

Both daemons build every path through this module, and a test parses the
document's grammar table and tree against the constants here, so the two
cannot drift apart.
"""
from __future__ import annotations

import functools

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .errors import ConfigError

# --- the tree (mirrored in shared_fs_layout.md, section "Directory tree") ---
NODES_DIR = "nodes"            # nodes/<node>/  landing folder, written by that node's collector only
STATUS_DIR = "status"          # status/<node>.json  collector heartbeat
AGGREGATOR_DIR = "aggregator"  # aggregator-private state: lease, ledger, checkpoints
REPORTS_DIR = "reports"        # reports/*.json, reports/periods/, reports/history/
QUARANTINE_DIR = "quarantine"  # quarantine/<node>/<file> + <file>.reason.json
ARCHIVE_DIR = "archive"        # archive/<node>/<file>  consumed window files
TREE = (NODES_DIR, STATUS_DIR, AGGREGATOR_DIR, REPORTS_DIR, QUARANTINE_DIR, ARCHIVE_DIR)

WINDOW_SUFFIX = ".nsw"
REASON_SUFFIX = ".reason.json"
NODE_LEASE_SUFFIX = ".lease"    # status/<node>.lease: the collector holding the node name  # quarantine/<node>/<file><REASON_SUFFIX>: why <file> was refused

# --- inside aggregator/ (private to the lease holder; mirrored in the tree) ---
LEASE_FILE = "lease.json"            # who is the aggregator; heartbeat + expiry
LEDGER_FILE = "ledger.jsonl"         # the write-ahead log: one committed transaction per line
CHECKPOINTS_DIR = "state"            # state/checkpoint-<gen>.nsc, state/cumulative-<gen>.nsc
PERIOD_SUMS_DIR = "periods"          # periods/period-<ID>-g<gen>.nsc: sums of final periods
AGGREGATOR_STATUS_FILE = "status.json"
STATE_SUFFIX = ".nsc"
CHECKPOINT_PREFIX = "checkpoint"
CUMULATIVE_PREFIX = "cumulative"

# --- inside reports/ ---
CUMULATIVE_REPORT = "cumulative.json"
LATEST_REPORT = "latest.json"
PERIOD_REPORTS_DIR = "periods"       # periods/<ID>.json, periods/<ID>.v<N>.json
HISTORY_DIR = "history"              # history/<YYYYMMDD>.parquet: each final period once, latest version
HISTORY_VERSIONS_DIR = "history-versions"  # history-versions/<YYYYMMDD>.parquet: every final version

# --- grammar (mirrored in shared_fs_layout.md, section "Names") ---
GRAMMAR = {
    "node": r"[a-z0-9][a-z0-9.-]{0,62}",
    "stamp": r"\d{8}T\d{6}Z",
    "run": r"[0-9a-f]{12}",
    "seq": r"\d{8,}",
}
# Anchored with \Z, not $ ($ also matches before a trailing newline, so "a\n" passed as a
# node name), and ASCII-only (\d also matches non-ASCII digits such as "\u0661").
WINDOW_NAME = re.compile(
    r"^(?P<node>{node})_(?P<start>{stamp})_(?P<end>{stamp})_(?P<run>{run})-(?P<seq>{seq})\.nsw\Z".format(**GRAMMAR),
    re.ASCII,
)
NODE_NAME = re.compile(rf"^{GRAMMAR['node']}\Z", re.ASCII)
PERIOD_ID = re.compile(rf"^{GRAMMAR['stamp']}\Z", re.ASCII)


def checkpoint_file(gen: int, prefix: str = CHECKPOINT_PREFIX) -> str:
    """``checkpoint-<gen>.nsc`` (or ``cumulative-<gen>.nsc``): generation padded to 10 digits."""
    return f"{prefix}-{gen:010d}{STATE_SUFFIX}"


def checkpoint_file_gen(name: str | None) -> int:
    """The generation in a ``checkpoint_file`` name (0 for none)."""
    return int(name[len(CHECKPOINT_PREFIX) + 1:-len(STATE_SUFFIX)]) if name else 0


def period_sum_file(period_id: str, gen: int) -> str:
    """``period-<ID>-g<gen>.nsc``: a final period's sum as of generation ``gen``."""
    return f"period-{period_id}-g{gen:010d}{STATE_SUFFIX}"


def check_node(node: str) -> str:
    """Validate a node name: lowercase, no separators, no '..', fits in a file name."""
    if not isinstance(node, str) or not NODE_NAME.match(node) or ".." in node:
        raise ConfigError(
            f"invalid node name {node!r}: use 1-63 of [a-z0-9.-], starting with a letter or digit, no '..'"
        )
    return node


def stamp(seconds: int) -> str:
    """UTC second-resolution stamp used in names: 20261122T013900Z."""
    return datetime.fromtimestamp(int(seconds), tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def parse_stamp(s: str) -> int:
    """Inverse of ``stamp``."""
    return int(datetime.strptime(s, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc).timestamp())


def iso(seconds: float) -> str:
    """ISO-8601 UTC for reports."""
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class WindowName:
    """The parts of a window file name; ``identity`` is what the ledger records."""

    node: str
    start: int  # UTC seconds, window slot start
    end: int    # UTC seconds, window slot end (exclusive)
    run: str    # 12 hex digits: the source fingerprint (file sources) or run id (live sources)
    seq: int    # window sequence number within the run

    @property
    def filename(self) -> str:
        return f"{self.node}_{stamp(self.start)}_{stamp(self.end)}_{self.run}-{self.seq:08d}{WINDOW_SUFFIX}"

    @property
    def identity(self) -> str:
        return f"{self.node}/{self.run}/{self.seq}"

    @classmethod
    @functools.lru_cache(maxsize=1 << 16)
    def parse(cls, filename: str) -> "WindowName | None":
        """Parse a final window file name; None for anything else (temp names, junk).

        Cached: the aggregator's rescans see the same waiting names again and again, and
        strptime cost more than a second per thousand-file batch.
        """
        m = WINDOW_NAME.match(filename)
        if not m or ".." in m["node"]:
            return None
        try:
            return cls(m["node"], parse_stamp(m["start"]), parse_stamp(m["end"]), m["run"], int(m["seq"]))
        except ValueError:  # fits the grammar but is no real time (month 13, Feb 30, second 60): junk
            return None


@dataclass(frozen=True)
class Layout:
    """Paths of one shared directory."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    def nodes(self) -> Path:
        return self.root / NODES_DIR

    def landing(self, node: str) -> Path:
        return self.root / NODES_DIR / check_node(node)

    def status(self, node: str) -> Path:
        return self.root / STATUS_DIR / f"{check_node(node)}.json"

    def status_dir(self) -> Path:
        return self.root / STATUS_DIR

    def node_lease(self, node: str) -> Path:
        return self.root / STATUS_DIR / f"{check_node(node)}{NODE_LEASE_SUFFIX}"

    def aggregator(self) -> Path:
        return self.root / AGGREGATOR_DIR

    def lease(self) -> Path:
        return self.root / AGGREGATOR_DIR / LEASE_FILE

    def ledger(self) -> Path:
        return self.root / AGGREGATOR_DIR / LEDGER_FILE

    def checkpoints(self) -> Path:
        return self.root / AGGREGATOR_DIR / CHECKPOINTS_DIR

    def period_sums(self) -> Path:
        return self.root / AGGREGATOR_DIR / PERIOD_SUMS_DIR

    def aggregator_status(self) -> Path:
        return self.root / AGGREGATOR_DIR / AGGREGATOR_STATUS_FILE

    def reports(self) -> Path:
        return self.root / REPORTS_DIR

    def cumulative_report(self) -> Path:
        return self.root / REPORTS_DIR / CUMULATIVE_REPORT

    def latest_report(self) -> Path:
        return self.root / REPORTS_DIR / LATEST_REPORT

    def period_reports(self) -> Path:
        return self.root / REPORTS_DIR / PERIOD_REPORTS_DIR

    def history(self) -> Path:
        return self.root / REPORTS_DIR / HISTORY_DIR

    def history_versions(self) -> Path:
        return self.root / REPORTS_DIR / HISTORY_VERSIONS_DIR

    def quarantine(self, node: str | None = None) -> Path:
        q = self.root / QUARANTINE_DIR
        return q / node if node else q

    def archive(self, node: str) -> Path:
        return self.root / ARCHIVE_DIR / check_node(node)

    def ensure(self, *dirs: Path) -> None:
        for d in dirs or tuple(self.root / t for t in TREE):
            d.mkdir(parents=True, exist_ok=True)
