"""``igsearch_sync``: verl's synchronous v1 PPO trainer with IG-Search's step rewards.

Selected with ``trainer.v1.trainer_mode=igsearch_sync`` (and ``algorithm.adv_estimator=ig_search``).
Everything is verl's ``PPOTrainerSync`` except the advantage stage of each step. verl runs, in order:
rollout (our ``igsearch_agent`` loop) -> reward -> seq-len balancing -> old log-probs -> [ref] ->
advantage -> actor update. At the advantage stage, with ``adv_estimator=ig_search``, this trainer:

1. reads the step's rollouts from TransferQueue (``tq_batch.trajectories_from_tq``),
2. builds the IG requests with ``igsearch.ig`` (batch-wide pool, ``n_random`` draws seeded by
   ``ig_draw_seed(algorithm.ig.seed, global step)``) and scores them through the actor workers'
   ``compute_log_prob`` under the same weights as the old log-probs (``tq_batch.tq_log_prob_fn``:
   rows padded to a multiple of the data-parallel size and balanced by length across ranks),
3. runs verl's own ``_compute_advantage`` with the step IGs and query spans handed to the
   ``ig_search`` estimator (``estimator.supplied_step_ig``): KL-in-reward, rollout correction and the
   write-back to TransferQueue stay verl's.

IG metrics go to verl's logger under ``ig/`` and the scoring time under ``timing_s/ig``. With
``algorithm.ig.dump_dir`` set, each step's rollouts and step IGs are also written there as JSON lines
(:func:`dump_step_ig`), and after the advantage stage verl's group ids, rewards and advantages of the same
rows (:func:`dump_step_advantages`); ``igsearch.integrations.verl.smoke`` and ``cpu_smoke`` re-check them
with igsearch's own scorer and estimator. With any other
estimator the trainer is ``PPOTrainerSync`` unchanged.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import transfer_queue as tq
from transfer_queue import KVBatchMeta
from verl.trainer.ppo.v1 import PPOTrainerSync, register_trainer
from verl.utils.debug import marked_timer

from igsearch.ig.config import ig_draw_seed
from igsearch.rollout.trajectory import Trajectory

from .config import VerlIGConfig
from .estimator import supplied_step_ig
from .ig_batch import step_ig_of_trajectories, steps_to_record, trajectory_from_row
from .tq_batch import _rows, tq_log_prob_fn, trajectories_from_tq

TRAINER_NAME = "igsearch_sync"
ESTIMATOR_NAME = "ig_search"
_METRICS = {"ig_mean": "ig/mean", "ig_std": "ig/std", "ig_pos_frac": "ig/positive_fraction",
            "n_steps_scored": "ig/steps_scored", "n_steps_total": "ig/steps_total", "n_sequences": "ig/requests",
            "tokens_forwarded": "ig/tokens_forwarded", "real_mean": "ig/real_score_mean",
            "baseline_mean": "ig/baseline_score_mean"}


def dump_step_ig(path: Path, trajs: list[Trajectory], step_ig: list[list[float | None]], seed: int) -> None:
    """One JSON line per rollout: prompt/response ids, loss mask, step record, golds, the step IGs
    and the draw seed, enough to rebuild the trajectories (``ig_batch.trajectory_from_row``) and
    recompute the IGs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for t, row in zip(trajs, step_ig, strict=True):
            f.write(json.dumps({"prompt_ids": t.prompt_ids, "response_ids": t.response_ids, "loss_mask": t.loss_mask,
                                "steps": steps_to_record(t.steps), "golds": list(t.golds), "step_ig": list(row),
                                "seed": seed}) + "\n")


def dump_step_advantages(path: Path, batch: KVBatchMeta, rows: list[int]) -> None:
    """One JSON line per rollout ``rows`` of ``batch`` (the real rows, in the order of
    :func:`dump_step_ig`'s lines): verl's group ``uid``, its reward (``rm_scores`` summed) and the
    advantages verl wrote back to TransferQueue (response tokens)."""
    data = tq.kv_batch_get(keys=[batch.keys[i] for i in rows], partition_id=batch.partition_id,
                           select_fields=["uid", "rm_scores", "advantages"])
    uids, scores, advs = _rows(data["uid"]), _rows(data["rm_scores"]), _rows(data["advantages"])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for uid, score, adv in zip(uids, scores, advs, strict=True):
            f.write(json.dumps({"uid": str(uid), "reward": float(torch.as_tensor(score).float().sum()),
                                "advantages": [float(x) for x in torch.as_tensor(adv).float().tolist()]}) + "\n")


def load_step_ig_dump(path: Path, tokenizer) -> tuple[list[Trajectory], list[list[float | None]], int]:
    """Inverse of :func:`dump_step_ig`: (trajectories, step IGs, draw seed)."""
    trajs, step_ig, seeds = [], [], set()
    for i, line in enumerate(Path(path).read_text().splitlines()):
        r = json.loads(line)
        trajs.append(trajectory_from_row(r["prompt_ids"], r["response_ids"], r["loss_mask"], r["steps"], r["golds"], i,
                                         tokenizer))
        step_ig.append(r["step_ig"])
        seeds.add(int(r["seed"]))
    if len(seeds) != 1:
        raise ValueError(f"{path}: expected one draw seed, found {sorted(seeds)}")
    return trajs, step_ig, seeds.pop()


