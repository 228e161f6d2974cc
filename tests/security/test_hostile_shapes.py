"""Issue 10: random symlink / hardlink / whiteout shapes thrown at layer extraction, image load,
COPY --from, RUN bind mounts and the local export. Whatever the shape, nothing outside the
target changes, and a failure is a BuildError, never a traceback of another kind.

Each example runs in a fresh box holding `victim/` (host files no build may see or touch) beside
the targets; link and hardlink targets aim at it by absolute path, by `../` chains, at `/`, and
at other entries of the same layer.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import builder
from builder.errors import BuildError
from builder.export.rootfs import export_local
from builder.image.importer import load_archive
from builder.image.store import Store
from builder.layer import apply_layer, unpack_layer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="layers keep owners and devices: needs root")

# Mostly names a layer may use, so that later entries meet earlier links; now and then a hostile one.
NAMES = ["a", "b", "a/b", "a/b/c", "b/a", "l", "a/l", "l/x", "a/l/y"] * 3 + ["..", "a/..", "../victim", "a/../../victim/x"]
LINK_TARGETS = ["{victim}", "{victim}/secret.txt", "/", "..", "../..", "../../..", "../../../victim",
                "a", "/a", "a/b", "l", "/l/../..", "../" * 12 + "{victim_rel}"]
HARDLINK_TARGETS = ["{victim}/secret.txt", "../victim/secret.txt", "a", "a/b", "l", "/etc/passwd"]


@st.composite
def layer_entries(draw) -> list[tuple[str, str, str]]:
    """(kind, name, extra): kind is dir, file, symlink, hardlink, whiteout or opaque."""
    count = draw(st.integers(min_value=1, max_value=7))
    entries = []
    for _ in range(count):
        kind = draw(st.sampled_from(["dir", "file", "symlink", "symlink", "hardlink", "whiteout", "opaque"]))
        name = draw(st.sampled_from(NAMES))
        if kind == "symlink":
            extra = draw(st.sampled_from(LINK_TARGETS))
        elif kind == "hardlink":
            extra = draw(st.sampled_from(HARDLINK_TARGETS))
        else:
            extra = draw(st.sampled_from(["x", "y"]))
        entries.append((kind, name, extra))
    return entries


class Box:
    """A fresh directory per example: `victim/` with files, and room for targets beside it."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="shapes-"))
        self.victim = self.root / "victim"
        self.victim.mkdir()
        (self.victim / "secret.txt").write_text("host secret\n")
        (self.victim / "sub").mkdir()
        (self.victim / "sub/keep").write_text("keep\n")
        self.before = self.state()

    def state(self) -> dict[str, tuple[int, int, bytes | str | None]]:
        found: dict[str, tuple[int, int, bytes | str | None]] = {}
        for dirpath, dirnames, filenames in os.walk(self.victim):
            for name in [*dirnames, *filenames]:
                path = Path(dirpath, name)
                info = os.lstat(path)
                content: bytes | str | None = None
                if path.is_symlink():
                    content = os.readlink(path)
                elif path.is_file():
                    content = path.read_bytes()
                found[str(path.relative_to(self.victim))] = (info.st_mode, info.st_nlink, content)
        return found

    def fill(self, text: str) -> str:
        return text.format(victim=self.victim, victim_rel=str(self.victim).lstrip("/"))

    def check_untouched(self, *allowed: str) -> None:
        assert self.state() == self.before, "the victim dir changed"
        assert sorted(os.listdir(self.root)) == sorted(["victim", *allowed]), "something was made beside the targets"

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def layer_tar(box: Box, entries: list[tuple[str, str, str]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for kind, name, extra in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            data = b""
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "file":
                data = f"planted {extra}\n".encode()
                info.size, info.mode = len(data), 0o644
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, box.fill(extra)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, box.fill(extra)
            elif kind == "whiteout":
                head, _, tail = name.rpartition("/")
                info.name = (head + "/" if head else "") + ".wh." + tail
            else:
                info.name = (name.rstrip("/") + "/" if name not in ("", ".") else "") + ".wh..wh..opq"
            archive.addfile(info, io.BytesIO(data) if data else None)
    return buffer.getvalue()


def docker_archive(box: Box, layers: list[bytes], tag: str) -> Path:
    """A docker-archive whose config names the true diff_id of each layer."""
    path = box.root / "image.tar"
    config = {
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]},
        "history": [{"created_by": f"layer {index}"} for index in range(len(layers))],
    }
    config_bytes = json.dumps(config).encode()
    manifest = [{"Config": "config.json", "RepoTags": [tag], "Layers": [f"{i}/layer.tar" for i in range(len(layers))]}]
    with tarfile.open(path, "w") as archive:
        for name, data in [("config.json", config_bytes), ("manifest.json", json.dumps(manifest).encode()),
                           *[(f"{i}/layer.tar", layer) for i, layer in enumerate(layers)]]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(entries=layer_entries())
