"""Resolve `USER` / `--chown` values against an image's /etc/passwd and /etc/group, as Docker does.

Accepted forms: `name`, `uid`, `name:group`, `uid:gid`, `name:gid`, `uid:group`.
- Without a group, the gid is the user's primary gid from /etc/passwd (0 for a numeric uid the
  file does not know) and the additional groups are the groups listing the user as a member.
- With a group, exactly that group is used and no additional groups.
Numeric ids need no passwd or group file; names that the image does not define are errors.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from builder.errors import BuildError, Pos
from builder.snapshot.view import LayeredView

MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to the kernel


class UserError(BuildError):
    """A USER or --chown value names a user or group the image does not have."""


class ResolvedUser(NamedTuple):
    uid: int
    gid: int
    additional_gids: tuple[int, ...]


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str
    shell: str


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


def _as_view(view: LayeredView | Path | str) -> LayeredView:
    return view if isinstance(view, LayeredView) else LayeredView([Path(view)])


def _lines(view: LayeredView, path: str) -> list[list[str]]:
    data = view.read_bytes(path)
    if data is None:
        return []
    rows = []
    for line in data.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        rows.append(line.split(":"))
    return rows


def _decimal(text: str) -> int | None:
    """An id written in ASCII digits, or None: `str.isdigit()` also takes "²", which int()
    refuses, and an image's file may hold thousands of digits, which int() refuses too."""
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        return None
    return int(text)


def read_passwd(view: LayeredView | Path | str) -> list[PasswdEntry]:
    """Entries of the image's /etc/passwd that parse (malformed lines are skipped, as libc does)."""
    entries = []
    for fields in _lines(_as_view(view), "/etc/passwd"):
        uid, gid = (_decimal(fields[2]), _decimal(fields[3])) if len(fields) >= 4 else (None, None)
        if uid is None or gid is None:
            continue
        fields += [""] * (7 - len(fields))
        entries.append(PasswdEntry(fields[0], uid, gid, fields[5], fields[6]))
    return entries


def read_group(view: LayeredView | Path | str) -> list[GroupEntry]:
    entries = []
    for fields in _lines(_as_view(view), "/etc/group"):
        gid = _decimal(fields[2]) if len(fields) >= 3 else None
        if gid is None:
            continue
        members = tuple(m for m in (fields[3] if len(fields) > 3 else "").split(",") if m)
        entries.append(GroupEntry(fields[0], gid, members))
    return entries


def _numeric(value: str, what: str, pos: Pos | None) -> int | None:
    if not (value.isascii() and value.isdigit()):
        return None
    number = _decimal(value)
    if number is None or number > MAX_ID:
        raise UserError(f"{what} {value} is out of range", pos=pos, hint=f"ids go up to {MAX_ID}")
    return number


def resolve_user(spec: str, view: LayeredView | Path | str, *, pos: Pos | None = None) -> ResolvedUser:
    """(uid, gid, additional_gids) for a USER/--chown value in the image seen through `view`
    (a LayeredView or a rootfs directory)."""
    spec = spec.strip()
    if not spec:
        spec = "0"
    user_part, _, group_part = spec.partition(":")
    if not user_part:
        raise UserError(f"invalid user {spec!r}: the user part is empty", pos=pos,
                        hint="write USER name, USER uid, USER name:group or USER uid:gid")
    has_group = ":" in spec
    if has_group and not group_part:
        raise UserError(f"invalid user {spec!r}: the group part is empty", pos=pos,
                        hint="drop the ':' or name a group")

    lazy_view = view
    passwd: list[PasswdEntry] | None = None

    def passwd_entries() -> list[PasswdEntry]:
        nonlocal passwd
        if passwd is None:
            passwd = read_passwd(lazy_view)
        return passwd

    uid = _numeric(user_part, "uid", pos)
    entry: PasswdEntry | None
    if uid is None:
        entry = next((e for e in passwd_entries() if e.name == user_part), None)
        if entry is None:
            raise UserError(
                f"unable to find user {user_part}: no matching entries in the image's /etc/passwd",
                pos=pos,
                hint=f"create the user in an earlier step (e.g. RUN adduser -D {user_part}) or use a numeric uid",
            )
        uid = entry.uid
    else:
        entry = next((e for e in passwd_entries() if e.uid == uid), None)

    if has_group:
        gid = _numeric(group_part, "gid", pos)
        if gid is None:
            group = next((g for g in read_group(lazy_view) if g.name == group_part), None)
            if group is None:
                raise UserError(
                    f"unable to find group {group_part}: no matching entries in the image's /etc/group",
                    pos=pos,
                    hint=f"create the group in an earlier step (e.g. RUN addgroup {group_part}) or use a numeric gid",
                )
            gid = group.gid
        return ResolvedUser(uid, gid, ())

    gid = entry.gid if entry is not None else 0
    additional: list[int] = []
    if entry is not None:
        for group in read_group(lazy_view):
            if entry.name in group.members and group.gid != gid and group.gid not in additional:
                additional.append(group.gid)
    return ResolvedUser(uid, gid, tuple(additional))


def home_of_uid(uid: int, view: LayeredView | Path | str) -> str:
    """HOME as runc gives it to a process whose environment has none: the home field of the
    first /etc/passwd entry with that uid (even an empty one), "/" when no entry has it."""
    for entry in read_passwd(view):
        if entry.uid == uid:
            return entry.home
    return "/"
