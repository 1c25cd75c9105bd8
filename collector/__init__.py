"""netsense collector: turns a node's traffic into windowed GraphBLAS traffic matrices on shared storage."""

from netsense import __version__  # noqa: F401  (one version for the project)
