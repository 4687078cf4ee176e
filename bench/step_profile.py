"""Where one RL step's time goes, by phase and by operator (torch.profiler), for GRPO and IG-Search.

The setting of ``bench/step_overhead.py --quick`` (small world, tiny policy after a short SFT,
configs/tiny-cpu.yaml, the trunk scorer): one Trainer at ``--precision``, ``--warmup`` untimed steps, then
one step whose rollout runs once and whose scoring, update and sync run for each method from the same
weights and optimizer state (``step_overhead.bench_step``'s protocol), each phase under its own profiler.
Generation runs in the vLLM engine's own process: its operators are not seen, only its wall time.

    python bench/step_profile.py --precision bf16

Writes bench/results/step_profile-<device>-<precision>.json and prints, per method and phase, the seconds
and the operators with the largest self CPU time (share of the phase's profiled CPU time).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import step_overhead as so
from igsearch.measure import add_threads_argument, apply_threads, device_name, work_root

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = [("grpo", "grpo", None), ("ig-trunk", "ig", "trunk")]


def profiled(fn):
    """(result, seconds, top operators) of ``fn()`` under the CPU profiler."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - t0
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
    return out, seconds, [{"op": e.key, "self_s": e.self_cpu_time_total / 1e6, "share": e.self_cpu_time_total / total,
                           "calls": e.count} for e in top]


def profile_step(trainer, step: int) -> dict:
    from igsearch.algo.advantages import estimator_needs

    cfg = trainer.cfg
    batch, t_rollout, ops = profiled(lambda: trainer.rollout(step))
    trainer.reward(batch)
    out = {"rollout": {"seconds": t_rollout, "generation_s": batch.metrics["time/generation"],
                       "retrieval_s": batch.metrics["time/retrieval"], "ops": ops}, "methods": {}}
    snap = so.snapshot(trainer)
    for label, method, scorer in METHODS:
        so.restore(trainer, snap)
        cfg.advantage.method = method
        if scorer is not None:
            cfg.scoring.scorer = scorer
        own = dataclasses.replace(batch, scores={}, advantages=None, metrics={}, forward=None)
        phases = {}
        _, s, ops = profiled(lambda: trainer.score_steps(own, needs=estimator_needs(method)))
        forward = own.forward.seconds if own.forward is not None else 0.0
        phases["scoring (incl. the update's forward under trunk)"] = {"seconds": s, "forward_s": forward, "ops": ops}
        trainer.advantages(own)
        trainer.model.train()
        _, s, ops = profiled(lambda: trainer.update(own))
        phases["update"] = {"seconds": s, "ops": ops}
        _, s, ops = profiled(lambda: trainer.sync(own))
        phases["sync"] = {"seconds": s, "ops": ops}
        out["methods"][label] = phases
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--entities", type=int, default=300)
    ap.add_argument("--sft-steps", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work-dir", default=None)
    ap.add_argument("--out", default=None)
    add_threads_argument(ap)
    args = ap.parse_args(argv)
    apply_threads(args.threads)
    from igsearch.machine import describe_cpu
    from igsearch.train.trainer import Trainer

    root, tmp = work_root(args.work_dir, "step_profile-")
    setup_args = argparse.Namespace(seed=args.seed, entities=args.entities, sft_steps=args.sft_steps,
                                    questions=args.questions, steps=1, warmup=args.warmup, overrides=[])
    cfg = dataclasses.replace(so.setup_quick(setup_args, root), precision=args.precision)
    trainer = Trainer(cfg, root / "run", overwrite=True)
    try:
        for step in range(1, args.warmup + 1):
            so.bench_step(trainer, step, METHODS)
        rec = profile_step(trainer, args.warmup + 1)
    finally:
        trainer.close()
    dev = device_name("cpu")
    result = {"benchmark": "step_profile", "time": datetime.now(timezone.utc).isoformat(), "device": dev,
              "cpu": describe_cpu(), "precision": trainer.precision.to_dict(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "questions_per_step": args.questions, **rec}
    slug = dev.split(" (")[0].lower().replace(" ", "-")
    out = Path(args.out) if args.out else RESULTS / f"step_profile-{slug}-{trainer.precision.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    r = rec["rollout"]
    print(f"rollout {r['seconds']:.2f}s (generation {r['generation_s']:.2f}s in vLLM's process, retrieval "
          f"{r['retrieval_s']:.2f}s)")
    for label, phases in rec["methods"].items():
        for phase, p in phases.items():
            top = ", ".join(f"{o['op']} {o['share']:.0%}" for o in p["ops"][:6])
            print(f"| {label} | {phase} | {p['seconds']:.2f}s | {top} |")
    print(f"JSON: {out}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