def rescore_step_ig_dump(path: Path, model, tokenizer, ig_options: dict):
    """Re-score a :func:`dump_step_ig` file with igsearch's tree scorer on ``model`` (its weights and dtype).

    Returns (trajectories, the re-scored ``IGResult``, comparison) where comparison holds ``rollouts``,
    ``steps_compared`` (search steps both scored), ``none_mismatch`` (steps only one side scored) and
    ``max_abs_diff`` (largest |dumped - re-scored| step IG, None when none was compared). The smokes' check that
    verl's IG is igsearch's."""
    from igsearch.ig import information_gain_of_trajectories

    trajs, dumped, seed = load_step_ig_dump(path, tokenizer)
    with torch.no_grad():
        ref = information_gain_of_trajectories(trajs, model, tokenizer, scorer="tree", **{**ig_options, "seed": seed})
    pairs = [(a, b) for got, want in zip(dumped, ref.step_ig, strict=True) for a, b in zip(got, want, strict=True)]
    diffs = [abs(a - b) for a, b in pairs if a is not None and b is not None]
    return trajs, ref, {"rollouts": len(trajs), "steps_compared": len(diffs),
                        "none_mismatch": sum((a is None) != (b is None) for a, b in pairs),
                        "max_abs_diff": max(diffs) if diffs else None}


def ig_metrics(stats: dict) -> dict[str, float]:
    """igsearch's IG batch statistics under verl metric names (``ig/...``); None values dropped."""
    return {name: float(stats[k]) for k, name in _METRICS.items() if stats.get(k) is not None}


@register_trainer(TRAINER_NAME)
class IGSearchTrainer(PPOTrainerSync):
    """See the module docstring."""

    def _compute_advantage(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        if str(self.config.algorithm.adv_estimator) != ESTIMATOR_NAME:
            return super()._compute_advantage(batch, metrics)
        with marked_timer("ig", self._timing(), color="purple"):
            spans, step_ig = self.score_step_ig(batch, metrics)
        with supplied_step_ig(spans, step_ig):
            batch = super()._compute_advantage(batch, metrics)
        cfg = VerlIGConfig.from_algorithm(self.config.algorithm)
        if cfg.dump_dir:
            real = [i for i, s in enumerate(spans) if not (batch.tags and batch.tags[i].get("is_padding", False))]
            dump_step_advantages(Path(cfg.dump_dir) / f"step_{int(self.global_steps):06d}_adv.jsonl", batch, real)
        return batch

    def score_step_ig(self, batch: KVBatchMeta, metrics: dict) -> tuple[np.ndarray, np.ndarray]:
        """(query spans, step IGs) of ``batch``, object arrays with one entry per row in key order
        (empty for verl's padding rows), the IGs scored by the actor workers."""
        cfg = VerlIGConfig.from_algorithm(self.config.algorithm)
        cfg = replace(cfg, seed=ig_draw_seed(cfg.seed, int(self.global_steps)))
        dp_size = self.actor_dp_size()
        rows = trajectories_from_tq(batch, self.tokenizer)
        real = [i for i, t in enumerate(rows) if t is not None]
        trajs = [rows[i] for i in real]
        result, real_spans, real_ig = step_ig_of_trajectories(
            trajs, self.tokenizer, tq_log_prob_fn(self.actor_rollout_wg, dp_size=dp_size), config=cfg,
            dp_size=self.ig_row_multiple(dp_size))
        spans, step_ig = np.empty(len(rows), dtype=object), np.empty(len(rows), dtype=object)
        for i in range(len(rows)):  # padding rows: no steps
            spans[i], step_ig[i] = [], []
        for j, i in enumerate(real):
            spans[i], step_ig[i] = real_spans[j], real_ig[j]
        metrics.update(ig_metrics(result.stats))
        n_rows = int(result.stats.get("n_sequences") or 0)
        multiple = self.ig_row_multiple(dp_size)
        metrics.update({"ig/dp_size": float(dp_size),
                        "ig/rows_per_rank": float((n_rows + (-n_rows) % multiple) // dp_size) if n_rows else 0.0})
        if cfg.dump_dir:
            dump_step_ig(Path(cfg.dump_dir) / f"step_{int(self.global_steps):06d}.jsonl", trajs, result.step_ig,
                         cfg.seed)
        return spans, step_ig

    def ig_row_multiple(self, dp_size: int) -> int:
        """The IG request rows are padded to a multiple of this: the data-parallel size, times the
        log-prob micro-batch size when verl splits each rank's rows into fixed micro-batches
        (``log_prob_use_dynamic_bsz`` off), which must then divide every rank's share."""
        rollout = self.config.actor_rollout_ref.rollout
        if rollout.get("log_prob_use_dynamic_bsz", False):
            return dp_size
        return dp_size * max(1, int(rollout.get("log_prob_micro_batch_size_per_gpu") or 1))

    def actor_dp_size(self) -> int:
        """Data-parallel size of the actor mesh (as verl's own seq-len balancing reads it)."""
        wg = self.actor_rollout_wg
        if "actor" not in wg._dispatch_info:
            wg._dispatch_info["actor"] = wg._query_dispatch_info("actor")
        return max(wg._dispatch_info["actor"]) + 1

    def _timing(self) -> dict:
        if getattr(self, "timing_raw", None) is None:
            self.timing_raw = {}
        return self.timing_raw
