"""What both command lines share: log set-up and signal handling.

Both daemons log to standard error in one format and stop the same way: the
first SIGTERM or SIGINT sets an event that the run loop checks, so the open
window is landed (collector) or the transaction finished (aggregator) before
the process exits 0.
"""
from __future__ import annotations

import logging
import signal
import sys
import threading


def setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%Y-%m-%dT%H:%M:%S")


def stop_on_signals(what: str = "finishing the current step") -> threading.Event:
    """SIGTERM/SIGINT set an event; the run loop finishes its step and exits 0."""
    stop = threading.Event()

    def handler(signum, _frame):
        logging.getLogger("netsense").info("received %s: %s and stopping", signal.Signals(signum).name, what)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop
