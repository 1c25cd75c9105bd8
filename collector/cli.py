"""``netsense-collector``: a thin click layer over ``collector.run``."""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path

import click

from netsense.cli_support import (MAX_EPOCH, MAX_SLOT_SECONDS, Finite, Whole, log_options, parse_number,
                                  setup_logging, stop_on_signals, storage_message, usable_shared)
from netsense.errors import NetsenseError
from netsense.winfile import COMPRESSIONS, DEFAULT_COMPRESSION, load_secret

from .run import CollectorConfig, run_collector
from .sources import SPEC_HELP

# Ranges of the numeric options (shown by --help; NaN, infinities and values outside are usage errors).
MAX_WINDOW_PACKETS = 1 << 30    # a window's addresses stay in memory until it closes: 8 bytes a packet, 8 GiB
MAX_GAP_WINDOWS = 1_000_000     # empty windows landed for one silent gap: a million files at most
MAX_SPOOL_BYTES = 1 << 40       # memory for windows the share refuses: 1 TiB
MAX_STATUS_INTERVAL = 3600.0    # a heartbeat; the aggregator reads a node as stale after a few of them


class UtcTime(click.ParamType):
    """A UTC time as ISO 8601 (``2026-01-01T00:00:00Z``; no zone means UTC) or epoch seconds, in 0..MAX_EPOCH."""

    name = "utc time"

    def convert(self, value, param, ctx):
        text = str(value).strip()
        try:
            Decimal(text)
        except InvalidOperation:
            pass  # not a number: ISO 8601
        else:
            try:
                return parse_number(text, 0, MAX_EPOCH, integer=True)
            except ValueError as e:
                self.fail(f"{e} (epoch seconds, 1970-01-01..2255-03-14)", param, ctx)
        try:
            t = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            self.fail(f"{text!r} is neither ISO 8601 (2026-01-01T00:00:00Z) nor epoch seconds", param, ctx)
        if t.tzinfo is None:
            t = t.replace(tzinfo=timezone.utc)
        s = int(t.timestamp())
        if not 0 <= s <= MAX_EPOCH:
            self.fail(f"{text} is outside 1970-01-01..2255-03-14 (epoch seconds 0..{MAX_EPOCH})", param, ctx)
        return s


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="netsense")
def main():
    """netsense collector: cut this node's traffic into windows of GraphBLAS traffic
    matrices (A[src, dst] = packets, 2^32 x 2^32) and land them atomically in a shared
    directory for the aggregator."""


