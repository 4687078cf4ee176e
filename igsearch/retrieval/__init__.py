"""Retrieval: the Retriever protocol, BM25 (default), dense (faiss), an HTTP server and client.

``load_retriever(spec, ...)`` turns a spec into a retriever: a registered kind (``"bm25"``, ``"dense"``,
or a plug-in's: ``register_retriever``) or the URL of a Search-R1-style retrieval server.
"""

from __future__ import annotations

from .base import Passage, Retriever
from .client import RetrievalClient, RetrievalError, RetrievalUnavailable
from .config import RetrievalConfig
from .registry import build_retriever, register_retriever, retriever_kinds


def load_retriever(spec: str, corpus=None, index=None, encoder=None) -> Retriever:
    """The retriever named by ``spec``: a registered kind (``igsearch.retrieval.registry``: ``"bm25"``,
    ``"dense"`` with ``encoder``, a plug-in's) over ``corpus``, or, for ``"http://..."`` /
    ``"https://..."``, a client of the retrieval server at that URL."""
    if spec.startswith(("http://", "https://")):
        return RetrievalClient(spec)
    return build_retriever(spec, corpus=corpus, index=index, encoder=encoder)


__all__ = ["Passage", "RetrievalClient", "RetrievalConfig", "RetrievalError", "RetrievalUnavailable", "Retriever", "build_retriever", "load_retriever",
           "register_retriever", "retriever_kinds"]
