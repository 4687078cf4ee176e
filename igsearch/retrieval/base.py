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
