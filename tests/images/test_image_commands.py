"""images/tag/rmi/inspect/history/save/load/import/image prune through the argparse handlers."""
from __future__ import annotations

import gzip
import json
import re
import subprocess
import tarfile

import pytest
from image_cmd_helpers import add_image

from builder.commands.images import human_duration, human_size
from builder.image.inuse import hold_image


def table(text: str) -> list[list[str]]:
    """Split a docker-style table on runs of 2+ spaces."""
    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines() if line.strip()]


def by_header(text: str, names: list[str]) -> list[list[str]]:
    """Cut each row at the columns where the header's names start (cells may hold double spaces)."""
    lines = text.splitlines()
    starts = [lines[0].index(name) for name in names]
    ends = starts[1:] + [None]
    return [[line[s:e].strip() for s, e in zip(starts, ends, strict=True)] for line in lines[1:]]


def test_images_table_and_json(cli, store):
    old = add_image(store, "old", tags=["app:1.0", "localhost:5000/team/app:v2"], created="2020-01-01T00:00:00Z")
    new = add_image(store, "new", created="2021-06-01T12:00:00.123456789Z")
    result = cli("images")
    assert result.code == 0
    rows = table(result.out)
    assert rows[0] == ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
    record_old = store.load_image(old)
    record_new = store.load_image(new)
    # Newest first; the untagged image is shown as <none> <none>.
    assert rows[1][:3] == ["<none>", "<none>", record_new.config_digest[7:19]]
    assert rows[1][3].endswith("years ago")
    assert {tuple(r[:3]) for r in rows[2:]} == {
        ("app", "1.0", record_old.config_digest[7:19]),
        ("localhost:5000/team/app", "v2", record_old.config_digest[7:19]),
    }
    size = uncompressed_size(store, record_old)  # Docker's SIZE: the layers, uncompressed
    assert rows[2][4] == human_size(size)
    # Columns line up: every header starts where its values start.
    header = result.out.splitlines()[0]
    for line in result.out.splitlines()[1:]:
        assert line[header.index("IMAGE ID"):].startswith(record_old.config_digest[7:19]) or \
            line[header.index("IMAGE ID"):].startswith(record_new.config_digest[7:19])

    as_json = [json.loads(line) for line in cli("images", "--format", "json").out.splitlines()]
    assert len(as_json) == 3
    tagged = next(r for r in as_json if r["Tag"] == "1.0")
    assert tagged["Repository"] == "app"
    assert tagged["ID"] == record_old.config_digest[7:19]
    assert tagged["Digest"] == old
    assert tagged["CreatedAt"] == "2020-01-01T00:00:00Z"
    assert tagged["Size"] == human_size(size)

    assert cli("images", "-q").out.split() == [record_new.config_digest[7:19], record_old.config_digest[7:19]]
    only_app = table(cli("images", "app").out)
    assert [r[:2] for r in only_app[1:]] == [["app", "1.0"]]


def test_images_on_empty_store(cli):
    result = cli("images")
    assert result.code == 0
    assert result.out.split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]


def test_tag(cli, store):
    digest = add_image(store, "tagme", tags=["first:1"])
    assert cli("tag", "first:1", "second").code == 0
    assert dict(store.tags())["second:latest"] == digest
    image_id = store.load_image(digest).config_digest
    assert cli("tag", image_id[7:19], "registry.example:5000/x/y:z").code == 0
    assert dict(store.tags())["registry.example:5000/x/y:z"] == digest
    missing = cli("tag", "nope:1", "other:1")
    assert missing.code == 1
    assert "image 'nope:1' not found in the local store" in missing.err
    bad = cli("tag", "first:1", "UPPER:case")
    assert bad.code == 1
    assert "invalid target name" in bad.err and "lowercase" in bad.err


