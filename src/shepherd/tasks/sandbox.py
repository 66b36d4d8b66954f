"""Run untrusted Python (model-written code plus its tests) in a confined subprocess.

Why a subprocess per program: a model's code can loop, fork, allocate, print or touch files without end;
nothing it does may stall the grader or harm the host. The layers, and where each applies:

- wall clock (always): the in-sandbox launcher SIGKILLs the program's init at `wall_s`; the parent kills
  the launcher's process group at `wall_s + grace_s` as a backstop.
- CPU, memory, output (always): RLIMIT_CPU (SIGXCPU), RLIMIT_AS/RLIMIT_DATA (MemoryError), stdout and
  stderr go to files and RLIMIT_FSIZE caps them and every file the program writes.
- processes (root): RLIMIT_NPROC is counted per uid, so every concurrent run gets a uid of its own
  (UID_BASE + pid-derived offset + slot; nobody where the container's id range lacks it).
- leftovers (root: pid namespace; else setsid + killpg): the program runs as pid 2 under an init that
  is pid 1 of a new pid namespace; when the init exits the kernel kills every process left in it,
  including ones that called setsid().
- files outside the sandbox (root): the program runs as that unprivileged uid, in a mount namespace with
  private tmpfs on /tmp, /var/tmp and /dev/shm (its working folder is /tmp/sandbox there) and its own
  /proc. If a folder above the Python prefix is closed to others (pyenv under /root), that folder is
  covered by an empty tmpfs into which only the prefix is bound back, which also hides the rest of it.
- network: a network namespace with no interface up (kernel-enforced; as root, or via an unprivileged
  user namespace where the kernel allows it); without one, a Python-level socket patch, which stops
  ordinary code but not a program that goes around it (ctypes).
- early exit (always): a pass needs control to come back after the program's last line;
  `sys.exit(0)` or `os._exit(0)` before the tests finish is a failure.

`RunResult.layers` names the layers that applied to each run. Not defended: a program that digs through
the launcher's frames to forge the completion marker (model code is careless, not adversarial to the
grader). Without root and without user namespaces, only the rlimits, the process group and the socket
patch apply.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

_CHILD_SOURCE = (Path(__file__).with_name("_sandbox_child.py")).read_text()

#: sandbox uids are UID_BASE + (pid % 100_000) * 64 + slot: a fresh uid per concurrent run, so that
#: RLIMIT_NPROC (a per-uid count) bounds one program's processes and not its neighbours'.
UID_BASE = int(os.environ.get("SHEPHERD_SANDBOX_UID_BASE", "2000000000"))
SLOTS = 64


@dataclass(frozen=True)
class Limits:
    """What one program may use. Defaults fit HumanEval/MBPP tests with a wide margin."""

    wall_s: float = 10.0
    cpu_s: float = 10.0
    memory_bytes: int = 1 << 30
    output_bytes: int = 1 << 20  # per stream and per file written
    processes: int = 32  # per uid, threads included
    open_files: int = 256
    tmpfs_bytes: int = 64 << 20


@dataclass(frozen=True)
class SandboxOptions:
    """Switches for the layers, for tests of the fallbacks; the defaults take every layer available."""

    namespaces: bool = True
    network_namespace: bool = True
    drop_privileges: bool = True
    private_tmp: bool = True
    grace_s: float = 5.0
    #: a fixed str/bytes hash seed (None: random, as Python starts): set iteration order, and so what a
    #: program that lists a set of strings prints, is then the same on every run
    hash_seed: int | None = None


@dataclass
class RunResult:
    """How a program ended. `passed` means it ran to its last line and exited 0 within every limit."""

    passed: bool
    #: passed, failed, timeout, cpu_limit, memory_limit, output_limit, early_exit, killed, sandbox_error
    status: str
    reason: str
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    layers: tuple[str, ...] = field(default_factory=tuple)


class _Slots:
    """Hands out uid slots to concurrent runs in this process."""

    def __init__(self) -> None:
        self._free = list(range(SLOTS))
        self._cond = threading.Condition()

    def take(self) -> int:
        with self._cond:
            while not self._free:
                self._cond.wait()
            return self._free.pop(0)

    def give(self, slot: int) -> None:
        with self._cond:
            self._free.append(slot)
            self._cond.notify()


_slots = _Slots()


def _site_paths() -> list[str]:
    """site-packages folders, added without running site (faster start, no .pth side effects)."""
    paths = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    return sorted(p for p in paths if p and os.path.isdir(p))


def _read_capped(path: Path, cap: int, *, tail: bool = False) -> tuple[str, int]:
    """The first (or last) `cap` bytes of an output file, and its full size."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if tail and size > cap:
            fh.seek(size - cap)
        data = fh.read(cap)
    return data.decode("utf-8", errors="replace"), size


