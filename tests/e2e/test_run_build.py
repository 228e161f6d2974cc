"""RUN steps on a busybox base built here: layers, failures, multi-stage, and what the image runs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import layer_file_contents, layer_members, write_context

import builder
from builder.cli import main as cli_main
from builder.errors import RunError
from builder.image.store import Store

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="RUN needs root for namespaces and overlayfs")


def _our_mounts(store_root: Path) -> list[str]:
    with open("/proc/self/mountinfo") as mountinfo:
        return [line for line in mountinfo if str(store_root) in line]


@pytest.mark.parametrize("snapshotter", ["overlay", "copy"])
def test_run_layers_hold_changes_and_whiteouts(tmp_path: Path, busybox_store, snapshotter: str) -> None:
    context = write_context(tmp_path / "ctx", {})
    text = (
        "FROM busybox\n"
        "RUN echo built > /hello && rm /etc/group && mkdir -p /opt/tool && chmod 0700 /root\n"
        "RUN ln /hello /opt/tool/hardlink && ln -s /hello /opt/tool/symlink && rm -rf /home && mkdir /home\n"
    )
    result = builder.build(
        context, buildfile_text=text, root=busybox_store.root, tags=["t"], snapshotter=snapshotter,
        source_date_epoch=1700000000,
    )
    layers = result.manifest["layers"]
    first = layer_members(busybox_store, layers[-2]["digest"])
    assert first["hello"].isfile() and first["hello"].size == len("built\n")
    assert "etc/.wh.group" in first
    assert first["root"].mode & 0o777 == 0o700
    assert "opt/tool" in first
    for injected in ("etc/hosts", "etc/resolv.conf", "etc/hostname", "proc", "dev", "sys"):
        assert injected not in first, f"{injected} leaked into the layer"
    second = layer_members(busybox_store, layers[-1]["digest"])
    assert second["opt/tool/hardlink"].islnk() or second["hello"].islnk()
    assert second["opt/tool/symlink"].issym() and second["opt/tool/symlink"].linkname == "/hello"
    assert "home/.wh..wh..opq" in second
    assert _our_mounts(busybox_store.root) == []


def test_both_snapshotters_give_identical_layers(tmp_path: Path, busybox_tar: Path) -> None:
    from builder.image.importer import import_rootfs
    from builder.image.store import Store

    text = (
        "FROM busybox\n"
        "RUN echo a > /a && rm /etc/passwd && mkdir -p /x/y && echo z > /x/y/z && chmod 600 /etc/group\n"
    )
    digests = []
    for snapshotter in ("overlay", "copy"):
        store = Store.open(tmp_path / snapshotter)
        import_rootfs(store, busybox_tar, "busybox")
        result = builder.build(
            write_context(tmp_path / "ctx", {}), buildfile_text=text, root=store.root,
            snapshotter=snapshotter, source_date_epoch=1700000000,
        )
        digests.append([layer["digest"] for layer in result.manifest["layers"]])
    assert digests[0] == digests[1]


def test_failing_run_reports_step_and_output_and_keeps_store_clean(tmp_path: Path, busybox_store, capsys) -> None:
    context = write_context(tmp_path / "ctx", {})
    text = "FROM busybox\nRUN echo first-step\nRUN echo about to fail && exit 3\n"
    with pytest.raises(RunError) as caught:
        builder.build(context, buildfile_text=text, root=busybox_store.root, tags=["never"])
    assert caught.value.exit_status == 3
    assert caught.value.pos.line == 3
    assert "about to fail" in caught.value.render()
    assert [name for name, _ in busybox_store.tags()] == ["docker.io/library/busybox:latest"] or all(
        "never" not in name for name, _ in busybox_store.tags()
    )
    assert _our_mounts(busybox_store.root) == []
    (context / "Buildfile").write_text(text)
    code = cli_main(["--root", str(busybox_store.root), "build", "--progress", "plain", str(context)])
    err = capsys.readouterr().err
    assert code == 1
    assert "Buildfile:3:1: RUN failed with exit code 3" in err and "Traceback" not in err
    assert busybox_store.fsck() == []


def test_multi_stage_copy_from_and_user_and_workdir(tmp_path: Path, busybox_store) -> None:
    context = write_context(tmp_path / "ctx", {"src.txt": "source\n"})
    text = (
        "FROM busybox AS build\n"
        "WORKDIR /work\n"
        "COPY src.txt .\n"
        "RUN tr a-z A-Z < src.txt > out.txt && id -u > uid.txt\n"
        "FROM busybox\n"
        "COPY --from=build --chown=app:app /work/out.txt /home/app/\n"
        "USER app\n"
        "WORKDIR /home/app/sub\n"
        "RUN id > id.txt && pwd > pwd.txt\n"
        "CMD [\"cat\", \"/home/app/out.txt\"]\n"
    )
    out = tmp_path / "out"
    builder.build(context, buildfile_text=text, root=busybox_store.root, tags=["multi"], outputs=[f"type=local,dest={out}"])
    assert (out / "home/app/out.txt").read_text() == "SOURCE\n"
    assert (out / "home/app/out.txt").stat().st_uid == 1000
    assert (out / "home/app/sub/id.txt").read_text().startswith("uid=1000(app) gid=1000(app)")
    assert (out / "home/app/sub/pwd.txt").read_text() == "/home/app/sub\n"
    assert not (out / "work").exists()


def test_builder_run_executes_the_built_image(tmp_path: Path, busybox_store) -> None:
    context = write_context(tmp_path / "ctx", {})
    text = "FROM busybox\nENV WHO=world\nRUN echo \"hello $WHO\" > /greeting\nCMD [\"cat\", \"/greeting\"]\n"
    builder.build(context, buildfile_text=text, root=busybox_store.root, tags=["greeter"])
    completed = subprocess.run(
        [sys.executable, "-m", "builder.cli", "--root", str(busybox_store.root), "run", "--rm", "greeter"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "hello world\n"
    assert _our_mounts(busybox_store.root) == []


def test_unusual_names_and_a_sparse_gigabyte_survive_a_run_layer(tmp_path: Path, busybox_store) -> None:
    long_name = "d" * 100 + "/" + "f" * 99
    text = (
        "FROM busybox\n"
        "RUN mkdir -p '/names/with space' && echo s > '/names/with space/file name' "
        "&& touch \"/names/new$(printf '\\nline')\" && touch \"/names/bad$(printf '\\377')byte\" "
        f"&& mkdir -p /names/{long_name.split('/')[0]} && echo long > /names/{long_name} "
        "&& truncate -s 1G /names/sparse\n"
        "CMD [\"sh\", \"-c\", \"ls /names | od -c | head -3; wc -c < /names/sparse; cat /names/" + long_name + "\"]\n"
    )
    result = builder.build(write_context(tmp_path / "ctx", {}), buildfile_text=text, root=busybox_store.root, tags=["names"])
    members = layer_members(busybox_store, result.manifest["layers"][-1]["digest"])
    assert "names/with space/file name" in members
    assert "names/new\nline" in members
    assert "names/bad\udcffbyte" in members
    assert members[f"names/{long_name}"].size == 5
    assert members["names/sparse"].size == 1 << 30
    completed = subprocess.run(
        [sys.executable, "-m", "builder.cli", "--root", str(busybox_store.root), "run", "--rm", "names"],
        capture_output=True, text=True, errors="replace", env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert completed.returncode == 0, completed.stderr
    assert "1073741824" in completed.stdout and "long" in completed.stdout


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_killing_the_builder_mid_run_leaves_no_process_or_mount(tmp_path: Path, busybox_store, signal_number) -> None:
    marker = f"sleep-marker-{signal_number}"
    context = write_context(tmp_path / "ctx", {"Buildfile": f"FROM busybox\nRUN echo started; sleep 100; echo {marker}\n"})
    process = subprocess.Popen(
        [sys.executable, "-m", "builder.cli", "--root", str(busybox_store.root), "build", "--progress", "plain", str(context)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _sandbox_running(marker):
        time.sleep(0.1)
    assert _sandbox_running(marker), "the RUN step never started"
    process.send_signal(signal_number)
    process.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _sandbox_running(marker):
        time.sleep(0.1)
    assert not _sandbox_running(marker), "the sandboxed process outlived the builder"
    assert _our_mounts(busybox_store.root) == []
    assert busybox_store.fsck() == []
    if signal_number != signal.SIGKILL:
        # An orderly stop removes its scratch space; after SIGKILL, gc removes it later.
        assert list((Path(busybox_store.root) / "tmp").iterdir()) == []
    (context / "Buildfile").write_text("FROM busybox\nRUN echo fine > /ok\n")
    assert builder.build(context, root=busybox_store.root).manifest["layers"]


def _sandbox_running(marker: str) -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    return True
            except OSError:
                continue
    return False


def test_proxy_build_args_reach_run_without_arg_and_stay_out_of_history_and_key(tmp_path: Path, busybox_store) -> None:
    context = write_context(tmp_path / "ctx", {})
    text = "FROM busybox\nRUN echo \"proxy=$http_proxy\" > /proxy\n"
    first = builder.build(context, buildfile_text=text, root=busybox_store.root,
                          build_args={"http_proxy": "http://127.0.0.1:3128"}, outputs=[f"type=local,dest={tmp_path / 'out'}"])
    assert (tmp_path / "out/proxy").read_text() == "proxy=http://127.0.0.1:3128\n"
    assert "3128" not in json.dumps(first.config["history"])
    again = builder.build(context, buildfile_text=text, root=busybox_store.root, build_args={"http_proxy": "http://127.0.0.1:9999"})
    assert again.steps[-1].cached


def test_copy_from_reads_through_symlinks_and_globs_of_a_stage(tmp_path: Path, busybox_store) -> None:
    text = (
        "FROM busybox AS tools\n"
        "RUN mkdir -p /usr/lib/real && echo tool > /usr/lib/real/tool && echo two > /usr/lib/real/two "
        "&& ln -s usr/lib/real /linkdir\n"
        "FROM scratch\n"
        "COPY --from=tools /linkdir/tool /tool\n"
        "COPY --from=tools /usr/lib/real/t* /globbed/\n"
    )
    out = tmp_path / "out"
    builder.build(write_context(tmp_path / "ctx", {}), buildfile_text=text, root=busybox_store.root,
                  outputs=[f"type=local,dest={out}"])
    assert (out / "tool").read_text() == "tool\n"
    assert sorted(path.name for path in (out / "globbed").iterdir()) == ["tool", "two"]


def test_flatten_only_reaches_what_is_asked(tmp_path: Path) -> None:
    from builder.snapshot.view import flatten

    layer = tmp_path / "layer"
    (layer / "usr/lib/real").mkdir(parents=True)
    (layer / "usr/lib/real/tool").write_text("t")
    (layer / "unrelated").mkdir()
    (layer / "unrelated/big").write_text("x")
    (layer / "linkdir").symlink_to("usr/lib/real")
    dest = flatten([layer], tmp_path / "flat", only=["/linkdir/tool"])
    assert (dest / "linkdir").is_symlink()
    assert (dest / "usr/lib/real/tool").read_text() == "t"
    assert not (dest / "unrelated").exists()


def test_run_gets_home_from_the_users_passwd_entry_when_env_has_none(tmp_path: Path, busybox_store) -> None:
    # runc's rule, as dockerd's BuildKit shows it: looked up by uid, "/" for a uid /etc/passwd
    # does not know, an empty HOME replaced, a set one kept; the image config never gets it.
    text = (
        "FROM busybox\n"
        "RUN echo \"$HOME\" > /tmp/h-root\n"
        "USER app\n"
        "RUN echo \"$HOME\" > /tmp/h-app\n"
        "USER 4242:4242\n"
        "RUN echo \"$HOME\" > /tmp/h-4242\n"
        "USER root\n"
        "ENV HOME=\"\"\n"
        "RUN echo \"$HOME\" > /tmp/h-empty\n"
        "ENV HOME=/custom\n"
        "RUN echo \"$HOME\" > /tmp/h-set\n"
    )
    result = builder.build(write_context(tmp_path / "ctx", {}), buildfile_text=text, root=busybox_store.root)
    seen = {name: data for layer in result.manifest["layers"][-5:]
            for name, data in layer_file_contents(busybox_store, layer["digest"]).items()}
    assert seen == {"tmp/h-root": b"/root\n", "tmp/h-app": b"/home/app\n", "tmp/h-4242": b"/\n",
                    "tmp/h-empty": b"/root\n", "tmp/h-set": b"/custom\n"}
    assert [item for item in result.config["config"]["Env"] if item.startswith("HOME=")] == ["HOME=/custom"]


def test_run_on_scratch_leaves_the_runtime_mount_points_and_no_other_stub(tmp_path: Path, store_root: Path) -> None:
    # BuildKit's layers: runc makes /proc, /dev and /sys (kept as empty 0755 dirs); the stubs for
    # /etc/hosts, /etc/resolv.conf and the --mount targets go, with the parents made for them.
    context = write_context(tmp_path / "ctx", {})
    (context / "busybox").write_bytes(Path("/bin/busybox").read_bytes())
    os.chmod(context / "busybox", 0o755)
    text = (
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "sh", "-c", "/bin/busybox echo hi > /out"]\n'
        'RUN --mount=type=tmpfs,target=/a/b --mount=type=cache,target=/bin/c/d ["/bin/busybox", "true"]\n'
    )
    result = builder.build(context, buildfile_text=text, root=store_root)
    store = Store.open(store_root)
    assert len(result.manifest["layers"]) == 2
    first = layer_members(store, result.manifest["layers"][-1]["digest"])
    assert sorted(first) == ["dev", "out", "proc", "sys"]
    for name in ("dev", "proc", "sys"):
        assert first[name].isdir() and first[name].mode == 0o755 and (first[name].uid, first[name].gid) == (0, 0)
    assert result.config["history"][-1].get("empty_layer") is True  # the second RUN left nothing


def test_run_sees_buildkits_etc_and_hostname(tmp_path: Path, busybox_store) -> None:
    # As dockerd's BuildKit shows it: hostname buildkitsandbox, /etc/hosts and /etc/resolv.conf
    # read-only, no /etc/hostname, and one the command writes is part of the layer.
    text = (
        "FROM busybox\n"
        "RUN hostname > /hn && cat /etc/hosts > /hosts-seen"
        " && (echo x >> /etc/hosts && echo writable || echo read-only) > /hosts-writable"
        " && (echo x >> /etc/resolv.conf && echo writable || echo read-only) > /resolv-writable"
        " && (test -e /etc/hostname && echo present || echo absent) > /hostname-file"
        " && echo myhost > /etc/hostname\n"
    )
    result = builder.build(write_context(tmp_path / "ctx", {}), buildfile_text=text, root=busybox_store.root)
    digest = result.manifest["layers"][-1]["digest"]
    assert layer_file_contents(busybox_store, digest) == {
        "hn": b"buildkitsandbox\n",
        "hosts-seen": b"127.0.0.1\tlocalhost buildkitsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        "hosts-writable": b"read-only\n",
        "resolv-writable": b"read-only\n",
        "hostname-file": b"absent\n",
        "etc/hostname": b"myhost\n",
    }


def test_flatten_keeps_every_link_and_dir_a_path_resolves_through(tmp_path: Path) -> None:
    """`COPY --from` follows a source link: a chain `a -> b -> c` needs `b`, a target
    `data/sub/../d` needs `data/sub`; the dirs on the way are kept alone, not their subtrees."""
    from builder.snapshot.view import flatten

    layer = tmp_path / "layer"
    (layer / "data/sub").mkdir(parents=True)
    (layer / "data/d").write_text("d")
    (layer / "data/sub/big").write_text("not needed")
    (layer / "data/other").mkdir()
    (layer / "c").write_text("c")
    (layer / "a").symlink_to("b")
    (layer / "b").symlink_to("/c")
    (layer / "dd").symlink_to("data/sub/../d")
    dest = flatten([layer], tmp_path / "flat", only=["/a", "/dd"])
    assert os.readlink(dest / "a") == "b" and os.readlink(dest / "b") == "/c"  # read in the copy, not followed here
    assert (dest / "c").read_text() == "c" and (dest / "dd").read_text() == "d"
    assert sorted(p.name for p in (dest / "data").iterdir()) == ["d", "sub"]
    assert list((dest / "data/sub").iterdir()) == []
