"""netsense collector: turns a node's traffic into windowed GraphBLAS traffic matrices on shared storage."""

__version__ = "0.1.0"
