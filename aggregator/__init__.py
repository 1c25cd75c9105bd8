"""netsense aggregator: sums landed traffic-matrix windows exactly once and writes reports."""

from netsense import __version__  # noqa: F401  (one version for the project)
