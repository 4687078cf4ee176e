"""Overhead per training step of every method against the trajectory baseline (GRPO): RLOO, GiGPO,
IGPO (turn gains through the trunk scorer) and IG-Search with every IG scorer (trunk, tree, naive,
and the vLLM prefix-cache peer when the rollout engine is vLLM).

Same config, same seed, same process, same questions. What "same" means here (the design choice):

- ONE Trainer (one policy, one vLLM engine). Three Trainers would need three vLLM engines, too heavy
  on a CPU, and three separate runs would see different rollouts as soon as the weights diverge.
- Per step s: the rollout (generation + retrieval) runs ONCE; it does not depend on the method, so
  its measured time is charged to every method. Then, for each method in a rotating order (the
  order shifts by one every step so that no method is always first or last), the policy weights AND
  the AdamW state are restored to the snapshot taken after the rollout, and the method's own phases
  run and are timed on the same rollouts, by calling the trainer's phase functions: the step scorers
  the method needs (IG-Search: step IG with each scorer; IGPO: turn gains; GiGPO:
  anchor states), advantages, the update (packed log-probs + span-weighted PPO loss + AdamW, i.e. "update
  incl. log-probs") and the weight sync into the engine. So every method pays generation,
  retrieval, update and sync, and only the scoring phase differs (plus the noise of re-timing the
  update). The run then continues from the weights after the IG-Search (trunk) update (restored and
  synced, untimed, when that method was not the last in the rotation).
- Step time of a method = rollout wall time (shared) + rewards + step scoring + advantages + update + sync.
  Overhead = (mean step time of the method / mean step time of GRPO - 1) x 100, over the timed
  steps (the first ``--warmup`` steps are run but not counted: first-call overheads).
- The trunk, tree and naive scorers give the same IG (checked: max |difference| is reported), so
  the IG-Search updates see the same advantages; the naive row shows what IG would cost without any
  prefix sharing. ``ig-trunk`` runs the batch's policy forward before scoring and the update reuses
  it (see ``Trainer.policy_forward``): that forward is charged to its update, not to scoring.
- ``ig-vllm`` scores on the rollout engine; since every method syncs its updated weights into the
  engine (which clears vLLM's prefix cache), the engine is re-synced to pi_old and the rollouts are
  put back in its cache before ig-vllm's turn, untimed: the state right after generation.

Presets:
- ``--quick`` (default on a CPU): a small world, the tiny policy after a short SFT warm start
  (``--sft-steps``, default 40; the untrained policy rarely emits ``<search>``, and with no search
  IG costs nothing, which would flatter IG), configs/tiny-cpu.yaml settings, a few steps.
  Minutes on a laptop CPU; the numbers are CPU numbers.
- ``--preset gpu``: configs/qwen2.5-3b-gpu.yaml settings (bf16, lr, KL, clip, G=5, 4 turns, 500
  tokens a turn, ...) on a random-weight Qwen2.5-3B-shaped model built from a config (no
  download; vocabulary of Qwen2.5, tokenizer of the world since Qwen's is not on the machine),
  warm-started by a short bf16 SFT on the world's oracle trajectories so that rollouts search; the
  retriever is BM25 over the world (no retrieval server), and ``--questions`` questions per step
  (default 64, the preset's 512 is out of reach of a short benchmark). Needs CUDA; refuses to run
  on a CPU.

    python bench/step_overhead.py --quick
    python bench/step_overhead.py --preset gpu

Precision (``--precision``, igsearch.precision): by default an fp32 and a bf16 Trainer from the same start
weights are stepped in turn, and bf16's step speed-up over fp32 is reported per method.

Writes bench/results/step_overhead-<device>-<precisions>.json and prints a markdown table per precision; the last
line is ``overhead_trunk=<percent> overhead_tree=<percent> overhead_naive=<percent> [overhead_vllm=<percent>]
ig_overhead_vs_grpo=<fraction> bf16_step_speedup=<GRPO's ratio> bf16_step_speedup_ig=<IG-Search trunk's>`` (the
overheads of the bf16 run when it ran);
the line before it gives every method's overhead, and IGPO's line the tokens its turn gains forwarded
against scoring each turn prefix alone.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from igsearch.measure import add_threads_argument, apply_threads, device_name, work_root

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
#: (label, method, scorer of the forward passes): every registered method, IG-Search with every scorer
#: (ig-vllm only with a vLLM rollout engine)
METHODS = [("grpo", "grpo", None), ("rloo", "rloo", None), ("gigpo", "gigpo", None), ("igpo", "igpo", "trunk"),
           ("ig-trunk", "ig", "trunk"), ("ig-tree", "ig", "tree"), ("ig-naive", "ig", "naive"),
           ("ig-vllm", "ig", "vllm")]
CONTINUE_WITH = "ig-trunk"
PHASES = ("generation", "retrieval", "rollout_other", "scoring", "update", "sync", "other")

#: Qwen2.5-3B (config.json of Qwen/Qwen2.5-3B)
QWEN25_3B_SHAPE = dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                       num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1_000_000.0,
                       rms_norm_eps=1e-6, tie_word_embeddings=True, vocab_size=151936)


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def snapshot(trainer) -> dict:
    """Model weights and optimizer state, copied to host memory."""
    return {"model": _to_cpu(trainer.model.state_dict()), "optim": _to_cpu(trainer.optimizer.state_dict())}


def restore(trainer, snap: dict) -> None:
    trainer.model.load_state_dict(snap["model"])
    trainer.optimizer.load_state_dict(snap["optim"])  # moves the state to the parameters' device


def _sync_cuda():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- one benchmark step


def bench_step(trainer, step: int, order: list[tuple]) -> dict:
    """Rollout and rewards once, then every method's scoring / advantage / update / sync phases on
    that batch, each from the same weights and optimizer state (the trainer's own phase functions)."""
    import dataclasses

    from igsearch.algo.advantages import estimator_needs

    cfg = trainer.cfg
    _sync_cuda()
    t0 = time.perf_counter()
    batch = trainer.rollout(step)
    t_rollout = time.perf_counter() - t0
    t0 = time.perf_counter()
    trainer.reward(batch)
    t_rewards = time.perf_counter() - t0
    gen, ret = batch.metrics["time/generation"], batch.metrics["time/retrieval"]
    shared = {"generation": gen, "retrieval": ret, "rollout_other": max(0.0, t_rollout - gen - ret)}
    snap = snapshot(trainer)
    keep = None
    out = {"step": step, "order": [m[0] for m in order], "methods": {},
           "batch": {k: v for k, v in batch.metrics.items() if not k.startswith("time/")}}
    igs = {}
    saved_method, saved_scorer = cfg.advantage.method, cfg.scoring.scorer
    engine_fresh = True  # the engine holds pi_old and the rollouts are in its prefix cache
    try:
        for label, method, scorer in order:
            restore(trainer, snap)
            cfg.advantage.method = method
            if scorer is not None:
                cfg.scoring.scorer = scorer
            if scorer == "vllm" and not engine_fresh:  # untimed: back to "right after generation"
                trainer.engine.sync_weights(trainer.model)
                seqs = [t.token_ids for t in batch.trajectories]
                trainer.engine.continuation_logprobs(seqs, [len(x) for x in seqs])
            needs = estimator_needs(method)
            own = dataclasses.replace(batch, scores={}, advantages=None, metrics={}, forward=None)
            _sync_cuda()
            t0 = time.perf_counter()
            trainer.score_steps(own, needs=needs)
            _sync_cuda()
            t_score = time.perf_counter() - t0
            # the batch forward scoring.scorer=trunk runs first is the update's own: charged to the update
            t_forward = own.forward.seconds if own.forward is not None else 0.0
            t_score -= t_forward
            t0 = time.perf_counter()
            trainer.advantages(own)
            t_adv = time.perf_counter() - t0
            _sync_cuda()
            t0 = time.perf_counter()
            trainer.model.train()
            trainer.update(own)
            _sync_cuda()
            t_update = time.perf_counter() - t0 + t_forward
            t0 = time.perf_counter()
            trainer.sync(own)
            _sync_cuda()
            t_sync = time.perf_counter() - t0
            engine_fresh = False
            if "step_ig" in own.scores:
                igs[label] = own.scores["step_ig"]
            phases = {**shared, "scoring": t_score, "update": t_update, "sync": t_sync, "other": t_rewards + t_adv}
            scoring = {k: v for k, v in own.metrics.items() if k.split("/")[0] in needs}
            out["methods"][label] = {"phases": phases, "step": sum(phases.values()),
                                     "grad_norm": own.metrics.get("grad_norm"), "scoring": scoring}
            if label == CONTINUE_WITH:
                keep = snapshot(trainer) if label != order[-1][0] else None
        if keep is not None:  # continue from the IG-Search (trunk) weights; untimed
            restore(trainer, keep)
            trainer.engine.sync_weights(trainer.model)
    finally:
        cfg.advantage.method, cfg.scoring.scorer = saved_method, saved_scorer
    def max_diff(label):
        d = [abs(a - b) for ra, rb in zip(igs.get(label, []), igs.get("ig-naive", []))
             for a, b in zip(ra, rb) if a is not None and b is not None]
        return max(d) if d else 0.0, len(d)

    out["max_ig_diff_tree_naive"], out["steps_scored"] = max_diff("ig-tree")
    out["max_ig_diff_trunk_naive"] = max_diff("ig-trunk")[0]
    if "ig-vllm" in igs:
        out["max_ig_diff_vllm_naive"] = max_diff("ig-vllm")[0]
    return out


def summarize(steps: list[dict]) -> dict:
    labels = [m[0] for m in METHODS if m[0] in steps[0]["methods"]]
    summary = {}
    for label in labels:
        rows = [s["methods"][label] for s in steps]
        summary[label] = {
            "step_mean": statistics.fmean(r["step"] for r in rows),
            "step_std": statistics.pstdev([r["step"] for r in rows]) if len(rows) > 1 else 0.0,
            "phases": {p: statistics.fmean(r["phases"][p] for r in rows) for p in PHASES},
        }
    base = summary["grpo"]["step_mean"]
    for label in labels:
        summary[label]["overhead_pct"] = (summary[label]["step_mean"] / base - 1.0) * 100.0
        # per-step ratios too, to show their spread
        ratios = [s["methods"][label]["step"] / s["methods"]["grpo"]["step"] - 1.0 for s in steps]
        summary[label]["overhead_pct_per_step"] = [100.0 * r for r in ratios]
    return summary


def table(summary: dict) -> str:
    head = ("| method | generation s | retrieval s | rollout other s | step scoring s | update (incl. log-probs) s | "
            "sync s | other s | step s | share: rollout / scoring / update | overhead vs GRPO |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for label, s in summary.items():
        p = s["phases"]
        lines.append(f"| {label} | {p['generation']:.2f} | {p['retrieval']:.2f} | {p['rollout_other']:.2f} | "
                     f"{p['scoring']:.2f} | {p['update']:.2f} | {p['sync']:.2f} | {p['other']:.3f} | "
                     f"{s['step_mean']:.2f} ± {s['step_std']:.2f} | "
                     f"{(p['generation'] + p['retrieval'] + p['rollout_other']) / s['step_mean']:.0%} / "
                     f"{p['scoring'] / s['step_mean']:.0%} / {p['update'] / s['step_mean']:.0%} | "
                     f"{s['overhead_pct']:+.1f}% |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- setups


def setup_quick(args, root: Path):
    """Small world, tiny policy after a short SFT, configs/tiny-cpu.yaml settings."""
    from igsearch.policy.tiny import build_tiny_policy
    from igsearch.train.config import load_config
    from igsearch.train.sft import run_sft
    from igsearch.world import build_world

    world = root / "world"
    build_world(world, seed=args.seed, n_entities=args.entities)
    init = build_tiny_policy(world, root / "policy-init", seed=args.seed)
    model = init
    if args.sft_steps > 0:
        t0 = time.perf_counter()
        model = run_sft(init, world, root / "sft", steps=args.sft_steps, batch_size=8, lr=3e-3, query_noise=0.25,
                        hops=(1, 2, 3), topk=3, max_len=1024, seed=args.seed, progress=False, precision="fp32")
        print(f"[step_overhead] SFT warm start: {args.sft_steps} steps in {time.perf_counter() - t0:.0f}s", flush=True)
    overrides = [f"model_path={model}", f"world_dir={world}", f"seed={args.seed}", "advantage.method=ig",
                 "scoring.scorer=trunk",
                 f"questions_per_step={args.questions or 8}", "eval_questions=0", "tensorboard=false",
                 f"steps={args.steps + args.warmup}", *args.overrides]
    return load_config(ROOT / "configs" / "tiny-cpu.yaml", overrides)


def setup_gpu(args, root: Path):
    """configs/qwen2.5-3b-gpu.yaml settings on a random-weight Qwen2.5-3B-shaped model (see module doc)."""
    from igsearch.train.config import load_config
    from igsearch.train.scratch import build_random_policy, short_sft
    from igsearch.world import build_world

    world = root / "world"
    build_world(world, seed=args.seed, n_entities=args.entities)
    init = build_random_policy(world, root / "policy-init", shape=QWEN25_3B_SHAPE, seed=args.seed)
    model = init
    if args.sft_steps > 0:
        model = short_sft(init, world, root / "sft", steps=args.sft_steps, lr=args.sft_lr, seed=args.seed,
                          tag="step_overhead")
    overrides = [f"model_path={model}", f"world_dir={world}", "train_data=none", "eval_data=none",
                 "retrieval.retriever=bm25", "retrieval.retriever_url=none", f"seed={args.seed}", "advantage.method=ig",
                 "scoring.scorer=trunk",
                 f"questions_per_step={args.questions or 64}", "eval_questions=0", "tensorboard=false",
                 f"steps={args.steps + args.warmup}", *args.overrides]
    return load_config(ROOT / "configs" / "qwen2.5-3b-gpu.yaml", overrides)


# ----------------------------------------------------------------------------- main


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=["quick", "gpu"], default="quick",
                    help="quick: tiny policy on the CPU (default); gpu: Qwen2.5-3B shape, configs/qwen2.5-3b-gpu.yaml")
    ap.add_argument("--quick", action="store_true", help="same as --preset quick")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 5 quick, 3 gpu)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed first steps (default 1)")
    ap.add_argument("--questions", type=int, default=None, help="questions per step (default 8 quick = the preset, 64 gpu)")
    ap.add_argument("--entities", type=int, default=None, help="world size (default 300 quick, the default world gpu)")
    ap.add_argument("--sft-steps", type=int, default=None,
                    help="SFT warm-start steps so that rollouts search (default 40 quick, 60 gpu; 0 = untrained)")
    ap.add_argument("--sft-lr", type=float, default=1e-4, help="learning rate of the gpu preset's bf16 SFT")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", default=None, choices=["both", "auto", "fp32", "bf16"],
                    help="compute precision of the runs (igsearch.precision); both (default on the CPU): an fp32 and "
                         "a bf16 Trainer stepped in turn, with bf16's step speed-up per method; the gpu preset's "
                         "default is auto (its parameters are bf16 already, and two 3B Trainers would not fit)")
    add_threads_argument(ap)
    ap.add_argument("--work-dir", default=None, help="where world/policy/run go (default: a temp dir, removed)")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/step_overhead-<device>.json)")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="training config overrides")
    args = ap.parse_args(argv)
    if args.quick:
        args.preset = "quick"
    gpu = args.preset == "gpu"
    args.steps = args.steps if args.steps is not None else (3 if gpu else 5)
    args.entities = args.entities if args.entities is not None else (None if gpu else 300)
    args.sft_steps = args.sft_steps if args.sft_steps is not None else (60 if gpu else 40)
    args.precision = args.precision or ("auto" if gpu else "both")
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")
    return args