def test_layer_extraction_stays_inside(entries) -> None:
    box = Box()
    try:
        data = layer_tar(box, entries)
        for extract in (unpack_layer, apply_layer):
            target = box.root / "target"
            target.mkdir()
            try:
                extract(io.BytesIO(data), target)
                event(f"{extract.__name__}: extracted")
            except BuildError:
                event(f"{extract.__name__}: refused")
            box.check_untouched("target")
            shutil.rmtree(target)
    finally:
        box.close()


@SETTINGS
@given(layers=st.lists(layer_entries(), min_size=1, max_size=3),
       source=st.sampled_from(["/", "/a", "/a/b", "/l", "/a/l", "a/../..", "/l/secret.txt", "/b/a"]))
def test_load_export_and_copy_from_stay_inside(layers, source) -> None:
    box = Box()
    try:
        store = Store.open(box.root / "store")
        try:
            loaded = load_archive(store, docker_archive(box, [layer_tar(box, entries) for entries in layers], "shape:1"))
        except BuildError:
            event("load refused")
            box.check_untouched("store", "image.tar")
            return
        manifest_digest = loaded[0][1]
        out = box.root / "out"
        (out / "a").mkdir(parents=True)
        (out / "a/users-own").write_text("mine\n")
        try:
            export_local(store, manifest_digest, out)
            event("exported")
        except BuildError:
            event("export refused")
        assert (out / "a/users-own").read_text() == "mine\n", "the export deleted the user's file"
        box.check_untouched("store", "image.tar", "out")

        context = box.root / "ctx"
        context.mkdir()
        copied = box.root / "copied"
        try:
            builder.build(context, buildfile_text=f"FROM scratch\nCOPY --from=shape:1 {source} /got/\n",
                          root=store.root, outputs=[f"type=local,dest={copied}"])
            event("COPY --from built")
        except BuildError:
            event("COPY --from refused")
        box.check_untouched("store", "image.tar", "out", "ctx", *(["copied"] if copied.exists() else []))
    finally:
        box.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(entries=layer_entries(), source=st.sampled_from(["/", "/a", "/l", "/a/l", "/a/b", "l/..", "/l/sub"]))
@example(entries=[("symlink", "l", "{victim}")], source="/l")  # the reproducers, always tried
@example(entries=[("symlink", "l", "/")], source="/l/{victim_rel}")
@example(entries=[("dir", "a", "x"), ("symlink", "a/l", "../../../../../../../../{victim_rel}")], source="/a/l")
def test_run_bind_mount_of_any_shape_stays_inside(busybox_store, entries, source) -> None:
    box = Box()
    try:
        archive = docker_archive(box, [layer_tar(box, entries)], "mshape:1")
        try:
            load_archive(busybox_store, archive)
        except BuildError:
            event("load refused")
            return
        context = box.root / "ctx"
        context.mkdir()
        text = (
            "FROM busybox\n"
            f"RUN --mount=type=bind,from=mshape:1,source={box.fill(source)},target=/h,rw "
            "sh -c 'echo planted > /h/planted; echo planted > /h/secret.txt; rm -rf /h/sub; true'\n"
        )
        try:
            builder.build(context, buildfile_text=text, root=busybox_store.root, no_cache=True)
            event("RUN --mount built")
        except BuildError:
            event("RUN --mount refused")
        box.check_untouched("image.tar", "ctx")
    finally:
        box.close()
