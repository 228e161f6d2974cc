"""Several builder processes on one store at once."""
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from storehelpers import build_image, make_tree

from builder.image.store import Store

REPO = Path(__file__).resolve().parents[2]

_WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from builder.image import oci
    from builder.image.store import Store
    k, start = int(sys.argv[1]), float(sys.argv[2])
    while time.time() < start:
        time.sleep(0.005)
    store = Store.open({root!r})
    for i in range(15):
        store.put_blob(b"shared %d" % i)
        store.put_blob(b"unique %d %d" % (k, i) * 5000)
        for label in ("shared", "p%d" % k):
            config = oci.make_image_config(platform=oci.Platform(), labels={{"i": str(i), "who": label}})
            record = store.save_image(oci.make_manifest_for_config(config, []), config)
            store.tag("%s:%d" % (label, i), record.manifest_digest)
        store.cache_put("step %d" % i, {{"by": k}})
    print("done")
""")


def _run_all(script: str, root: Path, n: int = 4, extra: tuple[str, ...] = ()) -> list[str]:
    start = time.time() + 1.0
    procs = [subprocess.Popen([sys.executable, "-c", script, str(k), str(start), *extra],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(n)]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        outs.append(out)
    return outs


def test_four_processes_write_blobs_images_tags(store_root):
    Store.open(store_root)
    _run_all(_WRITER.format(repo=str(REPO), root=str(store_root)), store_root)
    store = Store.open(store_root)
    assert store.fsck() == []
    for i in range(15):
        assert store.read_blob(store.put_blob(b"shared %d" % i)[0]) == b"shared %d" % i
        for k in range(4):
            assert store.has_blob(store.put_blob(b"unique %d %d" % (k, i) * 5000)[0])
        assert store.load_image(f"shared:{i}").config["config"]["Labels"] == {"i": str(i), "who": "shared"}
        assert store.cache_get(f"step {i}")["by"] in range(4)
    tags = dict(store.tags())
    assert len(tags) == 15 * 5
    assert len(store.images()) == 15 * 5  # identical "shared" images collapse to one record each
    assert list(store.tmp_dir.iterdir()) == []


_SNAPSHOTTER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {repo!r})
    import builder.layer.extract as layerapi
    from builder.image.store import Store
    k, start, diff_id, log = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
    real = layerapi.unpack_layer
    def counted(stream, dest):
        with open(log, "a") as f:
            f.write("%d\\n" % os.getpid())
        time.sleep(0.3)  # widen the window in which others could also start unpacking
        return real(stream, dest)
    layerapi.unpack_layer = counted
    while time.time() < start:
        time.sleep(0.005)
    print(Store.open({root!r}).snapshot_dir(diff_id))
""")


def test_snapshot_unpacked_once_under_concurrency(store, tmp_path):
    record = build_image(store, [make_tree(tmp_path / "l", {"f": "content\n", "d/g": "g\n"})], "one")
    diff_id = record.config["rootfs"]["diff_ids"][0]
    log = tmp_path / "unpacks.log"
    outs = _run_all(_SNAPSHOTTER.format(repo=str(REPO), root=str(store.root)), store.root,
                    extra=(diff_id, str(log)))
    paths = {out.strip() for out in outs}
    assert len(paths) == 1
    assert len(log.read_text().splitlines()) == 1
    snap = Path(paths.pop())
    assert snap.parent == store.snapshots_dir and (snap / "d/g").read_text() == "g\n"
    assert [p.name for p in store.snapshots_dir.iterdir()] == [snap.name]
    assert list(store.tmp_dir.iterdir()) == []
    assert store.fsck() == []
