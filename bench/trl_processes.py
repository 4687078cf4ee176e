"""IG-Search on TRL's ``GRPOTrainer``: 2 processes (``torchrun``, gloo) against 1 on the same machine, in
tokens a second.

Both arms train ``--steps`` steps of the demo's settings (``configs/demo.yaml``) from the shipped warm start
on the demo's world, rollouts on transformers ``generate``; the CPU's cores are shared out: 1 process with
all of them as torch threads, or N processes with cores / N each. Arms alternate (1, 2, 2, 1, ...) over
``--repeats``; a figure is the batch's response tokens over the steps divided by the slowest process's
wall time of ``train()`` (start-up excluded). Each process rolls out and trains on its share of every batch
and DDP averages the gradients (tests/test_trl_multiprocess.py checks that 2 processes give 1 process's
gradient). The arms see the same questions but not the same rollouts: transformers ``generate`` seeds a
chunk of requests at once, and the chunks differ with the split.

    python bench/trl_processes.py                 # 3 repeats x 3 steps, about 10 minutes on 2 cores

Writes bench/results/trl_processes-<device>.json; the last line is
``trl_processes tokens_per_s_1=<median> tokens_per_s_2=<median> speedup=<ratio of medians>``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from igsearch.measure import device_name, work_root

RESULTS = Path(__file__).resolve().parent / "results"
WORKER = Path(__file__).resolve().parent / "trl_processes_worker.py"


def run_arm(n: int, threads: int, model: Path, world: Path, out: Path, args) -> dict:
    """One torchrun of ``n`` processes; tokens a second of the whole run."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TRL_EXPERIMENTAL_SILENCE": "1", "CUDA_VISIBLE_DEVICES": "",
           "IGSEARCH_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n), str(WORKER),
           str(model), str(world), str(out), "--steps", str(args.steps), "--questions", str(args.questions),
           "--threads", str(threads)]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"trl_processes: {n} processes failed:\n{res.stderr.split('failed (exitcode')[0][-4000:]}")
    ranks = [json.loads((out / f"rank-{r}.json").read_text()) for r in range(n)]
    seconds = max(r["seconds"] for r in ranks)
    tokens = sum(ranks[0]["tokens_per_step"])
    return {"processes": n, "threads_per_process": threads, "seconds": seconds, "tokens": tokens,
            "tokens_per_s": tokens / seconds, "process_wall_s": wall}


def spread(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--questions", type=int, default=8, help="questions per step (x 4 rollouts)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--work-dir", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    from dataclasses import replace

    from igsearch.machine import describe_cpu
    from igsearch.warmstart import DEMONSTRATORS, WarmStartConfig, build_warm_start, find_shipped_warm_start

    cores = len(os.sched_getaffinity(0))
    root, tmp = work_root(args.work_dir, "trl_processes-")
    demo = replace(WarmStartConfig(), distractor=DEMONSTRATORS["lookalike"])  # the demo's: the shipped warm start
    if find_shipped_warm_start(demo, 0, 0) is None:
        raise SystemExit("trl_processes: no shipped warm start for the demo's settings (training one takes a long SFT)")
    ws = build_warm_start(root / "ws", config=demo, shipped=True, log=lambda m: print(f"[trl_processes] {m}", flush=True))
    runs: list[dict] = []
    for rep in range(args.repeats):
        order = [1, args.processes] if rep % 2 == 0 else [args.processes, 1]
        for n in order:
            r = run_arm(n, max(1, cores // n), ws["sft"], ws["world"], root / f"rep{rep}-n{n}", args)
            runs.append({"repeat": rep, **r})
            print(f"[trl_processes] repeat {rep}: {n} process(es) x {r['threads_per_process']} threads: "
                  f"{r['tokens']} tokens in {r['seconds']:.1f}s = {r['tokens_per_s']:.0f} tokens/s", flush=True)
    arms = {n: spread([r["tokens_per_s"] for r in runs if r["processes"] == n]) for n in (1, args.processes)}
    speedup = arms[args.processes]["median"] / arms[1]["median"]
    result = {"benchmark": "trl_processes", "time": datetime.now(timezone.utc).isoformat(),
              "device": device_name("cpu"), "cpu": describe_cpu(), "cores": cores, "torch": torch.__version__,
              "steps": args.steps, "questions_per_step": args.questions, "engine": "hf", "runs": runs,
              "tokens_per_s": {str(k): v for k, v in arms.items()}, "speedup_median": speedup}
    out = Path(args.out) if args.out else RESULTS / f"trl_processes-{result['device'].split(' (')[0].lower().replace(' ', '-')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| processes x threads | tokens/s min | median | max |\n|---|---:|---:|---:|")
    for n, s in arms.items():
        print(f"| {n} x {max(1, cores // n)} | {s['min']:.0f} | {s['median']:.0f} | {s['max']:.0f} |")
    print(f"JSON: {out}")
    print(f"trl_processes tokens_per_s_1={arms[1]['median']:.0f} tokens_per_s_{args.processes}="
          f"{arms[args.processes]['median']:.0f} speedup={speedup:.2f}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
