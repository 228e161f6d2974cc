"""The fast header path writes exactly what tarfile writes, for every kind of member."""
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.layer.tarheader import member_header
from builder.layer.tarwrite import _LayerTarInfo

TYPES = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE,
         tarfile.CHRTYPE, tarfile.BLKTYPE]
names = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=120),
    st.text(min_size=1, max_size=60).filter(lambda t: "\0" not in t),
    st.sampled_from(["a" * 99, "a" * 100, "a" * 101, "dir/", "é", "\udcff"]),
)
numbers = st.one_of(st.integers(0, 8**7 + 5), st.sampled_from([0, 8**7 - 1, 8**7, 8**11 - 1, 8**11]))


def tarfile_bytes(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


@settings(max_examples=600, deadline=None)
@given(name=names, kind=st.sampled_from(TYPES), mode=st.integers(0, 0o177777), uid=numbers, gid=numbers,
       size=st.one_of(st.integers(0, 10**6), st.sampled_from([8**11 - 1, 8**11])),
       mtime=st.one_of(numbers, st.sampled_from([1.5, 8**11 + 3])), linkname=st.one_of(st.just(""), names),
       owner=st.sampled_from(["", "root", "x" * 33]), devmajor=numbers, devminor=numbers,
       xattr=st.one_of(st.none(), st.binary(max_size=20)))
def test_same_bytes_as_tarfile(name, kind, mode, uid, gid, size, mtime, linkname, owner, devmajor, devminor, xattr):
    info = _LayerTarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, gid, mtime
    info.size = size if kind == tarfile.REGTYPE else 0
    info.linkname = linkname if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
    info.uname = info.gname = owner
    info.devmajor, info.devminor = devmajor, devminor
    if xattr is not None:
        info.pax_headers = {"SCHILY.xattr.user.x": xattr.decode("utf-8", "surrogateescape")}
    try:
        expected = tarfile_bytes(info)
    except ValueError:  # a number tarfile cannot write (a device number too large): the same error
        with pytest.raises(ValueError):
            member_header(info)
        return
    assert member_header(info) == expected


def test_plain_members_take_the_fast_path(monkeypatch):
    """Common members do not call tarfile at all (else the fast path would be dead code)."""
    def refuse(*args, **kwargs):
        raise AssertionError("tarfile was asked")

    info = _LayerTarInfo("usr/bin/tool")
    info.size, info.mode, info.mtime = 1234, 0o755, 1_700_000_000
    expected = tarfile_bytes(info)
    monkeypatch.setattr(_LayerTarInfo, "tobuf", refuse)
    assert member_header(info) == expected
