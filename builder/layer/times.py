"""Make a layer dir's file times what its tar records, so a dir kept as a snapshot and the same
layer unpacked from its tar look alike to every later step (e.g. Python's .pyc headers embed
source mtimes; a later RUN must see the same times on every machine)."""
from __future__ import annotations

import os
from pathlib import Path

from builder.layer.tarwrite import layer_mtime


def match_layer_times(layer_dir: Path, source_date_epoch: int | None) -> None:
    """Whole seconds, clamped to the epoch when one is set, as write_layer stores them."""
    root = os.fsencode(layer_dir)
    for directory, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            seconds = layer_mtime(st, source_date_epoch)
            if st.st_mtime_ns != seconds * 1_000_000_000:
                os.utime(path, ns=(seconds * 1_000_000_000, seconds * 1_000_000_000), follow_symlinks=False)
