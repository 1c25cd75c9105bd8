"""``netsense-aggregator``: a thin click layer over ``aggregator.loop`` and the report files."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from netsense.cli_support import (MAX_SLOT_SECONDS, Finite, Whole, check_not_pseudo, log_options, setup_logging,
                                  stop_on_signals, storage_message, usable_shared)
from netsense.errors import AlreadyLanded, LandingError, NetsenseError
from netsense.layout import check_node
from netsense.winfile import load_secret

from .config import AggregatorConfig
from .loop import drain_aggregator, run_aggregator
from .reports import format_table
from .retention import RetentionPolicy
from .status import check as check_status
from .status import format_check, format_status, gather_status, list_periods, load_report
from .topology import check_parent

SHARED = click.option("--shared", required=True, type=click.Path(file_okay=False, path_type=Path),
                      help="The shared directory the collectors land in.")


def default_parent_node() -> str:
    import re
    import socket

    return "agg-" + (re.sub(r"[^a-z0-9.-]", "-", socket.gethostname().lower()).strip("-.") or "host")[:58]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="netsense")
def main():
    """netsense aggregator: sum the traffic-matrix windows landed in a shared directory,
    exactly once, and write Graph Challenge analytics reports (JSON + Parquet) to SHARED/reports/."""


@main.command()
@SHARED
@click.option("--once", is_flag=True, help="Drain every landed window, write reports, exit 0.")
@click.option("--observer", type=click.Choice(["auto", "inotify", "polling"]), default="auto", show_default=True,
              help="How to notice new files; 'auto' polls on network file systems (NFS, Lustre, CephFS, sshfs), "
                   "where inotify sees nothing written by other hosts.")
# Ranges of the numeric options (shown by --help; NaN, infinities and values outside are usage errors).
@click.option("--period-seconds", default=60, show_default=True, type=Whole(1, MAX_SLOT_SECONDS),
              help="Report period, aligned to UTC; a window belongs to the period containing its start (at most "
                   "a week, so period names and nanosecond times stay in range).")
@click.option("--grace", "grace_periods", default=3, show_default=True, type=Whole(0, 10_000),
              help="Periods to wait for silent nodes before a period is final anyway.")
@click.option("--rescan-seconds", default=2.0, show_default=True, type=Finite(0.05, 3600),
              help="Full rescan interval: the source of truth if an event is missed (at most an hour).")
@click.option("--batch-files", default=256, show_default=True, type=Whole(1, 65_536),
              help="Most window files summed per transaction (a batch is held in memory).")
@click.option("--checkpoint-seconds", default=30.0, show_default=True, type=Finite(0, 86_400),
              help="Checkpoint the running sums at least this often while windows arrive (at most a day). Between "
                   "checkpoints the ledger is a write-ahead log: a restart sums the archived windows since the last "
                   "one again.")
@click.option("--checkpoint-windows", default=4096, show_default=True, type=Whole(1, 10_000_000),
              help="... or after this many windows: bounds the replay after a crash.")
@click.option("--report-seconds", default=0.0, show_default=True, type=Finite(0, 86_400),
              help="While busy, rewrite provisional period and cumulative reports at most this often "
                   "(final periods are reported at once; everything is brought up to date when idle).")
@click.option("--top", "top_n", default=10, show_default=True, type=Whole(0, 10_000),
              help="Top-N talkers listed in reports.")
@click.option("--max-file-bytes", default=1 << 30, show_default=True, type=Whole(1024, 1 << 36),
              help="Window files larger than this are quarantined unread (a file is read whole: at most 64 GiB).")
@click.option("--secret", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Shared secret file: quarantine every window without a valid HMAC for it (bad_hmac).")
@click.option("--retain-days", type=Finite(0, 36_500), default=None,
              help="Delete archived (consumed) window files older than this many days (at most a century). "
                   "Reports are kept.")
@click.option("--retain-gb", type=Finite(0, 1e9), default=None,
              help="Delete the oldest archived window files while the archive exceeds this many GiB.")
@click.option("--threads", default=1, show_default=True, type=Whole(1, 1024),
              help="GraphBLAS threads. One is fastest on busy or small hosts; raise it on a dedicated big one.")
@click.option("--parent", type=click.Path(file_okay=False, path_type=Path),
              help="Hierarchical aggregation: also land each final period sum as a window file in this parent "
                   "shared directory, where another aggregator sums it (rack -> site -> global). It must be "
                   "another share, neither SHARED itself nor inside it nor containing it; parents form a tree "
                   "(windows that come back through a loop of parents are quarantined as feedback_loop).")
@click.option("--parent-node", help="Node name to land under in --parent (default: agg-<hostname>).")
@click.option("--lease-ttl", default=30.0, show_default=True, type=Finite(1, 3600),
              help="Seconds the aggregator lease lasts without renewal (renewed every third of it). A standby "
                   "takes over a silent lease after it expires and has not changed for half of it more.")
@log_options("Debug messages too (the aggregator logs every transaction at the default level already).")
def run(shared, once, observer, period_seconds, grace_periods, rescan_seconds, batch_files, checkpoint_seconds,
        checkpoint_windows, report_seconds, top_n,
        max_file_bytes, secret, retain_days, retain_gb, threads, parent, parent_node, lease_ttl, verbose, quiet,
        log_format):
    """Aggregate landed windows into SHARED/reports/ (daemon, or --once).

    Only one aggregator may run per shared directory; a second one refuses to
    start. SIGTERM/SIGINT finish the current transaction and exit 0.
    """
    setup_logging(verbose, quiet, log_format)
    stop = stop_on_signals("finishing the transaction")
    try:
        # Start-up checks, before anything is written: a share that can never work, a parent that
        # would feed this share's sums back into it.
        usable_shared(shared)
        if parent is not None:
            check_not_pseudo(parent, "--parent")
            check_parent(shared, parent)
        cfg = AggregatorConfig(shared, observer, period_seconds, grace_periods, rescan_seconds, batch_files,
                               top_n, max_file_bytes, secret=load_secret(secret) if secret else None,
                               retention=RetentionPolicy(None if retain_days is None else retain_days * 86400,
                                                         None if retain_gb is None else int(retain_gb * 2**30)),
                               threads=threads, checkpoint_seconds=checkpoint_seconds,
                               checkpoint_windows=checkpoint_windows, report_seconds=report_seconds, parent=parent,
                               parent_node=check_node(parent_node or default_parent_node()), lease_ttl=lease_ttl)
        (drain_aggregator if once else run_aggregator)(cfg, stop)
    except LandingError as e:  # the share refused a write it must take (the lease): one line, with the hint
        if isinstance(e.__cause__, OSError) and not isinstance(e, AlreadyLanded):
            raise click.ClickException(f"cannot use the shared directory {shared}: {e}; check that it is mounted "
                                       f"and writable") from None
        raise click.ClickException(str(e)) from None
    except NetsenseError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:  # the share refused the start-up (creating its tree, the lease): one line
        raise click.ClickException(storage_message(e, shared)) from None


@main.command()
@SHARED
@click.option("--period-seconds", default=None, type=Whole(1, MAX_SLOT_SECONDS),
              help="Report period, only for a share without any readable checkpoint (default: the checkpoint's, "
                   "else 60).")
@click.option("--secret", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Shared secret file: only windows with a valid HMAC for it are counted.")
@log_options()
def repair(shared, period_seconds, secret, verbose, quiet, log_format):
    """Rebuild the committed state exactly from checkpoints and window files, or refuse.

    Run it when the aggregator stops saying the ledger is damaged or missing, with
    every aggregator on SHARED stopped. It starts from the newest readable
    checkpoint and adds every window file in archive/ and nodes/ that checkpoint
    does not hold, each once; it refuses when the result could not be exact. The
    old ledger is kept as aggregator/ledger.jsonl.damaged-<stamp>.
    """
    from .repair import repair as do_repair

    setup_logging(verbose, quiet, log_format)
    try:
        usable_shared(shared)
        cfg = AggregatorConfig(shared, period_seconds=period_seconds or 60,
                               secret=load_secret(secret) if secret else None)
        s = do_repair(cfg, period_seconds_given=period_seconds is not None)
    except NetsenseError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(storage_message(e, shared)) from None
    click.echo(f"repaired {shared}: rebuilt on {s.checkpoint or 'an empty state'} plus {s.windows_added} window "
               f"file(s) ({s.packets_added:,} packets) it did not hold; {s.copies_dropped} file(s) it already held; "
               f"new ledger at generation {s.generation}"
               + (f"; the old ledger ({s.ledger_lines} valid, {s.damaged_lines} damaged lines) is kept as "
                  f"aggregator/{s.kept_as}" if s.kept_as else ""))


@main.command()
@SHARED
@click.option("--period", default="cumulative", show_default=True,
              help="'cumulative', 'latest', 'list' (every period with its versions), or a period's UTC start: "
                   "an ID (20260101T000000Z) or ISO 8601 (2026-01-01T00:00:00Z).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def report(shared, period, fmt):
    """Print a report written by the aggregator."""
    if period == "list":
        periods = list_periods(shared)
        if fmt == "json":
            click.echo(json.dumps([{"period": p, "versions": [v for v in vs if v] or [1]} for p, vs in periods]))
        else:
            for p, vs in periods:
                old = [v for v in vs if v]
                click.echo(p + (f"  restated: earlier versions {', '.join(map(str, old))} kept" if old else ""))
        return
    try:
        doc = load_report(shared, period)
    except NetsenseError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(doc, indent=1) if fmt == "json" else format_table(doc), nl=fmt == "json")


@main.command()
@SHARED
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--check", is_flag=True,
              help="Monitoring-plugin mode (Nagios, Icinga, ...): print one summary line first, then one line "
                   "per node, and exit 0 OK, 1 WARNING (a node stale, files in quarantine, a landed window "
                   "waiting longer than --stale-seconds) or 2 CRITICAL (the aggregator down, a node down or "
                   "failed). With --format json the result is under \"check\".")
@click.option("--stale-seconds", type=Finite(0.1, 30 * 86_400), default=None,
              help="With --check: the aggregator is down when its status.json is older than this, and pending "
                   "windows older than this are a warning. Default: 3 of the aggregator's heartbeat intervals, "
                   "at least 30 s (give more for an aggregator run --once from cron). Nodes are judged by their "
                   "own --status-interval: stale after 3 missed heartbeats, down after 12.")
def status(shared, fmt, check, stale_seconds):
    """Show node health (heartbeats, windows landed vs consumed) and aggregator counters."""
    if stale_seconds is not None and not check:
        raise click.UsageError("--stale-seconds only applies with --check")
    if not check:
        doc = gather_status(shared)
        click.echo(json.dumps(doc, indent=1) if fmt == "json" else format_status(doc), nl=fmt == "json")
        sys.exit(0)
    try:
        doc = gather_status(shared)
        result = check_status(doc, stale_seconds)
    except Exception as e:  # noqa: BLE001 - a monitoring check answers UNKNOWN (3), never with a traceback
        click.echo(f"NETSENSE UNKNOWN - cannot read {shared}: {type(e).__name__}: {e}")
        sys.exit(3)
    if fmt == "json":
        click.echo(json.dumps({**doc, "check": result}, indent=1))
    else:
        click.echo(format_check(doc, result), nl=False)
    sys.exit(result["code"])
