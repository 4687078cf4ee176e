"""One IG-Search step of ``IGSearchGRPOTrainer`` in this process and whatever others ``torchrun`` started
(run by tests/test_trl_multiprocess.py; not a test file itself).

    torchrun --standalone --nproc_per_node N tests/trl_multiprocess_step.py ROOT OUT

``ROOT`` holds the scripted policy and its world (tests/policy_fixtures.py). Rollouts run on
transformers ``generate`` one request at a time, so each rollout is sampled from its own seed whatever
the split over processes. Process 0 writes ``OUT/grad.pt`` (the gradient the optimizer step sees, after
DDP's all-reduce), ``OUT/batch.json`` (the whole batch's rollouts and rewards, this process's rows and
advantages) and every process ``OUT/rows-<rank>.json`` (its rows and the step's wall time and tokens).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback


class GradCapture(TrainerCallback):
    """Keeps the gradients as the optimizer step sees them (DDP has averaged them over the processes)."""

    def __init__(self):
        self.grads = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def main(root: Path, out: Path) -> None:
    from igsearch.integrations.trl import build_ig_search_trainer
    from igsearch.rollout.engine import HFEngine

    capture = GradCapture()
    overrides = ["steps=1", "questions_per_step=3", "rollout.rollouts_per_question=2", "rollout.max_turns=2",
                 "rollout.max_new_tokens_per_turn=16", "rollout.max_response_tokens=600", "rollout.max_doc_tokens=150",
                 "max_prompt_tokens=1024", "lr=1e-2", "seed=5", "grad_clip=0", "threads=1"]
    trainer = build_ig_search_trainer(root / "policy", root / "world", output_dir=out / "trl", engine="hf",
                                      overrides=overrides, callbacks=[capture])
    model = trainer.accelerator.unwrap_model(trainer.model)
    trainer.igsearch_rollout.external_engine = HFEngine(model, trainer.processing_class, batch_size=1)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    last = trainer.igsearch_last
    rank = trainer.accelerator.process_index
    mine = last.trajectories[last.rows]
    tokens = sum(len(t.response_ids) for t in mine)
    (out / f"rows-{rank}.json").write_text(json.dumps({"rows": [last.rows.start, last.rows.stop], "seconds": seconds,
                                                        "response_tokens": tokens}))
    if rank == 0:
        torch.save(capture.grads, out / "grad.pt")
        (out / "batch.json").write_text(json.dumps({
            "responses": [t.response_ids for t in last.trajectories],
            "groups": [t.question_index for t in last.trajectories],
            "rewards": last.rewards, "step_ig": last.scores.get("step_ig"),
            "processes": trainer.accelerator.num_processes}))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
