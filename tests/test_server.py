"""The Search-R1 retrieval API: server round trips, malformed requests, client retries/timeouts."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import requests

from igsearch.data.loaders import load_qa
from igsearch.retrieval.base import Passage
from igsearch.retrieval.bm25 import BM25Retriever
from igsearch.retrieval.client import RetrievalClient, RetrievalError, _passage
from igsearch.retrieval.server import make_server
from igsearch.world import build_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    build_world(out, seed=5, n_entities=60, parquet=False)
    return out


@pytest.fixture(scope="module")
def bm25(world):
    return BM25Retriever.from_corpus(world / "corpus.jsonl")


class running:
    """Serve ``retriever`` on 127.0.0.1 (ephemeral port) in a thread for a ``with`` block."""

    def __init__(self, retriever, **kwargs):
        self.server = make_server(retriever, host="127.0.0.1", port=0, **kwargs)

    def __enter__(self):
        self.thread = self.server.start_in_thread()
        return self.server

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive()


@pytest.fixture(scope="module")
def server(bm25):
    with running(bm25) as srv:
        yield srv


def post(server, payload, path="/retrieve"):
    data = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    return requests.post(server.url + path, data=data, timeout=5,
                         headers={"Content-Type": "application/json"})


def test_search_r1_round_trip_with_scores(server, bm25, world):
    hops = [h for r in load_qa(world / "dev.jsonl")[:4] for h in r.extra_info["hops"]]
    queries = [h["query"] for h in hops]
    response = post(server, {"queries": queries, "topk": 3, "return_scores": True})
    assert response.status_code == 200
    result = response.json()["result"]
    assert len(result) == len(queries)
    expected = bm25.retrieve(queries, 3)
    for items, passages, hop in zip(result, expected, hops):
        assert [set(item) for item in items] == [{"document", "score"}] * 3
        assert [item["document"] for item in items] == [
            {"id": p.id, "contents": p.contents} for p in passages]
        assert [item["score"] for item in items] == pytest.approx([p.score for p in passages])
        assert items[0]["document"]["id"] == hop["passage_id"]


def test_without_scores_results_are_bare_documents_and_topk_defaults(server):
    response = post(server, {"queries": ["capital"], "topk": 2, "return_scores": False})
    assert response.status_code == 200
    items = response.json()["result"][0]
    assert len(items) == 2 and all(set(item) == {"id", "contents"} for item in items)
    default = post(server, {"queries": ["capital", "founder"]}).json()["result"]
    assert [len(r) for r in default] == [3, 3]
    assert post(server, {"queries": ["capital"], "topk": None}).status_code == 200
    assert post(server, {"queries": []}).json() == {"result": []}


@pytest.mark.parametrize("payload, status, detail", [
    (b"{not json", 400, "not valid JSON"),
    (b"\xff\xfe", 400, "not valid JSON"),
    ([1, 2], 422, "JSON object"),
    ({"topk": 3}, 422, "'queries' is missing"),
    ({"queries": "one string"}, 422, "'queries' must be a list of strings"),
    ({"queries": ["a", 3]}, 422, "'queries' must be a list of strings"),
    ({"queries": ["a"], "topk": 0}, 422, "'topk'"),
    ({"queries": ["a"], "topk": "3"}, 422, "'topk'"),
    ({"queries": ["a"], "topk": True}, 422, "'topk'"),
    ({"queries": ["a"], "topk": 3, "return_scores": "yes"}, 422, "'return_scores'"),
])
def test_malformed_requests_get_4xx_with_a_message_and_the_server_keeps_serving(
        server, payload, status, detail):
    response = post(server, payload)
    assert response.status_code == status
    assert detail in response.json()["detail"]
    assert post(server, {"queries": ["capital"], "topk": 1}).status_code == 200


def test_wrong_paths_and_methods(server):
    assert post(server, {"queries": ["a"]}, path="/search").status_code == 404
    assert requests.get(server.url + "/retrieve", timeout=5).status_code == 405
    assert requests.put(server.url + "/retrieve", data=b"{}", timeout=5).status_code == 405
    health = requests.get(server.url + "/health", timeout=5)
    assert health.status_code == 200 and health.json() == {"status": "ok", "passages": 60}
    # a chunked body (no Content-Length) is read like any other, as Search-R1's server does
    chunked = requests.Request("POST", server.url + "/retrieve", data=iter([b'{"queries": ["capi', b'tal"]}'])).prepare()
    with requests.Session() as session:
        answer = session.send(chunked, timeout=5)
    assert answer.status_code == 200 and len(answer.json()["result"][0]) == 3


def test_client_round_trip_matches_the_local_retriever(server, bm25):
    client = RetrievalClient(server.url, timeout=5, retries=1, backoff=0.01, batch_size=2)
    queries = ["capital country", "spouse", "founder works", "director"]
    assert client.retrieve(queries, 3) == [
        [Passage(p.id, p.contents, pytest.approx(p.score)) for p in ps]
        for ps in bm25.retrieve(queries, 3)]
    assert client.retrieve([], 3) == []


def test_client_refuses_without_retry_on_4xx(server):
    client = RetrievalClient(server.url + "/retrieve", retries=3, backoff=5.0)
    start = time.perf_counter()
    with pytest.raises(RetrievalError, match=r"refused the request: HTTP 422: .*'topk'"):
        client.retrieve(["a"], 0)
    assert time.perf_counter() - start < 2.0


def test_client_against_a_dead_port_names_the_url(tmp_path):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    client = RetrievalClient(url, timeout=0.5, retries=2, backoff=0.01)
    with pytest.raises(RetrievalError) as err:
        client.retrieve(["anything"], 3)
    message = str(err.value)
    assert f"{url}/retrieve" in message and "3 attempt(s)" in message
    assert "connection failed" in message


class FlakyRetriever:
    """Fails (or stalls) on its first calls, then answers."""

    def __init__(self, inner, failures: int = 0, stall_s: float = 0.0):
        self.inner, self.failures, self.stall_s = inner, failures, stall_s
        self.calls = 0
        self.lock = threading.Lock()

    def retrieve(self, queries, topk):
        with self.lock:
            self.calls += 1
            call = self.calls
        if self.stall_s:
            time.sleep(self.stall_s)
        if call <= self.failures:
            raise RuntimeError("index shard unavailable")
        return self.inner.retrieve(queries, topk)


def test_client_retries_server_errors(bm25):
    flaky = FlakyRetriever(bm25, failures=2)
    with running(flaky) as srv:
        client = RetrievalClient(srv.url, timeout=5, retries=2, backoff=0.01)
        assert len(client.retrieve(["capital"], 2)[0]) == 2
        assert flaky.calls == 3
        failing = RetrievalClient(srv.url, timeout=5, retries=0)
        flaky.failures, flaky.calls = 1, 0
        with pytest.raises(RetrievalError, match="HTTP 500: retrieval failed: RuntimeError"):
            failing.retrieve(["capital"], 2)


def test_client_timeout_is_reported(bm25):
    with running(FlakyRetriever(bm25, stall_s=0.6)) as srv:
        client = RetrievalClient(srv.url, timeout=0.1, retries=1, backoff=0.01)
        with pytest.raises(RetrievalError, match=r"timed out after 0\.1 s") as err:
            client.retrieve(["capital"], 2)
        assert srv.url in str(err.value)


def test_client_accepts_both_result_shapes():
    doc = {"id": "7", "contents": '"T"\nbody'}
    assert _passage({"document": doc, "score": 1.5}, "x") == Passage("7", '"T"\nbody', 1.5)
    assert _passage(doc, "x") == Passage("7", '"T"\nbody', 0.0)
    assert _passage({"document": {"title": "T", "text": "body"}}, "x").contents == '"T"\nbody'
    with pytest.raises(RetrievalError, match="contents"):
        _passage({"document": {"id": "1"}}, "x")


def test_client_rejects_non_http_urls():
    with pytest.raises(ValueError, match="http"):
        RetrievalClient("localhost:8000")


def _raw(server, request: bytes) -> bytes:
    """Send raw bytes and return what the server answers (until it closes or 2 s pass)."""
    import socket
    from urllib.parse import urlparse

    u = urlparse(server.url)
    with socket.create_connection((u.hostname, u.port), timeout=5) as s:
        s.sendall(request)
        s.settimeout(2)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except socket.timeout:
            pass
    return data


def test_ambiguous_framing_is_refused(server):
    body = b'{"queries": ["capital"]}'
    conflicting = (b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\nContent-Length: 5\r\n\r\n" % len(body)) + body
    assert _raw(server, conflicting).startswith(b"HTTP/1.1 400")
    both = (b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    assert _raw(server, both).startswith(b"HTTP/1.1 400")
    assert post(server, {"queries": ["capital"], "topk": 1}).status_code == 200


def test_hostile_bodies_get_json_errors_and_the_server_keeps_serving(server):
    from igsearch.retrieval.server import MAX_BODY_BYTES, MAX_RESULT_PASSAGES

    deep = b'{"queries": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    answer = post(server, deep)
    assert answer.status_code == 400 and "nested too deeply" in answer.json()["detail"]
    big = post(server, b'{"queries": ["' + b"a" * MAX_BODY_BYTES + b'"]}')
    assert big.status_code == 413 and "at most" in big.json()["detail"]
    chunked_big = requests.Request("POST", server.url + "/retrieve",
                                   data=iter([b"x" * (1 << 16)] * (MAX_BODY_BYTES // (1 << 16) + 2))).prepare()
    with requests.Session() as session:
        assert session.send(chunked_big, timeout=10).status_code == 413
    n = MAX_RESULT_PASSAGES // 50 + 1
    huge = post(server, {"queries": ["capital"] * n, "topk": 50})
    assert huge.status_code == 422 and "passages; at most" in huge.json()["detail"]
    for method in ("HEAD", "OPTIONS", "DELETE"):
        assert requests.request(method, server.url + "/retrieve", timeout=5).status_code == 405
    assert post(server, {"queries": ["capital"], "topk": 1}).status_code == 200


def test_many_concurrent_clients_get_every_answer(server, bm25):
    from concurrent.futures import ThreadPoolExecutor

    expected = [p.id for p in bm25.retrieve(["capital"], 2)[0]]

    def client(i):
        ok = 0
        for _ in range(10):  # a new connection per request
            r = requests.post(server.url + "/retrieve", json={"queries": ["capital"], "topk": 2}, timeout=30)
            ok += r.status_code == 200 and [d["id"] for d in r.json()["result"][0]] == expected
        return ok

    with ThreadPoolExecutor(32) as pool:
        assert sum(pool.map(client, range(32))) == 320


def test_serve_names_an_address_it_cannot_listen_on(bm25, world, capsys):
    from igsearch.retrieval.server import serve

    with running(bm25) as srv:
        port = int(srv.url.rsplit(":", 1)[1])
        assert serve(world / "corpus.jsonl", port) == 2
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err
    assert serve(world / "corpus.jsonl", 70000) == 2
    assert serve(world / "corpus.jsonl", 0, host="no-such-host.invalid") == 2
    err = capsys.readouterr().err
    assert err.count("cannot listen on") == 2 and "Traceback" not in err


def test_half_open_connections_do_not_starve_the_server(server):
    """Clients that connect and send half a request hold no worker: a real request still answers."""
    import socket
    from urllib.parse import urlparse

    u = urlparse(server.url)
    idle = []
    try:
        for _ in range(100):
            s = socket.create_connection((u.hostname, u.port), timeout=5)
            s.sendall(b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"quer")
            idle.append(s)
        answer = post(server, {"queries": ["capital"], "topk": 1})
        assert answer.status_code == 200 and len(answer.json()["result"][0]) == 1
    finally:
        for s in idle:
            s.close()
