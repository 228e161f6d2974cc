"""USER / --chown resolution against an image's /etc/passwd and /etc/group."""
from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import BuildError, Pos
from builder.sandbox.users import home_of_uid, resolve_user
from builder.snapshot.view import LayeredView
from sandbox.helpers import make_layer


@pytest.fixture
def view(tmp_path: Path) -> LayeredView:
    base = make_layer(tmp_path / "base", {
        "etc": None,
        "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n# comment\nbroken line\napp:x:1000:1000::/home/app:/bin/sh\n",
        "etc/group": "root:x:0:\napp:x:1000:\nstaff:x:50:app,other\nwheel:x:10:app\n",
    })
    top = make_layer(tmp_path / "top", {"etc": None, "etc/group": "root:x:0:\napp:x:1000:\nstaff:x:50:app\n"})
    return LayeredView([base, top])


@pytest.mark.parametrize("spec, expected", [
    ("app", (1000, 1000, (50,))),          # the top layer's /etc/group wins: no wheel
    ("1000", (1000, 1000, (50,))),
    ("app:staff", (1000, 50, ())),
    ("app:50", (1000, 50, ())),
    ("1000:staff", (1000, 50, ())),
    ("1000:1000", (1000, 1000, ())),
    ("root", (0, 0, ())),
    ("", (0, 0, ())),
    ("4242", (4242, 0, ())),
    ("4242:77", (4242, 77, ())),
])
def test_forms(view, spec, expected):
    assert tuple(resolve_user(spec, view)) == expected


def test_numeric_ids_need_no_passwd(tmp_path):
    empty = make_layer(tmp_path / "empty", {"bin": None})
    assert tuple(resolve_user("12:34", LayeredView([empty]))) == (12, 34, ())
    assert tuple(resolve_user("12", empty)) == (12, 0, ())  # a rootfs path works too


@pytest.mark.parametrize("spec, word", [("ghost", "user ghost"), ("app:ghosts", "group ghosts"),
                                        ("1000:ghosts", "group ghosts")])
def test_unknown_names_are_errors_with_a_hint(view, spec, word):
    with pytest.raises(BuildError) as caught:
        resolve_user(spec, view, pos=Pos("Buildfile", 3, 1))
    assert word in caught.value.message
    assert caught.value.hint
    assert caught.value.pos == Pos("Buildfile", 3, 1)


@pytest.mark.parametrize("spec", [":1", "app:", "99999999999"])
def test_malformed(view, spec):
    with pytest.raises(BuildError):
        resolve_user(spec, view)


def test_home_is_the_first_passwd_entry_of_the_uid(tmp_path: Path):
    # runc looks the uid up, never the name: with two users on uid 1000, both get the first's home.
    layer = make_layer(tmp_path / "l", {"etc": None, "etc/passwd": (
        "root:x:0:0:root:/root:/bin/sh\n"
        "dup:x:1000:1000::/home/dup:/bin/sh\n"
        "app:x:1000:1000::/home/app:/bin/sh\n"
        "nohome:x:1200:1200:::/bin/sh\n"
    )})
    view = LayeredView([layer])
    assert home_of_uid(0, view) == "/root"
    assert home_of_uid(1000, view) == "/home/dup"
    assert home_of_uid(1200, view) == ""  # an empty home field is given as it is
    assert home_of_uid(4242, view) == "/"
    assert home_of_uid(0, LayeredView([make_layer(tmp_path / "empty", {"bin": None})])) == "/"
