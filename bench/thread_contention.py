"""Torch CPU threads beside a busy neighbour: step time of SFT and of an RL step by thread setting.

A laptop always runs other processes. With torch's OpenMP pool at 2 threads on 2 cores, one busy
neighbour makes every parallel region wait for a descheduled thread. This benchmark times, in a fresh
process per setting, the two phases a run spends its time in:

- ``sft``: SFT steps of the tiny policy (batch 16, the demo's warm-start phase);
- ``rl``: RL steps of the trainer (``Trainer.train_step``: transformers generation of 4 questions x 4
  rollouts, rewards, GRPO advantages and the update), on a tiny policy after a short SFT.

Settings: fixed 1 and 2 threads, and ``auto`` (``igsearch.threads``: as many threads as the cores other
processes leave free, chosen at the start and between phases), each with the OpenMP wait policy
igsearch's CLI sets (``GOMP_SPINCOUNT=1000``), alone and beside a neighbour that keeps one core busy
with its own 1-thread matrix products. ``--policies`` also times other wait policies.

    python bench/thread_contention.py              # both workloads, 3 repeats, about 15 minutes on 2 cores
    python bench/thread_contention.py --workloads sft --threads 1,2 --policies unset,PASSIVE,SPIN1000

Writes bench/results/thread_contention.json (``--out``) and prints a table; the summary lines give, for
every workload, auto's slowdown beside the neighbour (``auto_busy_over_alone_<w>``) and auto against the
best fixed setting, alone and beside the neighbour (``auto_vs_best_fixed_alone_<w>``, ``..._busy_<w>``).
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

SFT_WORKER = r"""
import json, sys, time, random
import torch
setting, steps, world, model_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
from igsearch.threads import SFT_RECHECK_STEPS, ThreadPolicy
from igsearch.data.loaders import load_qa
from igsearch.policy.load import load_policy
from igsearch.retrieval.bm25 import BM25Retriever
from igsearch.train.sft import build_sft_examples, sft_loss
policy = ThreadPolicy(setting, log=lambda line: print(line, file=sys.stderr))
model, tok = load_policy(model_dir, device="cpu")
ex = build_sft_examples(load_qa(world + "/train.jsonl"), tok, BM25Retriever.from_corpus(world + "/corpus.jsonl"),
                        topk=2, seed=0)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
rng = random.Random(0)
times, chosen = [], []
for step in range(1, steps + 3):
    t0 = time.perf_counter()
    if step % SFT_RECHECK_STEPS == 1:  # as run_sft does (the choice's own cost is part of the step)
        policy.choose("sft")
    chosen.append(torch.get_num_threads())
    loss = sft_loss(model, rng.sample(ex, 16), max_tokens_per_row=2048, document_weight=1.0)
    opt.zero_grad(); loss.backward(); opt.step()
    times.append(time.perf_counter() - t0)
print(json.dumps({"times": times[2:], "threads": chosen[2:]}))
"""

RL_WORKER = r"""
import json, sys, time, tempfile
setting, steps, world, model_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
from igsearch.train.config import load_config
from igsearch.train.trainer import Trainer
overrides = [f"model_path={model_dir}", f"world_dir={world}", "generation.engine=hf", "advantage.method=grpo",
             "questions_per_step=4", "rollout.rollouts_per_question=4", "rollout.topk=2", f"threads={setting}",
             "eval_questions=0", "tensorboard=false", "steps=1000", "checkpoint_every=1000", "seed=0"]
cfg = load_config(sys.argv[5], overrides)
with tempfile.TemporaryDirectory() as out:
    trainer = Trainer(cfg, out)
    trainer.threads.log = lambda line: print(line, file=sys.stderr)
    times, chosen = [], []
    for step in range(1, steps + 3):
        batch = trainer.train_step(step)
        times.append(batch.metrics["time/step"])
        chosen.append([batch.metrics.get("threads/generation"), batch.metrics.get("threads/update")])
