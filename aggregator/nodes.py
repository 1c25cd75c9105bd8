"""Which nodes exist and which have finished, from their status documents.

A period becomes final early when every known node has finished (its status
says so and its last window is consumed, or in the batch being committed);
otherwise it waits out the grace.  Status files are read through
``netsense.statusdoc`` (which refuses malformed ones) and cached by mtime and
size, so a busy aggregator does not reparse a thousand heartbeats per batch.
"""
from __future__ import annotations

import os

from netsense import statusdoc
from netsense.layout import Layout


class NodeStatuses:
    def __init__(self, layout: Layout):
        self.layout = layout
        self._cache: dict = {}

    def known_and_done(self, known_nodes, consumed, consuming: dict | None = None) -> tuple[set, set]:
        """(known nodes, done nodes): ``known_nodes`` plus every node with a status document.

        ``consumed(identity)``: whether a window was consumed; ``consuming``: the batch's identities.
        """
        known, done = set(known_nodes), set()
        try:
            entries = list(os.scandir(self.layout.status_dir()))
        except FileNotFoundError:
            entries = []
        for e in entries:
            if not e.name.endswith(".json") or e.name.startswith("."):
                continue
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            key = (st.st_mtime_ns, st.st_size)
            cached = self._cache.get(e.name)
            if cached is None or cached[0] != key:
                cached = (key, statusdoc.read(e.path))
                self._cache[e.name] = cached
            doc = cached[1]
            if doc is None:
                continue
            node = doc["node"]
            known.add(node)
            last = doc.get("last_window") or {}
            ident = last.get("identity")
            if doc.get("state") in statusdoc.DONE_STATES and (
                    not last or ident in (consuming or {}) or (isinstance(ident, str) and consumed(ident))):
                done.add(node)
        return known, done
