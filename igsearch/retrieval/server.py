"""An HTTP retrieval server that speaks Search-R1's API, on the standard library only.

``POST /retrieve`` with ``{"queries": [str, ...], "topk": int, "return_scores": bool}`` answers
``{"result": [[{"document": {"id", "contents"}, "score": float}, ...], ...]}``; with
``return_scores`` false each result is the document itself (``{"id", "contents"}``), as in
Search-R1's own server. ``topk`` may be omitted or null (the server's default is used).
``GET /health`` answers ``{"status": "ok", "passages": n}``.

A malformed request gets a 4xx answer ``{"detail": "<what was wrong>"}`` and the server keeps
serving; a retriever failure gets a 500 with the same shape.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .base import Retriever

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 << 20
MAX_QUERIES = 10_000
MAX_TOPK = 1_000


class RequestError(Exception):
    """A request the server refuses, with the HTTP status to answer."""

    def __init__(self, status: HTTPStatus, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


def parse_retrieve_request(body: bytes, default_topk: int) -> tuple[list[str], int, bool]:
    """Validate a ``/retrieve`` body; return ``(queries, topk, return_scores)``."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"the body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY,
                           f"the body must be a JSON object, got {type(payload).__name__}")
    if "queries" not in payload:
        raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, "field 'queries' is missing")
    queries = payload["queries"]
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY,
                           "field 'queries' must be a list of strings")
    if len(queries) > MAX_QUERIES:
        raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY,
                           f"field 'queries' has {len(queries)} queries; at most {MAX_QUERIES}")
    topk = payload.get("topk")
    if topk is None:
        topk = default_topk
    if isinstance(topk, bool) or not isinstance(topk, int) or not 1 <= topk <= MAX_TOPK:
        raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY,
                           f"field 'topk' must be an integer in [1, {MAX_TOPK}], got {topk!r}")
    return_scores = payload.get("return_scores", False)
    if not isinstance(return_scores, bool):
        raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY,
                           f"field 'return_scores' must be true or false, got {return_scores!r}")
    return queries, topk, return_scores


def format_results(results, return_scores: bool) -> dict[str, Any]:
    """The Search-R1 response body for ranked passages."""
    out = []
    for passages in results:
        docs = [{"id": p.id, "contents": p.contents} for p in passages]
        if return_scores:
            out.append([{"document": d, "score": float(p.score)} for d, p in zip(docs, passages)])
        else:
            out.append(docs)
    return {"result": out}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "RetrievalServer"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s - %s", self.address_string(), format % args)

    def _send_json(self, status: HTTPStatus, payload: dict) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _refuse(self, status: HTTPStatus, detail: str, close: bool = False) -> None:
        if close:
            self.close_connection = True
        self._send_json(status, {"detail": detail})

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
        try:
            n = int(length)
            if n < 0:
                raise ValueError
        except ValueError:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {length!r}") from None
        if n > MAX_BODY_BYTES:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"the body has {n} bytes; at most {MAX_BODY_BYTES}")
        return self.rfile.read(n)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        if self.path.rstrip("/") == "/health":
            self._send_json(HTTPStatus.OK, {"status": "ok", "passages": self.server.n_passages})
        elif self.path.rstrip("/") == "/retrieve":
            self._refuse(HTTPStatus.METHOD_NOT_ALLOWED, "use POST /retrieve")
        else:
            self._refuse(HTTPStatus.NOT_FOUND, f"no endpoint {self.path!r}; use POST /retrieve")

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        try:
            body = self._read_body()
        except RequestError as exc:  # the body was not read: the connection cannot be reused
            self._refuse(exc.status, exc.detail, close=True)
            return
        if self.path.rstrip("/") != "/retrieve":
            self._refuse(HTTPStatus.NOT_FOUND, f"no endpoint {self.path!r}; use POST /retrieve")
            return
        try:
            queries, topk, return_scores = parse_retrieve_request(body, self.server.default_topk)
        except RequestError as exc:
            self._refuse(exc.status, exc.detail)
            return
        try:
            with self.server.lock:
                results = self.server.retriever.retrieve(queries, topk) if queries else []
        except Exception as exc:  # keep serving whatever the retriever did
            log.exception("retrieval failed")
            self._refuse(HTTPStatus.INTERNAL_SERVER_ERROR,
                         f"retrieval failed: {type(exc).__name__}: {exc}")
            return
        self._send_json(HTTPStatus.OK, format_results(results, return_scores))

    def do_PUT(self) -> None:  # noqa: N802 - stdlib naming
        self.close_connection = True
        self._refuse(HTTPStatus.METHOD_NOT_ALLOWED, "use POST /retrieve")

    do_DELETE = do_PATCH = do_PUT


class RetrievalServer(ThreadingHTTPServer):
    """A threaded HTTP server around one retriever; ``url`` is where it listens."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, retriever: Retriever, host: str = "127.0.0.1", port: int = 0,
                 default_topk: int = 3):
        super().__init__((host, port), _Handler)
        self.retriever = retriever
        self.default_topk = default_topk
        self.lock = threading.Lock()
        try:
            self.n_passages = len(retriever)  # type: ignore[arg-type]
        except TypeError:
            self.n_passages = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def handle_error(self, request, client_address) -> None:
        """A client that hung up (e.g. after its own timeout) is routine; others are logged."""
        error = sys.exc_info()[1]
        if isinstance(error, (BrokenPipeError, ConnectionResetError)):
            log.debug("client %s went away before the answer: %s", client_address, error)
        else:
            log.exception("error while serving %s", client_address)

    def start_in_thread(self) -> threading.Thread:
        """Serve in a daemon thread; stop with ``shutdown()`` then ``server_close()``."""
        thread = threading.Thread(target=self.serve_forever, name="retrieval-server", daemon=True)
        thread.start()
        return thread


def make_server(retriever: Retriever, host: str = "127.0.0.1", port: int = 0,
                default_topk: int = 3) -> RetrievalServer:
    """A server bound to ``host:port`` (port 0: any free port), not yet serving."""
    return RetrievalServer(retriever, host=host, port=port, default_topk=default_topk)


def serve(corpus, port: int, retriever: str = "bm25", index=None, encoder=None,
          host: str = "127.0.0.1", default_topk: int = 3) -> None:
    """Load the retriever for ``corpus`` and serve it on ``host:port`` until interrupted."""
    from . import load_retriever

    backend = load_retriever(retriever, corpus=corpus, index=index, encoder=encoder)
    server = make_server(backend, host=host, port=port, default_topk=default_topk)
    print(f"serving {retriever} retrieval over {corpus} at {server.url}/retrieve", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
