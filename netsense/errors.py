"""The netsense exception family: one base class, one subclass per thing that can go wrong.

Daemons catch these per file or per window, log them, count them and keep
running; the CLIs turn them into a one-line ``click.ClickException``.
"""


class NetsenseError(Exception):
    """Base class for every error netsense raises on purpose."""


class ConfigError(NetsenseError):
    """An option, source spec or name given by the user is not valid."""


class SourceError(NetsenseError):
    """A traffic source cannot be opened or read."""


class LandingError(NetsenseError):
    """A file could not be written durably into the shared directory."""


class AlreadyLanded(LandingError):
    """The final name exists already; landing never clobbers."""


class BadWindowFile(NetsenseError):
    """A window file failed validation; ``reason`` is a short machine-readable tag."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class AggregatorBusy(NetsenseError):
    """Another aggregator holds the lease on this shared directory."""


class NodeBusy(NetsenseError):
    """Another collector, on this host or another, holds this node name."""


class StateError(NetsenseError):
    """The aggregator's committed state (ledger, checkpoint) is unreadable."""


class LeaseLost(NetsenseError):
    """This aggregator's lease was taken over: it must stop without writing anything more."""


class LedgerDamaged(StateError):
    """The ledger holds something no single writer could have written: stop, and repair."""
