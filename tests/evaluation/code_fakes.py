"""A small HumanEval trace store on real HumanEval items, graded by the real sandbox, with scripted
models that keep whitespace (code must survive being cut into hints and continued).

- the "LLM" answers with the item's canonical solution in a ```python fence;
- the "SLM" alone answers a stub that fails the tests; with a hint of at least 40% of the LLM's words it
  continues the LLM's answer;
- sampled SLM answers: the canonical solution for the first item (they agree, and are right); stubs
  returning different constants for the others (they disagree).
"""

from __future__ import annotations

import gzip
import json
import re
import time
from pathlib import Path

from shepherd.models.base import Backend, Generation, GenerationRequest

_WORD = re.compile(r"\S+")


class TextBackend(Backend):
    """Words are tokens, but the text keeps its whitespace; a prefix cut from the answer is continued."""

    def __init__(self, script, model_id: str):
        self.script = script
        self.model_id = model_id

    def count_tokens(self, text: str) -> int:
        return len(_WORD.findall(text))

    async def agenerate(self, request: GenerationRequest, n: int = 1) -> list[Generation]:
        out = []
        for i in range(n):
            req = request if i == 0 or request.seed is None else GenerationRequest(
                **{**request.__dict__, "seed": request.seed + i})
            full = self.script(req)
            cont = full[len(req.prefix):] if req.prefix and full.startswith(req.prefix) else full
            finish = "stop"
            if req.max_tokens is not None:
                words = list(_WORD.finditer(cont))
                if len(words) > req.max_tokens:
                    cont = cont[: words[req.max_tokens - 1].end()] if req.max_tokens > 0 else ""
                    finish = "length"
            out.append(Generation(text=cont, prompt_tokens=sum(self.count_tokens(c) for _, c in req.messages),
                                  completion_tokens=self.count_tokens(cont), finish_reason=finish,
                                  latency_s=0.0, model=self.model_id))
        return out


def canonical(data_dir: Path) -> dict[str, dict]:
    with gzip.open(data_dir / "humaneval" / "HumanEval.jsonl.gz", "rt", encoding="utf-8") as f:
        return {r["task_id"]: r for r in map(json.loads, f)}


def build_code_store(path: Path, data_dir: Path, n: int = 4):
    from shepherd.tasks.registry import get_task
    from shepherd.traces.executor import LocalExecutor
    from shepherd.traces.store import TraceStore
    from shepherd.traces.sweep import SweepConfig, SweepPlan, make_units, register_sweep

    task = get_task("humaneval", data_dir)
    items = task.load(limit=n)
    rows = canonical(data_dir)
    by_prompt = {task.messages(it)[-1]["content"]: it for it in items}

    def item_of(req):
        return by_prompt[req.messages[-1][1]]

    def llm(req):
        it = item_of(req)
        r = rows[it.id]
        return f"```python\n{r['prompt']}{r['canonical_solution']}```\n"

    def slm(req):
        it = item_of(req)
        full = llm(req)
        if req.prefix and len(_WORD.findall(req.prefix)) >= 0.4 * len(_WORD.findall(full)):
            return full
        entry = it.metadata["entry_point"]
        if req.temperature > 0 and not req.prefix:
            if it is items[0]:
                return full
            return f"```python\ndef {entry}(*args):\n    return {req.seed}\n```\n"
        return f"```python\ndef {entry}(*args):\n    return None\n```\n"

    store = TraceStore(path)
    s, l_ = TextBackend(slm, "code-slm"), TextBackend(llm, "code-llm")
    plan = SweepPlan(grid=(0.0, 0.2, 0.4, 0.6), trials=1, samples=3, temperature=0.7)
    cfg = SweepConfig(task="humaneval", slm=s.model_id, llm=l_.model_id, max_tokens=400)
    register_sweep(store, cfg, plan, "test")
    t0 = time.perf_counter()
    results = list(LocalExecutor(s, l_, task, store, parallel_calls=False).run(make_units(task, items, cfg, plan, "test")))
    errors = [r.error for r in results if r.error]
    assert not errors, errors
    store.close()
    return path, time.perf_counter() - t0
