"""Text of a built world for training a tokenizer: passages, prompts and oracle-like snippets."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..data.loaders import load_corpus, load_qa
from ..data.prompts import (
    ANSWER_CLOSE, ANSWER_OPEN, REFINE_CLOSE, REFINE_OPEN, REFINE_TEMPLATE, SEARCH_CLOSE,
    SEARCH_OPEN, SEARCH_R1_TEMPLATE, format_documents,
)
from .oracle import NO_INFORMATION


def world_texts(world_dir) -> Iterator[str]:
    """Yield every passage, every question prompt (both templates) and, per question, an
    oracle-like trajectory built from the gold passages (no retrieval needed)."""
    world_dir = Path(world_dir)
    corpus = {doc["id"]: doc["contents"] for doc in load_corpus(world_dir / "corpus.jsonl")}
    yield from corpus.values()
    yield NO_INFORMATION
    for split in ("train", "dev", "test"):
        path = world_dir / f"{split}.jsonl"
        if not path.exists():
            continue
        for row in load_qa(path):
            yield REFINE_TEMPLATE.render(row.question)
            yield SEARCH_R1_TEMPLATE.render(row.question)
            parts = []
            for hop in row.extra_info.get("hops", []):
                docs = [corpus[hop["passage_id"]]] if hop["passage_id"] in corpus else []
                parts.append(f"{SEARCH_OPEN} {hop['query']} {SEARCH_CLOSE}"
                             + format_documents(docs, REFINE_TEMPLATE)
                             + f"{REFINE_OPEN} {hop['fact']} {REFINE_CLOSE}\n")
            parts.append(f"{ANSWER_OPEN} {row.golden_answers[0]} {ANSWER_CLOSE}")
            yield "".join(parts)
            yield " ".join(row.golden_answers)
