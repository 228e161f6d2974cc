"""Flatten a docker-archive's image and compare two images: config fields and file trees.

A docker-archive (`docker save`, `builder save`, `-o type=docker`) holds manifest.json, the config
and one uncompressed tar per layer. Flattening applies the layers in order as a container runtime
would: `.wh.NAME` deletes NAME from the layers below, `.wh..wh..opq` hides everything below a
directory, a new entry replaces an old one (a non-directory also drops the old subtree), and a
directory entry over a directory changes only the directory's own metadata.

What is compared for every path: type, mode (permission and special bits), uid, gid, size and
sha256 of regular files, link target of symlinks, device numbers, xattrs, and which other paths
are hard links to the same file. mtimes are not compared (each builder has its own clock).
"""
from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Mapping, Sequence

# The runtime settings a Dockerfile can change; each is compared on its own.
CONFIG_FIELDS = (
    "Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes", "Labels",
    "StopSignal", "Healthcheck", "OnBuild", "Shell", "ArgsEscaped",
)
TOP_FIELDS = ("architecture", "os", "variant", "author")  # the platform, and MAINTAINER's author

_TYPES = {
    tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.CONTTYPE: "file", tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink", tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo",
}
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_XATTR = "SCHILY.xattr."

Member = tuple[tarfile.TarInfo, bytes]


@dataclass(frozen=True)
class Entry:
    """One path of a flattened tree; `inode` only groups hard links and is never compared itself."""

    type: str
    mode: int
    uid: int
    gid: int
    size: int = 0
    sha256: str = ""
    linkname: str = ""
    device: tuple[int, int] = (0, 0)
    xattrs: tuple[tuple[str, str], ...] = ()
    inode: int = 0


@dataclass
class Image:
    config: dict[str, Any]
    files: dict[str, Entry]
    layer_count: int

    def hardlinks(self) -> dict[str, tuple[str, ...]]:
        """For each path that is one of several names of a file: the other names, sorted."""
        groups: dict[int, list[str]] = {}
        for path, entry in self.files.items():
            if entry.type == "file":
                groups.setdefault(entry.inode, []).append(path)
        linked: dict[str, tuple[str, ...]] = {}
        for paths in groups.values():
            if len(paths) > 1:
                for path in paths:
                    linked[path] = tuple(sorted(p for p in paths if p != path))
        return linked


@dataclass(frozen=True)
class Difference:
    """`where` is `config.<Field>`, `history`, `build` or an absolute path; `attribute` says what
    differs there (`value`, `presence`, `type`, `mode`, `uid`, `gid`, `size`, `sha256`,
    `linkname`, `device`, `xattrs`, `hardlinks`, `result`)."""

    where: str
    attribute: str
    ours: str
    buildkit: str

    def describe(self) -> str:
        return f"{self.where} {self.attribute}: ours {self.ours} / BuildKit {self.buildkit}"


@dataclass
class _Flattener:
    files: dict[str, Entry] = field(default_factory=dict)
    next_inode: int = 1

    def remove_below(self, directory: str) -> None:
        prefix = directory.rstrip("/") + "/"
        for path in [p for p in self.files if p.startswith(prefix)]:
            del self.files[path]

    def remove(self, path: str) -> None:
        self.files.pop(path, None)
        self.remove_below(path)

    def apply_layer(self, members: Sequence[Member]) -> None:
        layer_names: dict[str, Entry] = {}  # a hard link names a member of its own layer
        # Whiteouts hide what is below, never what this layer itself adds, so they go first.
        for member, _data in members:
            path = _clean(member.name)
            parent, _, base = path.rpartition("/")
            if base == _OPAQUE:
                self.remove_below(parent or "/")
            elif base.startswith(_WHITEOUT):
                self.remove(f"{parent}/{base[len(_WHITEOUT):]}")
        for member, data in members:
            path = _clean(member.name)
            if path == "/" or path.rpartition("/")[2].startswith(_WHITEOUT):
                continue
            entry = self.entry(member, data, layer_names)
            old = self.files.get(path)
            if old is not None and not (old.type == "dir" and entry.type == "dir"):
                self.remove(path)
            self.files[path] = entry
            layer_names[path] = entry

    def entry(self, member: tarfile.TarInfo, data: bytes, layer_names: Mapping[str, Entry]) -> Entry:
        xattrs = tuple(sorted((key[len(_XATTR):], value) for key, value in member.pax_headers.items()
                              if key.startswith(_XATTR)))
        if member.islnk():
            target = layer_names.get(_clean(member.linkname)) or self.files.get(_clean(member.linkname))
            if target is None:
                raise ValueError(f"hard link {member.name} to missing {member.linkname}")
            return target
        kind = _TYPES.get(member.type)
        if kind is None:
            raise ValueError(f"{member.name}: unsupported tar entry type {member.type!r}")
        entry = Entry(type=kind, mode=member.mode & 0o7777, uid=member.uid, gid=member.gid, xattrs=xattrs,
                      inode=self.next_inode)
        self.next_inode += 1
        if kind == "file":
            return replace(entry, size=member.size, sha256=hashlib.sha256(data).hexdigest())
        if kind == "symlink":
            return replace(entry, linkname=member.linkname)
        if kind in ("char", "block"):
            return replace(entry, device=(member.devmajor, member.devminor))
        return entry


