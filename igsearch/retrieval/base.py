"""The retriever protocol: a batch of queries and top-k in, ranked passages out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class Passage:
    """One retrieved passage. ``contents`` is ``"Title"\\ntext`` (the Search-R1 corpus format)."""

    id: str
    contents: str
    score: float = 0.0


@runtime_checkable
class Retriever(Protocol):
    """Anything that ranks corpus passages for a batch of queries."""

    def retrieve(self, queries: Sequence[str], topk: int) -> list[list[Passage]]:
        """For each query, the ``topk`` best passages, best first (fewer if the corpus is smaller)."""
        ...


def check_retrieve_args(queries, topk: int, corpus_size: int) -> int:
    """Validate a ``retrieve`` call; returns the number of passages to return per query."""
    if isinstance(queries, str):
        raise TypeError("queries must be a sequence of strings, not one string")
    if topk < 1:
        raise ValueError(f"topk must be at least 1, got {topk}")
    return min(int(topk), corpus_size)
