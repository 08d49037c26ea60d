"""Confining one notebook's process, from inside the fork server (Linux system calls
through ctypes). Runs in the sandbox; nothing here is secret.

``enter_namespaces``   a user namespace of its own (the notebook is user JOB_UID there,
                       an unprivileged host user outside) with new mount, PID, IPC,
                       network and UTS namespaces; the caller then forks the notebook's
                       process, PID 1 of the new PID namespace
``private_filesystem`` a size-capped tmpfs as its working folder (also /tmp), /proc
                       and /dev/pts hidden, /dev and the rest read-only
``become``             without namespaces, as root: the notebook's own unprivileged host user
``drop_privileges``    no capabilities (bounding and ambient sets too), locked securebits,
                       no new privileges
``limit``              rlimits: address space, file size, CPU, processes, open files
``landlock``           without namespaces: read-only access to the Python environment, full
                       access to its working folder, nothing else of the file system; no
                       signals to, or abstract sockets of, processes outside it (Landlock,
                       Linux >= 5.13; the scopes >= 6.12)
``seccomp``            no programs (execve), no new processes (threads only), no sockets
                       (socketpair only), no fallocate, no System V IPC, memfd, io_uring,
                       ptrace, mounts, namespaces, keyrings, BPF or kernel modules; no
                       kernel memory beyond the default buffers: no sendmsg (no file
                       descriptors in flight, past RLIMIT_NOFILE), no SO_SNDBUF/SO_RCVBUF
                       (nor their FORCE forms), no F_SETPIPE_SZ;
                       ``no_threads`` then refuses threads too (the checks' phase)
"""
import ctypes
import os
import platform
import resource
import stat
import struct

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
CLONE_THREAD = 0x00010000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 32, 4096, 1024, 2048, 1 << 21
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_SECUREBITS = 1, 4, 24, 28
PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_SET_SECCOMP = 38, 47, 22
PR_SET_CHILD_SUBREAPER = 36

_libc = None


def libc():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(result, what):
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def prctl(option, arg2=0, arg3=0):
    return libc().prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), 0, 0)


