"""The Ray executor on a real Ray cluster started on this machine (`ray start --head` on 127.0.0.1): the
same store as the local executor, a worker killed with SIGKILL mid-sweep costing only its unfinished
items, and the models behind it either in the workers (GGUF) or in llama.cpp servers on loopback."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from test_trace_resume import assert_same_run, snapshot

from shepherd.config import ModelConfig
from shepherd.tasks import get_task
from shepherd.traces.executor import LocalExecutor
from shepherd.traces.ray_executor import RayExecutor
from shepherd.traces.store import TraceStore
from shepherd.traces.sweep import SweepConfig, SweepPlan, make_units, register_sweep

REPO = Path(__file__).resolve().parents[2]
SLM = {"backend": "scripted", "model": "slm-script", "script": "I am not sure . The answer is 7."}
LLM = {"backend": "scripted", "model": "llm-script",
       "script": "Natalia sold 48 in April and 24 in May . 48 + 24 = 72 . The answer is 72."}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head node on loopback with 4 CPUs; stopped afterwards."""
    # the ray of this interpreter: its workers must import what this process imports
    ray_bin = str(Path(sys.executable).parent / "ray")
    if not Path(ray_bin).exists():
        ray_bin = shutil.which("ray") or "ray"
    port = _free_port()
    tmp = tmp_path_factory.mktemp("ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [ray_bin, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "4",
           "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(tmp)]
    out = subprocess.run(cmd, env=env, check=False, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    address = f"127.0.0.1:{port}"
    try:
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        subprocess.run([ray_bin, "stop", "--force"], env=env, check=False, capture_output=True, timeout=120)


def _units(n: int, plan: SweepPlan, slm_id: str, llm_id: str):
    task = get_task("gsm8k")
    items = task.load("train", limit=n)
    cfg = SweepConfig(task=task.name, slm=slm_id, llm=llm_id, max_tokens=64)
    return task, cfg, make_units(task, items, cfg, plan, "train")


def _local_reference(path: Path, n: int, plan: SweepPlan) -> None:
    from shepherd.models.factory import build_backend

    slm, llm = build_backend(ModelConfig(**SLM)), build_backend(ModelConfig(**LLM))
    task, cfg, units = _units(n, plan, slm.model_id, llm.model_id)
    store = TraceStore(path)
    register_sweep(store, cfg, plan, "train")
    assert not [r.error for r in LocalExecutor(slm, llm, task, store).run(units) if r.error]
    store.close()


def test_ray_sweep_through_the_cli_equals_the_local_one(cluster, tmp_path):
    """`shepherd sweep run --executor ray --address ...` against the cluster: the store holds what the local
    executor's holds (generations, rows, hints, items), every call once, and it resumes to nothing."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[slm]\nbackend = "scripted"\nmodel = "slm-script"\nscript = "I am not sure . The answer is 7."\n'
                   '[llm]\nbackend = "scripted"\nmodel = "llm-script"\nscript = "Natalia sold 48 in April and 24 in '
                   'May . 48 + 24 = 72 . The answer is 72."\n')

    def sweep(store: Path, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "shepherd.cli", "sweep", "run", "gsm8k", "--split", "train", "--limit", "5",
             "--store", str(store), "--config", str(cfg), "--grid", "0,0.25,0.5,0.75", "--samples", "2",
             "--max-tokens", "64", *extra], cwd=REPO, check=False, capture_output=True, text=True, timeout=600)

    local, remote = tmp_path / "local.sqlite", tmp_path / "ray.sqlite"
    out = sweep(local)
    assert out.returncode == 0, out.stderr[-3000:]
    out = sweep(remote, "--executor", "ray", "--address", cluster, "--workers", "2")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    a, b = snapshot(local), snapshot(remote)
    for table in ("generations", "rows", "hints", "items"):
        assert a[table] == b[table], table
    assert b["dup_calls"] == [] and b["calls"] == b["model_generations"]
    config = TraceStore(remote, readonly=True).sweeps()[0].config
    assert config["executor"] == "ray(2 workers)" and config["engine"] == {"slm": "scripted", "llm": "scripted"}
    again = sweep(remote, "--executor", "ray", "--address", cluster)
    assert again.returncode == 0 and "0 model calls" in again.stdout + again.stderr, again.stderr[-2000:]


def test_a_worker_killed_mid_sweep_costs_only_its_unfinished_items(cluster, tmp_path):
    """Two workers; once the sweep is under way one of them is killed with SIGKILL while it holds an item.
    The driver hands that item to a fresh worker; the store ends as the local executor's does and the
    call log holds each generation once (nothing stored or paid twice)."""
    plan = SweepPlan(grid=(0.0, 0.25, 0.5, 0.75), samples=2, temperature=0.7)
    n = 8
    _local_reference(tmp_path / "ref.sqlite", n, plan)
    slow_slm, slow_llm = {**SLM, "delay_s": 0.25}, {**LLM, "delay_s": 0.25}
    _, cfg, units = _units(n, plan, "slm-script", "llm-script")
    store_path = tmp_path / "ray.sqlite"
    store = TraceStore(store_path)
    register_sweep(store, cfg, plan, "train")
    ex = RayExecutor(slow_slm, slow_llm, "gsm8k", store_path, address=cluster, workers=2)
    ex.start()
    pids = ex.worker_pids()
    assert len(set(pids)) == 2
    results, killed = [], []

    def kill_when_busy():
        # a unit is under way once its LLM answer is committed; kill the worker that is not between units
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            n_calls = store._conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
            if n_calls >= 3:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
                return
            time.sleep(0.05)

    t = threading.Thread(target=kill_when_busy)
    t.start()
    try:
        results.extend(ex.run(units))
    finally:
        t.join()
        ex.shutdown()
    assert killed, "the kill should land while the sweep runs"
    assert ex.lost, "the killed worker held an item: it must have been handed out again"
    assert len(results) == n and not [r.error for r in results if r.error]
    store.close()
    assert_same_run(tmp_path / "ref.sqlite", store_path)


def _model(name: str):
    from shepherd.models.sources import ModelNotFound, resolve_model

    try:
        return resolve_model(name, download=False)
    except ModelNotFound as exc:
        pytest.skip(str(exc))


@pytest.mark.slow
def test_ray_sweep_with_the_local_model_in_the_workers(cluster, tmp_path):
    """The real 0.5B GGUF model, loaded once in each Ray worker, sweeps the same rows as the local executor
    (prompts evaluated from scratch in both, so even the sampled texts agree)."""
    pytest.importorskip("llama_cpp")
    _model("qwen2.5-coder-0.5b-instruct-q4_k_m")
    cfg = tmp_path / "pair.toml"
    cfg.write_text(
        '[slm]\nmodel = "qwen2.5-coder-0.5b-instruct-q4_k_m"\nmodel_id = "qwen0.5b-as-slm"\nn_ctx = 1024\n'
        'n_threads = 1\n[llm]\nmodel = "qwen2.5-coder-0.5b-instruct-q4_k_m"\nmodel_id = "qwen0.5b-as-llm"\n'
        'n_ctx = 1024\nn_threads = 1\n')

    def sweep(store: Path, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "shepherd.cli", "sweep", "run", "gsm8k", "--split", "train", "--limit", "2",
             "--store", str(store), "--config", str(cfg), "--max-tokens", "24", "--grid", "0,0.5", "--samples", "1",
             "--engine", "sequential", "--no-prefix-reuse", *extra],
            cwd=REPO, check=False, capture_output=True, text=True, timeout=900)

    local, remote = tmp_path / "local.sqlite", tmp_path / "ray.sqlite"
    out = sweep(local)
    assert out.returncode == 0, out.stderr[-3000:]
    out = sweep(remote, "--executor", "ray", "--address", cluster, "--workers", "2")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    a, b = snapshot(local), snapshot(remote)
    for table in ("generations", "rows", "hints", "items"):
        assert a[table] == b[table], table
    assert b["dup_calls"] == []


@pytest.mark.slow
def test_ray_workers_as_clients_of_llama_cpp_servers_on_loopback(cluster, tmp_path):
    """The models live in llama.cpp HTTP servers (`shepherd models serve`, one per model) on 127.0.0.1;
    Ray workers are their clients. With the servers' prompt cache off (a reused prefix rounds differently),
    the sweep's store equals a local sweep's against the same servers, and the hints really were continued
    through the completions route (hint lengths counted by the server's own /tokenize)."""
    pytest.importorskip("xllamacpp")
    _model("qwen2.5-coder-0.5b-instruct-q4_k_m")
    procs, urls = [], []
    for _ in range(2):
        port = _free_port()
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "shepherd.cli", "models", "serve", "qwen2.5-coder-0.5b-instruct-q4_k_m",
             "--port", str(port), "--slots", "1", "--n-ctx", "1024", "--threads", "1", "--no-cache-prompt"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        urls.append(f"http://127.0.0.1:{port}/v1")
    try:
        import httpx

        for u in urls:
            assert wait_for(lambda u=u: _up(httpx, u), timeout_s=120), "the llama.cpp server did not come up"
        template = "chat_template = \"chatml\"\n"
        cfg = tmp_path / "http.toml"
        cfg.write_text(
            f'[slm]\nbackend = "openai"\nmodel = "qwen"\nmodel_id = "qwen0.5b-http-slm"\nbase_url = "{urls[0]}"\n'
            f'prefix_route = "completions"\n{template}'
            f'[llm]\nbackend = "openai"\nmodel = "qwen"\nmodel_id = "qwen0.5b-http-llm"\nbase_url = "{urls[1]}"\n'
            f'prefix_route = "completions"\n{template}')

        def sweep(store: Path, *extra: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [sys.executable, "-m", "shepherd.cli", "sweep", "run", "gsm8k", "--split", "train", "--limit", "2",
                 "--store", str(store), "--config", str(cfg), "--max-tokens", "24", "--grid", "0,0.5",
                 "--samples", "0", *extra], cwd=REPO, check=False, capture_output=True, text=True, timeout=900)

        local, remote = tmp_path / "local.sqlite", tmp_path / "ray.sqlite"
        out = sweep(local)
        assert out.returncode == 0, out.stderr[-3000:]
        out = sweep(remote, "--executor", "ray", "--address", cluster, "--workers", "2")
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
        a, b = snapshot(local), snapshot(remote)
        diff = [(x, y) for x, y in zip(a["generations"], b["generations"]) if x != y]
        assert not diff, [[(u, v) for u, v in zip(x, y) if u != v] for x, y in diff]
        assert a["rows"] == b["rows"]
        texts = TraceStore(remote, readonly=True)
        hinted = [g for g in texts._conn.execute("SELECT request, text FROM generations WHERE origin='model'")
                  if '"prefix":""' not in g[0].replace(" ", "")]
        assert hinted, "the sweep should have continued a hint through the server"
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def wait_for(predicate, timeout_s: float = 120.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def _up(httpx, url: str) -> bool:
    try:
        return httpx.get(url + "/models", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