print(json.dumps({"times": times[2:], "threads": chosen[2:]}))
"""

WORKERS = {"sft": SFT_WORKER, "rl": RL_WORKER}

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


def time_steps(workload: str, setting: str, policy: str | None, steps: int, world: Path, model: Path,
               busy: bool) -> dict:
    """``{"times": [s per step], "threads": [...]}`` of one fresh worker process."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS",
                                                             "IGSEARCH_THREADS")}
    env.update(policy_env(policy))
    neighbour = None
    if busy:
        neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR], env={**env, "OMP_NUM_THREADS": "1"})
        time.sleep(1.0)
    try:
        out = subprocess.run([sys.executable, "-c", WORKERS[workload], setting, str(steps), str(world), str(model),
                              str(ROOT / "configs" / "tiny-cpu.yaml")],
                             env=env, capture_output=True, text=True)
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    if out.returncode != 0:
        raise SystemExit(f"thread_contention: the {workload} worker failed ({setting}, {policy}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarize(rows: list[dict]) -> dict:
    """Per workload: auto's slowdown beside the neighbour and auto over the best fixed setting (same policy)."""
    out = {}
    for w in sorted({r["workload"] for r in rows}):
        mine = [r for r in rows if r["workload"] == w]
        auto = [r for r in mine if r["threads"] == "auto"]
        fixed = [r for r in mine if r["threads"] != "auto"]
        if not auto or not fixed:
            continue
        a = min(auto, key=lambda r: r["alone_s"])
        out[f"auto_busy_over_alone_{w}"] = a["busy_s"] / a["alone_s"]
        out[f"auto_vs_best_fixed_alone_{w}"] = a["alone_s"] / min(r["alone_s"] for r in fixed)
        out[f"auto_vs_best_fixed_busy_{w}"] = a["busy_s"] / min(r["busy_s"] for r in fixed)
        out[f"best_fixed_busy_over_best_alone_{w}"] = min(r["busy_s"] for r in fixed) / min(r["alone_s"] for r in fixed)
        # the same comparisons repeat by repeat (settings interleaved): their range is the run-to-run spread
        for cond in ("alone", "busy"):
            best = min(fixed, key=lambda r: r[f"{cond}_s"])
            ratios = [x / y for x, y in zip(a[f"{cond}_by_repeat"], best[f"{cond}_by_repeat"])]
            if ratios:
                out[f"auto_vs_best_fixed_{cond}_{w}_min"] = min(ratios)
                out[f"auto_vs_best_fixed_{cond}_{w}_max"] = max(ratios)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", default="sft,rl", help="comma-separated: sft, rl")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per setting (after 2 untimed)")
    ap.add_argument("--rl-steps", type=int, default=5, help="timed RL steps per setting (after 2 untimed)")
    ap.add_argument("--policies", default="SPIN1000",
                    help="comma-separated: unset, PASSIVE, ACTIVE, SPIN<n> (GOMP_SPINCOUNT=n; igsearch's CLI sets 1000)")
    ap.add_argument("--threads", default="1,2,auto", help="comma-separated thread settings: counts and/or auto")
    ap.add_argument("--repeats", type=int, default=3,
                    help="alone/busy pairs per setting, settings interleaved within a repeat (medians pooled)")
    ap.add_argument("--out", default=str(RESULTS / "thread_contention.json"))
    args = ap.parse_args(argv)
    from igsearch.machine import cpu_avx512_flags
    from igsearch.measure import device_name

    from igsearch.policy.tiny import build_tiny_policy
    from igsearch.train.sft import run_sft
    from igsearch.world import build_world

    rows = []
    with tempfile.TemporaryDirectory(prefix="thread-bench-") as tmp:
        world = Path(tmp) / "world"
        build_world(world, seed=0, n_entities=200, parquet=False)
        model = build_tiny_policy(world, Path(tmp) / "policy", seed=0)
        workloads = args.workloads.split(",")
        if "rl" in workloads:  # a policy that searches and answers, so an RL step has its usual shape
            rl_model = run_sft(model, world, Path(tmp) / "sft", steps=60, batch_size=8, lr=3e-3, topk=2,
                               max_len=768, seed=0, progress=False, threads=2)
        for workload in workloads:
            steps = args.rl_steps if workload == "rl" else args.steps
            m = rl_model if workload == "rl" else model
            for policy in args.policies.split(","):
                pol = None if policy == "unset" else policy
                settings = args.threads.split(",")
                runs = {setting: [] for setting in settings}
                # settings interleaved within each repeat, so the machine's drift between minutes (this VM's
                # step time wanders by +-15%) falls on every setting alike
                for repeat in range(args.repeats):
                    for setting in settings:
                        a = time_steps(workload, setting, pol, steps, world, m, busy=False)
                        b = time_steps(workload, setting, pol, steps, world, m, busy=True)
                        runs[setting].append((a, b))
                        print(f"[thread_contention] {workload} repeat {repeat + 1}/{args.repeats}: threads {setting}, "
                              f"wait policy {policy}: {statistics.median(a['times']):.2f} s/step alone, "
                              f"{statistics.median(b['times']):.2f} beside a busy neighbour", flush=True)
                for setting in settings:
                    pairs = runs[setting]
                    alone = [t for a, _ in pairs for t in a["times"]]
                    busy = [t for _, b in pairs for t in b["times"]]
                    row = {"workload": workload, "threads": setting, "policy": policy,
                           "alone_s": statistics.median(alone), "busy_s": statistics.median(busy),
                           "alone_by_repeat": [statistics.median(a["times"]) for a, _ in pairs],
                           "busy_by_repeat": [statistics.median(b["times"]) for _, b in pairs],
                           "alone_all": alone, "busy_all": busy,
                           "threads_chosen_alone": [t for a, _ in pairs for t in a["threads"]],
                           "threads_chosen_busy": [t for _, b in pairs for t in b["threads"]]}
                    row["slowdown"] = row["busy_s"] / row["alone_s"]
                    rows.append(row)
    summary = summarize(rows)
    result = {"benchmark": "thread_contention", "time": datetime.now(timezone.utc).isoformat(),
              "device": device_name("cpu").rsplit(" (", 1)[0], "avx512": cpu_avx512_flags(),
              "cpu_count": mp.cpu_count(), "rows": rows, "summary": summary,
              "notes": "median step in a fresh process per setting (sft: batch 16, tiny policy; rl: Trainer.train_step, "
                       "HF generation, 4 questions x 4 rollouts, grpo); the neighbour runs 1-thread numpy matrix "
                       "products; auto = igsearch.threads"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    flags = ", ".join(result["avx512"]) or "none"
    print(f"\n{result['device']} (AVX-512: {flags}), {result['cpu_count']} cores. JSON: {args.out}\n")
    print("| workload | threads | wait policy | s/step alone | s/step beside a busy process | slowdown | threads chosen (alone / busy) |")
    print("|---|---|---|---:|---:|---:|---|")
    for r in rows:
        ca = sorted(set(map(str, r["threads_chosen_alone"])))
        cb = sorted(set(map(str, r["threads_chosen_busy"])))
        print(f"| {r['workload']} | {r['threads']} | {r['policy']} | {r['alone_s']:.2f} | {r['busy_s']:.2f} | "
              f"x{r['slowdown']:.2f} | {','.join(ca)} / {','.join(cb)} |")
    print(" ".join(f"slowdown_{r['workload']}_{r['threads']}t_{r['policy']}={r['slowdown']:.2f}" for r in rows))
    print(" ".join(f"{k}={v:.2f}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
