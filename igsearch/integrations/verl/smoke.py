"""IG-Search on verl: a short smoke run of the launch command on one GPU (issue 14).

Run it in the verl environment on a machine with one CUDA GPU. There, `make verl-env` installs verl's
vLLM:

    .venv-verl/bin/python -m igsearch.integrations.verl.smoke               # 2 steps
    .venv-verl/bin/python -m igsearch.integrations.verl.smoke --dry-run     # CPU: build the command and check it composes

1. It builds a small world and a Qwen2.5-0.5B-shaped policy with random weights and the world's
   tokenizer. A few SFT steps on oracle trajectories (``igsearch.train.scratch.short_sft``) teach it the tags,
   so its rollouts search.
2. It serves the world's corpus (BM25) on our Search-R1 retrieval server, in this process.
3. It runs ``python -m verl.trainer.main_ppo`` with configs/verl/igsearch_qwen2.5-3b.yaml, on 1 GPU
   with small batches, for ``--steps`` steps, with ``algorithm.ig.dump_dir`` set. verl's console goes
   to log.txt.
4. It parses verl's per-step metrics from the log into metrics.json: ``timing_s/*`` (the step time by
   phase, ``ig`` included), ``perf/*`` (tokens/s) and ``ig/*``.
5. It re-scores the first step's dumped rollouts with our tree scorer, on the same initial weights
   in bf16, and reports the largest |IG difference| in ig_check.json (target: below 1e-3).

Everything is written under runs/verl-smoke-<card>-<date>/ of the repository (or ``--out``). The last line
printed is ``verl_smoke: steps=<n> step_s=<mean> tokens_per_s=<mean> ig_max_diff=<x> ig_check=<pass|fail>``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

#: the repository (configs/verl/ holds the launch config; verl runs from here)
ROOT = Path(__file__).resolve().parents[3]

QWEN25_05B_SHAPE = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                        num_key_value_heads=2, head_dim=64)
IG_TOLERANCE = 1e-3
METRIC_LINE = re.compile(r"(?:^|\s)step:(\d+) - (.*)$")  # Ray prefixes actor output with "(TaskRunner pid=N) "


def launch_overrides(policy: Path, world: Path, retrieval_url: str, dump_dir: Path, steps: int) -> list[str]:
    """The launch config's required fields plus what fits one GPU and a 0.5B model in a few minutes."""
    return [
        f"actor_rollout_ref.model.path={policy}",
        f"data.train_files={world / 'train.parquet'}", f"data.val_files={world / 'dev.parquet'}",
        f"igsearch.retrieval_url={retrieval_url}",
        "trainer.n_gpus_per_node=1", "trainer.nnodes=1", f"trainer.total_training_steps={steps}",
        "trainer.save_freq=-1", "trainer.test_freq=-1", "trainer.val_before_train=False", "trainer.logger=[console]",
        "data.train_batch_size=16", "actor_rollout_ref.rollout.n=4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=16", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8",
        "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio=0",
        "data.max_prompt_length=1024", "data.max_response_length=1024",
        "actor_rollout_ref.rollout.prompt_length=1024", "actor_rollout_ref.rollout.response_length=1024",
        "actor_rollout_ref.rollout.gpu_memory_utilization=0.4", "actor_rollout_ref.rollout.agent.num_workers=2",
        "igsearch.max_new_tokens_per_turn=200", "igsearch.max_doc_tokens=300",
        f"algorithm.ig.dump_dir={dump_dir}",
    ]


def compose_check(overrides: list[str]):
    """The launch config composed with ``overrides``, after verl's own config validation."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    with initialize_config_dir(str(ROOT / "configs" / "verl"), version_base=None):
        cfg = compose("igsearch_qwen2.5-3b", overrides=overrides)
    OmegaConf.resolve(cfg)
    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    return cfg


def parse_metrics(log: str) -> dict[int, dict[str, float]]:
    """verl's console logger lines (``step:N - key:value - ...``) -> {step: {key: value}}."""
    out: dict[int, dict[str, float]] = {}
    for line in log.splitlines():
        m = METRIC_LINE.search(line.strip())
        if not m:
            continue
        row = out.setdefault(int(m.group(1)), {})
        for item in m.group(2).split(" - "):
            key, _, value = item.rpartition(":")
            try:
                row[key] = float(value)
            except ValueError:
                pass
    return out


