"""Recording served traffic, feedback on it, and reloading the policies: real HTTP on loopback, scripted
models (fast orchestration tests)."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from shepherd.artifacts import artifact_id
from shepherd.server import create_app
from shepherd.traces.record import RecordStore

from .support import QUESTION, interrupt, make_config, scripted, tiny_predictor

KEYS = [{"name": "team-a", "key": "sk-team-a-0001"}, {"name": "team-b", "key": "sk-team-b-0002"},
        {"name": "ops", "key": "sk-ops-admin-03", "admin": True}]


def _server(live, tmp_path, record=None, keys=None, models=None, **kw):
    srv = {}
    if record is not None:
        srv["record"] = {"store": str(tmp_path / "served.sqlite"), **record}
    if keys is not None:
        srv["keys"] = keys
    if models is not None:
        srv["models"] = models
    slm, llm = scripted(**kw)
    server = live(create_app(make_config(srv), {"slm": slm, "llm": llm}))
    server.slm, server.llm = slm, llm
    return server


def _ask(server, content="What is (3+4)*2?", key=None, model="shepherd", stream=False):
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body = {"model": model, "messages": [{"role": "user", "content": content}], "stream": stream}
    r = httpx.post(server.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    if not stream:
        return r.json()
    import json

    chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    return {"id": chunks[0]["id"], "shepherd": chunks[-1].get("shepherd"),
            "text": "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])}


def _queries(server):
    server.state.recorder.flush()
    with RecordStore(server.state.settings.record.resolved_path(), readonly=True) as rs:
        return rs.queries(), rs.traces


def _feedback(server, body, key=None):
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(server.url + "/v1/feedback", json=body, headers=headers, timeout=30)


# -- recording ---------------------------------------------------------------------------------------

def test_recording_is_off_by_default_and_feedback_then_says_so(live, tmp_path):
    server = _server(live, tmp_path)
    resp = _ask(server)
    assert server.state.recorder is None
    assert not list(tmp_path.iterdir())
    r = _feedback(server, {"response_id": resp["id"], "score": 1})
    assert r.status_code == 409 and r.json()["error"]["code"] == "recording_disabled"


def test_records_request_decision_generations_and_cost(live, tmp_path):
    server = _server(live, tmp_path, record={})
    resp = _ask(server)
    streamed = _ask(server, content="What is 5*6?", stream=True)
    queries, _ = _queries(server)
    assert [q.response_id for q in queries] == [resp["id"], streamed["id"]]
    q = queries[0]
    assert q.key_name == "anonymous" and q.route == "shepherd"
    assert q.request.message_dicts == QUESTION and q.request.max_tokens == 64
    assert q.answer == resp["choices"][0]["message"]["content"]
    assert q.decision["label"] == "hint(5)"
    assert q.cost_usd == pytest.approx(resp["shepherd"]["cost_usd"])
    with RecordStore(tmp_path / "served.sqlite", readonly=True) as rs:
        # the LLM's hint and the SLM's continuation, each stored under the key a sweep would look up
        assert len(q.generation_keys) == 2
        hint = rs.traces.get(q.generation_keys[0])
        assert hint.text == "Step one add three and" and hint.completion_tokens == 5
        assert rs.traces.get_request(q.generation_keys[0]).max_tokens == 5
        assert rs.traces.origin(q.generation_keys[1]) == "served"
        # the streamed answer's generations are recorded too
        s = queries[1]
        assert s.answer == streamed["text"] and len(s.generation_keys) == 2
        assert all(rs.traces.has(k) for k in s.generation_keys)


def test_hash_messages_keeps_no_prompt_text(live, tmp_path):
    server = _server(live, tmp_path, record={"hash_messages": True})
    secret = "My account number is 99887766; what is (3+4)*2?"
    resp = _ask(server, content=secret)
    queries, _ = _queries(server)
    (q,) = queries
    assert q.response_id == resp["id"] and q.request is None and len(q.messages_key) == 64
    assert q.answer is None  # an answer may repeat the prompt: not kept either
    answer = resp["choices"][0]["message"]["content"].encode()
    assert answer
    assert len(q.generation_keys) == 2
    server.state.recorder.close()  # checkpoint and close, so every byte is in the files
    server.state.recorder = None
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert b"99887766" not in blob and b"account number" not in blob and answer not in blob


def test_retention_keeps_the_newest_requests_and_their_generations(live, tmp_path):
    server = _server(live, tmp_path, record={"max_requests": 3})
    ids = [_ask(server, content=f"What is {i}+{i}?")["id"] for i in range(5)]
    queries, _ = _queries(server)
    assert [q.response_id for q in queries] == ids[2:]
    with RecordStore(tmp_path / "served.sqlite", readonly=True) as rs:
        kept = {r[0] for r in rs.traces._query("SELECT key FROM generations")}
    assert kept == {k for q in queries for k in q.generation_keys}


def test_retention_by_age(tmp_path):
    from shepherd.models.base import GenerationRequest
    from shepherd.traces.record import ServedRecord

    rs = RecordStore(tmp_path / "r.sqlite")
    req = GenerationRequest.create(QUESTION, max_tokens=8)
    old = ServedRecord("old", "k", "shepherd", "p", req, "a", {}, 0.0, 0.0, 0.0, at=time.time() - 3 * 86400)
    new = ServedRecord("new", "k", "shepherd", "p", req, "a", {}, 0.0, 0.0, 0.0)
    rs.write([old, new])
    assert rs.prune(max_age_days=2) == 1
    assert [q.response_id for q in rs.queries()] == ["new"]
    assert rs.queries(since=time.time() + 60) == []  # `sweep run --from-record --since`
    rs.close()


# -- feedback ----------------------------------------------------------------------------------------

def test_feedback_only_on_a_keys_own_responses(live, tmp_path):
    server = _server(live, tmp_path, record={}, keys=KEYS)
    mine = _ask(server, key="sk-team-a-0001")["id"]
    theirs = _ask(server, content="What is 1+1?", key="sk-team-b-0002")["id"]
    ok = _feedback(server, {"response_id": mine, "score": 0.0}, key="sk-team-a-0001")
    assert ok.status_code == 200 and ok.json()["response_id"] == mine
    assert _feedback(server, {"response_id": theirs, "score": 1}, key="sk-team-a-0001").status_code == 404
    assert _feedback(server, {"response_id": "chatcmpl-nope", "score": 1}, key="sk-team-a-0001").status_code == 404
    assert _feedback(server, {"response_id": mine, "score": 1}).status_code == 401
    for bad in ({"response_id": mine}, {"response_id": mine, "score": 1.5}, {"score": 1},
                {"response_id": mine, "score": 1, "stars": 5}):
        r = _feedback(server, bad, key="sk-team-a-0001")
        assert r.status_code == 400, (bad, r.text)
    # a correction later keeps the score given before
    assert _feedback(server, {"response_id": mine, "corrected_answer": "The answer is 14."},
                     key="sk-team-a-0001").status_code == 200
    queries, _ = _queries(server)
    fb = {q.response_id: q.feedback for q in queries}
    assert fb[theirs] is None
    assert fb[mine].score == 0.0 and fb[mine].corrected_answer == "The answer is 14."


def test_feedback_right_after_the_answer_finds_it(live, tmp_path):
    """The record is written by the recorder's thread; feedback waits for it rather than answering 404."""
    server = _server(live, tmp_path, record={})
    for i in range(5):
        rid = _ask(server, content=f"What is {i}*3?")["id"]
        assert _feedback(server, {"response_id": rid, "score": 1}).status_code == 200


