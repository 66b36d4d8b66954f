"""GSM8K: grade-school word problems with integer answers (openai/grade-school-math).

Rows are `{"question", "answer"}` with the gold number after `####` in the answer text. Local files:
`gsm8k/test.jsonl`, `gsm8k/train.jsonl`; hub: `openai/gsm8k`, config `main`.
"""

from __future__ import annotations

from .base import Grade, Item, Message, Task, load_hub, read_jsonl
from .math_grading import extract_number, format_number, parse_number
from .prompts import MATH_FORMAT


def gold_answer(solution: str) -> str:
    """The number after `####`, without thousands separators ("1,200" -> "1200")."""
    return solution.rsplit("####", 1)[-1].strip().replace(",", "")


class GSM8K(Task):
    name = "gsm8k"
    description = "Grade-school math word problems (numeric answers)"
    kind = "math"
    splits = ("test", "train")
    default_split = "test"
    paper_size = 776
    max_tokens = 512

    def _load_split(self, split: str) -> list[Item]:
        path = self._local_path("gsm8k", f"{split}.jsonl")
        rows = list(read_jsonl(path)) if path is not None else load_hub("openai/gsm8k", "main", split)
        return [
            Item(id=f"gsm8k/{split}/{i}", question=row["question"], reference=gold_answer(row["answer"]),
                 metadata={"solution": row["answer"], "split": split, "index": i})
            for i, row in enumerate(rows)
        ]

    def messages(self, item: Item) -> list[Message]:
        return [{"role": "user", "content": f"{item.question}\n\n{MATH_FORMAT}"}]

    def grade(self, item: Item, response: str) -> Grade:
        gold = parse_number(item.reference)
        value, span = extract_number(response)
        if value is None:
            return Grade(False, None, "no number found in the response")
        extracted = format_number(value)
        if gold is not None and value == gold:
            return Grade(True, extracted, f"{extracted} equals the reference {item.reference}")
        return Grade(False, extracted,
                     f"{extracted} (from {span!r}) differs from the reference {item.reference}")