@main.command()
@click.option("--shared", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Shared directory (local, NFS, Lustre, CephFS, sshfs); created if missing.")
@click.option("--node", required=True, help="This node's name: 1-63 of [a-z0-9.-]; unique per collector.")
@click.option("--source", "source", required=True, help=f"Traffic source: {SPEC_HELP}.")
@click.option("--window-packets", default=1 << 17, show_default=True, type=Whole(1, MAX_WINDOW_PACKETS),
              help="Close a window after this many counted packets (2^17 = Graph Challenge N_V; at most 2^30: "
                   "an open window's addresses are held in memory, 8 bytes a packet).")
@click.option("--window-seconds", default=60, show_default=True, type=Whole(1, MAX_SLOT_SECONDS),
              help="Close a window at UTC-aligned boundaries of this many seconds of packet time (at most a "
                   "week, so every slot stays nameable and its nanoseconds fit int64).")
@click.option("--status-interval", default=5.0, show_default=True, type=Finite(0.1, MAX_STATUS_INTERVAL),
              help="Seconds between heartbeats written to status/NODE.json (at most an hour).")
@click.option("--max-gap-windows", default=1440, show_default=True, type=Whole(0, MAX_GAP_WINDOWS),
              help="Fill silent time gaps up to this many windows with empty windows (each one a file).")
@click.option("--spool-bytes", default=512 << 20, show_default=True, type=Whole(0, MAX_SPOOL_BYTES),
              help="Memory for finished windows while the shared directory refuses writes (full, read-only, "
                   "unavailable); past it a file source waits and a live source drops (counted, logged). "
                   "1e9 is read as 1000000000; at most 1 TiB.")
@click.option("--secret", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Shared secret file: sign every window with an HMAC that an aggregator run with the same "
                   "--secret requires.")
@click.option("--compression", type=click.Choice(sorted(COMPRESSIONS)), default=DEFAULT_COMPRESSION, show_default=True,
              help="GraphBLAS serialization compressor for window files: lz4 costs the least CPU here and in the "
                   "aggregator; zstd (level 1) makes files about 45% smaller.")
@click.option("--anonymize", "anonymize_key", type=click.Path(dir_okay=False, path_type=Path),
              help="Anonymize addresses with prefix-preserving Crypto-PAn, compatible with cryptopANT's "
                   "scramble_ip4, using this cryptopANT key file (created with mode 0600 if missing). "
                   "The key's fingerprint is recorded in every window.")
@click.option("--pass-bits", default=16, show_default=True, type=Whole(0, 32),
              help="Top address bits passed through unchanged when anonymizing (the Graph Challenge used 16).")
@click.option("--cipher", type=click.Choice(["aes", "blowfish"]), default="aes", show_default=True,
              help="Cipher for a newly created key file.")
@log_options("Log every landed window (debug messages).")
def run(shared, node, source, window_packets, window_seconds, status_interval, max_gap_windows, spool_bytes, secret,
        compression, anonymize_key, pass_bits, cipher, verbose, quiet, log_format):
    """Collect traffic from SOURCE and land windows in SHARED/nodes/NODE/.

    A finite source (a capture file, synthetic with packets=N) exits 0 once every
    window, including the last partial one, is landed. SIGTERM or SIGINT lands the
    open window and exits 0.

    \b
    Examples:
      netsense-collector run --shared /mnt/netsense --node web1 --source pcap:/var/cap/eth0.pcap
      netsense-collector run --shared /tmp/ns --node demo1 --source synthetic:seed=1,packets=500000
    """
    setup_logging(verbose, quiet, log_format)
    stop = stop_on_signals("landing the open window")
    cfg = CollectorConfig(shared, node.strip(), source, window_packets, window_seconds, status_interval,
                          max_gap_windows, spool_bytes, compression)
    try:
        usable_shared(shared)
        anonymizer = None
        if anonymize_key:
            from .anonymize import Anonymizer

            anonymizer = Anonymizer.from_keyfile(anonymize_key, pass_bits=pass_bits, cipher=cipher)
            logging.getLogger("netsense.collector").info("anonymizing with key %s (%s)", anonymize_key,
                                                         anonymizer.fingerprint)
        summary = run_collector(cfg, stop, secret=load_secret(secret) if secret else None, anonymizer=anonymizer)
    except NetsenseError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:  # the share refused the start-up (creating nodes/NODE/, status/): one line, no traceback
        raise click.ClickException(storage_message(e, shared)) from None
    if summary.windows_dropped:
        raise click.ClickException(f"{summary.windows_dropped} window(s) ({summary.packets_dropped} packets) "
                                   f"could not be landed and were dropped")


@main.command("import-graphchallenge")
@click.argument("tars", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--shared", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--node", required=True, help="Node name for the imported windows (one per data set).")
@click.option("--start", default=None, type=UtcTime(),
              help="UTC start of the first window (ISO 8601, no zone meaning UTC, or epoch seconds; "
                   f"1970-01-01..2255-03-14, i.e. 0<=x<={MAX_EPOCH}); default: the stamp in the tar's name "
                   "(pcap2grb writes one), else 1970.")
@click.option("--window-seconds", default=60, show_default=True, type=Whole(1, MAX_SLOT_SECONDS),
              help="Time span given to each matrix: the tars carry no timestamps (at most a week).")
@click.option("--no-byteswap", is_flag=True, help="Indices are already big-endian (pcap2grb -S).")
@log_options()
def import_graphchallenge(tars, shared, node, start, window_seconds, no_byteswap, verbose, quiet, log_format):
    """Land Graph Challenge traffic-matrix tars (N.grb members) as window files.

    The challenge stores each address as its network-order bytes read as a
    little-endian integer; indices are byte-swapped into netsense's big-endian
    convention unless --no-byteswap. Re-importing a tar lands nothing twice.
    """
    from netsense import statusdoc
    from netsense.layout import Layout, WindowName, check_node

    from .graphchallenge import import_tar, tar_name_time

    setup_logging(verbose, quiet, log_format)
    try:
        usable_shared(shared)
        check_node(node)
        t, last = 0, None
        for tar in tars:
            if start is not None and t == 0:
                t = start
            elif t == 0:
                t = tar_name_time(tar) or 0
            s = import_tar(tar, shared, node, start=t, window_seconds=window_seconds, byteswap=not no_byteswap)
            t += s.members * window_seconds
            click.echo(f"{tar}: {s.members} members, {s.landed} landed, {s.already_present} already present, "
                       f"{s.bad} bad, {s.packets:,} packets")
            last = s.files[-1] if s.files else last
        # A finished "collector" status lets the aggregator finalize periods without waiting out the grace.
        wn = WindowName.parse(Path(last).name) if last else None
        layout = Layout(shared)
        layout.ensure(layout.status_dir())
        statusdoc.write(layout, node, "finished", source="graphchallenge", live=False,
                        last_window=statusdoc.last_window(wn, wn.seq + 1) if wn else None)
    except NetsenseError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(storage_message(e, shared)) from None


@main.command("export-graphchallenge")
@click.argument("windows", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The tar to write (atomically; never overwritten).")
@click.option("--no-byteswap", is_flag=True, help="Keep big-endian indices instead of the challenge's convention.")
def export_graphchallenge(windows, output, no_byteswap):
    """Write window files as a Graph Challenge tar of N.grb members (UINT32, zstd)."""
    from .graphchallenge import export_tar

    try:
        n = export_tar(sorted(windows), output, byteswap=not no_byteswap)
    except NetsenseError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{output}: {n} matrices")
