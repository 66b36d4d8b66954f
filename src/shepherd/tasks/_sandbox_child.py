"""The in-sandbox half of `sandbox.py`: run as `python -I -S -c <this file's text> <config json>`.

Never imported by the package. It is a script so that no `preexec_fn` runs in a threaded parent (unsafe
after fork) and one interpreter start serves both the set-up and the program. Steps, in order:

1. read the completion nonce from stdin, then put /dev/null on stdin;
2. (root) unshare the network, pid and mount namespaces; (non-root) try a user+network namespace;
3. fork an init: pid 1 of the new pid namespace, so when it exits every process the program started dies
   with it; this process only enforces the wall-clock limit (SIGKILL to the init);
4. init: private /tmp, /var/tmp and /dev/shm (tmpfs), a fresh /proc, the Python prefix re-exposed if a
   parent folder (e.g. /root) is closed to others; then it forks the program (pid 2) and waits for it;
5. program: rlimits, drop to the sandbox uid, parent-death signal, a socket-blocking prelude when no
   network namespace could be had; run program.py as __main__ (exec'd here: one interpreter start);
   only if it returns normally write "done <nonce>" to the status fd.

Status lines on the status fd: `layers ...`, `pid N`, `done NONCE`, `timeout`, `exit N`, `signal N`.
"""

import ctypes
import json
import os
import resource
import signal
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000
MNT_DETACH = 0x2
PR_SET_PDEATHSIG = 1

cfg = json.loads(sys.argv[1])
status_fd = cfg["status_fd"]
libc = ctypes.CDLL(None, use_errno=True)


def status(line):
    try:
        os.write(status_fd, (line + "\n").encode())
    except OSError:
        pass


def unshare(flags):
    if hasattr(os, "unshare"):  # Python 3.12+
        try:
            os.unshare(flags)
            return True
        except OSError:
            return False
    return libc.unshare(ctypes.c_int(flags)) == 0


def mount(source, target, fstype, flags, data):
    enc = (lambda s: None if s is None else s.encode())
    if libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def python_prefixes():
    return [sys.base_prefix, sys.prefix, sys.exec_prefix, sys.base_exec_prefix]


def closed_to_others(path):
    """The highest folder above `path` that others may not traverse, or None."""
    parts = os.path.abspath(path).split(os.sep)
    for i in range(2, len(parts) + 1):
        folder = os.sep.join(parts[:i]) or os.sep
        try:
            if not os.stat(folder).st_mode & 0o001:
                return folder
        except OSError:
            return None
    return None


def expose_python(prefixes, stage_dir):
    """Give the unprivileged uid a path to the interpreter's files when a folder above them is closed
    (pyenv under /root is the usual case): bind each prefix aside, cover the closed folder with an empty
    tmpfs (which also hides the rest of it), recreate the prefix path there and bind it back."""
    wanted = {}
    for prefix in sorted(set(prefixes)):
        top = closed_to_others(prefix)
        if top and not any(prefix.startswith(p + os.sep) for p in wanted.get(top, [])):
            wanted.setdefault(top, []).append(prefix)
    for n, (top, under_top) in enumerate(sorted(wanted.items())):
        stages = []
        for k, prefix in enumerate(under_top):
            stage = f"{stage_dir}/.shepherd-stage-{n}-{k}"
            os.mkdir(stage)
            mount(prefix, stage, None, MS_BIND | MS_REC, None)
            stages.append((stage, prefix))
        mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
        for stage, prefix in stages:
            os.makedirs(prefix, mode=0o755, exist_ok=True)
            mount(stage, prefix, None, MS_BIND | MS_REC, None)
            libc.umount2(stage.encode(), MNT_DETACH)
            os.rmdir(stage)
    return sorted(wanted)