def run_python(source: str, limits: Limits = Limits(), *, options: SandboxOptions = SandboxOptions(),
               keep_output: int = 8192) -> RunResult:
    """Run `source` as a program in the sandbox and say how it ended. Thread-safe; blocks until done."""
    slot = _slots.take()
    work = Path(tempfile.mkdtemp(prefix="shepherd-run-"))  # parent-private (0700): output files live here
    proc: subprocess.Popen | None = None
    status_r = status_w = -1
    t0 = time.monotonic()
    try:
        uid = UID_BASE + (os.getpid() % 100_000) * SLOTS + slot
        box = work / "box"
        box.mkdir(mode=0o700)
        (box / "program.py").write_text(source)
        if os.geteuid() == 0 and options.drop_privileges:
            for p in (box, box / "program.py"):
                os.chown(p, uid, uid)
        status_r, status_w = os.pipe()
        fcntl.fcntl(status_r, fcntl.F_SETFL, os.O_NONBLOCK)
        config = {
            "status_fd": status_w,
            "workdir": str(box),
            "uid": uid,
            "namespaces": options.namespaces,
            "use_netns": options.network_namespace,
            "drop_privileges": options.drop_privileges,
            "private_tmp": options.private_tmp,
            "tmpfs_bytes": limits.tmpfs_bytes,
            "extra_path": _site_paths(),
            "limits": {
                "wall_s": limits.wall_s, "cpu_s": limits.cpu_s, "memory_bytes": limits.memory_bytes,
                "output_bytes": limits.output_bytes, "processes": limits.processes,
                "open_files": limits.open_files,
            },
            "env": {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(box), "TMPDIR": "/tmp",
                    "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1"},
        }
        nonce = secrets.token_hex(16)
        with open(work / "stdout", "wb") as out, open(work / "stderr", "wb") as err:
            flags, env = ["-I", "-S"], {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
            if options.hash_seed is not None:
                # -I would ignore PYTHONHASHSEED: isolate by hand (-s -S, -P where it exists) with an env of
                # our own making, so the only PYTHON* variable the interpreter sees is this one
                flags = ["-s", "-S"] + (["-P"] if sys.version_info >= (3, 11) else [])
                env["PYTHONHASHSEED"] = str(int(options.hash_seed))
            proc = subprocess.Popen(
                [sys.executable, *flags, "-c", _CHILD_SOURCE, json.dumps(config)],
                stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=box, pass_fds=(status_w,),
                start_new_session=True, env=env,
            )
        os.close(status_w)
        status_w = -1
        try:
            assert proc.stdin is not None
            proc.stdin.write((nonce + "\n").encode())
            proc.stdin.close()
        except OSError:
            pass
        backstop = _wait(proc, limits.wall_s + options.grace_s)
        duration = time.monotonic() - t0
        lines = _drain(status_r).splitlines()
        out_text, out_size = _read_capped(work / "stdout", keep_output)
        err_text, err_size = _read_capped(work / "stderr", keep_output, tail=True)  # the traceback
        return _judge(proc.returncode, lines, nonce, backstop, out_text, out_size, err_text, err_size,
                      limits, duration, keep_output)
    except OSError as exc:
        return RunResult(False, "sandbox_error", f"sandbox could not run the program: {exc}", None, "", "",
                         time.monotonic() - t0)
    finally:
        if proc is not None and proc.returncode is None:
            _kill_group(proc)
        for fd in (status_r, status_w):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(work, ignore_errors=True)
        _slots.give(slot)


def _wait(proc: subprocess.Popen, backstop_s: float) -> bool:
    """Wait for the launcher without reaping it, kill what is left of its process group, then reap.

    Blocking waitid (not Popen.wait(timeout), which polls up to 50 ms late) plus a timer as the backstop;
    the group is killed while its leader is unreaped, so its id cannot have been reused.
    """
    fired = threading.Event()
    lock = threading.Lock()

    def backstop() -> None:
        with lock:
            if proc.returncode is None:
                fired.set()
                _killpg(proc.pid)

    timer = threading.Timer(backstop_s, backstop)
    timer.daemon = True
    timer.start()
    try:
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:
        pass
    with lock:
        timer.cancel()
        _killpg(proc.pid)
        proc.wait()
    return fired.is_set()


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, 9)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_group(proc: subprocess.Popen) -> None:
    """Last-resort clean-up on an error path."""
    _killpg(proc.pid)
    proc.wait()


