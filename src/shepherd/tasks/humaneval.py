"""HumanEval: 164 function-completion problems (openai/human-eval).

Rows: `task_id, prompt, canonical_solution, test, entry_point`. Local file: `humaneval/HumanEval.jsonl.gz`
(or the plain .jsonl); hub: `openai_humaneval`. The program run for a response is the prompt (imports,
helpers, the stub with its docstring), then the model's code, then the tests and `check(entry_point)`.
A response that repeats the whole function simply redefines the stub; a body-only continuation (the
canonical solutions, a raw completion) is appended to the prompt as is.
"""

from __future__ import annotations

from .base import Item, Message, load_hub, read_jsonl
from .code_extract import defines, extract_code, indent_body, is_body
from .code_task import CodeTask, doctest_calls
from .prompts import CODE_FORMAT


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
