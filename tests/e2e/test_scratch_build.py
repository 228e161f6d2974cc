"""End to end from a FROM scratch Buildfile: store, outputs other tools accept, CLI == library."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from helpers import layer_members, write_context

import builder
from builder.cli import main as cli_main
from builder.errors import ContextError
from builder.image.store import Store

REPO = Path(__file__).resolve().parents[2]
HELLO = REPO / "examples" / "hello"
# BuildKit gives a FROM scratch image (any image without one) this PATH.
SCRATCH_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def test_hello_example_builds_and_exports_everywhere(tmp_path: Path, store_root: Path) -> None:
    oci_tar = tmp_path / "hello-oci.tar"
    oci_dir = tmp_path / "hello-oci"
    docker_tar = tmp_path / "hello-docker.tar"
    rootfs_tar = tmp_path / "hello-rootfs.tar"
    local_dir = tmp_path / "local"
    events = []
    result = builder.build(
        HELLO,
        tags=["hello:1", "example/hello:latest"],
        outputs=[
            f"type=oci,dest={oci_tar}",
            f"type=oci,dest={oci_dir},tar=false",
            f"type=docker,dest={docker_tar}",
            f"type=tar,dest={rootfs_tar}",
            f"type=local,dest={local_dir}",
        ],
        root=store_root,
        on_event=events.append,
        source_date_epoch=1700000000,
    )
    assert result.image_id.startswith("sha256:")
    store = Store.open(store_root)
    assert store.load_image("hello:1").manifest_digest == result.manifest_digest
    assert store.load_image("example/hello").manifest_digest == result.manifest_digest

    # The flattened file system holds exactly what the Buildfile copied, ignored files left out.
    files = sorted(str(p.relative_to(local_dir)) for p in local_dir.rglob("*"))
    assert files == ["app", "app/data", "app/data/answer.json", "app/generated.txt", "app/hello.txt"]
    assert (local_dir / "app/hello.txt").read_text() == "hello from a FROM scratch image\n"
    assert (local_dir / "app/generated.txt").read_text() == "generated at build time: hello from a heredoc\n"
    assert stat.S_IMODE((local_dir / "app/data/answer.json").stat().st_mode) == 0o755

    config = result.config
    assert config["config"]["Env"] == [SCRATCH_PATH, "GREETING=hello"]
    assert config["config"]["WorkingDir"] == "/app"
    assert config["config"]["User"] == "1000:1000"
    assert config["config"]["ExposedPorts"] == {"8080/tcp": {}}
    assert config["config"]["Volumes"] == {"/app/data": {}}
    assert config["config"]["StopSignal"] == "SIGTERM"
    assert config["config"]["Labels"]["org.opencontainers.image.title"] == "hello"
    assert config["created"] == "2023-11-14T22:13:20Z"
    history = config["history"]
    assert [entry.get("empty_layer", False) for entry in history] == [
        True, True, True, False, False, False, False, True, True, True, True
    ]
    assert len(config["rootfs"]["diff_ids"]) == 4

    # WORKDIR made /app in a layer of its own, as BuildKit does.
    layers = result.manifest["layers"]
    workdir = layer_members(store, layers[0]["digest"])
    assert sorted(workdir) == ["app"] and workdir["app"].isdir() and workdir["app"].mode == 0o755
    # Each COPY layer holds the files it copied, owned by root, with the epoch as mtime cap.
    first = layer_members(store, layers[1]["digest"])
    assert sorted(first) == ["app", "app/hello.txt"]
    assert first["app/hello.txt"].uid == 0 and first["app/hello.txt"].gid == 0
    assert all(member.mtime <= 1700000000 for member in first.values())

    # Other tools accept what we wrote.
    skopeo = shutil.which("skopeo")
    umoci = shutil.which("umoci")
    assert skopeo and umoci, ".ci/run installs skopeo and umoci"
    inspected = json.loads(subprocess.run([skopeo, "inspect", f"oci-archive:{oci_tar}:1"], check=True, capture_output=True, text=True).stdout)
    assert inspected["Digest"] == dict(result.exported)[f"type=oci,dest={oci_tar}"]
    assert dict(result.exported)[f"type=oci,dest={oci_dir},tar=false"] == inspected["Digest"]
    inspected = json.loads(subprocess.run([skopeo, "inspect", f"docker-archive:{docker_tar}"], check=True, capture_output=True, text=True).stdout)
    assert inspected["Env"] == [SCRATCH_PATH, "GREETING=hello"]
    unpacked = tmp_path / "umoci-bundle"
    index = json.loads((oci_dir / "index.json").read_text())
    ref_name = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
    subprocess.run([umoci, "unpack", "--image", f"{oci_dir}:{ref_name}", str(unpacked)], check=True, capture_output=True)
    assert (unpacked / "rootfs/app/hello.txt").read_text() == "hello from a FROM scratch image\n"

    with tarfile.open(rootfs_tar) as archive:
        names = sorted(name.rstrip("/") for name in archive.getnames())
    assert "app/hello.txt" in names and not any("notes.tmp" in name for name in names)

    kinds = {event.kind for event in events}
    assert {"step-start", "step-done", "build-done"} <= kinds


def test_cli_and_library_give_the_same_digest(tmp_path: Path) -> None:
    epoch = "1600000000"
    result = builder.build(HELLO, root=tmp_path / "a", source_date_epoch=int(epoch))
    iidfile = tmp_path / "iid"
    metadata = tmp_path / "meta.json"
    code = cli_main(
        ["--root", str(tmp_path / "b"), "build", "--progress", "quiet", "--source-date-epoch", epoch,
         "--iidfile", str(iidfile), "--metadata-file", str(metadata), str(HELLO)]
    )
    assert code == 0
    assert iidfile.read_text() == result.image_id
    assert json.loads(metadata.read_text())["containerimage.digest"] == result.manifest_digest


def test_console_script_runs_from_any_directory(tmp_path: Path) -> None:
    code = subprocess.run(
        [sys.executable, "-m", "builder.cli", "--root", str(tmp_path / "s"), "build", "--progress", "plain",
         "-t", "hello", str(HELLO)],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert code.returncode == 0, code.stderr
    assert "DONE" in code.stderr


def test_missing_source_is_a_positioned_error_and_stores_nothing(tmp_path: Path, store_root: Path, capsys) -> None:
    context = write_context(tmp_path / "ctx", {"Buildfile": "FROM scratch\nCOPY present.txt /\nCOPY absent.txt /\n", "present.txt": "x"})
    with pytest.raises(ContextError) as caught:
        builder.build(context, root=store_root, tags=["broken"])
    assert caught.value.pos is not None and caught.value.pos.line == 3
    code = cli_main(["--root", str(store_root), "build", "--progress", "quiet", "-t", "broken", str(context)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"{context / 'Buildfile'}:3:1: ")
    assert "absent.txt" in err and "Traceback" not in err
    assert Store.open(store_root).tags() == []


def test_build_args_target_and_stdin_buildfile(tmp_path: Path, store_root: Path, monkeypatch) -> None:
    context = write_context(tmp_path / "ctx", {"a.txt": "A", "b.txt": "B"})
    text = (
        "ARG WHICH=a\n"
        "FROM scratch AS first\n"
        "ARG WHICH\n"
        "COPY ${WHICH}.txt /chosen.txt\n"
        "FROM scratch AS second\n"
        "COPY --from=first /chosen.txt /copied.txt\n"
        "LABEL stage=second\n"
    )
    result = builder.build(context, buildfile_text=text, build_args={"WHICH": "b"}, root=store_root, outputs=[f"type=local,dest={tmp_path/'out'}"])
    assert (tmp_path / "out/copied.txt").read_text() == "B"
    only_first = builder.build(context, buildfile_text=text, target="first", root=store_root, outputs=[f"type=local,dest={tmp_path/'out1'}"])
    assert (tmp_path / "out1/chosen.txt").read_text() == "A"
    assert "Labels" not in only_first.config["config"]
    assert result.config["config"]["Labels"] == {"stage": "second"}


def test_unknown_target_is_an_error_naming_the_stages(tmp_path: Path, capsys) -> None:
    context = write_context(tmp_path / "ctx", {"Buildfile": "FROM scratch AS one\nFROM scratch AS two\n"})
    code = cli_main(["--root", str(tmp_path / "s"), "build", "--target", "three", str(context)])
    err = capsys.readouterr().err
    assert code == 1
    assert "target stage 'three' could not be found" in err and "one, two" in err


def _tar_with_escape(path: Path, host_dir: Path) -> None:
    """`out -> <a host dir>` then `out/outside.txt`: Docker resolves the link inside the
    destination, where that dir does not exist, and fails."""
    import io

    with tarfile.open(path, "w") as archive:
        link = tarfile.TarInfo("out")
        link.type, link.linkname = tarfile.SYMTYPE, str(host_dir)
        archive.addfile(link)
        data = b"escaped\n"
        member = tarfile.TarInfo("out/outside.txt")
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data))


@pytest.mark.parametrize(
    ("buildfile", "message"),
    [
        ("FROM scratch\nCOPY ../secret.txt /\n", "outside the build context"),
        ("FROM scratch\nCOPY link-out/secret.txt /\n", "outside the build context"),
        ("FROM scratch\nCOPY link-out /\n", "outside the build context"),
        ("FROM scratch\nADD evil.tar /x/\n", "does not exist"),
    ],
    ids=["dotdot", "outbound-symlink-component", "outbound-symlink-source", "tar-entry-through-host-link"],
)
def test_hostile_contexts_fail_clearly_and_store_nothing(tmp_path: Path, store_root: Path, buildfile: str, message: str, capsys) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("must never be copied\n")
    context = write_context(tmp_path / "ctx", {"Buildfile": buildfile})
    (context / "link-out").symlink_to(tmp_path)
    _tar_with_escape(context / "evil.tar", tmp_path)
    code = cli_main(["--root", str(store_root), "build", "--progress", "quiet", "-t", "hostile", str(context)])
    err = capsys.readouterr().err
    assert code == 1
    assert "Buildfile:2:1: " in err and message in err and "Traceback" not in err
    store = Store.open(store_root)
    assert store.tags() == [] and store.images() == []
    assert not (tmp_path / "outside.txt").exists()
    assert store.fsck() == []


def _tar(path: Path, entries: list[tuple[str, str, bytes | str]]) -> None:
    import io

    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as archive:
        for name, kind, payload in entries:
            member = tarfile.TarInfo(name)
            member.mtime = 1000
            if kind == "sym":
                member.type, member.linkname = tarfile.SYMTYPE, str(payload)
                archive.addfile(member)
            else:
                data = payload if isinstance(payload, bytes) else payload.encode()
                member.size = len(data)
                archive.addfile(member, io.BytesIO(data))


def test_copy_and_add_give_what_buildkit_gives(tmp_path: Path, store_root: Path) -> None:
    """Each line's result as dockerd 20.10 + BuildKit built the same Buildfile (`-o type=tar`):
    source symlinks followed (from the context and from a stage, chains, wildcard matches whose
    target is out of the wildcard's dir), several files onto a path without `/` (the last wins),
    a wildcard matching nothing beside a file, an archive with an empty name and `dir -> ..`."""
    context = write_context(tmp_path / "ctx", {
        "real": "real\n", "base/c": "c\n", "base/data/d": "d\n", "base/other/o": "o\n", "base/x/wfile": "w\n",
        "a.txt": "A\n", "b.txt": "B\n",
        "Buildfile": (
            "FROM scratch AS base\n"
            "COPY base/ /\n"
            "FROM scratch\n"
            "COPY link /t1\n"
            "COPY --from=base /a /t2\n"
            "COPY --from=base /x/w* /d/\n"
            "COPY --from=base /ldir /t3\n"
            "COPY *.txt /t4\n"
            "COPY nomatch* real /t5\n"
            "COPY nomatch* /t6/\n"
            "ADD odd.tar /t7/\n"
        ),
    })
    (context / "link").symlink_to("real")
    (context / "base/a").symlink_to("b")
    (context / "base/b").symlink_to("c")
    (context / "base/ldir").symlink_to("/data")
    (context / "base/x/wlink").symlink_to("../other/o")
    _tar(context / "odd.tar", [("", "file", "no name"), ("dir", "sym", ".."), ("dir/etc/f", "file", "f\n")])
    out = tmp_path / "out"
    builder.build(context, root=store_root, outputs=[f"type=local,dest={out}"])
    found = {}
    for path in sorted(out.rglob("*")):
        rel = str(path.relative_to(out))
        found[rel] = os.readlink(path) if path.is_symlink() else None if path.is_dir() else path.read_text()
    assert found == {
        "t1": "real\n", "t2": "c\n", "d": None, "d/wfile": "w\n", "d/wlink": "o\n", "t3": None, "t3/d": "d\n",
        "t4": "B\n", "t5": "real\n", "t7": None, "t7/dir": "..", "t7/etc": None, "t7/etc/f": "f\n",
    }
