"""A client for Search-R1-style retrieval servers (ours or Search-R1's), with timeouts and retries.

It posts ``{"queries", "topk", "return_scores": true}`` to ``<url>/retrieve`` and accepts both
result shapes servers use: ``{"document": {...}, "score": s}`` items and bare documents.
Connection failures, timeouts, 429 and 5xx answers are retried with exponential backoff; other
4xx answers are not (the request itself is wrong). When it gives up it raises
:class:`RetrievalError` naming the URL and the last failure.
"""

from __future__ import annotations

import time
from typing import Any, Sequence
from urllib.parse import urlsplit, urlunsplit

import requests

from .base import Passage


class RetrievalError(RuntimeError):
    """The retrieval server could not be reached or gave an unusable answer."""


def retrieve_url(url: str) -> str:
    """``url`` with ``/retrieve`` appended when it names only the server (no path)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {url!r}")
    if parts.path in ("", "/"):
        parts = parts._replace(path="/retrieve")
    return urlunsplit(parts)


def _passage(item: Any, where: str) -> Passage:
    """A passage from one result item: ``{"document": doc, "score": s}`` or a bare ``doc``."""
    if isinstance(item, dict) and "document" in item:
        doc, score = item["document"], item.get("score", 0.0)
    else:
        doc, score = item, 0.0
    if not isinstance(doc, dict):
        raise RetrievalError(f"{where}: expected a document object, got {type(doc).__name__}")
    contents = doc.get("contents")
    if contents is None and "text" in doc:  # servers that keep title and text apart
        contents = f'"{doc.get("title", "")}"\n{doc["text"]}'
    if not isinstance(contents, str):
        raise RetrievalError(f"{where}: the document has no 'contents' string")
    return Passage(id=str(doc.get("id", "")), contents=contents, score=float(score or 0.0))


class RetrievalClient:
    """A :class:`~igsearch.retrieval.base.Retriever` backed by a retrieval server at ``url``."""

    def __init__(self, url: str, timeout: float = 10.0, retries: int = 3, backoff: float = 0.5,
                 batch_size: int = 512):
        self.url = retrieve_url(url)
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self.batch_size = batch_size
        self._session = requests.Session()

    def __repr__(self) -> str:
        return f"RetrievalClient({self.url!r})"

    def retrieve(self, queries: Sequence[str], topk: int) -> list[list[Passage]]:
        """For each query the server's ``topk`` passages, best first."""
        if isinstance(queries, str):
            raise TypeError("queries must be a sequence of strings, not one string")
        out: list[list[Passage]] = []
        for start in range(0, len(queries), self.batch_size):
            out.extend(self._retrieve_batch(list(queries[start:start + self.batch_size]), topk))
        return out

    def _retrieve_batch(self, queries: list[str], topk: int) -> list[list[Passage]]:
        payload = {"queries": queries, "topk": int(topk), "return_scores": True}
        body = self._post(payload)
        result = body.get("result") if isinstance(body, dict) else None
        if not isinstance(result, list) or len(result) != len(queries):
            got = len(result) if isinstance(result, list) else type(result).__name__
            raise RetrievalError(f"{self.url}: expected 'result' with {len(queries)} lists, "
                                 f"got {got}")
        passages = []
        for i, items in enumerate(result):
            where = f"{self.url}: result {i}"
            if not isinstance(items, list):
                raise RetrievalError(f"{where}: expected a list, got {type(items).__name__}")
            passages.append([_passage(item, where) for item in items][:topk])
        return passages

    def _post(self, payload: dict) -> Any:
        attempts = self.retries + 1
        last = ""
        for attempt in range(attempts):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = self._session.post(self.url, json=payload, timeout=self.timeout)
            except requests.Timeout:
                last = f"timed out after {self.timeout} s"
                continue
            except requests.ConnectionError as exc:
                last = f"connection failed ({type(exc).__name__}: {exc})"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                last = f"HTTP {response.status_code}: {_detail(response)}"
                continue
            if response.status_code >= 400:
                raise RetrievalError(f"{self.url} refused the request: HTTP "
                                     f"{response.status_code}: {_detail(response)}")
            try:
                return response.json()
            except ValueError:
                raise RetrievalError(f"{self.url} answered with invalid JSON: "
                                     f"{response.text[:200]!r}") from None
        raise RetrievalError(f"retrieval server {self.url} failed after {attempts} attempt(s): "
                             f"{last}")

    def close(self) -> None:
        self._session.close()


def _detail(response: requests.Response) -> str:
    try:
        body = response.json()
        if isinstance(body, dict) and "detail" in body:
            return str(body["detail"])
    except ValueError:
        pass
    return response.text[:200]