def ig_check(dump: Path, policy: Path, ig_options: dict) -> dict:
    """Re-score a step's dumped rollouts with the tree scorer (bf16, CUDA); max |IG difference|."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from igsearch.integrations.verl.trainer import rescore_step_ig_dump

    tok = AutoTokenizer.from_pretrained(policy)
    model = AutoModelForCausalLM.from_pretrained(policy, dtype=torch.bfloat16, attn_implementation="sdpa").cuda().eval()
    _, _, cmp = rescore_step_ig_dump(dump, model, tok, ig_options)
    worst = cmp["max_abs_diff"]
    return {"dump": str(dump), **cmp, "tolerance": IG_TOLERANCE,
            "pass": bool(cmp["steps_compared"]) and cmp["none_mismatch"] == 0 and worst < IG_TOLERANCE}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m igsearch.integrations.verl.smoke", description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--sft-steps", type=int, default=60, help="SFT steps that teach the random policy the tags")
    ap.add_argument("--entities", type=int, default=400)
    ap.add_argument("--out", default=None)
    ap.add_argument("--timeout", type=int, default=1500, help="seconds for the verl run")
    ap.add_argument("--dry-run", action="store_true", help="check that the command composes; build and run nothing")
    args = ap.parse_args(argv)

    if args.dry_run:
        overrides = launch_overrides(Path("/models/p"), Path("/data/w"), "http://127.0.0.1:8000/retrieve",
                                     Path("/tmp/ig_dump"), args.steps)
        compose_check(overrides)
        print("verl_smoke: dry run: the launch command composes and passes verl's validate_config:\n  "
              + " ".join([sys.executable, "-m", "verl.trainer.main_ppo", "--config-path", str(ROOT / "configs" / "verl"),
                          "--config-name", "igsearch_qwen2.5-3b", *overrides]))
        return 0

    import torch

    if not torch.cuda.is_available():
        print("verl_smoke: needs a CUDA GPU (torch.cuda.is_available() is False); use --dry-run on a CPU", file=sys.stderr)
        return 2
    from igsearch.integrations.verl.config import VerlIGConfig
    from igsearch.retrieval.bm25 import BM25Retriever
    from igsearch.retrieval.server import make_server
    from igsearch.train.scratch import build_random_policy, short_sft
    from igsearch.world import build_world

    card = re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower()).strip("-")
    out = Path(args.out or ROOT / "runs" / f"verl-smoke-{card}-{datetime.now():%Y%m%d-%H%M%S}")
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    t0 = time.perf_counter()
    world = work / "world"
    build_world(world, seed=0, n_entities=args.entities)
    policy = build_random_policy(world, work / "policy-init", shape=QWEN25_05B_SHAPE, seed=0)
    if args.sft_steps > 0:
        policy = short_sft(policy, world, work / "policy-sft", steps=args.sft_steps, lr=1e-4, tag="verl_smoke")
    print(f"[verl_smoke] world and policy ready in {time.perf_counter() - t0:.0f}s: {policy}", flush=True)

    server = make_server(BM25Retriever.from_corpus(world / "corpus.jsonl"))
    server.start_in_thread()
    dump = out / "ig_dump"
    overrides = launch_overrides(Path(policy), world, f"{server.url}/retrieve", dump, args.steps)
    cfg = compose_check(overrides)
    cmd = [sys.executable, "-m", "verl.trainer.main_ppo", "--config-path", str(ROOT / "configs" / "verl"),
           "--config-name", "igsearch_qwen2.5-3b", *overrides]
    (out / "command.txt").write_text(" ".join(cmd) + "\n")
    print("[verl_smoke] " + " ".join(cmd), flush=True)
    t1 = time.perf_counter()
    with open(out / "log.txt", "w") as log:
        try:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=args.timeout, cwd=ROOT).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    wall = time.perf_counter() - t1
    server.shutdown()
    metrics = parse_metrics((out / "log.txt").read_text(errors="replace"))
    step_s = [m["timing_s/step"] for m in metrics.values() if "timing_s/step" in m]
    tps = [m["perf/throughput"] for m in metrics.values() if "perf/throughput" in m]
    summary = {"device": "GPU " + torch.cuda.get_device_name(0), "date": datetime.now(timezone.utc).isoformat(),
               "returncode": rc, "wall_seconds": wall, "steps_logged": len(metrics), "per_step": metrics,
               "step_seconds_mean": sum(step_s) / len(step_s) if step_s else None,
               "tokens_per_second_mean": sum(tps) / len(tps) if tps else None}
    (out / "metrics.json").write_text(json.dumps(summary, indent=1))
    dumps = sorted(dump.glob("step_*.jsonl"))
    ig_options = VerlIGConfig.from_algorithm(cfg.algorithm).ig_options()
    check = ig_check(dumps[0], Path(policy), ig_options) if dumps else {"pass": False, "error": "no IG dump written"}
    (out / "ig_check.json").write_text(json.dumps(check, indent=1))
    print(f"verl_smoke: steps={len(metrics)} step_s={summary['step_seconds_mean']} "
          f"tokens_per_s={summary['tokens_per_second_mean']} ig_max_diff={check.get('max_abs_diff')} "
          f"ig_check={'pass' if check['pass'] else 'fail'} rc={rc} out={out}")
    return 0 if rc == 0 and check["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
