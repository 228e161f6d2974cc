/* A static probe the sandbox tests run inside RUN: it tries what a hostile build step would and
 * prints one `what=RESULT` per attempt, RESULT being "ok" or the errno name (e.g. EPERM).
 *
 *   probe mknod PATH MAJOR MINOR   make a char device, then open it for reading
 *   probe keyring [DESC]           keyctl/add_key/request_key; with DESC, look for the user key
 *                                  DESC in the user keyring and print its payload if it is read
 *   probe namespaces               unshare/clone of a user namespace, clone3, setns-free mount
 *   probe ptrace                   attach to / seize a sibling, read its memory; TRACEME
 *   probe kernel                   bpf, kexec_load, perf_event_open, personality(ADDR_NO_RANDOMIZE)
 *   probe compat-keyctl            keyctl through the 32-bit int 0x80 ABI (x86_64 only)
 *   probe euid                     print the effective uid
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *what, long rc) {
    if (rc < 0) {
        const char *name = strerrorname_np(errno);
        printf("%s=%s\n", what, name ? name : "E?");
    } else {
        printf("%s=ok\n", what);
    }
    fflush(stdout);
}

static int do_mknod(char **argv) {
    unsigned major = (unsigned)atoi(argv[3]), minor = (unsigned)atoi(argv[4]);
    report("mknod", mknod(argv[2], S_IFCHR | 0666, makedev(major, minor)));
    int fd = open(argv[2], O_RDONLY | O_NONBLOCK);
    report("open", fd);
    if (fd >= 0) close(fd);
    return 0;
}

static int do_keyring(int argc, char **argv) {
    report("keyctl", syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -4 /* user keyring */, 0));
    report("add_key", syscall(SYS_add_key, "user", "probe", "x", 1, -2 /* process keyring */));
    report("request_key", syscall(SYS_request_key, "user", "probe", NULL, 0));
    if (argc > 2) {
        long key = syscall(SYS_keyctl, 10 /* SEARCH */, -4, "user", argv[2], 0);
        report("search", key);
        if (key >= 0) {
            char payload[256] = {0};
            long n = syscall(SYS_keyctl, 11 /* READ */, key, payload, sizeof payload - 1);
            report("read", n);
            if (n >= 0) printf("payload=%s\n", payload);
        }
    }
    return 0;
}

static int do_namespaces(void) {
    report("unshare_user", unshare(CLONE_NEWUSER));
    long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid(pid, NULL, 0);
    report("clone_user", pid);
    report("clone3", syscall(SYS_clone3, NULL, 0));
    report("mount", mount("none", "/mnt", "tmpfs", 0, ""));
    return 0;
}

static int do_ptrace(void) {
    pid_t sibling = fork();
    if (sibling == 0) { for (;;) pause(); }
    usleep(100000);
    report("attach", ptrace(PTRACE_ATTACH, sibling, 0, 0));
    report("seize", ptrace(PTRACE_SEIZE, sibling, 0, 0));
    char here[8], there[8];
    struct iovec local = {here, sizeof here}, remote = {there, sizeof there};
    report("vm_read", process_vm_readv(sibling, &local, 1, &remote, 1, 0));
    kill(sibling, SIGKILL);
    waitpid(sibling, NULL, 0);

    /* A debugger's own child that asks to be traced still can be. */
    pid_t child = fork();
    if (child == 0) {
        if (ptrace(PTRACE_TRACEME, 0, 0, 0) != 0) _exit(3);
        raise(SIGSTOP);
        _exit(0);
    }
    int status = 0;
    waitpid(child, &status, 0);
    long rc = -1;
    if (WIFSTOPPED(status)) {
        rc = ptrace(PTRACE_CONT, child, 0, 0);
        waitpid(child, &status, 0);
    } else {
        errno = EPERM;
    }
    report("traceme", rc);
    return 0;
}

static int do_kernel(void) {
    char attr[128] = {0};
    report("bpf", syscall(SYS_bpf, 0 /* BPF_MAP_CREATE */, attr, sizeof attr));
    report("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
    struct perf_event_attr event;
    memset(&event, 0, sizeof event);
    event.type = PERF_TYPE_SOFTWARE;
    event.size = sizeof event;
    event.config = PERF_COUNT_SW_CPU_CLOCK;
    event.exclude_kernel = 1;
    event.exclude_hv = 1;
    report("perf_event_open", syscall(SYS_perf_event_open, &event, 0, -1, -1, 0));
    report("personality", personality(ADDR_NO_RANDOMIZE));
    return 0;
}

static int do_compat_keyctl(void) {
#ifdef __x86_64__
    long rc, nr = 288 /* keyctl in the i386 table */, op = 0, keyring = -4;
    __asm__ volatile("int $0x80" : "=a"(rc) : "a"(nr), "b"(op), "c"(keyring) : "memory");
    if (rc < 0 && rc > -4096) { errno = (int)-rc; rc = -1; }
    report("compat_keyctl", rc);
#else
    printf("compat_keyctl=unsupported\n");
#endif
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) return 2;
    if (!strcmp(argv[1], "mknod") && argc == 5) return do_mknod(argv);
    if (!strcmp(argv[1], "keyring")) return do_keyring(argc, argv);
    if (!strcmp(argv[1], "namespaces")) return do_namespaces();
    if (!strcmp(argv[1], "ptrace")) return do_ptrace();
    if (!strcmp(argv[1], "kernel")) return do_kernel();
    if (!strcmp(argv[1], "compat-keyctl")) return do_compat_keyctl();
    if (!strcmp(argv[1], "euid")) { printf("euid=%d\n", (int)geteuid()); return 0; }
    return 2;
}
