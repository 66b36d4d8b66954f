"""Helpers for the server tests: scripted configs and a real uvicorn server on a loopback port."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import threading
import time
from typing import Any

from shepherd.config import parse_config
from shepherd.models.scripted import ScriptedBackend

LLM_ANSWER = ("Step one add three and four to get seven . Step two double it to get fourteen . "
              "The answer is 14.")
SLM_ANSWER = "I think it is twelve . The answer is 12."
#: $1 per LLM prompt token, $2 per LLM completion token: costs are easy to read in tests
LLM_PRICE = {"input": 1_000_000.0, "output": 2_000_000.0}
QUESTION = [{"role": "user", "content": "What is (3+4)*2?"}]


def interrupt(proc: subprocess.Popen, timeout: float = 20) -> int:
    """Stop a `shepherd serve` subprocess as Ctrl-C does and return its exit status (killed, and the test
    failed, if it does not shut down in time)."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def make_config(server: dict[str, Any] | None = None, *, llm_price: dict | None = None, **run: Any):
    srv = {"warmup": False, "models": {
        "shepherd": {"policy": "fixed-hint", "settings": {"tokens": 5}},
        "shepherd-llm": {"policy": "llm-only"},
    }}
    srv.update(server or {})
    return parse_config({
        "llm": {"backend": "scripted", "model": "big", "price": llm_price or LLM_PRICE},
        "slm": {"backend": "scripted", "model": "small"},
        "run": {"max_tokens": 64, **run},
        "server": srv,
    })


def scripted(**llm_kw) -> tuple[ScriptedBackend, ScriptedBackend]:
    slm_kw = {k[4:]: v for k, v in llm_kw.items() if k.startswith("slm_")}
    llm_kw = {k: v for k, v in llm_kw.items() if not k.startswith("slm_")}
    return (ScriptedBackend(SLM_ANSWER, model_id="small", **slm_kw),
            ScriptedBackend(LLM_ANSWER, model_id="big", **llm_kw))


class LiveServer:
    """uvicorn serving `app` in a thread on a free loopback port; `loop` is the server's event loop."""

    def __init__(self, app) -> None:
        import uvicorn

        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

        async def recorder(scope, receive, send):
            self.loop = asyncio.get_running_loop()
            await app(scope, receive, send)

        config = uvicorn.Config(recorder, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name=f"uvicorn-{self.port}")

    @property
    def state(self):
        return self.app.state.shepherd

    def __enter__(self) -> LiveServer:  # noqa: PYI034 (never subclassed)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()
        assert not self.thread.is_alive(), "uvicorn did not stop"

    def openai(self, api_key: str = "none", **kw):
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=kw.pop("max_retries", 0),
                             timeout=kw.pop("timeout", 30), **kw)

    def tasks(self) -> list[str]:
        """Names of the coroutines of the tasks alive in the server's loop."""
        assert self.loop is not None

        async def names():
            return [t.get_coro().__qualname__ for t in asyncio.all_tasks() if t is not asyncio.current_task()]

        return asyncio.run_coroutine_threadsafe(names(), self.loop).result(5)

    def request_tasks(self) -> list[str]:
        """Tasks of the server loop other than uvicorn's own two (serving, lifespan)."""
        return [n for n in self.tasks() if n not in ("Server.serve", "LifespanOn.main")]

    def settle(self, timeout: float = 5.0) -> None:
        """Wait until no chat request is in flight and the ledger thread has caught up."""
        deadline = time.monotonic() + timeout
        while self.state.in_flight or self.state.tasks:
            if time.monotonic() > deadline:
                raise AssertionError(f"requests still in flight: {self.state.in_flight}")
            time.sleep(0.01)
        if self.state.budgets is not None:
            self.state.budgets.drain()


def tiny_predictor(out, seed: int = 0):
    """A real predictor artifact (lexical features, a small net) trained on a few made-up queries in which
    longer questions need hints: enough for a proactive route to load and decide with. `seed` changes the
    weights, so two seeds give two artifacts with different content."""
    from shepherd.predictor.data import Example
    from shepherd.predictor.model import NetConfig
    from shepherd.predictor.train import TrainSettings, train

    examples = []
    for i in range(16):
        hard = i % 2 == 1
        text = (f"Question {i}: " + ("a long multi step word problem with several parts to combine " * 3 if hard
                                     else "add two numbers"))
        examples.append(Example(item_id=f"q{i}", text=text, kind="hint" if hard else "none", y=int(hard),
                                fraction=0.3 if hard else 0.0, tokens=6 if hard else 0, full_tokens=20))
    settings = TrainSettings(featurizer="lexical", featurizer_config={"n_features": 64},
                             model=NetConfig(hidden=4, epochs=40, l2=0.1, lam=0.5, seed=seed), seed=seed,
                             reactive=False)
    pred, _ = train(examples, settings, grid=[0.0, 0.1, 0.2, 0.3, 0.5])
    pred.save(out)
    return out
