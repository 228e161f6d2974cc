"""The syscall filter of a RUN step: Docker's default seccomp profile, built with libseccomp.

Stdlib only (ctypes): init.py imports this module by path inside the new namespaces. The
library is opened by its soname (libseccomp.so.2, Debian's libseccomp2), never through
ctypes.util.find_library, which forks a helper: in a fresh PID namespace the first child forked
becomes pid 1 and takes the namespace down when it exits.

What is refused, as in Docker's profile for a container without CAP_SYS_ADMIN & co: every
syscall not listed (EPERM), keyrings (keyctl, add_key, request_key), mount and the new mount
API, unshare and setns, clone with namespace flags, bpf, perf_event_open, kexec, modules,
reboot, clock setting, syslog, open_by_handle_at, AF_VSOCK sockets, personality changes other
than the harmless ones. clone3 fails with ENOSYS so that libc falls back to clone, whose flags
can be checked. Stricter than Docker on kernels >= 4.8: ptrace may not attach to a running
process (PTRACE_ATTACH, PTRACE_SEIZE), and process_vm_readv/writev are refused; a process can
still be traced by a parent it asked to (PTRACE_TRACEME). io_uring is refused, as in Docker 25+.

The compat ABIs are covered as Docker does (x86 and x32 on x86_64, arm on aarch64, s390 on
s390x); syscalls of any other ABI kill the process.
"""
from __future__ import annotations

import ctypes
import errno
import platform

LIBRARY = "libseccomp.so.2"
DEBIAN_PACKAGE = "libseccomp2"

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_FLTATR_CTL_NNP = 3  # libseccomp sets no_new_privs before loading unless told not to

SCMP_CMP_NE = 1
SCMP_CMP_LT = 2
SCMP_CMP_EQ = 4
SCMP_CMP_MASKED_EQ = 7

COMPAT_ARCHES = {"x86_64": ("x86", "x32"), "aarch64": ("arm",), "s390x": ("s390",)}

# Docker's unconditional allow list (moby profiles/seccomp/default.json), less io_uring and the
# ptrace family, which have their own rules below.
ALLOWED = """
accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown chown32
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64
clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2
dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait
epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64
fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchown32 fchownat
fcntl fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstat64
fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_requeue futex_time64
futex_wait futex_waitv futex_wake futimesat getcpu getcwd getdents getdents64 getegid getegid32
geteuid geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp
getpid getppid getpriority getrandom getresgid getresgid32 getresuid getresuid32 getrlimit
get_robust_list getrusage getsid getsockname getsockopt get_thread_area gettid gettimeofday
getuid getuid32 getxattr inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel
ioctl io_destroy io_getevents io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set io_setup
io_submit ipc kill landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown
lchown32 lgetxattr link linkat listen listxattr llistxattr _llseek lremovexattr lseek lsetxattr
lstat lstat64 madvise map_shadow_stack membarrier memfd_create memfd_secret mincore mkdir
mkdirat mknod mknodat mlock mlock2 mlockall mmap mmap2 mprotect mq_getsetattr mq_notify mq_open
mq_timedreceive mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink mremap msgctl
msgget msgrcv msgsnd msync munlock munlockall munmap name_to_handle_at nanosleep newfstatat
_newselect open openat openat2 pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc
pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv preadv2 prlimit64
process_mrelease pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read readahead readlink
readlinkat readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages removexattr
rename renameat renameat2 restart_syscall rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask
rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64
rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam sched_get_priority_max
sched_get_priority_min sched_getscheduler sched_rr_get_interval sched_rr_get_interval_time64
sched_setaffinity sched_setattr sched_setparam sched_setscheduler sched_yield seccomp select
semctl semget semop semtimedop semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg
sendto setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer
setpgid setpriority setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid
setreuid32 setrlimit set_robust_list setsid setsockopt set_thread_area set_tid_address setuid
setuid32 setxattr shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 sigprocmask
sigreturn socketcall socketpair splice stat stat64 statfs statfs64 statx symlink symlinkat sync
sync_file_range syncfs sysinfo tee tgkill time timer_create timer_delete timer_getoverrun
timer_gettime timer_gettime64 timer_settime timer_settime64 timerfd_create timerfd_gettime
timerfd_gettime64 timerfd_settime timerfd_settime64 times tkill truncate truncate64 ugetrlimit
umask uname unlink unlinkat utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid
waitpid write writev
chroot
""".split()  # chroot: Docker allows it with CAP_SYS_CHROOT, which RUN keeps

ALLOWED_BY_ARCH = {
    "x86_64": ("arch_prctl", "modify_ldt"),
    "aarch64": ("arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint",
                "cacheflush", "set_tls"),
    "armv7l": ("arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint",
               "cacheflush", "set_tls"),
    "ppc64le": ("sync_file_range2", "swapcontext"),
    "s390x": ("s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"),
    "riscv64": ("riscv_flush_icache",),
}

