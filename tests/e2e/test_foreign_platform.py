"""Asking for a platform the base image or the host does not have: a warning, then a clear error."""
from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from helpers import write_context

import builder
from builder import EventKind, SandboxError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="RUN needs root for namespaces and overlayfs")

EM_AARCH64, EM_X86_64 = 183, 62


def _elf_header(machine: int) -> bytes:
    """A 64-bit little-endian ELF executable header for `machine`, and nothing runnable after it."""
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    return ident + struct.pack("<HHIQQQIHHHHHH", 2, machine, 1, 0x400000, 64, 0, 0, 64, 56, 0, 64, 0, 0)


def _foreign_machine() -> int:
    return EM_X86_64 if os.uname().machine == "aarch64" else EM_AARCH64


def test_a_base_of_another_platform_is_used_with_a_warning(tmp_path: Path, busybox_store) -> None:
    context = write_context(tmp_path / "ctx", {})
    foreign = "linux/amd64" if os.uname().machine == "aarch64" else "linux/arm64"
    messages: list[str] = []
    builder.build(context, buildfile_text="FROM busybox\nRUN true\n", root=busybox_store.root, platform=foreign,
                  on_event=lambda event: messages.append(event.text) if event.kind is EventKind.MESSAGE else None)
    warned = [text for text in messages if text.startswith("warning: FROM busybox")]
    assert len(warned) == 1 and f"not {foreign} as asked" in warned[0]


def test_no_warning_when_the_platforms_agree(tmp_path: Path, busybox_store) -> None:
    context = write_context(tmp_path / "ctx", {})
    messages: list[str] = []
    builder.build(context, buildfile_text="FROM busybox\nRUN true\n", root=busybox_store.root,
                  on_event=lambda event: messages.append(event.text) if event.kind is EventKind.MESSAGE else None)
    assert not [text for text in messages if text.startswith("warning:")]


def test_running_a_program_of_another_architecture_says_what_is_missing(tmp_path: Path, busybox_store) -> None:
    context = write_context(tmp_path / "ctx", {})
    (context / "prog").write_bytes(_elf_header(_foreign_machine()))
    (context / "prog").chmod(0o755)
    with pytest.raises(SandboxError) as caught:
        builder.build(context, buildfile_text='FROM busybox\nCOPY prog /prog\nRUN ["/prog"]\n', root=busybox_store.root)
    assert "Exec format error" in caught.value.message
    assert "binfmt_misc" in caught.value.hint
    assert caught.value.pos is not None and caught.value.pos.line == 3
