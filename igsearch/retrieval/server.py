"""An HTTP retrieval server that speaks Search-R1's API, on FastAPI / uvicorn (as Search-R1's own).

``POST /retrieve`` with ``{"queries": [str, ...], "topk": int, "return_scores": bool}`` answers
``{"result": [[{"document": {"id", "contents"}, "score": float}, ...], ...]}``; with
``return_scores`` false each result is the document itself (``{"id", "contents"}``), as in
Search-R1's own server. ``topk`` may be omitted or null (the server's default is used).
``GET /health`` answers ``{"status": "ok", "passages": n}``.

A malformed request gets a 4xx answer ``{"detail": "<what was wrong>"}`` and the server keeps
serving; a retriever failure gets a 500 with the same shape. Limits, answered before any retrieval:
a body of at most ``MAX_BODY_BYTES`` (413; chunked bodies are read up to the same limit),
``MAX_QUERIES`` queries, ``topk`` at most ``MAX_TOPK`` and ``queries x topk`` at most
``MAX_RESULT_PASSAGES`` (422), JSON nested at most as deep as Python's parser allows (400).

Retrieval runs in a worker thread, off the event loop, without a global lock, so a small request is
not queued behind a large one. The HTTP parser is h11 (strict: conflicting ``Content-Length``
headers, or ``Content-Length`` with chunked encoding, are refused), the listen backlog is 2048 and
idle keep-alive connections close after 5 s; half-open connections cost no thread.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from .base import Retriever

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
MAX_QUERIES = 2_000
MAX_TOPK = 100
MAX_RESULT_PASSAGES = 20_000
BACKLOG = 2048


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
    except RecursionError:
        raise RequestError(HTTPStatus.BAD_REQUEST, "the body is not valid JSON: nested too deeply") from None
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
    if len(queries) * topk > MAX_RESULT_PASSAGES:
        raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY,
                           f"{len(queries)} queries x topk {topk} = {len(queries) * topk} passages; at most "
                           f"{MAX_RESULT_PASSAGES} per request (send fewer queries per request)")
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


def create_app(retriever: Retriever, default_topk: int = 3):
    """The ASGI app: ``POST /retrieve`` and ``GET /health`` around one retriever."""
    try:
        n_passages = len(retriever)  # type: ignore[arg-type]
    except TypeError:
        n_passages = None
    app = FastAPI(title="igsearch retrieval", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(RequestError)
    async def refuse(request, exc: RequestError):
        return JSONResponse({"detail": exc.detail}, status_code=int(exc.status))

    @app.get("/health")
    async def health():
        return {"status": "ok", "passages": n_passages}

    @app.post("/retrieve")
    async def retrieve(request: Request):
        body = await _read_body(request)
        queries, topk, return_scores = parse_retrieve_request(body, default_topk)
        if not queries:
            return {"result": []}
        try:
            results = await run_in_threadpool(retriever.retrieve, queries, topk)
        except Exception as exc:  # keep serving whatever the retriever did
            log.exception("retrieval failed")
            raise RequestError(HTTPStatus.INTERNAL_SERVER_ERROR, f"retrieval failed: {type(exc).__name__}: {exc}")
        return JSONResponse(format_results(results, return_scores))

    return RefuseAmbiguousFraming(app)


class RefuseAmbiguousFraming:
    """ASGI wrapper: a request with both ``Content-Length`` and ``Transfer-Encoding`` gets 400.

    h11 follows RFC 9112 and lets chunked encoding win, but a proxy in front may frame the same bytes
    by the length, so such a request can smuggle a second one past the proxy: refuse it."""

    def __init__(self, app):
        self.app = app

    def __getattr__(self, name):  # routes, state, ... of the wrapped app
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            names = {k.lower() for k, _ in scope.get("headers", [])}
            if b"content-length" in names and b"transfer-encoding" in names:
                response = JSONResponse({"detail": "a request must not carry both Content-Length and "
                                                   "Transfer-Encoding"}, status_code=400,
                                        headers={"Connection": "close"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _read_body(request) -> bytes:
    """The request body, refused with 413 as soon as it passes MAX_BODY_BYTES (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {declared!r}") from None
        if n > MAX_BODY_BYTES:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body has {n} bytes; at most {MAX_BODY_BYTES}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body passes {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class RetrievalServer:
    """uvicorn serving ``create_app(retriever)`` on a socket bound at construction (so a port in use
    or a bad host is an ``OSError`` here, not a log line later); ``url`` is where it listens."""

    def __init__(self, retriever: Retriever, host: str = "127.0.0.1", port: int = 0, default_topk: int = 3,
                 sock: socket.socket | None = None):
        import uvicorn

        self.socket = sock if sock is not None else bind_socket(host, port)
        self.app = create_app(retriever, default_topk)
        config = uvicorn.Config(self.app, http="h11", lifespan="off", log_level="warning", access_log=False,
                                timeout_keep_alive=5, backlog=BACKLOG)
        self._server = uvicorn.Server(config)

    @property
    def url(self) -> str:
        host, port = self.socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def serve_forever(self) -> None:
        self._server.run(sockets=[self.socket])

    def start_in_thread(self) -> threading.Thread:
        """Serve in a daemon thread (returns once it accepts connections); stop with ``shutdown()``."""
        thread = threading.Thread(target=self.serve_forever, name="retrieval-server", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        return thread

    def shutdown(self) -> None:
        self._server.should_exit = True

    def server_close(self) -> None:
        self.socket.close()


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; ``OSError`` (port in use, unknown host) or
    ``ValueError`` (port out of range) otherwise."""
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def make_server(retriever: Retriever, host: str = "127.0.0.1", port: int = 0,
                default_topk: int = 3) -> RetrievalServer:
    """A server bound to ``host:port`` (port 0: any free port), not yet serving."""
    return RetrievalServer(retriever, host=host, port=port, default_topk=default_topk)


def serve(corpus, port: int, retriever: str = "bm25", index=None, encoder=None,
          host: str = "127.0.0.1", default_topk: int = 3) -> int:
    """Load the retriever for ``corpus`` and serve it on ``host:port`` until interrupted; returns the
    exit code (2 with one line on stderr when it cannot listen there)."""
    from . import load_retriever

    try:  # listen first: a port in use is reported before a large index is loaded
        sock = bind_socket(host, port)
    except (OSError, ValueError) as exc:
        print(f"igsearch retrieval serve: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 2
    backend = load_retriever(retriever, corpus=corpus, index=index, encoder=encoder)
    server = RetrievalServer(backend, default_topk=default_topk, sock=sock)
    print(f"serving {retriever} retrieval over {corpus} at {server.url}/retrieve", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0

