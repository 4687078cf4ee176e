"""``IGSearchGRPOTrainer``: TRL's ``GRPOTrainer`` with our rollouts and our advantages.

Per generation batch (TRL's ``_prepare_inputs`` -> ``_generate_and_score_completions``):

1. TRL calls our ``rollout_func`` (:class:`igsearch.integrations.trl.rollout.SearchRollout`): the search
   agent rolls out G rollouts per question on our engine; document tokens get ``env_mask`` 0, which TRL
   folds into its loss mask (``tool_mask``).
2. TRL runs its reward functions (default: :class:`ExactMatchReward`); this class keeps their weighted
   sum per rollout, R_i (TRL's own ``nansum`` of ``rewards_per_func * reward_weights``).
3. TRL computes its own (B,) GRPO advantages; this class then scores the steps the estimator needs
   (``step_ig`` for ``ig``) on the kept trajectories under the rollout weights, runs the registered
   estimator and **replaces** ``advantages`` by the (B, T) per-token advantages
   (:func:`igsearch.integrations.trl.advantages.token_advantages`).
4. TRL shuffles, splits and trains on them (``_compute_loss`` takes (B, T) advantages as they are). A row
   index ``igsearch_row`` [B] travels with the batch (TRL ignores it), so every trained row can be traced
   back to its trajectory in :attr:`IGSearchGRPOTrainer.igsearch_last`.

Several processes (``torchrun``; ``GRPOConfig(use_cpu=True)`` gives gloo): TRL hands each process its rows
of the generation batch, and a question's G rollouts may straddle two processes. Each process rolls out
its own rows (seeded by their row in the whole batch), then every process gathers all trajectories
(TRL gathers the rewards itself), the step scorers score them split over the processes
(:class:`igsearch.scoring.ShardedScorer`), the estimator runs on the whole batch, so on whole question
groups, and each process keeps the advantages of its own rows (TRL's ``process_slice``); DDP averages
the gradients. TRL's own generation (``use_vllm``, ``tools``, ``environment_factory``) is not used.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate.utils import gather_object
from trl import GRPOConfig, GRPOTrainer

import igsearch.methods  # noqa: F401  (registers the built-in estimators and step scorers)
from igsearch.algo.advantages import AdvantageOutput, estimator_needs
from igsearch.algo.step_scores import check_step_scorer
from igsearch.data.prompts import get_template
from igsearch.rollout.trajectory import Trajectory
from igsearch.scoring import scorer_reads

from .advantages import token_advantages
from .reward import ExactMatchReward
from .rollout import SearchRollout
from .steps import score_steps

ROW_KEY = "igsearch_row"


@dataclass
class IGSearchBatch:
    """One generation batch as the integration saw it (rows in TRL's order before its shuffle).

    ``trajectories`` [B] of the whole generation batch (all processes'); ``rewards`` [B] (R_i from TRL's reward
    functions); ``scores[name][i]``: step scorer values; ``advantages``: the estimator's output;
    ``token_advantages``: float32 [b, T], what replaced TRL's ``advantages`` in this process, whose rows are
    ``rows`` (a slice of [B]; all of it in one process); ``step``: the 1-based training step (seeds);
    ``metrics``: logged values.
    """

    trajectories: list[Trajectory]
    rewards: list[float]
    scores: dict[str, list[list]]
    advantages: AdvantageOutput
    token_advantages: torch.Tensor
    step: int
    metrics: dict[str, float] = field(default_factory=dict)
    rows: slice = field(default_factory=lambda: slice(None))


class IGSearchGRPOTrainer(GRPOTrainer):
    """``trl.GRPOTrainer`` with IG-Search rollouts and advantages (see the module docstring).

    ``igsearch_config``: our run config (``igsearch.train.config.TrainConfig``): the agent loop
    (``rollout``), the method (``advantage.method``, its options, e.g. ``ig``), the template, the seed and
    ``format_penalty`` come from it; ``args`` (``trl.GRPOConfig``) must agree with it on the group size
    (``num_generations`` = ``rollout.rollouts_per_question``) and the temperature
    (:func:`igsearch.integrations.trl.build.grpo_config` makes one that does). ``retriever``: anything with
    ``retrieve(queries, topk)``. ``engine``: our generation engine on the model's starting weights (a
    ``VLLMEngine``, synced after every optimizer step), or None for transformers ``generate`` on the
    trained model itself. ``reward_funcs``: TRL reward functions (default: exact match). The train
    dataset needs a ``prompt`` column (text or chat messages) and ``golden_answers``
    (:func:`igsearch.integrations.trl.build.qa_dataset`).
    """

    def __init__(self, model, *, igsearch_config, retriever, args: GRPOConfig, train_dataset, engine=None,
                 reward_funcs=None, processing_class=None, eval_dataset=None, callbacks=None,
                 optimizers=(None, None), peft_config=None):
        cfg = igsearch_config
        if args.use_vllm:
            raise ValueError("IGSearchGRPOTrainer: rollouts come from igsearch's engine; leave GRPOConfig.use_vllm "
                             "False and pass engine=<an igsearch VLLMEngine> to sample with vLLM")
        if args.num_generations != cfg.rollout.rollouts_per_question:
            raise ValueError(f"IGSearchGRPOTrainer: GRPOConfig.num_generations={args.num_generations} but "
                             f"rollout.rollouts_per_question={cfg.rollout.rollouts_per_question}; the group size "
                             "must be the same in both")
        if float(args.temperature) != float(cfg.rollout.temperature):
            raise ValueError(f"IGSearchGRPOTrainer: GRPOConfig.temperature={args.temperature} but "
                             f"rollout.temperature={cfg.rollout.temperature}; TRL scores the training log-probs at "
                             "its temperature, which must be the sampling one")
        self.igsearch_needs = estimator_needs(cfg.advantage.method)  # fails on an unknown method
        for name in sorted(self.igsearch_needs):
            why = check_step_scorer(name, cfg)
            if why:
                raise ValueError(f"IGSearchGRPOTrainer: method {cfg.advantage.method!r} cannot run: {why}")
        if self.igsearch_needs and "engine" in scorer_reads(cfg.scoring.scorer) and engine is None:
            raise ValueError(f"IGSearchGRPOTrainer: scoring.scorer={cfg.scoring.scorer!r} scores on the rollout engine; "
                             "pass engine=<an igsearch VLLMEngine>")
        if processing_class is None:
            if not isinstance(model, str):
                raise ValueError("IGSearchGRPOTrainer: pass processing_class (the policy's tokenizer)")
            from igsearch.policy.load import load_tokenizer

            processing_class = load_tokenizer(model)
        self.igsearch_config = cfg
        self.igsearch_advantage_config = cfg.advantage_config()
        self.igsearch_rollout = SearchRollout(retriever, processing_class, cfg.rollout,
                                              template=get_template(cfg.template), engine=engine, seed=cfg.seed)
        self.igsearch_batch_rows: list[dict] | None = None
        self.igsearch_last: IGSearchBatch | None = None
        self._igsearch_rewards_per_func: torch.Tensor | None = None
        super().__init__(
            model=model,
            reward_funcs=reward_funcs if reward_funcs is not None else [ExactMatchReward(cfg.format_penalty)],
            args=args, train_dataset=train_dataset, eval_dataset=eval_dataset, processing_class=processing_class,
            callbacks=callbacks, optimizers=optimizers, peft_config=peft_config,
            rollout_func=self.igsearch_rollout,
        )

    # ------------------------------------------------------------------ TRL hooks
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        """TRL's rewards [B, n_funcs] (gathered over processes), kept for the estimator."""
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._igsearch_rewards_per_func = rewards_per_func
        return rewards_per_func

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """TRL's batch, with ``advantages`` replaced by our estimator's float32 [B, T] and ``igsearch_row`` [B]."""
        self.igsearch_batch_rows = inputs
        self._igsearch_rewards_per_func = None
        try:
            output = super()._generate_and_score_completions(inputs)
        finally:
            self.igsearch_batch_rows = None
        record = self.igsearch_rollout.last
        if record is None or self._igsearch_rewards_per_func is None:
            raise RuntimeError("IGSearchGRPOTrainer: TRL did not run the rollout function and the rewards")
        local = record.trajectories
        completion_ids = output["completion_ids"]
        b, T = completion_ids.shape
        if len(local) != b:
            raise RuntimeError(f"IGSearchGRPOTrainer: {len(local)} trajectories for a batch of {b} rows")
        for i, t in enumerate(local):  # the rows are the trajectories, in order
            n = len(t.response_ids)
            if n > T or completion_ids[i, :n].tolist() != t.response_ids:
                raise RuntimeError(f"IGSearchGRPOTrainer: row {i} of TRL's batch is not trajectory {i}")
        distributed = self.accelerator.num_processes > 1
        trajs = list(gather_object(local)) if distributed else local  # the whole batch, in TRL's row order
        rows = slice(self.accelerator.process_index * b, (self.accelerator.process_index + 1) * b)

        weights = self.reward_weights.to(self._igsearch_rewards_per_func.device).unsqueeze(0)
        rewards = (self._igsearch_rewards_per_func * weights).nansum(dim=1).tolist()  # TRL's R_i, gathered by TRL
        if len(rewards) != len(trajs):
            raise RuntimeError(f"IGSearchGRPOTrainer: {len(rewards)} rewards for {len(trajs)} trajectories")
        cfg = self.igsearch_config
        step = record.global_step + 1  # our trainer's 1-based step: seeds of the IG draws
        model = self.accelerator.unwrap_model(self.model)
        t0 = time.perf_counter()
        scores, metrics = score_steps(self.igsearch_needs, trajs, model, self.processing_class, cfg, step,
                                      engine=self.igsearch_rollout.engine, distributed=distributed)
        metrics["time/scoring"] = time.perf_counter() - t0
        width = max(T, max(len(t.response_ids) for t in trajs))  # other processes' rows may be longer
        adv_out, adv = token_advantages(trajs, rewards, scores, self.igsearch_advantage_config, width)
        output["advantages"] = adv[rows, :T].to(completion_ids.device)
        output[ROW_KEY] = torch.arange(rows.start, rows.stop, device=completion_ids.device)

        metrics.update({k if "/" in k else f"adv/{k}": float(v) for k, v in adv_out.stats.items()
                        if isinstance(v, (int, float))})
        B = len(trajs)
        metrics.update({"time/generation": record.timings.generation, "time/retrieval": record.timings.retrieval,
                        "rollout/searches": sum(len(t.steps) for t in trajs) / B,
                        "rollout/answered_frac": sum(t.finish_reason == "answer" for t in trajs) / B,
                        "rollout/malformed_frac": sum(t.malformed for t in trajs) / B})
        mode = "train" if self.model.training else "eval"
        for key, value in metrics.items():
            self._metrics[mode][f"igsearch/{key}"].append(value)
        self.igsearch_last = IGSearchBatch(trajs, rewards, scores, adv_out, adv[rows, :T], step, metrics, rows)
        return output
