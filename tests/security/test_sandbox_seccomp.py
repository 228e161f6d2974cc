"""Issue 10, item 2 (syscalls): RUN gets Docker's default seccomp profile. Keyrings (which are
not namespaced), new user namespaces, mounts, attaching to other processes, bpf, kexec and perf
are refused with EPERM, on the compat ABI too; without libseccomp a RUN does not run at all."""
from __future__ import annotations

import ctypes
import os
import platform
import secrets

import pytest

from builder.errors import SandboxError
from security.sandbox_support import needs_root, results, run_in_sandbox

pytestmark = [needs_root]

_libc = ctypes.CDLL(None, use_errno=True)
SYS_ADD_KEY = {"x86_64": 248, "aarch64": 217}
SYS_KEYCTL = {"x86_64": 250, "aarch64": 219}
KEY_SPEC_USER_KEYRING = -4
KEYCTL_UNLINK = 9


def probe(layers, tmp_path, *args: str, **kwargs) -> dict[str, str]:
    status, out = run_in_sandbox(layers, tmp_path / "w", ["/probe", *args], **kwargs)
    assert status == 0, out
    return results(out)


@pytest.mark.skipif(platform.machine() not in SYS_ADD_KEY, reason="keyring syscall numbers known for x86_64/aarch64")
def test_keyrings_are_refused_and_the_host_users_keyring_is_unread(busybox_rootfs, probe_layer, tmp_path):
    machine = platform.machine()
    description = f"builder-test-{secrets.token_hex(4)}"
    payload = secrets.token_hex(8).encode()
    key = _libc.syscall(SYS_ADD_KEY[machine], b"user", description.encode(), payload,
                        ctypes.c_size_t(len(payload)), KEY_SPEC_USER_KEYRING)
    assert key > 0, os.strerror(ctypes.get_errno())
    try:
        found = probe([busybox_rootfs, probe_layer], tmp_path, "keyring", description)
    finally:
        _libc.syscall(SYS_KEYCTL[machine], KEYCTL_UNLINK, key, KEY_SPEC_USER_KEYRING)
    assert found["keyctl"] == found["add_key"] == found["request_key"] == "EPERM", found
    assert found["search"] == "EPERM"
    assert "payload" not in found


def test_namespaces_and_mounts_are_refused(busybox_rootfs, probe_layer, tmp_path):
    found = probe([busybox_rootfs, probe_layer], tmp_path, "namespaces")
    assert found == {"unshare_user": "EPERM", "clone_user": "EPERM",
                     "clone3": "ENOSYS",  # so that libc falls back to clone, whose flags are checked
                     "mount": "EPERM"}


def test_no_attaching_to_another_process(busybox_rootfs, probe_layer, tmp_path):
    found = probe([busybox_rootfs, probe_layer], tmp_path, "ptrace")
    assert found == {"attach": "EPERM", "seize": "EPERM", "vm_read": "EPERM",
                     "traceme": "ok"}  # a process can still be traced by the parent it asks


def test_kernel_interfaces_are_refused(busybox_rootfs, probe_layer, tmp_path):
    found = probe([busybox_rootfs, probe_layer], tmp_path, "kernel")
    assert found == {"bpf": "EPERM", "kexec_load": "EPERM", "perf_event_open": "EPERM",
                     "personality": "EPERM"}


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the i386 ABI through int 0x80")
def test_the_compat_abi_is_filtered_too(busybox_rootfs, probe_layer, tmp_path):
    found = probe([busybox_rootfs, probe_layer], tmp_path, "compat-keyctl")
    assert found == {"compat_keyctl": "EPERM"}


def test_ordinary_commands_still_work_under_the_filter(busybox_rootfs, tmp_path):
    script = ("set -e; mkdir -p /a/b; echo hi > /a/b/f; ln -s f /a/b/l; cat /a/b/l; "
              "chown 1000:1000 /a/b/f; chmod 600 /a/b/f; (sleep 0.1 &) ; wait; "
              "sh -c 'exit 3' || echo sub=$?; chroot / /bin/true && echo chroot=ok")
    status, out = run_in_sandbox([busybox_rootfs], tmp_path / "w", ["/bin/sh", "-c", script])
    assert status == 0, out
    assert out.splitlines()[:3] == ["hi", "sub=3", "chroot=ok"]


def test_without_libseccomp_run_fails_with_a_hint(busybox_rootfs, tmp_path, monkeypatch):
    from builder.sandbox import Bind, runner

    monkeypatch.setattr(runner, "SECCOMP_LIBRARY", "libseccomp-missing.so.2")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SandboxError) as caught:
        run_in_sandbox([busybox_rootfs], tmp_path / "w", ["/bin/sh", "-c", "echo ran > /out/ran"],
                       extra_binds=[Bind(out, "/out", readonly=False)])
    assert "libseccomp2" in caught.value.message + (caught.value.hint or "")
    assert os.listdir(out) == []  # the command never ran unfiltered
