"""HumanEval: 164 function-completion problems (openai/human-eval).

Rows: `task_id, prompt, canonical_solution, test, entry_point`. Local file: `humaneval/HumanEval.jsonl.gz`
(or the plain .jsonl); hub: `openai_humaneval`. The program run for a response is the prompt (imports,
helpers, the stub with its docstring), then the model's code, then the tests and `check(entry_point)`.
A response that repeats the whole function simply redefines the stub; a body-only continuation (the
canonical solutions, a raw completion) is appended to the prompt as is.

Two prompt styles. `humaneval` (chat): the model is asked for the whole function in a ```python fence, so
its answer starts by re-typing the signature and docstring (most of a short answer; a hint cut from it is
echo). `humaneval-completion` (as human-eval/evalplus prompt base models): the assistant turn already
starts with "```python\n" + the prompt, the model writes only the body (then closes the fence), hints are
cut from the body, and the grader puts the stub back in front of it.
"""

from __future__ import annotations

import re

from .base import Item, Message, load_hub, read_jsonl
from .code_extract import defines, extract_code, indent_body, is_body, keep_definitions, parses
from .code_task import CodeTask, doctest_calls
from .prompts import CODE_FORMAT, COMPLETION_FORMAT

#: the line a body-only answer closes its fence with; whatever follows is not code
_CLOSING_FENCE = re.compile(r"^[ \t]*```", re.MULTILINE)


class HumanEval(CodeTask):
    name = "humaneval"
    description = "Python function completion with unit tests (164 problems)"
    splits = ("test",)
    default_split = "test"
    paper_size = 164

    def _load_split(self, split: str) -> list[Item]:
        path = self._local_path("humaneval", "HumanEval.jsonl.gz")
        rows = list(read_jsonl(path)) if path is not None else load_hub("openai_humaneval", None, split)
        return [
            Item(id=row["task_id"], question=row["prompt"], reference=row["canonical_solution"],
                 metadata={"prompt": row["prompt"], "test": row["test"], "entry_point": row["entry_point"]})
            for row in rows
        ]

    def messages(self, item: Item) -> list[Message]:
        return [{"role": "user", "content": f"Complete this Python function.\n\n```python\n"
                 f"{item.question.rstrip()}\n```\n\n{CODE_FORMAT}"}]

    def solution(self, item: Item, response: str) -> tuple[str, str]:
        prompt, entry = item.metadata["prompt"], item.metadata["entry_point"]
        code = extract_code(response, entry)
        if defines(code, entry) or "\ndef " in "\n" + code:
            head = prompt.rstrip() + "\n\n\n" + code
        elif is_body(code):
            head = prompt + code
        else:  # body lines that arrived flush left
            head = prompt + indent_body(code)
        return head, code

    def program(self, item: Item, response: str) -> tuple[str, str]:
        head, code = self.solution(item, response)
        return f"{head}\n\n{item.metadata['test']}\n\ncheck({item.metadata['entry_point']})\n", code

    def probes(self, item: Item) -> list[str]:
        """The calls of the docstring's examples (`>>> f(...)`, `f(...) == y`), which the prompt shows the model."""
        return doctest_calls(item.metadata["prompt"], item.metadata["entry_point"])


class HumanEvalCompletion(HumanEval):
    """HumanEval in completion style: the assistant turn starts with the stub, the model writes the body."""

    name = "humaneval-completion"
    description = "HumanEval, completion style: the answer continues the stub (prompt) with the body only"
    prompt_style = "completion"

    def messages(self, item: Item) -> list[Message]:
        return [{"role": "user", "content": f"Complete this Python function.\n\n```python\n"
                 f"{item.question.rstrip()}\n```\n\n{COMPLETION_FORMAT}"}]

    def prefix(self, item: Item) -> str:
        return "```python\n" + item.metadata["prompt"]

    def solution(self, item: Item, response: str) -> tuple[str, str]:
        """The stub + the body the response continues it with: the response up to its closing fence, with
        trailing lines that do not parse (prose, a line cut by the token budget) and top-level demo code
        dropped. A response that writes the whole function after all (or flush-left lines) is read as the
        chat style reads a fenced answer."""
        body = _CLOSING_FENCE.split(response.replace("\r\n", "\n"), maxsplit=1)[0]
        if not is_body(body):
            return super().solution(item, body)
        prompt = item.metadata["prompt"]
        lines = body.rstrip().splitlines()
        for cut in range(min(40, len(lines))):
            kept = "\n".join(lines[:len(lines) - cut]) + "\n"
            if is_body(kept) and parses(prompt + kept):
                body = kept
                break
        else:
            body = body.rstrip() + "\n"
        head = keep_definitions(prompt + body)
        return head, (head[len(prompt):] if head.startswith(prompt) else body)
