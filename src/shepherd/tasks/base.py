"""The task interface: what a benchmark must provide so that the runner, the sweeps and the evaluation can
use it without knowing which benchmark it is.

A task loads items (from local files in the upstream format, or from the Hugging Face hub), turns an item
into chat messages, and grades a model's full answer text. Selection is deterministic (split, seeded
sub-sample, explicit ids) so a run can name exactly which items it used.
"""

from __future__ import annotations

import gzip
import json
import os
import random
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

Message = dict[str, str]
Source = Literal["auto", "local", "hub"]

#: environment variable naming the folder that holds the benchmark files (gsm8k/, humaneval/, ...)
DATA_DIR_ENV = "SHEPHERD_DATA_DIR"


@dataclass(frozen=True)
class Item:
    """One benchmark question. `id` is stable across runs and machines (e.g. "HumanEval/0")."""

    id: str
    question: str
    reference: str
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Grade:
    """The verdict on one response: whether it is correct, what was extracted from it, and why."""

    correct: bool
    extracted: str | None
    reason: str


@dataclass(frozen=True)
class Dropped:
    """An upstream row a loader left out, and why (never a silent skip)."""

    id: str
    reason: str


class Task(ABC):
    """A benchmark: loader + prompt + grader.

    `data` is a file or a folder in the upstream format; without it, `$SHEPHERD_DATA_DIR`, else the
    benchmark files that ship inside the package (`shepherd/tasks/data/`), and failing those the Hugging
    Face hub (`datasets` is imported only then). `source` forces one or the other.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    kind: ClassVar[Literal["math", "code"]]
    splits: ClassVar[tuple[str, ...]]
    default_split: ClassVar[str]
    #: the number of items the paper evaluated on (loaded with `limit=paper_size, seed=0`)
    paper_size: ClassVar[int | None] = None
    #: a suggested completion budget for a full answer
    max_tokens: ClassVar[int] = 512
    #: how the prompt asks: "chat" (the model writes its whole answer) or "completion" (the assistant turn
    #: already starts with `prefix(item)`, e.g. a function's stub, and the model writes only the rest)
    prompt_style: ClassVar[Literal["chat", "completion"]] = "chat"

    def __init__(self, data: str | Path | None = None, *, source: Source = "auto") -> None:
        self.data = Path(data) if data is not None else None
        self.source = source
        #: rows the last `load` left out, with the reason for each
        self.dropped: list[Dropped] = []

    # -- loading --------------------------------------------------------------------------------------
    def load(self, split: str | None = None, limit: int | None = None, seed: int | None = None,
             ids: Iterable[str] | None = None) -> list[Item]:
        """Items of `split`, in upstream order. `limit` without `seed` takes the first items; with a seed,
        a seeded sample (nested: the sample of 100 is inside the sample of 200). `ids` picks exactly
        those items (in the order given) and fails on an unknown id."""
        split = split or self.default_split
        if split not in self.splits:
            raise ValueError(f"{self.name}: unknown split {split!r}; choose from {', '.join(self.splits)}")
        self.dropped = []
        items = self._load_split(split)
        return select(items, limit=limit, seed=seed, ids=ids)

    @abstractmethod
    def _load_split(self, split: str) -> list[Item]:
        """All items of one split, in upstream order (filling `self.dropped`)."""

    def _local_path(self, folder: str, filename: str) -> Path | None:
        """The local file to read (`data` may be that file, the task's folder or the data root), or None
        when the rows should come from the hub."""
        if self.source == "hub":
            return None
        if self.data is not None:
            if self.data.is_file():
                return self.data
            for candidate in (self.data / folder / filename, self.data / filename):
                if candidate.exists():
                    return candidate
            raise FileNotFoundError(f"{self.name}: no {folder}/{filename} under {self.data}")
        root = default_data_dir()
        if root is not None and (root / folder / filename).exists():
            return root / folder / filename
        if self.source == "local":
            raise FileNotFoundError(f"{self.name}: no local {folder}/{filename}; pass a path or set "
                                    f"${DATA_DIR_ENV} to the folder holding it")
        return None

    # -- prompting and grading ------------------------------------------------------------------------
    @abstractmethod
    def messages(self, item: Item) -> list[Message]:
        """The chat messages that ask a model for this item's answer."""

    def prefix(self, item: Item) -> str:
        """The start of the assistant turn the model continues ("" in chat style). It is input (prompt
        tokens at the input price), never part of the response the grader gets: hints are cut from what the
        model wrote after it, and `grade` puts the prefix back itself."""
        return ""

    @abstractmethod
    def grade(self, item: Item, response: str) -> Grade:
        """Grade the model's full answer text (for a hinted answer: hint + continuation)."""

    def extract(self, item: Item, response: str) -> str | None:
        """The answer `grade` would extract, without judging it (what agreement between samples compares).

        The default grades and keeps the extraction; tasks whose grading is costly (running code) override
        it with the extraction alone. It must equal `grade(item, response).extracted`.
        """
        return self.grade(item, response).extracted


#: the benchmark files shipped with the package (see its README: sources, licences, sha256)
BUNDLED_DATA_DIR = Path(__file__).resolve().with_name("data")


def default_data_dir() -> Path | None:
    """$SHEPHERD_DATA_DIR, else the benchmark files shipped inside the package, else None (the hub)."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    return BUNDLED_DATA_DIR if BUNDLED_DATA_DIR.is_dir() else None


def select(items: Sequence[Item], *, limit: int | None = None, seed: int | None = None,
           ids: Iterable[str] | None = None) -> list[Item]:
    """Deterministic selection: explicit ids, or a (seeded) sub-sample kept in upstream order."""
    if ids is not None:
        by_id = {item.id: item for item in items}
        wanted = list(ids)
        missing = [i for i in wanted if i not in by_id]
        if missing:
            more = " ..." if len(missing) > 5 else ""
            raise KeyError(f"unknown item ids: {', '.join(missing[:5])}{more}")
        return [by_id[i] for i in wanted]
    if limit is None and seed is None:
        return list(items)
    n = len(items) if limit is None else max(0, min(limit, len(items)))
    if seed is None:
        return list(items[:n])
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    return [items[i] for i in sorted(order[:n])]


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file (gzipped when the name ends in .gz)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
        for line in fh:
            if line.strip():
                yield json.loads(line)


def load_hub(path: str, name: str | None = None, split: str = "test", *,
             where: dict[str, Any] | None = None, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Rows of a Hugging Face dataset; `datasets` is imported here only (the `hub` extra). `where`
    filters on column values and `columns` drops the others inside `datasets`, before rows become
    Python dicts (OpenR1-Math-220k carries long generations that the tasks never read)."""
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("loading from the Hugging Face hub needs `datasets` (pip install "
                          "'llm-shepherd[hub]'), or pass a local file / set $SHEPHERD_DATA_DIR") from exc
    dataset = datasets.load_dataset(path, name, split=split)
    for column, value in (where or {}).items():
        dataset = dataset.filter(lambda v, value=value: v == value, input_columns=column)
    if columns is not None:
        dataset = dataset.select_columns([c for c in columns if c in dataset.column_names])
    return [dict(row) for row in dataset]
