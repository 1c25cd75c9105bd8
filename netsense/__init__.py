"""netsense: collaborative network awareness through a shared file system.

This package is the shared floor both daemons stand on, as nfdump's collector
and reader stand on libnffile: the window-file format (``winfile``), names and
places in the shared directory (``layout``), the landing rule (``landing``),
the node status document (``statusdoc``), the sorted-keys -> matrix import
(``matrix``), address helpers (``addresses``), the exception family
(``errors``), failpoints (``faults``) and the CLI plumbing (``cli_support``).

The two wings, ``netsense.collector`` and ``netsense.aggregator`` (the
``collector/`` and ``aggregator/`` folders of the repository), import from
here and from themselves, never from each other.
"""

__version__ = "0.1.0"
