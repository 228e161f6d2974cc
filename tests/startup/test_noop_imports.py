"""A rebuild with nothing to do loads only what it uses (issue 11: start-up of the no-op path).

Each build runs in a fresh interpreter, as the CLI does; the second one must find its Buildfile's
AST in the store and its steps in the cache, and never load the parser (Lark), the registry
client, the exporters, the cache exporter/importer or the sandbox; nor write to the store's
databases (a synced write there costs a journal commit, which a busy disk makes slow).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_BUILD_AND_LIST_MODULES = """
import json, sys
import builder
result = builder.build(sys.argv[1], root=sys.argv[2], tags=["startup:1"])
print(json.dumps({"image": result.image_id, "cached": [step.cached for step in result.steps],
                  "modules": sorted(sys.modules)}))
"""

NEVER_ON_A_NOOP = (
    "lark", "builder.parse.parser", "builder.parse.grammar", "builder.registry", "builder.registry.client",
    "builder.export", "builder.export.oci_layout", "builder.cache.exporter", "builder.cache.importer",
    "builder.sandbox", "builder.sandbox.runner", "builder.layer.tarwrite", "builder.solve.copy", "builder.snapshot",
    "tarfile", "ctypes", "urllib.request", "ssl", "secrets", "difflib",
    "concurrent.futures", "logging",
)


def _build(context: Path, store: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", _BUILD_AND_LIST_MODULES, str(context), str(store)],
                          capture_output=True, text=True, env=env, cwd=context, check=True)
    return json.loads(done.stdout)


def test_a_noop_rebuild_loads_neither_the_parser_nor_what_it_does_not_run(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "app.txt").write_text("hello\n")
    (context / "Buildfile").write_text("FROM scratch\nARG V=1\nENV MODE=$V\nCOPY app.txt /app/\nLABEL a=b\n")
    store = tmp_path / "store"

    first = _build(context, store)
    second = _build(context, store)

    assert second["image"] == first["image"]
    assert all(second["cached"][1:])  # every step after FROM
    loaded = set(second["modules"])
    assert "lark" in set(first["modules"])  # the first build parses: the check below can fail
    assert sorted(loaded & set(NEVER_ON_A_NOOP)) == []


def test_an_edited_buildfile_is_parsed_again(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Buildfile").write_text("FROM scratch\nENV A=1\n")
    store = tmp_path / "store"
    first = _build(context, store)
    (context / "Buildfile").write_text("FROM scratch\nENV A=2\n")
    second = _build(context, store)
    assert "lark" in set(second["modules"])
    assert second["image"] != first["image"]


def _store_databases(store: Path) -> dict[str, tuple[bytes, int]]:
    """Each database file of the store (with its WAL, if one is left): bytes and mtime."""
    return {path.name: (path.read_bytes(), path.stat().st_mtime_ns)
            for path in sorted(store.iterdir()) if path.name.split(".db")[0] in ("index", "statcache")
            and not path.name.endswith("-shm")}


def test_a_noop_rebuild_writes_nothing_to_the_store_index(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    (context / "app").mkdir(parents=True)
    (context / "app" / "a.txt").write_text("hello\n")
    (context / "Buildfile").write_text("FROM scratch\nCOPY app/ /app/\nENV A=1\n")
    store = tmp_path / "store"
    first = _build(context, store)
    before = _store_databases(store)
    second = _build(context, store)
    assert second["image"] == first["image"] and all(second["cached"][1:])
    assert set(before) >= {"index.db", "statcache.db"}
    assert _store_databases(store) == before  # the same tag on the same image is not written again


_EXPORT_AND_LIST_MODULES = """
import json, sys
import builder
builder.build(sys.argv[1], root=sys.argv[2], outputs=[f"type=oci,dest={sys.argv[3]},compression=zstd"])
print(json.dumps(sorted(sys.modules)))
"""


def test_an_oci_export_loads_neither_extraction_nor_the_other_exporters(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "app.txt").write_text("hello\n")
    (context / "Buildfile").write_text("FROM scratch\nCOPY app.txt /app/\n")
    store, archive = tmp_path / "store", tmp_path / "out.oci.tar"
    _build(context, store)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", _EXPORT_AND_LIST_MODULES, str(context), str(store), str(archive)],
                          capture_output=True, text=True, env=env, cwd=context, check=True)
    loaded = set(json.loads(done.stdout))
    assert archive.stat().st_size > 0 and "builder.export.oci_layout" in loaded  # the check below can fail
    unneeded = {"builder.layer.extract", "builder.layer.applydir", "builder.layer.tarread",
                "builder.export.rootfs", "builder.export.docker_archive", "builder.registry"}
    assert sorted(loaded & unneeded) == []