def test_rmi(cli, store):
    digest = add_image(store, "rmi", tags=["a:1", "b:1"])
    image_id = store.load_image(digest).config_digest
    result = cli("rmi", "a:1")
    assert result.code == 0
    assert result.out.splitlines() == ["Untagged: a:1"]
    assert store.load_image(digest).tags == ["b:1"]
    result = cli("rmi", "b:1")
    assert result.out.splitlines() == ["Untagged: b:1", f"Deleted: {image_id}"]
    assert store.images() == []
    assert "not found" in cli("rmi", "b:1").err

    digest = add_image(store, "rmi", tags=["a:1", "c:1"])
    refused = cli("rmi", image_id[7:19])
    assert refused.code == 1
    assert "must be forced" in refused.err and "a:1, c:1" in refused.err
    forced = cli("rmi", "-f", image_id[7:19])
    assert forced.code == 0
    assert sorted(forced.out.splitlines()) == sorted(["Untagged: a:1", "Untagged: c:1", f"Deleted: {image_id}"])

    # By ID with one tag: docker untags and deletes without -f.
    digest = add_image(store, "rmi", tags=["solo:1"])
    assert cli("rmi", image_id).out.splitlines() == ["Untagged: solo:1", f"Deleted: {image_id}"]


def test_rmi_refuses_image_in_use(cli, store):
    digest = add_image(store, "busy", tags=["busy:1", "busy:2"])
    with hold_image(store, digest):
        assert cli("rmi", "busy:1").code == 0, "untagging while other tags remain is fine"
        refused = cli("rmi", "busy:2")
        assert refused.code == 1
        assert "in use by a running build" in refused.err
        assert "hint: wait for the build to finish, or use rmi -f" in refused.err
        assert store.load_image(digest).tags == ["busy:2"]
        assert cli("rmi", "-f", "busy:2").code == 0
    assert store.images() == []


def test_rmi_several_reports_each_failure(cli, store):
    add_image(store, "x", tags=["x:1"])
    result = cli("rmi", "missing:1", "x:1", "missing:2")
    assert result.code == 1
    assert result.out.splitlines()[0] == "Untagged: x:1"
    assert "'missing:1' not found" in result.err and "'missing:2' not found" in result.err


def test_inspect(cli, store):
    digest = add_image(store, "insp", tags=["insp:1", "localhost:5000/insp:2"])
    record = store.load_image(digest)
    result = cli("inspect", "insp:1")
    assert result.code == 0
    [data] = json.loads(result.out)
    assert data["Id"] == record.config_digest
    assert data["RepoTags"] == ["insp:1", "localhost:5000/insp:2"]
    assert data["RepoDigests"] == [f"insp@{digest}", f"localhost:5000/insp@{digest}"]
    assert data["Created"] == "2020-01-01T00:00:00Z"
    assert data["Config"] == {"Env": ["PATH=/usr/bin"], "Cmd": ["/bin/sh"], "Labels": {"label": "insp"}}
    assert (data["Architecture"], data["Os"]) == ("amd64", "linux")
    assert data["Size"] == uncompressed_size(store, record)
    assert data["RootFS"] == {"Type": "layers", "Layers": record.config["rootfs"]["diff_ids"]}
    assert "LastTagTime" in data["Metadata"]
    missing = cli("inspect", "insp:1", "ghost")
    assert missing.code == 1
    assert len(json.loads(missing.out)) == 1
    assert "'ghost' not found" in missing.err


