"""A client for Search-R1-style retrieval servers (ours or Search-R1's), with timeouts and patience.

It posts ``{"queries", "topk", "return_scores": true}`` to ``<url>/retrieve`` and accepts both
result shapes servers use: ``{"document": {...}, "score": s}`` items and bare documents.

Outages are ridden out: connection failures, timeouts, 429 and 5xx answers are retried with
exponential backoff capped at ``max_backoff`` seconds, for up to ``patience`` seconds since the
first failure (and at most ``retries`` retries, when given). One line is logged when the client
starts waiting and one when the server answers again. Retrieval is deterministic, so the caller
goes on as if nothing happened. Other 4xx answers fail at once (the request itself is wrong). When
it gives up it raises :class:`RetrievalUnavailable` (a :class:`RetrievalError`) naming the URL,
the time waited and the last failure.
"""

from __future__ import annotations

import re
import sys
import time
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

import requests

from .base import Passage


class RetrievalError(RuntimeError):
    """The retrieval server could not be reached or gave an unusable answer."""


class RetrievalUnavailable(RetrievalError):
    """The retrieval server stayed unreachable (or kept failing) for longer than the client's patience."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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
    """A :class:`~igsearch.retrieval.base.Retriever` backed by a retrieval server at ``url``.

    ``patience``: seconds a request keeps retrying a server that is down or failing (5xx, 429,
    timeouts) before :class:`RetrievalUnavailable`; ``retries``: an optional cap on the number of
    retries as well (None: patience alone); ``backoff`` doubles from its value up to ``max_backoff``
    between attempts; ``log`` receives the two lines of an outage (default: stderr).
    ``outages`` and ``waited_s`` count the outages ridden out and the seconds spent waiting.
    """

    def __init__(self, url: str, timeout: float = 10.0, retries: int | None = None, backoff: float = 0.5,
                 batch_size: int = 512, *, patience: float = 300.0, max_backoff: float = 10.0,
                 log: Callable[[str], None] | None = None):
        self.url = retrieve_url(url)
        self.timeout = timeout
        self.retries = None if retries is None else max(0, int(retries))
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.patience = float(patience)
        self.batch_size = batch_size
        self.log = log or _stderr
        self.outages = 0
        self.waited_s = 0.0
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
        """The server's JSON answer to ``payload``, retrying transient failures within the patience."""
        attempt, first_failure, last = 0, None, ""
        while True:
            answer, last_try = self._attempt(payload)
            if last_try is None:
                if first_failure is not None:
                    waited = time.monotonic() - first_failure
                    self.waited_s += waited
                    self.log(f"retrieval server {self.url} is back after {waited:.1f} s; continuing")
                return answer
            last = last_try
            now = time.monotonic()
            if first_failure is None:
                first_failure = now
            out_of_retries = self.retries is not None and attempt >= self.retries
            delay = min(self.max_backoff, self.backoff * 2 ** attempt)
            if out_of_retries or now - first_failure + delay > self.patience:
                waited = now - first_failure
                self.waited_s += waited
                raise RetrievalUnavailable(f"retrieval server {self.url} failed after {attempt + 1} attempt(s) "
                                           f"over {waited:.1f} s: {last}")
            if attempt == 0:
                self.outages += 1
                self.log(f"retrieval server {self.url} unavailable ({last}); retrying for up to "
                         f"{self.patience:g} s")
            time.sleep(delay)
            attempt += 1

    def _attempt(self, payload: dict) -> tuple[Any, str | None]:
        """One request: (JSON answer, None), or (None, why) for a failure worth retrying; raises
        :class:`RetrievalError` for an answer no retry can fix (4xx other than 429, invalid JSON)."""
        try:
            response = self._session.post(self.url, json=payload, timeout=self.timeout)
        except requests.Timeout:
            return None, f"timed out after {self.timeout} s"
        except requests.ConnectionError as exc:
            return None, f"connection failed ({_reason(exc)})"
        if response.status_code == 429 or response.status_code >= 500:
            return None, f"HTTP {response.status_code}: {_detail(response)}"
        if response.status_code >= 400:
            raise RetrievalError(f"{self.url} refused the request: HTTP "
                                 f"{response.status_code}: {_detail(response)}")
        try:
            return response.json(), None
        except ValueError:
            raise RetrievalError(f"{self.url} answered with invalid JSON: "
                                 f"{response.text[:200]!r}") from None

    def close(self) -> None:
        self._session.close()


def _reason(exc: Exception) -> str:
    """The OS's reason of a failed connection ("Connection refused"), else the exception's type."""
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(exc))
    return found.group(1).strip() if found else type(exc).__name__


def _detail(response: requests.Response) -> str:
    try:
        body = response.json()
        if isinstance(body, dict) and "detail" in body:
            return str(body["detail"])
    except ValueError:
        pass
    return response.text[:200]
