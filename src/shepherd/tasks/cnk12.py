"""CNK12: Chinese K-12 math (translated), the `cn_k12` source of OpenR1-Math-220k.

Two row schemas are read:
- OpenR1-Math-220k (`problem, solution, answer, problem_type, question_type, source, uuid`), from the
  hub (`open-r1/OpenR1-Math-220k`, rows with source == "cn_k12") or a local JSONL export;
- the offline sample (`cnk12/numina_cn_k12_sample.jsonl`: NuminaMath-CoT rows, `uid, source, problem,
  solution, answer, answer_is_derived, n_boxed, answer_is_choice_letter`), whose answer is the last
  \\boxed{} of the solution.

Not every row has one checkable answer, so the loader decides per row and says why: each kept item
carries `metadata["kept"]`, each left-out row is in `task.dropped` with its reason.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from typing import Any

from .base import Dropped, Grade, Item, Message, Task, load_hub, read_jsonl
from .math_grading import (
    choice_letters,
    clean_latex_span,
    extract_latex,
    final_answer_span,
    latex_equal,
    normalize_latex,
    parse_options,
)
from .prompts import CHOICE_FORMAT, LATEX_FORMAT

log = logging.getLogger(__name__)

SAMPLE_FILE = "numina_cn_k12_sample.jsonl"
OPENR1_COLUMNS = ("problem", "solution", "answer", "problem_type", "question_type", "source", "uuid")


def _is_prose(answer: str) -> bool:
    """A sentence rather than a value ("\\text{The statement is a necessary ... condition.}")."""
    text = re.sub(r"\\text\{([^{}]*)\}", r"\1", answer)
    words = re.findall(r"[A-Za-z]{3,}", re.sub(r"\\[A-Za-z]+", " ", text))
    return len(words) >= 3


def classify(row: dict[str, Any]) -> tuple[Item | None, str]:
    """Turn one upstream row into an item, or say why it is left out. Returns (item or None, reason)."""
    openr1 = "uuid" in row or "question_type" in row
    row_id = str(row.get("uuid") or row.get("uid") or "")
    item_id = f"cnk12/{row_id}"
    problem = (row.get("problem") or "").strip()
    answer = row.get("answer")
    answer = answer.strip() if isinstance(answer, str) else ""
    if not problem:
        return None, "no problem text"
    if not answer or answer.lower() in {"notfound", "none", "null"}:
        return None, "no reference answer"
    if openr1 and (str(row.get("question_type", "")).lower() == "proof" or answer.lower() == "proof"):
        return None, "proof problem: no checkable answer"
    options = {k: v.replace("$", "").strip() for k, v in parse_options(problem).items()}
    letters = choice_letters(answer)
    flagged_choice = bool(row.get("answer_is_choice_letter")) or str(row.get("question_type")) == "MCQ"
    meta: dict[str, Any] = {"solution": row.get("solution", ""), "schema": "openr1" if openr1 else "numina"}
    if letters and (flagged_choice or len(options) >= 2):
        if len(options) < 2:
            return None, "multiple choice without a readable option list"
        empty = [k for k, v in options.items() if not v.strip()]
        if empty:
            return None, f"damaged option list: option {', '.join(empty)} is empty"
        missing = [c for c in letters if c not in options]
        if missing:
            return None, f"answer letter {''.join(missing)} is not among the options {''.join(options)}"
        named = "" if flagged_choice else f" (answer {answer!r} names option {letters})"
        meta.update(answer_type="choice", choices=options, kept="multiple choice" + named)
        return Item(item_id, problem, letters, meta), meta["kept"]
    if len(options) >= 2:  # a value answer to a multiple-choice problem: the option it names, if unique
        same = [k for k, v in options.items() if v and normalize_latex(v) == normalize_latex(answer)]
        if len(same) == 1:
            meta.update(answer_type="choice", choices=options,
                        kept=f"multiple choice (answer {answer!r} is the text of option {same[0]})")
            return Item(item_id, problem, same[0], meta), meta["kept"]
        meta["choices"] = options
    n_boxed = row.get("n_boxed")
    if not openr1 and isinstance(n_boxed, int) and n_boxed > 1:
        return None, f"multi-part: {n_boxed} boxed answers in the solution, the reference keeps only the last"
    if not openr1 and n_boxed == 0:
        return None, "no boxed answer in the solution"
    if _is_prose(answer):
        return None, "the answer is a sentence, not a value math-verify can compare"
    meta.update(answer_type="expression",
                kept="OpenR1 answer field" if openr1 else "single boxed answer of the solution")
    return Item(item_id, problem, clean_latex_span(answer), meta), meta["kept"]


class CNK12(Task):
    name = "cnk12"
    description = "Chinese K-12 math, translated (LaTeX answers, some multiple choice)"
    kind = "math"
    splits = ("train",)
    default_split = "train"
    paper_size = 2147
    max_tokens = 1024

    def _load_split(self, split: str) -> list[Item]:
        path = self._local_path("cnk12", SAMPLE_FILE)
        if path is not None:
            rows = list(read_jsonl(path))
        else:
            rows = load_hub("open-r1/OpenR1-Math-220k", "default", split, where={"source": "cn_k12"},
                            columns=OPENR1_COLUMNS)
        items: list[Item] = []
        other_sources = Counter()
        kept = Counter()
        for row in rows:
            if row.get("source", "cn_k12") != "cn_k12":
                other_sources[row.get("source")] += 1
                continue
            item, reason = classify(row)
            if item is None:
                self.dropped.append(Dropped(f"cnk12/{row.get('uuid') or row.get('uid')}", reason))
            else:
                items.append(item)
                kept[item.metadata["answer_type"]] += 1
        log.info("cnk12: kept %d items (%s), left out %d (see task.dropped); %d rows of other sources",
                 len(items), dict(kept), len(self.dropped), sum(other_sources.values()))
        return items

    def messages(self, item: Item) -> list[Message]:
        fmt = CHOICE_FORMAT if item.metadata.get("answer_type") == "choice" else LATEX_FORMAT
        return [{"role": "user", "content": f"{item.question}\n\n{fmt}"}]

    def grade(self, item: Item, response: str) -> Grade:
        if item.metadata.get("answer_type") == "choice":
            return self._grade_choice(item, response)
        extracted, letter = self._read_latex(item, response)
        if not extracted:
            return Grade(False, None, "no final answer found in the response")
        options: dict[str, str] = item.metadata.get("choices") or {}
        if letter is not None:  # the problem lists options and the model named one: compare its text
            equal, why = latex_equal(item.reference, options[letter])
            return Grade(equal, letter, f"option {letter} ({options[letter]!r}) is "
                         + ("equivalent to" if equal else "not") + f" the reference: {why}")
        equal, why = latex_equal(item.reference, extracted)
        return Grade(equal, extracted, ("equivalent: " if equal else "not equivalent: ") + why)

    def extract(self, item: Item, response: str) -> str | None:
        """What `grade` extracts, without math-verify's comparison with the reference."""
        if item.metadata.get("answer_type") == "choice":
            return self._grade_choice(item, response).extracted  # compares with the options only
        extracted, letter = self._read_latex(item, response)
        return letter if letter is not None else (extracted or None)

    @staticmethod
    def _read_latex(item: Item, response: str) -> tuple[str | None, str | None]:
        """(the final LaTeX answer, the option letter it names when the problem lists options)."""
        extracted = extract_latex(response)
        if not extracted:
            return None, None
        options: dict[str, str] = item.metadata.get("choices") or {}
        letter = choice_letters(extracted) if options else None
        return extracted, (letter if letter in options else None)

    def _grade_choice(self, item: Item, response: str) -> Grade:
        span = final_answer_span(response)
        if span is None:
            found = re.findall(r"(?:option|choice)\s*\(?([A-E])\)?", response, flags=re.IGNORECASE)
            span = found[-1] if found else None
        if span is None:
            return Grade(False, None, "no final answer found in the response")
        letters = choice_letters(span)
        if letters is None:  # the value instead of the letter: match it against the options
            options: dict[str, str] = item.metadata.get("choices") or {}
            matching = [k for k, text in options.items() if text and latex_equal(text, span)[0]]
            if len(matching) == 1:
                letters = matching[0]
        if letters is None:
            return Grade(False, span, f"could not read an option letter from {span!r}")
        if letters == item.reference:
            return Grade(True, letters, f"option {letters} is the reference")
        return Grade(False, letters, f"option {letters}, the reference is {item.reference}")