def private_mounts(use_pidns, uid):
    """A mount namespace of our own: private /tmp, /var/tmp, /dev/shm (the program then runs in
    /tmp/sandbox, inside a size-capped tmpfs that disappears with the namespace), a /proc of the pid
    namespace, and the Python prefix reachable for the sandbox uid. Returns the layer's name."""
    mount(None, "/", None, MS_REC | MS_PRIVATE, None)  # nothing we mount may propagate to the host
    if not cfg["private_tmp"]:
        covered = expose_python(python_prefixes() + list(cfg["extra_path"]), os.getcwd())
    else:
        with open("program.py", "rb") as fh:
            source = fh.read()
        targets = [t for t in ("/tmp", "/var/tmp", "/dev/shm") if os.path.isdir(t)]
        # site-packages of an interpreter installed under a folder the private mounts cover (a venv in
        # /tmp): held open now, bound back at the same path once the folder is covered, so that a
        # program imports what it would import anywhere else
        held = [(p, os.open(p, os.O_PATH | os.O_DIRECTORY)) for p in cfg["extra_path"]
                if any(p.startswith(t + os.sep) for t in targets) and os.path.isdir(p)]
        for target in targets:
            mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={cfg['tmpfs_bytes']}")
        for path, fd in held:
            os.makedirs(path, mode=0o755, exist_ok=True)
            mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC, None)
            os.close(fd)
        covered = expose_python(python_prefixes() + [p for p in cfg["extra_path"]
                                                     if not any(p.startswith(t + os.sep) for t in targets)],
                                "/tmp")
        os.mkdir("/tmp/sandbox", 0o700)
        with open("/tmp/sandbox/program.py", "wb") as fh:
            fh.write(source)
        if uid is not None:
            os.chown("/tmp/sandbox", uid, uid)
            os.chown("/tmp/sandbox/program.py", uid, uid)
        os.chdir("/tmp/sandbox")
        cfg["env"]["HOME"] = "/tmp/sandbox"
    if use_pidns:
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    return ("fs=private-tmp" if cfg["private_tmp"] else "fs=host-tmp") + (
        "+prefix:" + ",".join(covered) if covered else "")


def block_sockets():
    """Fallback network layer (no namespace could be had): a Python-level patch. It stops ordinary code
    (socket, urllib, http.client) but not a program that goes around it (ctypes); see sandbox.py."""
    import _socket
    import socket

    def refuse(*args, **kwargs):
        raise PermissionError(1, "network access is disabled in the sandbox")

    class NoSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            refuse()

    socket.socket = NoSocket
    socket.create_connection = refuse
    socket.socketpair = refuse
    socket.getaddrinfo = refuse
    _socket.socket = NoSocket


def set_limits():
    lim = cfg["limits"]
    cpu = max(1, int(lim["cpu_s"] + 0.999))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    mem = lim["memory_bytes"]
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_DATA, (mem, mem))
    out = lim["output_bytes"]
    resource.setrlimit(resource.RLIMIT_FSIZE, (out, out))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (lim["open_files"], lim["open_files"]))
    resource.setrlimit(resource.RLIMIT_NPROC, (lim["processes"], lim["processes"]))


def pick_uid(uid):
    """The configured uid, or nobody where this container's id range does not hold it."""
    try:
        os.setresgid(uid, uid, -1)  # probe with the saved ids kept, so that this can be undone
        os.setresgid(0, 0, 0)
        return uid
    except OSError:
        return 65534