def _drain(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        if sum(map(len, chunks)) > 1 << 20:
            break
    return b"".join(chunks).decode("utf-8", errors="replace")


def _judge(returncode: int | None, lines: list[str], nonce: str, backstop: bool, out: str, out_size: int,
           err: str, err_size: int, limits: Limits, duration: float, keep: int) -> RunResult:
    layers: tuple[str, ...] = ()
    done = timeout = False
    signum: int | None = None
    setup_error = ""
    for line in lines:
        head, _, rest = line.partition(" ")
        if head == "layers" and not layers:
            layers = tuple(rest.split())
        elif head == "done" and rest == nonce:
            done = True
        elif head == "timeout":
            timeout = True
        elif head == "signal" and rest.isdigit():
            signum = int(rest)
        elif head == "setup-error" and not setup_error:
            setup_error = rest
    err_tail = err[-keep:]
    error = _last_error(err_tail)
    result = RunResult(False, "failed", "", returncode, out[:keep], err_tail, duration, layers)
    if setup_error:
        result.status, result.reason = "sandbox_error", f"sandbox set-up failed: {setup_error}"
    elif timeout or backstop:
        result.status = "timeout"
        result.reason = f"timed out: exceeded the {limits.wall_s:g}s wall-clock limit"
    elif done and returncode == 0:
        result.passed, result.status, result.reason = True, "passed", "passed"
    elif out_size >= limits.output_bytes or err_size >= limits.output_bytes:
        result.status = "output_limit"
        result.reason = f"output limit: wrote more than {limits.output_bytes} bytes"
    elif signum == 24:  # SIGXCPU at the soft RLIMIT_CPU
        result.status, result.reason = "cpu_limit", f"CPU time limit of {limits.cpu_s:g}s exceeded"
    elif error.startswith("MemoryError"):
        result.status = "memory_limit"
        result.reason = f"memory limit of {limits.memory_bytes >> 20} MiB exceeded (MemoryError)"
    elif returncode == 0:
        result.status, result.reason = "early_exit", "exited before the tests finished (sys.exit/os._exit)"
    elif signum is not None:
        result.status = "killed"
        result.reason = f"killed by signal {signum}" + (
            " (CPU hard limit or out of memory)" if signum == 9 else "")
    else:
        result.reason = "failed: " + (error or f"exit code {returncode}")
    return result


def _last_error(err: str) -> str:
    """The exception line of a traceback (e.g. 'AssertionError'), or the last line printed."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    for line in reversed(lines):
        if not line.startswith(" ") and ("Error" in line or "Exception" in line or ":" in line):
            return line.strip()[:300]
    return lines[-1].strip()[:300] if lines else ""
