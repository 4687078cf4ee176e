"""Retrieval server under load: many concurrent clients, and a small request behind a large one.

The server runs in its own process (BM25 over a synthetic world); the clients run in this one:

- load: ``--clients`` threads x ``--requests`` requests each, a new connection per request (as
  Search-R1's plain ``requests.post`` does), 1 query, topk 3. Reports errors (connection resets,
  non-200 answers), requests/s and latency p50/p99.
- head-of-line: a ``--big``-query request, and 20 ms after it a 1-query request; the small one's
  latency, ``--repeats`` times (median and max), beside the big one's.

``--baseline-rev REV`` also runs the server of an earlier commit (its ``igsearch/retrieval/server.py``
taken from git, e.g. the stdlib server before FastAPI) in the same run, on the same world and load.

    python bench/retrieval_server.py --baseline-rev 9b899a3

Writes bench/results/retrieval_server.json and prints a markdown table; the last line is
``errors=<n> rps=<r> small_during_big_ms=<median>`` for the current server.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"


def _serve(module_path: str | None, corpus: str, queue) -> None:
    """Server process: BM25 over ``corpus``, served by the current server or the module at ``module_path``."""
    import importlib.util

    from igsearch.retrieval.bm25 import BM25Retriever

    if module_path is None:
        from igsearch.retrieval import server as mod
    else:
        spec = importlib.util.spec_from_file_location("igsearch.retrieval._baseline_server", module_path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
    srv = mod.make_server(BM25Retriever.from_corpus(corpus), host="127.0.0.1", port=0)
    queue.put(srv.url)
    srv.serve_forever()


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def load_test(url: str, clients: int, requests_each: int) -> dict:
    import requests

    lat, errors, lock = [], [], threading.Lock()

    def client(i: int) -> None:
        for k in range(requests_each):
            t0 = time.perf_counter()
            try:
                r = requests.post(url + "/retrieve", json={"queries": [f"capital {i} {k}"], "topk": 3}, timeout=60)
                ok = r.status_code == 200 and len(r.json()["result"][0]) == 3
                why = None if ok else f"status {r.status_code}"
            except requests.RequestException as e:
                why = type(e).__name__
            with lock:
                lat.append(time.perf_counter() - t0)
                if why:
                    errors.append(why)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - t0
    return {"requests": len(lat), "errors": len(errors), "error_kinds": sorted(set(errors)), "wall_s": wall,
            "rps": len(lat) / wall, "p50_ms": 1e3 * _percentile(lat, 0.5), "p99_ms": 1e3 * _percentile(lat, 0.99)}


def head_of_line(url: str, big: int, repeats: int) -> dict:
    import requests

    small_ms, big_ms = [], []
    for r in range(repeats):
        out = {}

        def big_request():
            t0 = time.perf_counter()
            requests.post(url + "/retrieve", json={"queries": [f"capital country {j} {r}" for j in range(big)],
                                                   "topk": 3}, timeout=120)
            out["big"] = time.perf_counter() - t0

        th = threading.Thread(target=big_request)
        th.start()
        time.sleep(0.02)
        t0 = time.perf_counter()
        requests.post(url + "/retrieve", json={"queries": ["capital"], "topk": 3}, timeout=120)
        small_ms.append(1e3 * (time.perf_counter() - t0))
        th.join()
        big_ms.append(1e3 * out["big"])
    return {"small_ms_median": statistics.median(small_ms), "small_ms_max": max(small_ms),
            "big_ms_median": statistics.median(big_ms), "small_ms": small_ms}


def run_server(label: str, module_path: str | None, corpus: Path, args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_serve, args=(module_path, str(corpus), queue), daemon=True)
    proc.start()
    try:
        url = queue.get(timeout=120)
        time.sleep(0.5)
        print(f"[retrieval_server] {label}: load {args.clients} clients x {args.requests} requests ...", flush=True)
        load = load_test(url, args.clients, args.requests)
        print(f"[retrieval_server] {label}: {load['rps']:.0f} req/s, {load['errors']} errors; head-of-line ...", flush=True)
        hol = head_of_line(url, args.big, args.repeats)
    finally:
        proc.terminate()
        proc.join(10)
    return {"label": label, "load": load, "head_of_line": hol}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=500, help="requests per client")
    ap.add_argument("--big", type=int, default=500, help="queries of the large request")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--entities", type=int, default=800, help="world size (corpus passages ~ entities)")
    ap.add_argument("--baseline-rev", default=None, help="also run the server of this git revision")
    ap.add_argument("--out", default=str(RESULTS / "retrieval_server.json"))
    args = ap.parse_args(argv)

    from igsearch.measure import device_name
    from igsearch.world import build_world

    with tempfile.TemporaryDirectory(prefix="retrieval-bench-") as tmp:
        tmp = Path(tmp)
        build_world(tmp / "world", seed=0, n_entities=args.entities, parquet=False)
        corpus = tmp / "world" / "corpus.jsonl"
        from igsearch.retrieval.bm25 import BM25Retriever

        BM25Retriever.from_corpus(corpus)  # build the index once, outside the timings
        runs = []
        if args.baseline_rev:
            old = tmp / "baseline_server.py"
            old.write_text(subprocess.run(["git", "-C", str(ROOT), "show", f"{args.baseline_rev}:igsearch/retrieval/server.py"],
                                          check=True, capture_output=True, text=True).stdout)
            runs.append(run_server(f"baseline {args.baseline_rev}", str(old), corpus, args))
        runs.append(run_server("current (FastAPI/uvicorn)", None, corpus, args))
    result = {"benchmark": "retrieval_server", "time": datetime.now(timezone.utc).isoformat(),
              "device": device_name("cpu").rsplit(" (", 1)[0], "cpu_count": mp.cpu_count(),
              "settings": vars(args), "runs": runs,
              "notes": "server in its own process, clients as threads in the benchmark process (new connection "
                       "per request); both share this machine's cores"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\n{result['device']}, {result['cpu_count']} cores; {args.clients} clients x {args.requests} requests, "
          f"head-of-line: {args.big}-query request + 1-query request, {args.repeats} repeats. JSON: {args.out}\n")
    print("| server | requests | errors | req/s | p50 ms | p99 ms | 1-query during big: median / max ms | big request ms |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for r in runs:
        L, H = r["load"], r["head_of_line"]
        print(f"| {r['label']} | {L['requests']} | {L['errors']} {L['error_kinds'] or ''} | {L['rps']:.0f} | "
              f"{L['p50_ms']:.1f} | {L['p99_ms']:.1f} | {H['small_ms_median']:.1f} / {H['small_ms_max']:.1f} | "
              f"{H['big_ms_median']:.0f} |")
    cur = runs[-1]
    print(f"errors={cur['load']['errors']} rps={cur['load']['rps']:.0f} "
          f"small_during_big_ms={cur['head_of_line']['small_ms_median']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
