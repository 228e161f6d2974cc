"""Parsed Buildfiles kept in the store, so a rebuild of an unchanged Buildfile never loads Lark.

Importing Lark, loading the compiled grammar and parsing take about 25 ms: a fifth of a no-op
build. The AST of a Buildfile depends only on its text, its shown path and the parser's code;
all three are in the key, so a changed Buildfile or an upgraded (or edited) builder parses again.

The AST is kept as a pickle in the store's private cache dir (the store root is 0700 and its
owner's: the same trust as the layers beside it), written atomically, and read back with an
unpickler that builds nothing but AST nodes and positions: a damaged or foreign file is parsed
again, never trusted. A parse that fails is not kept; its error is raised as always.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import sys
from pathlib import Path

from builder.parse import ast
from builder.parse.privatefile import read_private, write_private

# Bumped when what is pickled changes shape in a way file stats would not show.
FORMAT = 1
# A cap on kept ASTs: past it, the oldest go when a new one is written (misses only).
MAX_ENTRIES = 256
_PREFIX = "ast-"
_PARSE_DIR = Path(__file__).resolve().parent
_fingerprint: str | None = None


def parse_cached(text: str, path: str, cache_dir: Path | None) -> ast.Buildfile:
    """`parse_buildfile(text, path)`, from `cache_dir` when this text was parsed before; the
    compiled grammar is kept there too."""
    if cache_dir is None:
        return _parse(text, path, None)
    entry = cache_dir / f"{_PREFIX}{_key(text, path)}"
    found = _load(entry, path)
    if found is not None:
        return found
    parsed = _parse(text, path, cache_dir)
    _save(parsed, entry)
    return parsed


def _parse(text: str, path: str, cache_dir: Path | None) -> ast.Buildfile:
    # Here, not at the top: these load Lark, which a hit never needs.
    from builder.parse.grammar import set_cache_dir
    from builder.parse.parser import parse_buildfile

    if cache_dir is not None:
        set_cache_dir(cache_dir)
    return parse_buildfile(text, path=path)


def _key(text: str, path: str) -> str:
    digest = hashlib.sha256()
    for part in (code_fingerprint(), path, text):
        digest.update(part.encode("utf-8", "surrogateescape") + b"\0")
    return digest.hexdigest()[:40]


def code_fingerprint() -> str:
    """What the parser's output depends on besides the text: the Python version, this package's
    modules and the grammar (by size and mtime: an edit or an upgrade changes them), Lark's."""
    global _fingerprint
    if _fingerprint is None:
        parts = [f"format {FORMAT}", sys.version]
        candidates = [_PARSE_DIR / name for name in sorted(os.listdir(_PARSE_DIR)) if name.endswith(".py")]
        # The grammar: package data of builder.grammar in a wheel, grammar/ in a source tree.
        candidates += [_PARSE_DIR.parent / "grammar" / "buildfile.lark",
                       _PARSE_DIR.parents[1] / "grammar" / "buildfile.lark"]
        lark_dir = _module_dir("lark")
        if lark_dir is not None:
            candidates += [lark_dir / "__init__.py", lark_dir / "lark.py", lark_dir / "load_grammar.py"]
        for candidate in candidates:
            try:
                st = os.stat(candidate)
            except OSError:
                continue
            parts.append(f"{candidate}:{st.st_size}:{st.st_mtime_ns}")
        _fingerprint = "\n".join(parts)
    return _fingerprint


def _module_dir(name: str) -> Path | None:
    """Where a top-level package lives, found without importing it."""
    for entry in sys.path:
        candidate = Path(entry or ".") / name / "__init__.py"
        if candidate.is_file():
            return candidate.parent
    return None


class _AstUnpickler(pickle.Unpickler):
    """Builds AST nodes and positions only: nothing else a pickle can name is looked up."""

    def find_class(self, module: str, name: str) -> object:
        if module == "builder.parse.ast" or (module == "builder.errors" and name == "Pos"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of an AST")


def _load(entry: Path, path: str) -> ast.Buildfile | None:
    data = read_private(entry)
    if data is None:
        return None
    try:
        found = _AstUnpickler(io.BytesIO(data)).load()
    except Exception:  # noqa: BLE001 - a damaged entry is parsed again, never trusted
        return None
    if not isinstance(found, ast.Buildfile) or found.path != path:
        return None
    return found


def _save(parsed: ast.Buildfile, entry: Path) -> None:
    try:
        write_private(entry, lambda handle: pickle.dump(parsed, handle, protocol=pickle.HIGHEST_PROTOCOL))
        _trim(entry.parent)
    except (OSError, pickle.PicklingError, RecursionError):
        pass  # not kept this time: the next build parses again


def _trim(directory: Path) -> None:
    """Keep at most MAX_ENTRIES ASTs, dropping the least recently written."""
    with os.scandir(directory) as scan:
        entries = [item for item in scan if item.name.startswith(_PREFIX) and item.is_file(follow_symlinks=False)]
    if len(entries) <= MAX_ENTRIES:
        return
    entries.sort(key=lambda item: item.stat(follow_symlinks=False).st_mtime_ns)
    for item in entries[: len(entries) - MAX_ENTRIES]:
        try:
            os.unlink(item.path)
        except FileNotFoundError:
            pass
