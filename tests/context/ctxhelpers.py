"""Helpers for the context/COPY tests (imported by name: tests/context is on sys.path): build small trees from a dict, and read a staging tree."""
from __future__ import annotations

import os
import stat
from pathlib import Path


def make_tree(root: Path, spec: dict[str, object]) -> Path:
    """Create files from {relpath: content}; content bytes/str = file, ("link", target) = symlink,
    None = directory."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in spec.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            path.mkdir(parents=True, exist_ok=True)
        elif isinstance(content, tuple) and content[0] == "link":
            os.symlink(content[1], path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(str(content))
    return root


def tree_listing(root: Path) -> dict[str, tuple]:
    """{image path: (type, mode, uid, gid, content-or-link-target)} of a staging tree."""
    found: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            rel = "/" + str(path.relative_to(root))
            if stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, None)
            elif stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", None, st.st_uid, st.st_gid, os.readlink(path))
            else:
                found[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, path.read_bytes())
    return found


