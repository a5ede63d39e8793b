"""The size of a directory tree, walked with a bound so a huge tree cannot stall a page."""

from __future__ import annotations

import os
from dataclasses import dataclass

# Entries looked at before giving up: a page shows "at least" past this.
MAX_ENTRIES = 20_000


@dataclass(frozen=True)
class TreeSize:
    bytes: int
    complete: bool  # False: the walk stopped at the bound; `bytes` is a lower bound
    entries: int = 0  # how many entries the walk looked at


def tree_size(path: str, *, max_entries: int = MAX_ENTRIES) -> TreeSize | None:
    """The apparent size of the files under `path` (symlinks not followed), or None if it is
    not a directory. Stops after `max_entries` entries."""
    if not os.path.isdir(path) or os.path.islink(path):
        return None
    total, seen, pending = 0, 0, [path]
    while pending:
        try:
            entries = os.scandir(pending.pop())
        except OSError:
            continue  # gone or unreadable meanwhile: the rest still counts
        with entries:
            for entry in entries:
                seen += 1
                if seen > max_entries:
                    return TreeSize(total, complete=False, entries=max_entries)
                try:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                except OSError:
                    continue
    return TreeSize(total, complete=True, entries=seen)