def run_precisions(cfg, root: Path, precisions: list[str], steps_total: int, warmup: int):
    """One Trainer per precision on the same config, seed and start weights, stepped in turn (step s of fp32,
    then step s of bf16, ...; the methods' order rotates every step), so that a change of the machine's load
    hits every precision alike. Returns {precision: [step records]}."""
    from dataclasses import replace

    from igsearch.train.trainer import Trainer

    trainers = {}
    records: dict[str, list[dict]] = {p: [] for p in precisions}
    try:
        for p in precisions:
            trainers[p] = Trainer(replace(cfg, precision=p), root / f"run-{p}", overwrite=True)
        methods = [m for m in METHODS if m[2] != "vllm" or cfg.generation.engine == "vllm"]
        for i, step in enumerate(range(1, steps_total + 1)):
            k = i % len(methods)
            order = methods[k:] + methods[:k]
            for p, trainer in trainers.items():
                t0 = time.perf_counter()
                rec = bench_step(trainer, step, order)
                rec["warmup"] = step <= warmup
                rec["wall_s"] = time.perf_counter() - t0
                records[p].append(rec)
                m = rec["methods"]
                print(f"[step_overhead] {trainer.precision.name} step {step}{' (warm-up)' if rec['warmup'] else ''}: "
                      + ", ".join(f"{lab} {m[lab]['step']:.2f}s (scoring {m[lab]['phases']['scoring']:.2f}s)"
                                  for lab, _, _ in methods)
                      + f"; searches/rollout {rec['batch']['rollout/searches']:.2f}, steps scored {rec['steps_scored']}, "
                      f"max |IG - naive| tree {rec['max_ig_diff_tree_naive']:.1e} trunk {rec['max_ig_diff_trunk_naive']:.1e}"
                      + (f" vllm {rec['max_ig_diff_vllm_naive']:.1e}" if "max_ig_diff_vllm_naive" in rec else ""),
                      flush=True)
    finally:
        for trainer in trainers.values():
            trainer.close()
    return records, {p: t.precision.to_dict() for p, t in trainers.items()}


