"""Learning from served traffic, end to end on the real local models (0.5B as SLM, 1.5B as LLM): a few short
queries served with recording on -> feedback on one -> a sweep of the record (reusing what serving paid
for) -> `shepherd train --task record` into the deployed artifact's folder -> POST /admin/reload -> the next
response names the new artifact."""

from __future__ import annotations

import time

import httpx
import pytest
from typer.testing import CliRunner

from shepherd.artifacts import artifact_id
from shepherd.server import create_app

from .support import make_config, tiny_predictor

pytestmark = pytest.mark.slow

SLM_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m"
LLM_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m"
#: short answers with a final number (the proxy compares final answers; no embedding model needed). On
#: these two models the first, second and fourth are answered alike by both (no hint needed); on the
#: third they pick different numbers, and a hint of 90% of the LLM's answer brings the SLM to its number
QUERIES = ["What is 2 + 3? Reply like: The answer is 7.",
           "What is 9 - 4? Reply like: The answer is 7.",
           "Write any six-digit number. Reply like: The answer is 314159.",
           "Write any five-digit number. Reply like: The answer is 27182."]
USER, ADMIN = "sk-user-real-01", "sk-admin-real-02"


@pytest.fixture(scope="module")
def backends():
    pytest.importorskip("llama_cpp")
    from shepherd.models.llamacpp import LlamaCppBackend
    from shepherd.models.sources import ModelNotFound, resolve_model

    try:
        slm_path, llm_path = resolve_model(SLM_NAME, download=False), resolve_model(LLM_NAME, download=False)
    except ModelNotFound as exc:
        pytest.skip(f"local model unavailable: {exc}")
    slm = LlamaCppBackend(slm_path, model_id=SLM_NAME, n_ctx=512, n_threads=2)
    llm = LlamaCppBackend(llm_path, model_id=LLM_NAME, n_ctx=512, n_threads=2)
    slm.load()
    llm.load()
    return slm, llm


def _ask(server, content: str, model: str) -> dict:
    r = httpx.post(server.url + "/v1/chat/completions", headers={"authorization": f"Bearer {USER}"}, timeout=120,
                   json={"model": model, "max_tokens": 12, "messages": [{"role": "user", "content": content}]})
    assert r.status_code == 200, r.text
    return r.json()


def test_record_feedback_sweep_train_reload_on_real_models(backends, live, tmp_path):
    from shepherd.cli import app as cli
    from shepherd.traces.executor import LocalExecutor
    from shepherd.traces.from_record import RecordTask, record_units, seed_store
    from shepherd.traces.store import TraceStore
    from shepherd.traces.sweep import SweepConfig, SweepPlan, register_sweep

    t0 = time.monotonic()
    slm, llm = backends
    deployed = tiny_predictor(tmp_path / "predictor")
    old = artifact_id(deployed)
    record = tmp_path / "served.sqlite"
    cfg = make_config({"record": {"store": str(record)},
                       "keys": [{"name": "user", "key": USER}, {"name": "ops", "key": ADMIN, "admin": True}],
                       "models": {"shepherd": {"policy": "proactive", "settings": {"artifact": str(deployed)}},
                                  "shepherd-llm": {"policy": "llm-only"}}})
    server = live(create_app(cfg, {"slm": slm, "llm": llm}))

    # 1. serve (the LLM answers: its answers are the sweep's full answers) and rate one answer
    ids = [_ask(server, q, "shepherd-llm")["id"] for q in QUERIES]
    fb = httpx.post(server.url + "/v1/feedback", headers={"authorization": f"Bearer {USER}"}, timeout=30,
                    json={"response_id": ids[2], "score": 1.0})
    assert fb.status_code == 200, fb.text
    server.state.recorder.flush()

    # 2. sweep the record: what serving paid for is not paid again (no LLM call at all here)
    task = RecordTask(record)
    store = TraceStore(tmp_path / "sweep.sqlite")
    assert seed_store(record, store).copied == len(QUERIES)
    task.bind(store, llm.model_id)
    plan = SweepPlan(grid=(0.0, 0.9), samples=0, early_stop=True)
    scfg = SweepConfig(task=task.name, slm=slm.model_id, llm=llm.model_id, max_tokens=12)
    register_sweep(store, scfg, plan, task.default_split, settings={"labels": "proxy"})
    results = list(LocalExecutor(slm, llm, task, store).run(record_units(task, task.load(), scfg, plan)))
    assert [r.error for r in results] == [None] * len(QUERIES)
    assert sum(r.hits for r in results) >= len(QUERIES)  # the served full answers
    assert not [c for c in store.call_log() if c["model"] == LLM_NAME]
    labels = store.labels("record")
    assert {lab.kind for lab in labels.values()} == {"none", "hint"}, labels
    store.close()

    # 3. train on it into the deployed folder, 4. reload, 5. the next answer names the new artifact
    r = CliRunner().invoke(cli, ["train", "--store", str(tmp_path / "sweep.sqlite"), "--task", "record", "--out",
                                 str(deployed), "--epochs", "40", "--hidden", "4", "--no-reactive"])
    assert r.exit_code == 0, r.output
    new = artifact_id(deployed)
    assert new != old
    r = httpx.post(server.url + "/admin/reload", headers={"authorization": f"Bearer {ADMIN}"}, timeout=30)
    assert r.status_code == 200 and r.json()["artifacts"]["shepherd"] == new, r.text
    assert _ask(server, QUERIES[0], "shepherd")["shepherd"]["artifact"] == new
    print(f"record -> feedback -> sweep -> train -> reload: {time.monotonic() - t0:.1f}s")
