"""What HumanEval and MBPP share: a chat prompt that asks for a whole function, and grading by running
the extracted code with the task's tests in the sandbox."""

from __future__ import annotations

from abc import abstractmethod

from .base import Grade, Item, Task
from .sandbox import Limits, SandboxOptions, run_python


class CodeTask(Task):
    kind = "code"
    max_tokens = 512
    #: per-program limits; HumanEval/MBPP tests finish in well under a second
    limits = Limits()
    options = SandboxOptions()

    @abstractmethod
    def program(self, item: Item, response: str) -> tuple[str, str]:
        """(the program to run: code + tests, the code extracted from the response)."""

    def grade(self, item: Item, response: str) -> Grade:
        program, code = self.program(item, response)
        if not code.strip():
            return Grade(False, None, "no code found in the response")
        result = run_python(program, self.limits, options=self.options)
        return Grade(result.passed, code, result.reason)

    def extract(self, item: Item, response: str) -> str | None:
        """The extracted code, without running the tests (a reactive decision compares samples' code)."""
        _, code = self.program(item, response)
        return code if code.strip() else None