def drop_privileges(uid):
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def run_program(use_netns):
    os.environ.clear()
    os.environ.update(cfg["env"])
    if not use_netns:
        block_sockets()
    import _sitebuiltins
    import builtins

    builtins.exit = _sitebuiltins.Quitter("exit", "Ctrl-D (i.e. EOF)")  # as site would (we start with -S)
    builtins.quit = _sitebuiltins.Quitter("quit", "Ctrl-D (i.e. EOF)")
    sys.argv = ["program.py"]
    sys.path[:0] = [""]
    sys.path.extend(p for p in cfg["extra_path"] if p not in sys.path)
    nonce = cfg["_nonce"]
    del cfg["_nonce"]
    import traceback
    import types

    try:
        with open("program.py", "rb") as fh:
            code = compile(fh.read(), "program.py", "exec")
        main = types.ModuleType("__main__")
        main.__file__ = "program.py"
        main.__builtins__ = __builtins__
        sys.modules["__main__"] = main
        exec(code, main.__dict__)  # noqa: S102 - running the program is the point
    except SystemExit as exc:  # any exit before the end counts as not finished
        code = exc.code
        if code is None or code == 0:
            code = 0
        elif not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
        os._exit(code)
    except BaseException:  # noqa: BLE001 - the program's own error: print it as Python would, then fail
        etype, value, tb = sys.exc_info()
        while tb is not None and tb.tb_frame.f_code.co_filename != "program.py":
            tb = tb.tb_next
        try:
            traceback.print_exception(etype, value, tb)
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001, S110 - stderr may be full (output limit); exit 1 regardless
            pass
        os._exit(1)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001 - unflushable output is a failure, as in Python's own exit
        os._exit(120)
    status("done " + nonce)
    os._exit(0)


def main():
    cfg["_nonce"] = sys.stdin.readline().strip()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.chdir(cfg["workdir"])  # before any mount can cover the path to it
    is_root = os.geteuid() == 0
    want = cfg["namespaces"]
    layers = []
    netns = pidns = mntns = False
    if is_root and want:
        flags = CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWNS
        if not cfg["use_netns"]:
            flags &= ~CLONE_NEWNET
        if unshare(flags):
            netns, pidns, mntns = bool(flags & CLONE_NEWNET), True, True
    elif want and cfg["use_netns"]:
        netns = unshare(CLONE_NEWUSER | CLONE_NEWNET)
    layers.append("net=namespace" if netns else "net=socket-patch")
    layers.append("pid=namespace" if pidns else "pid=process-group")
    child = os.fork()
    if child == 0:
        init(is_root, mntns, pidns, netns, layers)
    status(f"pid {child}")
    timed_out = []

    def on_alarm(signum, frame):
        timed_out.append(True)
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, cfg["limits"]["wall_s"])
    _, wstatus = os.waitpid(child, 0)
    signal.setitimer(signal.ITIMER_REAL, 0)
    if timed_out:
        status("timeout")
    os._exit(128 + os.WTERMSIG(wstatus) if os.WIFSIGNALED(wstatus) else os.WEXITSTATUS(wstatus))


def init(is_root, mntns, pidns, netns, layers):
    """pid 1 of the namespace (root still): set up the mounts, start the program as pid 2 (so that it
    has ordinary signal semantics), wait for it and report how it ended. Its exit ends the namespace."""
    try:
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)  # the launcher gone: the namespace goes
        uid = pick_uid(cfg["uid"]) if is_root and cfg["drop_privileges"] else None
        note = ""
        if uid is not None and not mntns and any(map(closed_to_others, python_prefixes())):
            uid, note = None, ":python-unreachable-for-other-users"  # dropping would break every import
        if mntns:
            layers.append(private_mounts(pidns, uid))
        layers.append(f"uid={uid}" if uid is not None else "uid=unchanged" + note)
        program = os.fork()
        if program == 0:
            set_limits()
            if uid is not None:
                drop_privileges(uid)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
            run_program(netns)
    except BaseException as exc:  # noqa: BLE001 - a set-up failure must never run the program unconfined
        status("setup-error " + repr(exc).replace("\n", " "))
        os._exit(121)
    status("layers " + " ".join(layers))
    _, wstatus = os.waitpid(program, 0)
    if os.WIFSIGNALED(wstatus):
        status(f"signal {os.WTERMSIG(wstatus)}")
        os._exit(128 + os.WTERMSIG(wstatus))
    os._exit(os.WEXITSTATUS(wstatus))


main()
