"""``netsense-collector``: a thin click layer over ``collector.run``."""
from __future__ import annotations

from pathlib import Path

import logging

import click

from netsense.cli_support import setup_logging, stop_on_signals
from netsense.errors import NetsenseError
from netsense.winfile import COMPRESSIONS, DEFAULT_COMPRESSION, load_secret

from .run import CollectorConfig, run_collector
from .sources import SPEC_HELP


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
@click.option("--window-packets", default=1 << 17, show_default=True, type=click.IntRange(min=1),
              help="Close a window after this many counted packets (2^17 = Graph Challenge N_V).")
@click.option("--window-seconds", default=60, show_default=True, type=click.IntRange(min=1),
              help="Close a window at UTC-aligned boundaries of this many seconds of packet time.")
@click.option("--status-interval", default=5.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds between heartbeats written to status/NODE.json.")
@click.option("--max-gap-windows", default=1440, show_default=True, type=click.IntRange(min=0),
              help="Fill silent time gaps up to this many windows with empty windows.")
@click.option("--spool-bytes", default=512 << 20, show_default=True, type=click.IntRange(min=0),
              help="Memory for finished windows while the shared directory refuses writes (full, read-only, "
                   "unavailable); past it a file source waits and a live source drops (counted, logged).")
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
@click.option("--pass-bits", default=16, show_default=True, type=click.IntRange(0, 32),
              help="Top address bits passed through unchanged when anonymizing (the Graph Challenge used 16).")
@click.option("--cipher", type=click.Choice(["aes", "blowfish"]), default="aes", show_default=True,
              help="Cipher for a newly created key file.")
@click.option("-v", "--verbose", count=True, help="Log every landed window.")
@click.option("-q", "--quiet", is_flag=True, help="Log warnings and errors only.")
def run(shared, node, source, window_packets, window_seconds, status_interval, max_gap_windows, spool_bytes, secret,
        compression, anonymize_key, pass_bits, cipher, verbose, quiet):
    """Collect traffic from SOURCE and land windows in SHARED/nodes/NODE/.

    A finite source (a capture file, synthetic with packets=N) exits 0 once every
    window, including the last partial one, is landed. SIGTERM or SIGINT lands the
    open window and exits 0.

    \b
    Examples:
      netsense-collector run --shared /mnt/netsense --node web1 --source pcap:/var/cap/eth0.pcap
      netsense-collector run --shared /tmp/ns --node demo1 --source synthetic:seed=1,packets=500000
    """
    setup_logging(verbose, quiet)
    stop = stop_on_signals("landing the open window")
    cfg = CollectorConfig(shared, node.strip(), source, window_packets, window_seconds, status_interval,
                          max_gap_windows, spool_bytes, compression)
    try:
        anonymizer = None
        if anonymize_key:
            from .anonymize import Anonymizer

            anonymizer = Anonymizer.from_keyfile(anonymize_key, pass_bits=pass_bits, cipher=cipher)
            logging.getLogger("netsense.collector").info("anonymizing with key %s (%s)", anonymize_key,
                                                         anonymizer.fingerprint)
        summary = run_collector(cfg, stop, secret=load_secret(secret) if secret else None, anonymizer=anonymizer)
    except NetsenseError as e:
        raise click.ClickException(str(e)) from None
    if summary.windows_dropped:
        raise click.ClickException(f"{summary.windows_dropped} window(s) ({summary.packets_dropped} packets) "
                                   f"could not be landed and were dropped")


@main.command("import-graphchallenge")
@click.argument("tars", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--shared", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--node", required=True, help="Node name for the imported windows (one per data set).")
@click.option("--start", default=None, help="UTC start of the first window (ISO 8601 or epoch seconds); default: "
                                            "the stamp in the tar's name (pcap2grb writes one), else 1970.")
@click.option("--window-seconds", default=60, show_default=True, type=click.IntRange(min=1),
              help="Time span given to each matrix: the tars carry no timestamps.")
@click.option("--no-byteswap", is_flag=True, help="Indices are already big-endian (pcap2grb -S).")
def import_graphchallenge(tars, shared, node, start, window_seconds, no_byteswap):
    """Land Graph Challenge traffic-matrix tars (N.grb members) as window files.

    The challenge stores each address as its network-order bytes read as a
    little-endian integer; indices are byte-swapped into netsense's big-endian
    convention unless --no-byteswap. Re-importing a tar lands nothing twice.
    """
    from datetime import datetime

    from netsense import statusdoc
    from netsense.layout import Layout, WindowName, check_node

    from .graphchallenge import import_tar, tar_name_time

    setup_logging(0, False)
    try:
        check_node(node)
        t, last = 0, None
        for tar in tars:
            if start is not None and t == 0:
                t = int(start) if start.isdigit() else int(datetime.fromisoformat(start.replace("Z", "+00:00")).timestamp())
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