# -- reload ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    a, b = tiny_predictor(root / "a", seed=0), tiny_predictor(root / "b", seed=1)
    assert artifact_id(a).split("#")[1] != artifact_id(b).split("#")[1]
    return a, b


def _install(src: Path, dst: Path) -> None:
    dst.mkdir(exist_ok=True)
    for f in src.iterdir():
        shutil.copy(f, dst / f.name)


def test_reload_swaps_the_artifact_and_in_flight_answers_keep_the_old_one(live, tmp_path, two_artifacts):
    a, b = two_artifacts
    deployed = tmp_path / "predictor"
    _install(a, deployed)
    server = _server(live, tmp_path, keys=KEYS, models={"shepherd": {"policy": "proactive",
                                                                    "settings": {"artifact": str(deployed)}}},
                     delay_s=0.4, slm_delay_s=0.4)
    key = "sk-team-a-0001"
    first = _ask(server, key=key)["shepherd"]["artifact"]
    assert first == f"{deployed}#{artifact_id(a).split('#')[1]}"

    slow: dict = {}
    t = threading.Thread(target=lambda: slow.update(_ask(server, content="What is 9*9?", key=key)))
    t.start()
    deadline = time.monotonic() + 5
    while not server.state.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.state.in_flight == 1
    _install(b, deployed)  # `shepherd train --out` the same folder: a new artifact there
    r = httpx.post(server.url + "/admin/reload", headers={"authorization": "Bearer sk-ops-admin-03"}, timeout=30)
    assert r.status_code == 200, r.text
    new = f"{deployed}#{artifact_id(b).split('#')[1]}"
    assert r.json()["artifacts"]["shepherd"] == new
    t.join(10)
    assert slow["shepherd"]["artifact"] == first  # decided by the policy it started with
    assert _ask(server, key=key)["shepherd"]["artifact"] == new


