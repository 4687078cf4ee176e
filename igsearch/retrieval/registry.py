"""Retriever kinds by name: what ``retrieval.retriever=<name>`` (and ``igsearch retrieval``'s
``--retriever``) build over a passage corpus.

A kind is a factory ``fn(corpus: Path, index: Path | None, encoder: str | None) -> Retriever``
(``igsearch.retrieval.base.Retriever``: ``retrieve(queries, topk) -> list[list[Passage]]``)::

    @register_retriever("tfidf")
    def tfidf(corpus, index=None, encoder=None):
        return MyTfidf.from_corpus(corpus)

Built in: ``bm25`` (bm25s) and ``dense`` (a local Hugging Face encoder + faiss); their libraries are
imported when one is built, not when the package is. ``http`` (a retrieval server at
``retriever_url``) is no kind: it reads no corpus (``load_retriever`` takes its URL).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .base import Retriever

RetrieverFactory = Callable[..., Retriever]
_KINDS: dict[str, RetrieverFactory] = {}


def register_retriever(name: str) -> Callable[[RetrieverFactory], RetrieverFactory]:
    """Decorator registering ``fn(corpus, index=None, encoder=None) -> Retriever`` as kind ``name``.
    A name registered twice with a different function, or ``http``, is an error."""
    if name == "http" or name.startswith(("http://", "https://")):
        raise ValueError(f"retriever kind {name!r} is reserved for retrieval servers")

    def decorator(fn: RetrieverFactory) -> RetrieverFactory:
        old = _KINDS.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"retriever kind {name!r} is already registered ({old.__module__}.{old.__qualname__})")
        _KINDS[name] = fn
        return fn

    return decorator


def retriever_kinds() -> list[str]:
    """The registered kinds, sorted (plug-ins register when their module is imported)."""
    return sorted(_KINDS)


def build_retriever(name: str, corpus=None, index=None, encoder=None) -> Retriever:
    """Retriever of kind ``name`` over ``corpus``; ValueError naming the registered kinds otherwise."""
    if name not in _KINDS:
        raise ValueError(f"unknown retriever {name!r}; use one of {retriever_kinds()} or an http(s) URL")
    if corpus is None:
        raise ValueError(f"the {name} retriever needs a corpus file")
    return _KINDS[name](Path(corpus), None if index is None else Path(index), encoder)


@register_retriever("bm25")
def bm25(corpus: Path, index: Path | None = None, encoder: str | None = None) -> Retriever:
    """BM25 (bm25s) over ``corpus``; its index in ``index`` or next to the corpus."""
    from .bm25 import BM25Retriever

    return BM25Retriever.from_corpus(corpus, index_dir=index)


@register_retriever("dense")
def dense(corpus: Path, index: Path | None = None, encoder: str | None = None) -> Retriever:
    """``encoder`` (a local Hugging Face encoder folder) + a faiss index over ``corpus``."""
    if encoder is None:
        raise ValueError("the dense retriever needs an encoder (a local Hugging Face model folder)")
    from .dense import DenseRetriever

    return DenseRetriever.from_corpus(corpus, encoder, index_dir=index)
