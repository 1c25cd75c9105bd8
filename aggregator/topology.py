"""Trees of aggregators stay trees: a parent is another share, and sums never come back.

``--parent`` makes this aggregator a collector of another share.  Two mistakes
make a share sum its own sums again and again (10,000 packets grew to
277,870,000 in nine minutes, and ``--once`` never ended):

* the parent *is* the shared directory, or lies inside it, or contains it
  (``check_parent`` refuses that at start, through symlinks and ``..``);
* the parents form a loop (A's parent is B and B's parent is A, or longer), or
  the parent is this share under another path (a bind mount, another NFS
  mount): nothing at start can see that, so the windows that come back are
  refused when they land (``refuse_feedback``, reason ``feedback_loop``).

How a window is known to come back: an upstream window's ``run`` is the
instance id of the aggregator that landed it, and its header's ``via`` lists
the instance ids of every aggregator whose sums it holds (``Lineage``: each
child aggregator's instance and its own ``via``, read from the status
documents that children keep in this share, the children whose windows this
share has consumed only).  A window whose run or ``via`` names this
aggregator's own instance holds this aggregator's sums: summing it would count
them twice.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from netsense import statusdoc
from netsense.errors import BadWindowFile, ConfigError
from netsense.layout import GRAMMAR, Layout, WindowName

log = logging.getLogger("netsense.aggregator")

VIA = "via"           # the header field (and status document field) of an upstream window's lineage
VIA_LIMIT = 10_000    # instance ids carried at most: ~150 KiB of a header's 1 MiB
SOURCE_PREFIX = "aggregator:"  # the source of every upstream window and status document
_RUN = re.compile(rf"^{GRAMMAR['run']}\Z", re.ASCII)


# --------------------------------------------------------------------------- at start

def check_parent(shared: Path, parent: Path | None) -> None:
    """Refuse a ``--parent`` that is ``--shared`` itself, inside it, or containing it (``ConfigError``).

    Paths are compared resolved (symlinks, ``..``), and as the same directory when both
    exist (a bind mount of the share under another name is caught here too when it is
    the same inode; a loop through other shares is caught as windows land).
    """
    if parent is None:
        return
    s, p = Path(os.path.realpath(shared)), Path(os.path.realpath(parent))
    same = s == p
    if not same:
        try:
            same = os.path.samefile(s, p)
        except OSError:
            same = False  # one of them does not exist yet: the resolved paths decide
    hint = "give the shared directory of the parent aggregator (a tree: site or global share)"
    if same:
        raise ConfigError(f"--parent {parent} is the shared directory {shared} itself (resolved {p}): this "
                          f"aggregator would sum its own sums again and again; {hint}")
    if p.is_relative_to(s):
        raise ConfigError(f"--parent {parent} (resolved {p}) is inside the shared directory {s}: the parent's "
                          f"files would mix with this share's; {hint}, outside {s}")
    if s.is_relative_to(p):
        raise ConfigError(f"--parent {parent} (resolved {p}) contains the shared directory {s}: this share "
                          f"would sit inside its parent's; {hint}, one that does not contain {s}")


# --------------------------------------------------------------------------- as windows land

def is_feedback(window_name: WindowName, instance: str, via=()) -> bool:
    """Whether a landed window holds this aggregator's own sums (its run, or its ``via``, is ``instance``)."""
    return window_name.run == instance or instance in (via or ())


_reported: set = set()  # instances whose feedback loop was logged as an error (once per process)


def refuse_feedback(window_name: WindowName, header: dict, instance: str) -> None:
    """Raise ``BadWindowFile("feedback_loop")`` for a window that brings this aggregator's sums back.

    The first such window is also logged as an error: the parents form a loop (or
    the parent is this share under another path), which only the operator can fix.
    """
    via = header.get(VIA) if isinstance(header, dict) else None
    if not isinstance(via, list):
        via = ()
    if not is_feedback(window_name, instance, via):
        return
    how = "its run" if window_name.run == instance else "its via"
    if instance not in _reported:
        _reported.add(instance)
        log.error("window %s brings back this aggregator's own sums (%s is this aggregator's instance %s): "
                  "the --parent chain loops back to this share; refusing such windows as feedback_loop. Fix "
                  "--parent so that parents form a tree", window_name.filename, how, instance)
    raise BadWindowFile("feedback_loop", f"{how} names this aggregator's instance {instance}: its --parent chain "
                                         f"loops back to this share")


# --------------------------------------------------------------------------- for upstream windows

class Lineage:
    """The aggregator instances whose sums a share holds, for the ``via`` of its upstream windows.

    Read from the status documents that child aggregators keep in the share
    (``status/<node>.json``: ``run`` is the child's instance, ``via`` its own lineage),
    counting only children whose current instance has windows consumed here
    (``coverage``: node -> run -> ranges, from the aggregator's state).  Nodes whose status
    shows a collector are remembered and not read again until they start a new run.
    """

    def __init__(self, shared: Path):
        self.layout = Layout(shared)
        self._collectors: dict = {}  # node -> number of runs consumed when its status showed a collector
        self._children: dict = {}    # node -> the instance ids last read from a child aggregator's status

    def of(self, coverage: dict) -> list[str]:
        ids: set = set()
        for node, runs in coverage.items():
            if self._collectors.get(node) == len(runs):
                continue
            try:
                doc = statusdoc.read(self.layout.status(node))
            except ConfigError:  # not a node name (the coverage is ours, but never trust a name)
                continue
            if doc is None:  # no status (yet), or unreadable now: what it said before, read again next time
                ids.update(self._children.get(node, ()))
                continue
            if not str(doc.get("source", "")).startswith(SOURCE_PREFIX):
                self._collectors[node] = len(runs)
                continue
            run = doc.get("run")
            if not isinstance(run, str) or run not in runs:
                continue  # this child's current instance has nothing consumed here
            via = doc.get(VIA)
            child = {run} | ({v for v in via if isinstance(v, str) and _RUN.match(v)} if isinstance(via, list) else set())
            child |= self._children.get(node, set())  # a lineage only grows
            self._children[node] = child
            ids |= child
        if len(ids) > VIA_LIMIT:
            log.warning("lineage of %d aggregator instances; upstream windows carry the first %d", len(ids),
                        VIA_LIMIT)
        return sorted(ids)[:VIA_LIMIT]
