"""The aggregator's settings: one frozen record the CLI fills and every part reads."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .retention import RetentionPolicy


@dataclass(frozen=True)
class AggregatorConfig:
    shared: Path
    observer: str = "auto"          # auto | inotify | polling
    period_seconds: int = 60
    grace_periods: int = 3
    rescan_seconds: float = 2.0
    batch_files: int = 256
    top_n: int = 10
    max_file_bytes: int = 1 << 30
    lease_ttl: float = 30.0
    secret: bytes | None = None       # require a valid HMAC on every window
    report_seconds: float = 0.0       # provisional and cumulative reports at most this often while busy
    rebase_min_links: int = 1 << 20   # never rewrite the cumulative base for a smaller delta
    retention: RetentionPolicy = RetentionPolicy()
    retention_interval: float = 300.0
    commit_interval: float = 0.25     # seconds to gather landings into one transaction
    checkpoint_seconds: float = 30.0  # checkpoint at least this often while windows arrive ...
    checkpoint_windows: int = 4096    # ... or after this many windows (bounds the replay on restart)
    threads: int = 1                  # GraphBLAS threads (1: a busy shared host is the norm)
    parent: Path | None = None        # land final period sums as windows in this shared directory
    parent_node: str | None = None    # ... under this node name
