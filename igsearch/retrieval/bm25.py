"""BM25 retrieval with bm25s: the default retriever.

bm25s is imported where it is used: it imports numba/llvmlite, and vLLM's CPU workers fail to
start when llvmlite is loaded in a script that they re-import (spawned workers run its imports).

The index is built once and saved next to the corpus (``<corpus dir>/bm25_index``); later calls load
it, and rebuild it when the corpus or the BM25 settings changed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.loaders import load_corpus
from .base import Passage, check_retrieve_args
from .index_store import corpus_fingerprint, is_fresh, write_index_atomically

log = logging.getLogger(__name__)

_INDEX_FORMAT = "igsearch-bm25/1"
_STOPWORDS = "en"


def _tokenize(texts: Sequence[str]):
    import bm25s

    return bm25s.tokenize(list(texts), lower=True, stopwords=_STOPWORDS, show_progress=False)


class BM25Retriever:
    """Ranks passages by BM25 (Lucene variant) over lowercased word tokens without stopwords."""

    def __init__(self, ids: list[str], contents: list[str], model):
        if len(ids) != len(contents):
            raise ValueError(f"{len(ids)} ids but {len(contents)} passages")
        self.ids = ids
        self.contents = contents
        self.model = model

    @classmethod
    def build(cls, docs: list[dict], k1: float = 1.5, b: float = 0.75) -> "BM25Retriever":
        """An in-memory index over ``docs`` (``{"id", "contents"}`` records)."""
        if not docs:
            raise ValueError("cannot index an empty corpus")
        import bm25s

        model = bm25s.BM25(k1=k1, b=b)
        model.index(_tokenize([d["contents"] for d in docs]), show_progress=False)
        return cls([d["id"] for d in docs], [d["contents"] for d in docs], model)

    @classmethod
    def from_corpus(cls, corpus_path, index_dir=None, *, k1: float = 1.5,
                    b: float = 0.75) -> "BM25Retriever":
        """Load the saved index of ``corpus_path`` (default ``<corpus dir>/bm25_index``), building
        and saving it first when it is missing or stale."""
        corpus_path = Path(corpus_path)
        index_dir = Path(index_dir) if index_dir else corpus_path.parent / "bm25_index"
        docs = load_corpus(corpus_path)
        meta = {
            "format": _INDEX_FORMAT,
            "corpus": corpus_fingerprint(corpus_path),
            "n_passages": len(docs),
            "k1": k1,
            "b": b,
            "stopwords": _STOPWORDS,
        }
        if is_fresh(index_dir, meta):
            import bm25s

            model = bm25s.BM25.load(str(index_dir), show_progress=False)
            return cls([d["id"] for d in docs], [d["contents"] for d in docs], model)
        log.info("building the BM25 index of %s in %s", corpus_path, index_dir)
        retriever = cls.build(docs, k1=k1, b=b)
        write_index_atomically(
            index_dir, meta, lambda folder: retriever.model.save(str(folder), show_progress=False)
        )
        return retriever

    def __len__(self) -> int:
        return len(self.ids)

    def retrieve(self, queries: Sequence[str], topk: int) -> list[list[Passage]]:
        """For each query the ``topk`` passages with the highest BM25 score, best first."""
        k = check_retrieve_args(queries, topk, len(self.ids))
        if not queries:
            return []
        import bm25s

        tokens = bm25s.tokenize(list(queries), lower=True, stopwords=_STOPWORDS,
                                return_ids=False, show_progress=False)
        docs, scores = self.model.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        docs, scores = np.asarray(docs), np.asarray(scores)
        return [
            [Passage(self.ids[i], self.contents[i], float(s)) for i, s in zip(row, row_scores)]
            for row, row_scores in zip(docs.tolist(), scores.tolist())
        ]