def precision_speedups(summaries: dict) -> dict:
    """bf16's step speed-up over fp32 per method (fp32 mean step / bf16 mean step), when both ran."""
    if "fp32" not in summaries or "bf16" not in summaries:
        return {}
    return {label: summaries["fp32"][label]["step_mean"] / s["step_mean"] for label, s in summaries["bf16"].items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.preset == "gpu" and not torch.cuda.is_available():
        print("step_overhead: --preset gpu needs a CUDA GPU and none is visible (torch.cuda.is_available() "
              "is False); on a CPU run `python bench/step_overhead.py --quick`.", file=sys.stderr)
        return 2
    apply_threads(args.threads)
    from igsearch.machine import describe_cpu
    from igsearch.precision import resolve_precision

    root, tmp = work_root(args.work_dir, "step_overhead-")
    t_setup = time.perf_counter()
    cfg = setup_gpu(args, root) if args.preset == "gpu" else setup_quick(args, root)
    device = "cuda" if cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
    precisions = ["fp32", "bf16"] if args.precision == "both" else [resolve_precision(args.precision, device).name]
    setup_s = time.perf_counter() - t_setup
    records, resolved = run_precisions(cfg, root, precisions, args.warmup + args.steps, args.warmup)
    timed = {p: [s for s in recs if not s["warmup"]] for p, recs in records.items()}
    summaries = {p: summarize(t) for p, t in timed.items()}
    speedups = precision_speedups(summaries)
    headline = "bf16" if "bf16" in summaries else precisions[0]
    summary = summaries[headline]
    searches = {p: statistics.fmean(s["batch"]["rollout/searches"] for s in t) for p, t in timed.items()}
    dev = device_name(device)
    notes = ("one Trainer per precision, stepped in turn; per step the rollout runs once and its time is charged to "
             "every method; for each "
             "method (rotating order) weights and AdamW state are restored, then IG (IG-Search only), "
             "advantages, update (packed log-probs + loss + AdamW) and weight sync are timed on the same "
             "rollouts; training continues from the IG-Search (trunk) update; ig-trunk's batch forward (run "
             "before scoring, reused by the update) is charged to its update; before ig-vllm the engine is "
             "re-synced to pi_old and the rollouts put back in its prefix cache, untimed, as right after "
             "generation; the precisions' runs see different rollouts once their weights differ")
    if args.preset == "gpu":
        notes += ("; gpu preset: random-weight Qwen2.5-3B shape with the world's tokenizer, short bf16 SFT so "
                  "that rollouts search, BM25 over the synthetic world instead of the e5 server, "
                  f"{cfg.questions_per_step} questions per step instead of 512")
    else:
        notes += "; CPU figures (tiny policy, short SFT warm start, configs/tiny-cpu.yaml); the CPU is shared, so times are noisy"
    if min(searches.values()) < 0.5:
        notes += f"; WARNING: only {min(searches.values()):.2f} searches per rollout: IG has little to score, the overhead is flattered"
    result = {
        "benchmark": "step_overhead",
        "time": datetime.now(timezone.utc).isoformat(),
        "device": dev,
        "cpu": describe_cpu(),
        "precision": resolved,
        "preset": args.preset,
        "torch": torch.__version__,
        "config": cfg.to_dict(),
        "timed_steps": args.steps,
        "warmup_steps": args.warmup,
        "setup_s": setup_s,
        "searches_per_rollout": searches,
        "max_ig_diff_tree_naive": max(s["max_ig_diff_tree_naive"] for t in timed.values() for s in t),
        "max_ig_diff_trunk_naive": max(s["max_ig_diff_trunk_naive"] for t in timed.values() for s in t),
        "max_ig_diff_vllm_naive": max((s.get("max_ig_diff_vllm_naive", 0.0) for t in timed.values() for s in t),
                                      default=None),
        "threads": torch.get_num_threads() if device == "cpu" else None,
        "notes": notes,
        "summary": summary,
        "summary_by_precision": summaries,
        "bf16_step_speedup": speedups,
        "steps": records,
        "paper_overhead_pct": 6.4,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", dev.lower()).strip("-")
    out = Path(args.out) if args.out else RESULTS / f"step_overhead-{slug}-{'-'.join(precisions)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    if tmp is not None:
        tmp.cleanup()
    for p, s in summaries.items():
        print(f"\nOverhead per training step of every method over GRPO, {p}, {dev}, {result['cpu']}, preset "
              f"{args.preset}, {cfg.questions_per_step} questions x {cfg.rollout.rollouts_per_question} rollouts, "
              f"{args.steps} timed steps (+{args.warmup} warm-up), {searches[p]:.2f} searches per rollout. "
              f"Paper: +6.4%. JSON: {out}\n")
        print(table(s))
    if speedups:
        print("\nbf16 step speed-up over fp32: " + ", ".join(f"{k} {v:.2f}x" for k, v in speedups.items()))
    igpo = summary["igpo"]
    fwd = statistics.fmean(s["methods"]["igpo"]["scoring"].get("turn_gain/tokens_forwarded", 0.0) for s in timed[headline])
    alone = statistics.fmean(s["methods"]["igpo"]["scoring"].get("turn_gain/tokens_each_context_alone", 0.0)
                             for s in timed[headline])
    print(f"IGPO turn gains through the trunk scorer: {fwd:.0f} tokens forwarded per step against {alone:.0f} when "
          f"each turn prefix is scored on its own; IGPO scoring {igpo['phases']['scoring']:.2f}s per step.")
    print(" ".join(f"overhead_{label.replace('-', '_')}={s['overhead_pct']:.1f}" for label, s in summary.items()
                   if label != "grpo"))
    print(" ".join(f"overhead_{k}={summary['ig-' + k]['overhead_pct']:.1f}" for k in ("trunk", "tree", "naive", "vllm")
                   if "ig-" + k in summary)
          + f" ig_overhead_vs_grpo={summary['ig-trunk']['overhead_pct'] / 100:.3f}"
          + (f" bf16_step_speedup={speedups['grpo']:.2f} bf16_step_speedup_ig={speedups['ig-trunk']:.2f}"
             if speedups else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
