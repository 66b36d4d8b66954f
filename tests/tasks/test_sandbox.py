"""Hostile programs are contained: each ends within its limits, fails with a reason, and leaves the host
(files, network, processes) and this test run intact."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from shepherd.tasks import Item
from shepherd.tasks.mbpp import MBPP
from shepherd.tasks.sandbox import SLOTS, UID_BASE, Limits, SandboxOptions, run_python

ROOT = os.geteuid() == 0
root_only = pytest.mark.skipif(not ROOT, reason="the uid and namespace layers need root")
FAST = Limits(wall_s=3.0, cpu_s=2.0, memory_bytes=512 << 20)


def sandbox_processes() -> list[int]:
    """Processes still running as one of this test process's sandbox uids (other runs on the machine
    have their own uids)."""
    first = UID_BASE + (os.getpid() % 100_000) * SLOTS
    mine = range(first, first + SLOTS)
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                uid_line = next(ln for ln in (entry / "status").read_text().splitlines() if ln.startswith("Uid:"))
            except (OSError, StopIteration):
                continue
            if int(uid_line.split()[1]) in mine:
                pids.append(int(entry.name))
    return pids


@pytest.fixture(autouse=True)
def host_intact():
    yield
    if ROOT:
        deadline = time.monotonic() + 3
        while sandbox_processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sandbox_processes() == []
    assert subprocess.run(["true"], check=False).returncode == 0  # the host can still start processes


def test_a_plain_program_passes_and_reports_its_layers():
    result = run_python("import math\nprint(math.factorial(5))", FAST)
    assert result.passed and result.stdout == "120\n" and result.reason == "passed"
    if ROOT:
        assert result.layers[:2] == ("net=namespace", "pid=namespace")
        assert result.layers[2].startswith("fs=private-tmp") and result.layers[3].startswith("uid=")


def test_infinite_loop_hits_the_cpu_limit():
    result = run_python("while True:\n    pass\n", Limits(wall_s=10, cpu_s=1))
    assert not result.passed and result.status in ("cpu_limit", "timeout") and result.reason


def test_sleeping_forever_hits_the_wall_clock_limit():
    result = run_python("import time\nwhile True:\n    time.sleep(1)\n", Limits(wall_s=1.5))
    assert result.status == "timeout" and "wall-clock" in result.reason


def test_fork_bomb_is_contained():
    bomb = ("import os\nwhile True:\n    try:\n        if os.fork() == 0:\n            os.setsid()\n"
            "    except OSError:\n        pass\n")
    result = run_python(bomb, Limits(wall_s=3, cpu_s=3, processes=16))
    assert not result.passed and result.reason
    # the autouse fixture checks that no process of the bomb survived, setsid() or not


def test_background_children_die_with_the_program():
    program = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('parent done')\n")
    result = run_python(program, FAST)
    assert result.passed and "parent done" in result.stdout


@pytest.mark.parametrize("program", [
    "x = bytearray(8 * 1024 ** 3)",
    "chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 1024 ** 2))",
])
def test_memory_bomb_hits_the_memory_limit(program):
    # a generous wall clock: zeroing ~512 MiB page by page can take seconds on a loaded 2-core machine, and
    # a timeout there would hide what this asserts (the memory limit, not the clock, stops the program)
    result = run_python(program, Limits(wall_s=30.0, cpu_s=20.0, memory_bytes=512 << 20))
    assert result.status == "memory_limit" and "memory limit" in result.reason


def test_huge_output_is_capped():
    result = run_python("import sys\nwhile True:\n    sys.stdout.write('x' * 1_000_000)\n", FAST)
    assert result.status == "output_limit" and "output limit" in result.reason
    assert len(result.stdout) <= 8192


def test_huge_stderr_and_huge_files_are_capped():
    chunk = "'e' * 1_000_000"
    assert run_python(f"import sys\nfor _ in range(300):\n    sys.stderr.write({chunk})", FAST).status == "output_limit"
    result = run_python("with open('big.bin', 'wb') as f:\n    for _ in range(300):\n        f.write(b'x' * 1_000_000)",
                        FAST)
    assert not result.passed and "File too large" in result.reason


@pytest.fixture
def victim(tmp_path):
    """A file the test owns outside any sandbox folder, readable by all (the strictest case)."""
    folder = tmp_path / "outside"
    folder.mkdir()
    path = folder / "victim.txt"
    path.write_text("keep me")
    for p in (tmp_path, folder):
        p.chmod(0o755)
    path.chmod(0o644)
    return path


WRITE = "open({path!r}, 'w').write('pwned')"
DELETE = "import os\nos.remove({path!r})"
ESCAPE = "open({path!r}, 'w').write('escaped')"


@pytest.mark.parametrize("program", [WRITE, DELETE])
def test_files_outside_the_sandbox_are_untouched(victim, program):
    result = run_python(program.format(path=str(victim)), FAST)
    assert not result.passed and result.status == "failed"
    assert victim.read_text() == "keep me"


@root_only
@pytest.mark.parametrize("program", [WRITE, DELETE, "import shutil\nshutil.rmtree({folder!r})"])
def test_the_unprivileged_uid_alone_protects_visible_files(victim, program):
    """Without the private /tmp the victim is visible; the sandbox uid still may not change it."""
    code = program.format(path=str(victim), folder=str(victim.parent))
    result = run_python(code, FAST, options=SandboxOptions(private_tmp=False))
    assert not result.passed and "Permission" in result.reason
    assert victim.read_text() == "keep me"


@root_only
def test_files_written_to_tmp_vanish_with_the_sandbox(tmp_path):
    target = Path("/tmp") / f"shepherd-escape-{os.getpid()}-{time.monotonic_ns()}"
    result = run_python(ESCAPE.format(path=str(target)) + "\nprint('wrote')", FAST)
    assert result.passed and "wrote" in result.stdout  # allowed inside: its own private /tmp
    assert not target.exists()


@pytest.fixture
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.3)
    yield server
    server.close()


def _accepted(server: socket.socket) -> bool:
    try:
        conn, _ = server.accept()
        conn.close()
        return True
    except (TimeoutError, OSError):
        return False


CONNECT = ("import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
           "s.sendall(b'leak')\n")


@pytest.mark.parametrize("options, layer", [
    (SandboxOptions(), "net=namespace"),
    (SandboxOptions(network_namespace=False), "net=socket-patch"),
])
def test_network_is_blocked(listener, options, layer):
    result = run_python(CONNECT.format(port=listener.getsockname()[1]), FAST, options=options)
    assert not result.passed and result.status == "failed"
    assert ("unreachable" in result.reason or "disabled" in result.reason or "refused" in result.reason)
    assert not _accepted(listener)
    if ROOT:
        assert layer in result.layers


@pytest.mark.parametrize("program", ["import os\nos._exit(0)", "import sys\nsys.exit(0)", "exit()"])
def test_exiting_early_is_not_a_pass(program):
    result = run_python(program + "\nraise AssertionError('the tests would fail')", FAST)
    assert result.status == "early_exit" and "before the tests finished" in result.reason


def test_killing_itself_is_not_a_pass():
    result = run_python("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", FAST)
    assert not result.passed and "signal 9" in result.reason


class FastMBPP(MBPP):
    limits = Limits(wall_s=3.0, cpu_s=2.0, memory_bytes=512 << 20)


ADD = Item("mbpp/x", "Write add.", "def add(a, b):\n    return a + b",
           {"task_id": 0, "test_list": ["assert add(1, 2) == 3"], "test_setup_code": "", "entry_point": "add"})


@pytest.mark.parametrize("body, reason", [
    ("while True:\n        pass", "CPU time limit|timed out"),
    ("import time\n    time.sleep(100)", "timed out"),
    ("x = bytearray(8 * 1024 ** 3)", "memory limit"),
    ("for _ in range(300):\n        print('x' * 1_000_000)", "output limit"),
    ("import os\n    os._exit(0)", "before the tests finished"),
    ("import socket\n    socket.create_connection(('127.0.0.1', 9), timeout=1)", "failed:"),
])
def test_hostile_answers_grade_as_failures_with_the_reason(body, reason):
    response = f"```python\ndef add(a, b):\n    {body}\n    return a + b\n```"
    grade = FastMBPP().grade(ADD, response)
    assert not grade.correct and any(r in grade.reason for r in reason.split("|")), grade.reason
    assert FastMBPP().grade(ADD, "```python\ndef add(a, b):\n    return a + b\n```").correct


def test_programs_import_what_the_interpreter_has_installed_wherever_it_lives():
    """The private /tmp once hid a venv living under /tmp: numpy imported from the machine's Python but not
    from such a venv, and code was graded differently by where shepherd was installed."""
    result = run_python("import numpy\nprint('ok', numpy.__name__)\n")
    assert result.passed, result.reason
    assert result.stdout.strip() == "ok numpy"
