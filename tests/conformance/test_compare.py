"""The comparison code itself, on docker-archives made here (no dockerd needed: runs in CI)."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from .compare import Difference, compare_configs, compare_history, compare_images, read_docker_archive


def _member(name: str, data: bytes = b"", *, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, owner=(0, 0),
            linkname: str = "", xattrs: dict[str, str] | None = None) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, linkname
    info.uid, info.gid = owner
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in (xattrs or {}).items()}
    return info, data


def _tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as out:
        for info, data in members:
            out.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _archive(path: Path, layers: list[list[tuple[tarfile.TarInfo, bytes]]], config: dict | None = None) -> Path:
    config = config or {"architecture": "amd64", "os": "linux", "config": {}}
    entries = [_member("config.json", json.dumps(config).encode())]
    names = []
    for index, layer in enumerate(layers):
        names.append(f"l{index}/layer.tar")
        entries.append(_member(names[-1], _tar(layer)))
    entries.append(_member("manifest.json", json.dumps([{"Config": "config.json", "Layers": names}]).encode()))
    path.write_bytes(_tar(entries))
    return path


LOWER = [
    _member("etc/", kind=tarfile.DIRTYPE, mode=0o755),
    _member("etc/passwd", b"root\n"),
    _member("var/", kind=tarfile.DIRTYPE),
    _member("var/cache/", kind=tarfile.DIRTYPE),
    _member("var/cache/old", b"old\n"),
    _member("var/keep", b"keep\n"),
    _member("gone", b"x\n"),
    _member("swap", b"file\n"),
]


def test_whiteouts_opaque_dirs_and_replacements_are_applied(tmp_path: Path) -> None:
    upper = [
        _member("./.wh.gone"),
        _member("var/cache/", kind=tarfile.DIRTYPE, mode=0o700, owner=(1, 2)),
        _member("var/cache/.wh..wh..opq"),
        _member("var/cache/new", b"new\n"),
        _member("swap/", kind=tarfile.DIRTYPE),
        _member("swap/inside", b"in\n"),
    ]
    image = read_docker_archive(_archive(tmp_path / "a.tar", [LOWER, upper]))
    assert sorted(image.files) == ["/etc", "/etc/passwd", "/swap", "/swap/inside", "/var", "/var/cache",
                                   "/var/cache/new", "/var/keep"]
    assert (image.files["/var/cache"].mode, image.files["/var/cache"].uid) == (0o700, 1)
    assert image.files["/swap"].type == "dir"
    assert image.layer_count == 2


def test_a_file_replacing_a_directory_drops_its_subtree(tmp_path: Path) -> None:
    image = read_docker_archive(_archive(tmp_path / "a.tar", [LOWER, [_member("var", b"now a file\n")]]))
    assert image.files["/var"].type == "file"
    assert not [path for path in image.files if path.startswith("/var/")]


def test_hard_links_symlinks_and_xattrs_are_recorded(tmp_path: Path) -> None:
    layer = [
        _member("a", b"same\n", mode=0o4755, owner=(1000, 50), xattrs={"user.k": "v"}),
        _member("b", kind=tarfile.LNKTYPE, linkname="a"),
        _member("s", kind=tarfile.SYMTYPE, linkname="a", mode=0o777),
        _member("c", b"same\n"),
    ]
    image = read_docker_archive(_archive(tmp_path / "a.tar", [layer]))
    assert image.hardlinks() == {"/a": ("/b",), "/b": ("/a",)}
    assert image.files["/b"].sha256 == image.files["/c"].sha256
    assert image.files["/a"].xattrs == (("user.k", "v"),)
    assert (image.files["/s"].type, image.files["/s"].linkname) == ("symlink", "a")


def test_differences_name_path_and_attribute(tmp_path: Path) -> None:
    ours = read_docker_archive(_archive(tmp_path / "ours.tar", [[
        _member("f", b"one\n", mode=0o600), _member("h1", b"x"), _member("h2", kind=tarfile.LNKTYPE, linkname="h1"),
        _member("only-ours", b""),
    ]]))
    theirs = read_docker_archive(_archive(tmp_path / "theirs.tar", [[
        _member("f", b"two!\n", mode=0o644), _member("h1", b"x"), _member("h2", b"x"),
    ]]))
    found = {(d.where, d.attribute): d for d in compare_images(ours, theirs)}
    assert set(found) == {("/f", "mode"), ("/f", "size"), ("/f", "sha256"), ("/h1", "hardlinks"),
                          ("/h2", "hardlinks"), ("/only-ours", "presence")}
    assert (found["/f", "mode"].ours, found["/f", "mode"].buildkit) == ("0600", "0644")
    assert found["/only-ours", "presence"].buildkit == "absent"


def test_identical_images_have_no_differences(tmp_path: Path) -> None:
    a = read_docker_archive(_archive(tmp_path / "a.tar", [LOWER]))
    b = read_docker_archive(_archive(tmp_path / "b.tar", [LOWER[:4], LOWER[4:]]))  # split differently
    assert compare_images(a, b) == []


def test_config_fields_and_history_are_compared_apart() -> None:
    ours = {"architecture": "amd64", "os": "linux", "config": {"Env": ["A=1"], "Cmd": None},
            "history": [{"created_by": "RUN x"}]}
    theirs = {"architecture": "amd64", "os": "linux", "config": {"Env": ["A=2"], "WorkingDir": "/"},
              "history": [{"created_by": "RUN x", "empty_layer": True}]}
    assert compare_configs(ours, theirs) == [
        Difference("config.Env", "value", '["A=1"]', '["A=2"]'),
        Difference("config.WorkingDir", "value", "null", "/"),
    ]
    assert compare_history(ours, theirs) == [Difference("history[0]", "empty_layer", "false", "true")]