AF_VSOCK = 40
# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
CLONE_NAMESPACE_FLAGS = 0x7E020000
HARMLESS_PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
# ptrace requests allowed, as (mask, value) pairs on the request: everything a tracer does with
# a tracee it already has, and PTRACE_TRACEME; not PTRACE_ATTACH (16) nor PTRACE_SEIZE (0x4206).
_LOW32 = 0xFFFFFFFF
PTRACE_REQUESTS = (
    (_LOW32 & ~0xF, 0x0),      # 0..15: TRACEME, PEEK*, POKE*, CONT, KILL, SINGLESTEP, regs
    (_LOW32, 17),              # DETACH
    (_LOW32 & ~0x1, 18),       # 18..19
    (_LOW32 & ~0x3, 20),       # 20..23
    (_LOW32 & ~0x7, 24),       # 24..31: SYSCALL, ARCH_PRCTL, SYSEMU, ...
    (_LOW32 & ~0x1F, 32),      # 32..63
    (_LOW32 & ~0x3, 0x4200),   # SETOPTIONS, GETEVENTMSG, GETSIGINFO, SETSIGINFO
    (_LOW32 & ~0x1, 0x4204),   # GETREGSET, SETREGSET
    (_LOW32, 0x4207),          # INTERRUPT
    (_LOW32 & ~0x7, 0x4208),   # LISTEN, PEEKSIGINFO, GET/SETSIGMASK, SECCOMP_GET_*, ...
    (_LOW32 & ~0xF, 0x4210),   # syscall user dispatch, SET_SYSCALL_INFO, ...
)


class SeccompUnavailable(Exception):
    """libseccomp cannot be loaded or refuses the filter; the RUN must not go on unfiltered."""


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def _act_errno(number: int) -> int:
    return 0x00050000 | (number & 0xFFFF)


class Filter:
    """A filter context built in the builder's file system view (the library is loaded from the
    host) and loaded later, inside the rootfs, right before the command is exec'd."""

    def __init__(self, library: str = LIBRARY, machine: str | None = None) -> None:
        try:
            self._lib = ctypes.CDLL(library, use_errno=True)
        except OSError as exc:
            raise SeccompUnavailable(
                f"cannot load {library} to filter the command's system calls ({exc}); "
                f"install the {DEBIAN_PACKAGE} package") from exc
        lib = self._lib
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
        lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                               ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
        lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
        lib.seccomp_load.argtypes = [ctypes.c_void_p]
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        self.machine = machine or platform.machine()
        self._ctx = lib.seccomp_init(_act_errno(errno.EPERM))
        if not self._ctx:
            raise SeccompUnavailable("seccomp_init failed")
        try:
            self._build()
        except BaseException:
            lib.seccomp_release(self._ctx)
            raise

    def _check(self, rc: int, what: str) -> None:
        if rc < 0:
            raise SeccompUnavailable(f"libseccomp: {what}: {errno.errorcode.get(-rc, rc)}")

    def _rule(self, action: int, name: str, *comparisons: tuple[int, int, int, int]) -> None:
        number = self._lib.seccomp_syscall_resolve_name(name.encode())
        if number == -1:  # __NR_SCMP_ERROR: this libseccomp does not know the name
            return
        array = (_ArgCmp * len(comparisons))(*[_ArgCmp(*c) for c in comparisons]) if comparisons else None
        rc = self._lib.seccomp_rule_add_array(self._ctx, action, number, len(comparisons), array)
        if rc == -errno.EDOM:
            return  # a syscall none of the filter's ABIs has: nothing to allow
        self._check(rc, f"rule for {name}")

    def _build(self) -> None:
        lib = self._lib
        self._check(lib.seccomp_attr_set(self._ctx, SCMP_FLTATR_CTL_NNP, 0), "keep no_new_privs off")
        for arch in COMPAT_ARCHES.get(self.machine, ()):
            token = lib.seccomp_arch_resolve_name(arch.encode())
            if token:
                rc = lib.seccomp_arch_add(self._ctx, token)
                if rc != -errno.EEXIST:
                    self._check(rc, f"add arch {arch}")
        for name in ALLOWED + list(ALLOWED_BY_ARCH.get(self.machine, ())):
            self._rule(SCMP_ACT_ALLOW, name)
        self._rule(SCMP_ACT_ALLOW, "socket", (0, SCMP_CMP_NE, AF_VSOCK, 0))
        for persona in HARMLESS_PERSONALITIES:
            self._rule(SCMP_ACT_ALLOW, "personality", (0, SCMP_CMP_EQ, persona, 0))
        flags_arg = 1 if self.machine.startswith("s390") else 0  # s390 swaps clone's arguments
        self._rule(SCMP_ACT_ALLOW, "clone", (flags_arg, SCMP_CMP_MASKED_EQ, CLONE_NAMESPACE_FLAGS, 0))
        self._rule(_act_errno(errno.ENOSYS), "clone3")
        for mask, value in PTRACE_REQUESTS:
            self._rule(SCMP_ACT_ALLOW, "ptrace", (0, SCMP_CMP_MASKED_EQ, mask, value))

    def load(self) -> None:
        """Install the filter on the calling process (it needs CAP_SYS_ADMIN, as no_new_privs
        stays off so that setuid programs in the image work as under Docker)."""
        rc = self._lib.seccomp_load(self._ctx)
        self._lib.seccomp_release(self._ctx)
        self._ctx = None
        self._check(rc, "load the filter")