def _clean(name: str) -> str:
    parts = [part for part in name.split("/") if part not in ("", ".")]
    return "/" + "/".join(parts)


def read_docker_archive(path: Path) -> Image:
    """The (single) image in a docker-archive, flattened."""
    with tarfile.open(path) as archive:
        manifest = json.load(_member(archive, "manifest.json"))
        if len(manifest) != 1:
            raise ValueError(f"{path}: expected one image, found {len(manifest)}")
        config = json.load(_member(archive, manifest[0]["Config"]))
        flattener = _Flattener()
        for layer in manifest[0]["Layers"]:
            with tarfile.open(fileobj=_member(archive, layer), mode="r|*") as stream:
                flattener.apply_layer(read_members(stream))
    return Image(config=config, files=flattener.files, layer_count=len(manifest[0]["Layers"]))


def read_members(stream: tarfile.TarFile) -> list[Member]:
    """A layer's members with the content of its regular files (layers here are small)."""
    members: list[Member] = []
    for info in stream:
        data = b""
        if info.isreg():
            extracted = stream.extractfile(info)
            data = extracted.read() if extracted is not None else b""
        members.append((info, data))
    return members


def _member(archive: tarfile.TarFile, name: str) -> IO[bytes]:
    stream = archive.extractfile(name)
    if stream is None:
        raise ValueError(f"{name} is not a file in the archive")
    return stream


def _show(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= 200 else text[:197] + "..."


def _runtime(config: Mapping[str, Any]) -> Mapping[str, Any]:
    return config.get("config") or {}


def compare_configs(ours: Mapping[str, Any], buildkit: Mapping[str, Any]) -> list[Difference]:
    """Runtime settings, platform and author; a field that is absent is the same as one that is null."""
    found: list[Difference] = []
    for name in CONFIG_FIELDS:
        a, b = _runtime(ours).get(name), _runtime(buildkit).get(name)
        if a != b:
            found.append(Difference(f"config.{name}", "value", _show(a), _show(b)))
    for name in TOP_FIELDS:
        a, b = ours.get(name), buildkit.get(name)
        if a != b:
            found.append(Difference(f"config.{name}", "value", _show(a), _show(b)))
    return found


def compare_history(ours: Mapping[str, Any], buildkit: Mapping[str, Any]) -> list[Difference]:
    """Each history entry's `created_by` and `empty_layer`, position by position (reported apart:
    the two builders describe steps in their own words)."""
    a_history, b_history = ours.get("history") or [], buildkit.get("history") or []
    found: list[Difference] = []
    if len(a_history) != len(b_history):
        found.append(Difference("history", "length", str(len(a_history)), str(len(b_history))))
    for index, (a, b) in enumerate(zip(a_history, b_history, strict=False)):
        for key, default in (("created_by", ""), ("empty_layer", False)):
            a_value, b_value = a.get(key, default), b.get(key, default)
            if a_value != b_value:
                found.append(Difference(f"history[{index}]", key, _show(a_value), _show(b_value)))
    return found


_ENTRY_ATTRIBUTES = ("mode", "uid", "gid", "size", "sha256", "linkname", "device", "xattrs")


def compare_files(ours: Image, buildkit: Image) -> list[Difference]:
    found: list[Difference] = []
    for path in sorted(ours.files.keys() | buildkit.files.keys()):
        a, b = ours.files.get(path), buildkit.files.get(path)
        if a is None or b is None:
            found.append(Difference(path, "presence", _describe(a), _describe(b)))
        elif a.type != b.type:
            found.append(Difference(path, "type", _describe(a), _describe(b)))
        else:
            for name in _ENTRY_ATTRIBUTES:
                a_value, b_value = getattr(a, name), getattr(b, name)
                if a_value != b_value:
                    show = (lambda mode: f"{mode:04o}") if name == "mode" else _show
                    found.append(Difference(path, name, show(a_value), show(b_value)))
    a_links, b_links = ours.hardlinks(), buildkit.hardlinks()
    for path in sorted(a_links.keys() | b_links.keys()):
        if path in ours.files and path in buildkit.files and a_links.get(path) != b_links.get(path):
            found.append(Difference(path, "hardlinks", _show(list(a_links.get(path, ()))),
                                    _show(list(b_links.get(path, ())))))
    return found


def _describe(entry: Entry | None) -> str:
    if entry is None:
        return "absent"
    detail = f"{entry.type} {entry.mode:04o} {entry.uid}:{entry.gid}"
    if entry.type == "file":
        detail += f" {entry.size}B"
    if entry.type == "symlink":
        detail += f" -> {entry.linkname}"
    return detail


def compare_images(ours: Image, buildkit: Image) -> list[Difference]:
    """Config and file differences (history is separate: see compare_history)."""
    return compare_configs(ours.config, buildkit.config) + compare_files(ours, buildkit)