def test_reload_needs_an_admin_key_and_a_failed_reload_keeps_serving(live, tmp_path, two_artifacts):
    a, _ = two_artifacts
    deployed = tmp_path / "predictor"
    _install(a, deployed)
    server = _server(live, tmp_path, keys=KEYS, models={"shepherd": {"policy": "proactive",
                                                                    "settings": {"artifact": str(deployed)}}})
    url = server.url + "/admin/reload"
    assert httpx.post(url, timeout=30).status_code == 401
    r = httpx.post(url, headers={"authorization": "Bearer sk-team-a-0001"}, timeout=30)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    (deployed / "manifest.json").write_text("{ not json")
    r = httpx.post(url, headers={"authorization": "Bearer sk-ops-admin-03"}, timeout=30)
    assert r.status_code == 500 and r.json()["error"]["code"] == "reload_failed"
    assert _ask(server, key="sk-team-a-0001")["shepherd"]["artifact"] == artifact_id(a).replace(str(a), str(deployed))


def test_sighup_reloads_a_served_predictor(tmp_path, two_artifacts):
    """`shepherd serve` as a user runs it: SIGHUP after a retrain swaps the artifact, recording keeps on."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    a, b = two_artifacts
    deployed = tmp_path / "predictor"
    _install(a, deployed)
    cfg = tmp_path / "server.toml"
    cfg.write_text(f"""
[llm]
backend = "scripted"
model = "big"
script = "Step one add three and four . The answer is 7."
[slm]
backend = "scripted"
model = "small"
script = "I believe the answer is 7."
[server]
warmup = false
[server.models.shepherd]
policy = "proactive"
settings = {{ artifact = "{deployed}" }}
[server.record]
store = "{tmp_path / 'served.sqlite'}"
""")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "shepherd.cli", "serve", "--config", str(cfg), "--port", str(port),
                             "--log-level", "warning"], env=dict(os.environ), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

    def artifact() -> str:
        r = httpx.post(url + "/v1/chat/completions", timeout=30,
                       json={"model": "shepherd", "messages": [{"role": "user", "content": "3+4?"}]})
        assert r.status_code == 200, r.text
        return r.json()["shepherd"]["artifact"]

    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                if httpx.get(url + "/health", timeout=1).json()["ready"]:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        assert artifact().endswith(artifact_id(a).split("#")[1])
        _install(b, deployed)
        proc.send_signal(signal.SIGHUP)
        new = artifact_id(b).split("#")[1]
        deadline = time.monotonic() + 10
        while not (seen := artifact()).endswith(new):
            assert time.monotonic() < deadline, f"still {seen} after SIGHUP"
            time.sleep(0.05)
    finally:
        rc = interrupt(proc)
    assert rc == 0
    with RecordStore(tmp_path / "served.sqlite", readonly=True) as rs:  # written out at shutdown
        assert rs.count() >= 2
