"""Torch CPU threads beside a busy neighbour: SFT step time by thread count and OpenMP wait policy.

A laptop always runs other processes. With torch's OpenMP pool at 2 threads on 2 cores, one busy
neighbour can make every parallel region wait for a descheduled thread; how long the waiting threads
spin first is the OpenMP wait policy. This benchmark times SFT steps of the tiny policy (the demo's
heaviest phase) in a fresh process for each setting: threads 1 / 2, ``OMP_WAIT_POLICY`` unset /
PASSIVE / ACTIVE or a libgomp spin count (``SPIN<n>``), alone and beside a neighbour that keeps one core busy with its own 1-thread
matrix products. The slowdown of a setting is its time beside the neighbour over its time alone.

    python bench/thread_contention.py            # ~4 minutes on 2 cores

Writes bench/results/thread_contention.json and prints a table; the last line is
``slowdown_<threads>t_<policy>=<x>`` for every setting.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"

WORKER = r"""
import json, sys, time, random
import torch
threads, steps, world, model_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
torch.set_num_threads(threads)
from igsearch.data.loaders import load_qa
from igsearch.policy.load import load_policy
from igsearch.retrieval.bm25 import BM25Retriever
from igsearch.train.sft import build_sft_examples, sft_loss
model, tok = load_policy(model_dir, device="cpu")
ex = build_sft_examples(load_qa(world + "/train.jsonl"), tok, BM25Retriever.from_corpus(world + "/corpus.jsonl"),
                        topk=2, seed=0)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
rng = random.Random(0)
times = []
for step in range(steps + 2):
    t0 = time.perf_counter()
    loss = sft_loss(model, rng.sample(ex, 16), max_tokens_per_row=2048, document_weight=1.0)
    opt.zero_grad(); loss.backward(); opt.step()
    times.append(time.perf_counter() - t0)
print(json.dumps(times[2:]))
"""

NEIGHBOUR = r"""
import os, time
os.environ["OMP_NUM_THREADS"] = "1"
import numpy as np
a = np.random.rand(400, 400)
while True:
    a = (a @ a) / 400.0
"""


def policy_env(policy: str | None) -> dict:
    """Environment of a wait-policy setting: None (unset), PASSIVE, ACTIVE, or SPIN<n> (libgomp's
    ``GOMP_SPINCOUNT=n``: spin n iterations, then sleep; unset = 300,000, PASSIVE = 0)."""
    if not policy:
        return {}
    if policy.startswith("SPIN"):
        return {"GOMP_SPINCOUNT": policy[4:]}
    return {"OMP_WAIT_POLICY": policy}


def time_steps(threads: int, policy: str | None, steps: int, world: Path, model: Path, busy: bool) -> list[float]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(policy_env(policy))
    neighbour = None
    if busy:
        neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR], env={**env, "OMP_NUM_THREADS": "1"})
        time.sleep(1.0)
    try:
        out = subprocess.run([sys.executable, "-c", WORKER, str(threads), str(steps), str(world), str(model)],
                             env=env, capture_output=True, text=True, check=True)
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=8, help="timed SFT steps per setting (after 2 untimed)")
    ap.add_argument("--policies", default="unset,PASSIVE,ACTIVE,SPIN10000",
                    help="comma-separated: unset, PASSIVE, ACTIVE, SPIN<n> (GOMP_SPINCOUNT=n)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--out", default=str(RESULTS / "thread_contention.json"))
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchutil import device_name

    from igsearch.policy.tiny import build_tiny_policy
    from igsearch.world import build_world

    rows = []
    with tempfile.TemporaryDirectory(prefix="thread-bench-") as tmp:
        world = Path(tmp) / "world"
        build_world(world, seed=0, n_entities=200, parquet=False)
        model = build_tiny_policy(world, Path(tmp) / "policy", seed=0)
        for threads in [int(t) for t in args.threads.split(",")]:
            for policy in args.policies.split(","):
                pol = None if policy == "unset" else policy
                alone = time_steps(threads, pol, args.steps, world, model, busy=False)
                busy = time_steps(threads, pol, args.steps, world, model, busy=True)
                row = {"threads": threads, "policy": policy, "alone_s": statistics.median(alone),
                       "busy_s": statistics.median(busy), "alone_all": alone, "busy_all": busy}
                row["slowdown"] = row["busy_s"] / row["alone_s"]
                rows.append(row)
                print(f"[thread_contention] {threads} thread(s), OMP_WAIT_POLICY {policy}: {row['alone_s']:.2f} s/step "
                      f"alone, {row['busy_s']:.2f} beside a busy neighbour (x{row['slowdown']:.2f})", flush=True)
    result = {"benchmark": "thread_contention", "time": datetime.now(timezone.utc).isoformat(),
              "device": device_name("cpu").rsplit(" (", 1)[0], "cpu_count": mp.cpu_count(), "rows": rows,
              "notes": "median SFT step (batch 16, tiny policy) in a fresh process per setting; the neighbour "
                       "runs 1-thread numpy matrix products"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\n{result['device']}, {result['cpu_count']} cores. JSON: {args.out}\n")
    print("| threads | OMP_WAIT_POLICY | s/step alone | s/step beside a busy process | slowdown |")
    print("|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['threads']} | {r['policy']} | {r['alone_s']:.2f} | {r['busy_s']:.2f} | x{r['slowdown']:.2f} |")
    print(" ".join(f"slowdown_{r['threads']}t_{r['policy']}={r['slowdown']:.2f}" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
