"""One process of ``bench/trl_processes.py`` (started by ``torchrun``): IG-Search on TRL's ``GRPOTrainer`` for
``--steps`` steps from the given warm start and world, then ``OUT/rank-<r>.json`` with this process's
wall time of ``train()`` and the response tokens of the whole batch it trained on."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("world")
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from igsearch.demo import demo_preset
    from igsearch.integrations.trl import build_ig_search_trainer

    trainer = build_ig_search_trainer(args.model, args.world, output_dir=Path(args.out) / "trl", engine="hf",
                                      config=demo_preset(),
                                      overrides=[f"steps={args.steps}", f"questions_per_step={args.questions}",
                                                 f"threads={args.threads}", "eval_questions=0"])
    tokens: list[int] = []
    generate = trainer._generate_and_score_completions

    def counted(inputs):
        out = generate(inputs)
        tokens.append(sum(len(t.response_ids) for t in trainer.igsearch_last.trajectories))  # the whole batch's
        return out

    trainer._generate_and_score_completions = counted
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    rank = trainer.accelerator.process_index
    Path(args.out, f"rank-{rank}.json").write_text(json.dumps(
        {"seconds": seconds, "tokens_per_step": tokens, "processes": trainer.accelerator.num_processes,
         "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