def _mount(source, target, fstype, flags, data=None):
    enc = (lambda s: None if s is None else os.fsencode(s))
    _check(libc().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {target}")


def keep_capabilities(caps):
    """Keep only these capabilities (numbers) in the effective and permitted sets."""
    mask = sum(1 << c for c in caps)
    header = ctypes.create_string_buffer(struct.pack("II", 0x20080522, 0), 8)
    data = ctypes.create_string_buffer(struct.pack("IIIIII", mask, mask, 0, 0, 0, 0), 24)
    _check(libc().capset(header, data), "capset")


def become(uid):
    """This process becomes host user uid (group uid, no supplementary groups): needs
    CAP_SETUID and CAP_SETGID; every capability is lost with the change."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid or os.getegid() != uid:
        raise OSError(f"could not become user {uid}")


def enter_namespaces(job_uid):
    """Unshare user, mount, PID, IPC, network and UTS namespaces; map job_uid (and gid)
    to this process's own ids outside. The next fork is PID 1 of the new PID namespace."""
    uid, gid = os.getuid(), os.getgid()
    prctl(PR_SET_DUMPABLE, 1)            # so that this process may write its own maps
    try:
        _check(libc().unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC
                              | CLONE_NEWNET | CLONE_NEWUTS), "unshare")
        for name, text in (("setgroups", "deny"), ("uid_map", f"{job_uid} {uid} 1"),
                           ("gid_map", f"{job_uid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    finally:
        prctl(PR_SET_DUMPABLE, 0)        # not even this user may ptrace or read it


def _flags_of(path):
    """The mount flags a remount of ``path`` must keep (locked flags cannot be cleared)."""
    f = os.statvfs(path).f_flag
    out = 0
    for st, ms in ((1, MS_RDONLY), (2, MS_NOSUID), (4, MS_NODEV), (8, MS_NOEXEC),
                   (1024, MS_NOATIME), (2048, MS_NODIRATIME), (4096, MS_RELATIME)):
        if f & st:
            out |= ms
    return out


def _mounts_below(top):
    """The mount points strictly below ``top`` in this mount namespace."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            points = [line.split()[4] for line in f]
    except OSError:
        return []
    prefix = top.rstrip("/") + "/"
    return [p for p in points if p.startswith(prefix) and p not in (top, prefix)]


def private_filesystem(workdir, disk_mb, files, job_uid, read_only=(), hidden=()):
    """In the new mount namespace: workdir becomes a fresh tmpfs of disk_mb and at most
    ``files`` inodes (its 'tmp' folder is also /tmp), /proc and each of hidden are covered
    by an empty read-only tmpfs, and each of read_only is remounted read-only."""
    opts = f"size={disk_mb}m,nr_inodes={files},mode=0700,uid={job_uid},gid={job_uid}"
    _mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV, opts)
    os.mkdir(os.path.join(workdir, "tmp"), 0o700)
    if os.path.isdir("/tmp") and not _mounts_below("/tmp"):
        # Not when the Python environment is mounted below /tmp (a checkout in /tmp): a
        # new /tmp would hide it. /tmp then stays the sandbox's read-only, empty folder;
        # TMPDIR points at the job's folder either way.
        _mount(os.path.join(workdir, "tmp"), "/tmp", None, MS_BIND)
    for path in ("/proc",) + tuple(hidden):
        if os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                   "size=4k,nr_inodes=8,mode=0555")
    for path in read_only:
        if os.path.isdir(path):
            _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | _flags_of(path))


def drop_privileges():
    """No capability left in any set, securebits locked, no new privileges."""
    cap = 0
    while prctl(PR_CAPBSET_DROP, cap) == 0:
        cap += 1
    prctl(PR_CAP_AMBIENT, 4)                          # PR_CAP_AMBIENT_CLEAR_ALL
    prctl(PR_SET_SECUREBITS, 0xef)          # NOROOT, NO_SETUID_FIXUP, no ambient raise; locked
    header = ctypes.create_string_buffer(struct.pack("II", 0x20080522, 0), 8)
    data = ctypes.create_string_buffer(24)
    _check(libc().capset(header, data), "capset")
    _check(prctl(PR_SET_NO_NEW_PRIVS, 1), "no_new_privs")


def limit(address_space, file_size, cpu_seconds, processes, open_files):
    """rlimits of this process and what it starts (None: leave as is)."""
    for which, value in ((resource.RLIMIT_AS, address_space), (resource.RLIMIT_FSIZE, file_size),
                         (resource.RLIMIT_NPROC, processes), (resource.RLIMIT_NOFILE, open_files),
                         (resource.RLIMIT_CORE, 0)):
        if value is not None:
            resource.setrlimit(which, (value, value))
    if cpu_seconds is not None:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))


# ---------------------------------------------------------------------------------------
# Landlock: a file system allow-list for this process (same numbers on every architecture)

_LL_CREATE, _LL_ADD, _LL_RESTRICT = 444, 445, 446
_LL_READ = 1 | 4 | 8                                   # EXECUTE, READ_FILE, READ_DIR
_LL_FILE_ONLY = 1 | 2 | 4 | (1 << 14) | (1 << 15)      # what a rule on a file (not a folder) may hold


def _syscall(*args):
    f = libc().syscall
    f.restype = ctypes.c_long
    return f(*(ctypes.c_long(a) if isinstance(a, int) else a for a in args))


def landlock_abi():
    """Landlock's ABI version here, 0 when the kernel has none."""
    try:
        return max(0, _syscall(_LL_CREATE, None, 0, 1))       # LANDLOCK_CREATE_RULESET_VERSION
    except (OSError, AttributeError):
        return 0


def landlock(read_only, read_write):
    """From now on this process (and its threads) may only read and execute beneath the
    paths of read_only, do anything beneath those of read_write, and nothing else of the
    file system; with ABI >= 6 also not signal, nor connect to abstract sockets of,
    processes outside. Returns the ABI, or 0 (nothing done) without Landlock."""
    abi = landlock_abi()
    if abi < 1:
        return 0
    handled = (1 << 13) - 1 | (1 << 13 if abi >= 2 else 0) | (1 << 14 if abi >= 3 else 0) \
        | (1 << 15 if abi >= 5 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    attr = ctypes.create_string_buffer(struct.pack("QQQ", handled, 3, 3)[:size], size)
    ruleset = _syscall(_LL_CREATE, attr, size, 0)
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    try:
        for paths, rights in ((read_only, _LL_READ), (read_write, handled)):
            for path in paths:
                _landlock_rule(ruleset, path, rights)
        _check(prctl(PR_SET_NO_NEW_PRIVS, 1), "no_new_privs")
        if _syscall(_LL_RESTRICT, ruleset, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return abi


def _landlock_rule(ruleset, path, rights):
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return                                  # nothing there to allow
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= _LL_FILE_ONLY
        attr = ctypes.create_string_buffer(struct.pack("=Qi", rights, fd), 12)
        if _syscall(_LL_ADD, ruleset, 1, attr, 0) != 0:     # LANDLOCK_RULE_PATH_BENEATH
            raise OSError(ctypes.get_errno(), f"landlock_add_rule {path}")
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------
# seccomp: a classic BPF filter, x86-64 only (elsewhere seccomp_supported() is False)

AUDIT_ARCH_X86_64 = 0xC000003E
EPERM, EAGAIN, ENOSYS, EOPNOTSUPP = 1, 11, 38, 95
_DENY = {   # x86-64 system call numbers that a graded notebook never needs
    "execve": 59, "execveat": 322, "fork": 57, "vfork": 58, "ptrace": 101,
    "process_vm_readv": 310, "process_vm_writev": 311, "memfd_create": 319, "memfd_secret": 447,
    "shmget": 29, "shmat": 30, "msgget": 68, "semget": 64, "mq_open": 240,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "bpf": 321,
    "perf_event_open": 298, "userfaultfd": 323, "keyctl": 250, "add_key": 248,
    "request_key": 249, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
    "unshare": 272, "setns": 308, "mount_setattr": 442, "open_tree": 428, "move_mount": 429,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "kexec_load": 246,
    "kexec_file_load": 320, "init_module": 175, "finit_module": 313, "delete_module": 176,
    "reboot": 169, "swapon": 167, "swapoff": 168, "acct": 163, "syslog": 103,
    "name_to_handle_at": 303, "open_by_handle_at": 304, "pidfd_open": 434, "pidfd_getfd": 438,
    "sendmsg": 46, "sendmmsg": 307,     # SCM_RIGHTS: sockets in flight hold kernel memory, no fd
}
_CLONE, _CLONE3, _FALLOCATE = 56, 435, 285   # fallocate: EOPNOTSUPP (posix_fallocate then
_SOCKET = 41                                  # writes, within the rlimits and the tmpfs)
_SETSOCKOPT, _SOL_SOCKET, _BUFFER_OPTIONS = 54, 1, (7, 8, 32, 33)   # SO_{SND,RCV}BUF[FORCE]
_FCNTL, _F_SETPIPE_SZ = 72, 1031


def seccomp_supported():
    return platform.machine() in ("x86_64", "AMD64")


def _filter():
    ld = lambda k: struct.pack("HBBI", 0x20, 0, 0, k)                    # BPF_LD|W|ABS
    jeq = lambda k, jt, jf: struct.pack("HBBI", 0x15, jt, jf, k)          # BPF_JMP|JEQ|K
    jset = lambda k, jt, jf: struct.pack("HBBI", 0x45, jt, jf, k)         # BPF_JMP|JSET|K
    jge = lambda k, jt, jf: struct.pack("HBBI", 0x35, jt, jf, k)          # BPF_JMP|JGE|K
    ret = lambda k: struct.pack("HBBI", 0x06, 0, 0, k)                    # BPF_RET|K
    allow, deny = ret(0x7FFF0000), ret(0x00050000 | EPERM)
    prog = [ld(4), jeq(AUDIT_ARCH_X86_64, 1, 0), ret(0x80000000),         # other ABI: kill
            ld(0), jge(0x40000000, 0, 1), deny]                              # x32 calls: no
    for nr in sorted(_DENY.values()):
        prog += [jeq(nr, 0, 1), deny]
    prog += [jeq(_SOCKET, 0, 1), deny]                     # no sockets; socketpair stays allowed
    prog += [jeq(_FALLOCATE, 0, 1), ret(0x00050000 | EOPNOTSUPP)]
    prog += [jeq(_CLONE3, 0, 1), ret(0x00050000 | ENOSYS)]                 # glibc falls back to clone
    prog += [jeq(_CLONE, 0, 4), ld(16), jset(CLONE_THREAD, 0, 1), allow, deny]   # threads only
    # setsockopt(fd, SOL_SOCKET, SO_SNDBUF and co.): larger socket buffers, refused
    # (args: offset 16 + 8 i, the low 32 bits first; level and optname are ints)
    n = len(_BUFFER_OPTIONS)
    prog += [jeq(_SETSOCKOPT, 0, n + 5), ld(24), jeq(_SOL_SOCKET, 0, n + 2), ld(32)]
    prog += [jeq(opt, n - i, 0) for i, opt in enumerate(_BUFFER_OPTIONS[:-1], 1)]
    prog += [jeq(_BUFFER_OPTIONS[-1], 0, 1), deny, allow]
    prog += [jeq(_FCNTL, 0, 4), ld(24), jeq(_F_SETPIPE_SZ, 0, 1), deny, allow]   # larger pipes
    prog.append(allow)
    return prog


def _no_threads_filter():
    ld = lambda k: struct.pack("HBBI", 0x20, 0, 0, k)                    # noqa: E731
    jeq = lambda k, jt, jf: struct.pack("HBBI", 0x15, jt, jf, k)          # noqa: E731
    ret = lambda k: struct.pack("HBBI", 0x06, 0, 0, k)                    # noqa: E731
    return [ld(4), jeq(AUDIT_ARCH_X86_64, 1, 0), ret(0x80000000), ld(0),
            jeq(_CLONE3, 0, 1), ret(0x00050000 | ENOSYS),
            jeq(_CLONE, 0, 1), ret(0x00050000 | EAGAIN), ret(0x7FFF0000)]


def no_threads():
    """From now on no thread (nor process) can be started: stacked on seccomp()."""
    _install(_no_threads_filter())


def seccomp():
    """Install the filter (needs no_new_privs, set by drop_privileges)."""
    _install(_filter())


def _install(prog):
    code = ctypes.create_string_buffer(b"".join(prog), 8 * len(prog))
    fprog = ctypes.create_string_buffer(struct.pack("HxxxxxxQ", len(prog), ctypes.addressof(code)), 16)
    _check(prctl(PR_SET_NO_NEW_PRIVS, 1), "no_new_privs")
    _check(libc().prctl(PR_SET_SECCOMP, ctypes.c_ulong(2), fprog, 0, 0), "seccomp")
