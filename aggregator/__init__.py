"""netsense aggregator: sums landed traffic-matrix windows exactly once and writes reports."""

__version__ = "0.1.0"