def test_history(cli, store):
    digest = add_image(store, "hist", tags=["hist:1"])
    record = store.load_image(digest)
    layers = record.manifest["layers"]
    result = cli("history", "hist:1")
    assert result.code == 0
    lines = result.out.splitlines()
    assert table(lines[0])[0] == ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]
    rows = by_header(result.out, ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"])
    assert [r[0] for r in rows] == [record.config_digest[7:19], "<missing>", "<missing>"]
    assert rows[0][2] == "RUN /bin/sh -c echo a-very-long-command a-ve…"
    assert len(rows[0][2]) == 45
    sizes = [len(gzip.decompress(store.read_blob(layer["digest"]))) for layer in layers]
    assert rows[0][3] == human_size(sizes[1])
    assert rows[0][4] == "buildkit.dockerfile.v0"
    assert rows[1][3] == "0B", "an empty layer shows 0B"
    assert rows[2][3] == human_size(sizes[0])

    untruncated = cli("history", "--no-trunc", "hist:1").out
    assert record.config_digest in untruncated
    assert "RUN /bin/sh -c echo " + "a-very-long-command " * 4 + "a-very-long-command" in untruncated

    as_json = [json.loads(line) for line in cli("history", "--format", "json", "hist:1").out.splitlines()]
    assert [r["SizeBytes"] for r in as_json] == [sizes[1], 0, sizes[0]]
    assert as_json[0]["ID"] == record.config_digest
    assert as_json[1]["CreatedBy"] == "/bin/sh -c #(nop)  ENV PATH=/usr/bin"
    assert cli("history", "nothing").code == 1


def test_save_is_a_docker_archive_and_loads_back(cli, store, tmp_path):
    digest = add_image(store, "saved", tags=["saved:1", "saved:2"])
    image_id = store.load_image(digest).config_digest
    archive = tmp_path / "out.tar"
    result = cli("save", "-o", str(archive), "saved:1")
    assert result.code == 0, result.err
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    assert manifest[0]["RepoTags"] == ["saved:1"]
    info = json.loads(subprocess.run(["skopeo", "inspect", f"docker-archive:{archive}"],
                                     capture_output=True, check=True).stdout)
    assert info["Labels"] == {"label": "saved"}
    assert len(info["Layers"]) == 2

    other_root = tmp_path / "other-store"
    loaded = cli("load", "-i", str(archive), root_dir=other_root)
    assert loaded.code == 0, loaded.err
    assert loaded.out.splitlines() == ["Loaded image: saved:1"]
    inspected = json.loads(cli("inspect", "saved:1", root_dir=other_root).out)
    assert inspected[0]["Id"] == image_id

    missing = cli("save", "-o", str(tmp_path / "x.tar"), "nothing:1")
    assert missing.code == 1 and "not found" in missing.err
    assert not (tmp_path / "x.tar").exists()
    assert cli("load", "-i", str(tmp_path / "absent.tar")).code == 1


def test_import_dir_and_tar(cli, store, tmp_path):
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "hello").write_text("hi\n")
    result = cli("import", str(rootfs), "imported:dir")
    assert result.code == 0, result.err
    image_id = result.out.strip()
    record = store.load_image("imported:dir")
    assert record.config_digest == image_id
    assert len(record.config["rootfs"]["diff_ids"]) == 1
    tar_path = tmp_path / "rootfs.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(rootfs / "etc" / "hello", arcname="etc/hello")
    assert cli("import", str(tar_path), "imported:tar").code == 0
    assert "imported:tar" in store.load_image("imported:tar").tags
    bad = cli("import", str(tmp_path / "missing"), "x:1")
    assert bad.code == 1 and "no such file" in bad.err


def test_image_prune(cli, store):
    dangling = add_image(store, "dangling")
    kept = add_image(store, "kept", tags=["kept:1"])
    busy = add_image(store, "busy")
    with hold_image(store, busy):
        result = cli("image", "prune")
    assert result.code == 0
    assert result.out.splitlines()[:2] == ["Deleted Images:", f"deleted: {dangling}"]
    assert "Total reclaimed space:" in result.out
    assert {r.manifest_digest for r in store.images()} == {kept, busy}
    result = cli("image", "prune", "-a")
    assert "untagged: kept:1" in result.out
    assert store.images() == []


@pytest.mark.parametrize(("seconds", "text"), [(0.5, "Less than a second"), (59, "59 seconds"), (61, "About a minute"),
                                                (3600, "About an hour"), (3 * 86400, "3 days"),
                                                (400 * 86400, "13 months"), (800 * 86400, "2 years")])
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text


def test_human_size():
    assert [human_size(n) for n in (0, 999, 1000, 1234567, 7_812_345)] == ["0B", "999B", "1kB", "1.23MB", "7.81MB"]


def uncompressed_size(store, record) -> int:
    return sum(len(gzip.decompress(store.read_blob(layer["digest"]))) for layer in record.manifest["layers"])
