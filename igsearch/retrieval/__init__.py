"""Retrieval: the Retriever protocol, BM25 (default), dense (faiss), an HTTP server and client.

``load_retriever(spec, ...)`` turns a spec into a retriever: ``"bm25"``, ``"dense"`` or the URL of
a Search-R1-style retrieval server.
"""

from __future__ import annotations

from .base import Passage, Retriever
from .client import RetrievalClient, RetrievalError
from .config import RETRIEVERS, RetrievalConfig


def load_retriever(spec: str, corpus=None, index=None, encoder=None) -> Retriever:
    """The retriever named by ``spec``.

    - ``"bm25"``: BM25 over ``corpus`` (index in ``index`` or next to the corpus);
    - ``"dense"``: ``encoder`` (a local Hugging Face encoder folder) + faiss over ``corpus``;
    - ``"http://..."`` / ``"https://..."``: a client of a retrieval server at that URL.
    """
    if spec.startswith(("http://", "https://")):
        return RetrievalClient(spec)
    if spec not in ("bm25", "dense"):
        raise ValueError(f"unknown retriever {spec!r}; use 'bm25', 'dense' or an http(s) URL")
    if corpus is None:
        raise ValueError(f"the {spec} retriever needs a corpus file")
    if spec == "bm25":
        from .bm25 import BM25Retriever

        return BM25Retriever.from_corpus(corpus, index_dir=index)
    if encoder is None:
        raise ValueError("the dense retriever needs an encoder (a local Hugging Face model folder)")
    from .dense import DenseRetriever

    return DenseRetriever.from_corpus(corpus, encoder, index_dir=index)


__all__ = ["Passage", "RETRIEVERS", "RetrievalClient", "RetrievalConfig", "RetrievalError", "Retriever", "load_retriever"]
