"""The GRPO-family training loop (docs/DESIGN.md section 4), nanoGPT style: one function per phase.

Per step, each phase fills the step's ``Batch`` record: ``rollout`` (sample questions, G rollouts
each on the engine (vLLM) with batched retrieval) -> ``reward`` (EM, batch metrics, optional
zero-spread filtering) -> ``score_steps`` (exactly the step scorers the estimator declared in
``needs``, e.g. step IG, under the rollout weights pi_old) -> ``advantages`` (the registry) ->
``update`` (packed policy log-probs with ``gather_logprobs``, span-weighted PPO loss with
``span_advantage_loss``, AdamW) -> ``sync`` (weights into the engine). Hooks registered with
``add_hook`` run after every phase; benchmarks use them (or call the phases) instead of patching the
trainer. The trainer knows no method and no scorer by name. What a run is assembled from (paths,
retriever, engine, input checks, the run folder) is ``train/assembly.py``; the PPO-ptx replay is
``train/replay.py``. Checkpoints are atomic;
``resume`` continues exactly: question sampling, rollout seeds and counterfactual draws are all
functions of (seed, step), and the RNG states are restored from the checkpoint.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

import igsearch.methods  # noqa: F401  (registers the built-in estimators and step scorers)
from igsearch.algo.advantages import AdvantageInput, AdvantageOutput, compute_advantages, estimator_needs
from igsearch.algo.step_scores import check_step_scorer, run_step_scorers
from igsearch.algo.loss import policy_loss
from igsearch.policy.packing import packed_token_logprobs, pad_to_batch
from igsearch.algo.rewards import trajectory_rewards
from igsearch.data.loaders import QARow, load_qa
from igsearch.data.metrics import exact_match
from igsearch.data.prompts import get_template, question_prompt
from igsearch.evaluation import evaluate
from igsearch.precision import resolve_precision
from igsearch.rollout.agent import RolloutConfig, SearchAgent
from igsearch.rollout.trajectory import Trajectory
from igsearch.scoring import Scorer, TrunkKV, kv_bytes
from igsearch.train.assembly import (
    check_prompt_lengths,
    clear_run,
    engine_from_config,
    make_retriever,
    resolve_paths,
    run_progress,
)
from igsearch.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from igsearch.train.config import TrainConfig
from igsearch.train.faults import FATAL, RunFaults, engine_folder, resume_checkpoint
from igsearch.io import atomic_write_json, atomic_write_text
from igsearch.train.logging import RunLogger, TrainProgress
from igsearch.train.replay import SFTReplay
from igsearch.threads import ThreadPolicy

#: the most keys/values of a batch's no-grad forward the trainer holds for the trunk scorer
MAX_HELD_KV_BYTES = 2 << 30

#: a hook: ``fn(phase, batch, trainer)``, called after each phase of a step
Hook = Callable[[str, "Batch", "Trainer"], None]


class TrainingError(RuntimeError):
    """A run that cannot continue; the message says why and what was saved."""


@dataclass
class PolicyForward:
    """The policy's forward of the whole batch under pi_old, run before the step scorers so that they
    can reuse its keys/values (``scoring.scorer=trunk``) and the update does not forward again.

    ``logp`` [B, T]: with grad, the log-probs the update's first mini-batch uses (when the update
    would run exactly this forward first: one mini-batch, engine log-probs are pi_old), else None;
    ``old`` [B, T]: no-grad pi_old log-probs (the recomputation the update needs otherwise);
    ``trunk_kv``: an ``igsearch.scoring.TrunkKV`` of the rollouts (None: too large to hold);
    ``seconds``: its wall time,
    charged to the update's ``time/logprobs``.
    """

    logp: torch.Tensor | None
    old: torch.Tensor | None
    trunk_kv: Any
    seconds: float


@dataclass
class Batch:
    """The record of one training step, filled phase by phase.

    ``rows``: the questions; ``trajectories``: their rollouts (G per question, grouped by
    ``question_index``); ``rewards[i]``: R of rollout i; ``scores[name][i]``: step scorer ``name``'s
    values for rollout i; ``advantages``: the estimator's output; ``metrics``: what the step logs,
    each key written by exactly one phase (``add_metrics`` refuses a second owner).
    """

    step: int
    rows: list[QARow]
    trajectories: list[Trajectory]
    rewards: list[float] = field(default_factory=list)
    scores: dict[str, list[list]] = field(default_factory=dict)
    advantages: AdvantageOutput | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    forward: "PolicyForward | None" = None

    def add_metrics(self, values: dict, owner: str) -> None:
        """Add ``values`` to ``metrics``; a key some other phase already wrote is an error."""
        clash = sorted(set(values) & set(self.metrics))
        if clash:
            raise KeyError(f"{owner}: metric keys {clash} already written by another phase (one owner per key)")
        self.metrics.update(values)


def rollout_seed(run_seed: int, step: int, call: int = 0) -> int:
    """The agent's sampling seed at training step ``step`` (1-based) of a run seeded ``run_seed``;
    ``call`` > 0 for further rollouts at the same step (the TRL integration's evaluation)."""
    return run_seed * 100_003 + step + 1_000_003 * call


def sample_questions(n_rows: int, k: int, seed: int, step: int) -> list[int]:
    """Indices of the questions of ``step``: a pure function of (seed, step), so resuming is exact."""
    rng = random.Random(f"questions-{seed}-{step}")
    return rng.sample(range(n_rows), min(k, n_rows))


class Trainer:
    """Holds the policy, optimizer, engine and retriever of one run."""

    def __init__(self, cfg: TrainConfig, out_dir, *, resume=None, overwrite: bool = False):
        """``out_dir`` must not hold another run's progress unless ``resume`` continues it or
        ``overwrite`` starts it again from step 0 (its checkpoints, metrics and evaluations are
        removed). Every input is checked before anything is written."""
        self.cfg = cfg
        self.out = Path(out_dir)
        progress = run_progress(self.out)
        if progress and resume is None and not overwrite:
            raise TrainingError(f"{self.out}: already holds a run ({progress}); continue it with --resume {self.out}, "
                                "or pass --overwrite to start again from step 0")
        self.needs = estimator_needs(cfg.advantage.method)  # fails early on an unknown method
        for name in sorted(self.needs):
            why = check_step_scorer(name, cfg)
            if why:
                raise TrainingError(f"method {cfg.advantage.method!r} cannot run: {why}")
        self.hooks: list[Hook] = []
        self.paths = resolve_paths(cfg)
        self.template = get_template(cfg.template)
        self.rows = load_qa(self.paths["train"])
        self.device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available()
                                   else ("cpu" if cfg.device == "auto" else cfg.device))
        torch.manual_seed(cfg.seed)
        from igsearch.policy.load import load_policy

        # one decision for every phase: the engine's weights, the forwards and the scorers (igsearch.precision)
        self.precision = resolve_precision(cfg.precision, self.device)

        start_dir = self.paths["model"]
        self.start_step = 0
        ckpt = None
        if resume is not None:
            ckpt = resume_checkpoint(resume)  # None: killed before its first checkpoint, it starts at step 0
        if ckpt is not None:
            start_dir = ckpt / "model"
        self.model, self.tokenizer = load_policy(start_dir, dtype=cfg.dtype, device=str(self.device),
                                                 attn_implementation=cfg.attn_implementation)
        check_prompt_lengths(self.rows, self.tokenizer, self.template, cfg.max_prompt_tokens, self.paths["train"])
        if cfg.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.optimizer = build_optimizer(self.model.parameters(), cfg)
        if ckpt is not None:
            info = load_checkpoint(ckpt, self.model, self.optimizer)
            self.start_step = info["step"]
        self.ref_model = None
        if cfg.loss.kl_coef > 0:
            self.ref_model, _ = load_policy(self.paths["model"], dtype=cfg.dtype, device=str(self.device),
                                            attn_implementation=cfg.attn_implementation)
            self.ref_model.eval().requires_grad_(False)
        self.retriever = make_retriever(cfg, self.paths)
        self.replay = SFTReplay(cfg, self.paths, self.tokenizer, self.retriever) if cfg.sft_replay_coef > 0 else None
        engine_dir = start_dir if ckpt is None else engine_folder(self.out, start_dir, cfg.generation.engine)
        self.engine = engine_from_config(cfg, engine_dir, self.model, self.tokenizer, self.precision)
        self.agent = SearchAgent(self.engine, self.retriever, self.tokenizer, cfg.rollout, template=self.template)
        if overwrite and resume is None:
            clear_run(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.logger = RunLogger(self.out, tensorboard=cfg.tensorboard)
        self.threads = ThreadPolicy(cfg.threads)  # torch threads per phase (igsearch.threads)
        if resume is not None:  # the lines of steps after the checkpoint (all of them without one) are redone
            self.logger.truncate_after(self.start_step if ckpt is not None else -1)
        cfg.save(self.out / "config.yaml")
        record_precision(self.out, self.precision)
        self.faults = RunFaults(self)  # engine restarts, fatal faults (train/faults.py)

    # ------------------------------------------------------------------ phases
    def add_hook(self, hook: Hook) -> None:
        """Call ``hook(phase, batch, trainer)`` after every phase of every step (phases: rollout,
        reward, score_steps, advantages, update, sync)."""
        self.hooks.append(hook)

    def rollout(self, step: int) -> Batch:
        """Sample the step's questions and roll each out G times on the engine."""
        idx = sample_questions(len(self.rows), self.cfg.questions_per_step, self.cfg.seed, step)
        rows = [self.rows[i] for i in idx]
        prompts = [question_prompt(self.tokenizer, r, self.template) for r in rows]
        trajs, timings = self.agent.run(prompts, [r.golden_answers for r in rows], [r.data_source for r in rows],
                                        seed=rollout_seed(self.cfg.seed, step))
        batch = Batch(step, rows, trajs)
        batch.add_metrics({"time/generation": timings.generation, "time/retrieval": timings.retrieval}, "rollout")
        return batch

    def reward(self, batch: Batch) -> None:
        """Trajectory rewards and the batch metrics; with ``drop_zero_spread_groups`` the rollouts of
        groups whose rewards are all equal are dropped here (the batch may end up empty)."""
        cfg = self.cfg
        batch.rewards = trajectory_rewards(batch.trajectories, format_penalty=cfg.format_penalty)
        metrics = batch_metrics(batch.trajectories, batch.rewards, cfg.rollout.rollouts_per_question)
        metrics["lr"] = learning_rate_at(cfg, batch.step)
        if cfg.drop_zero_spread_groups:
            keep = groups_with_spread(batch.trajectories, batch.rewards)
            metrics["groups/kept_frac"] = len(keep) / max(1, len(batch.trajectories))
            batch.trajectories = [batch.trajectories[i] for i in keep]
            batch.rewards = [batch.rewards[i] for i in keep]
        batch.add_metrics(metrics, "reward")

    def score_steps(self, batch: Batch, needs=None) -> None:
        """Run the step scorers the estimator needs (``needs`` overrides), under the current weights
        (= pi_old: no update has happened yet). Each scorer's stats are logged as ``<name>/<key>``."""
        names = sorted(self.needs if needs is None else needs)
        scorer = Scorer(self.cfg.scoring.scorer, self.model, engine=self.engine)
        if names and "trunks" in scorer.reads:  # the update's forward of the rollouts gives their keys/values
            if batch.forward is None:
                batch.forward = self.policy_forward(batch.trajectories)
            scorer.trunks = batch.forward.trunk_kv or [t.token_ids for t in batch.trajectories]
        t0 = time.perf_counter()
        with self.precision.autocast():
            scores, metrics = run_step_scorers(names, batch.trajectories, self.model, self.tokenizer, self.cfg,
                                               batch.step, scorer)
        batch.scores.update(scores)
        batch.add_metrics(metrics | {"time/scoring": time.perf_counter() - t0}, "score_steps")

    def advantages(self, batch: Batch) -> None:
        """The registered estimator's advantages from the rewards, groups, step record and scores."""
        inp = AdvantageInput.from_trajectories(batch.trajectories, batch.rewards, batch.scores)
        batch.advantages = compute_advantages(inp, self.cfg.advantage_config())
        batch.add_metrics({k if "/" in k else f"adv/{k}": v for k, v in batch.advantages.stats.items()
                           if isinstance(v, (int, float))}, f"estimator {self.cfg.advantage.method}")

    def sync(self, batch: Batch) -> None:
        """Load the updated weights into the rollout engine."""
        t0 = time.perf_counter()
        self.engine.sync_weights(self.model)
        batch.add_metrics({"time/sync": time.perf_counter() - t0}, "sync")

    def policy_logprobs(self, model, trajs: list[Trajectory], *, grad: bool, kv_out: list | None = None
                        ) -> torch.Tensor:
        """log pi(response token | prefix) for every response token: float32 [B, T] (0 past the end), the
        forward in the run's precision. ``kv_out``: collects the forward's keys/values (see ``packed_forward``)."""
        seqs = [t.token_ids for t in trajs]
        with torch.set_grad_enabled(grad), self.precision.autocast():
            lps = packed_token_logprobs(model, seqs, temperature=self.cfg.rollout.temperature,
                                        compute_from=[len(t.prompt_ids) for t in trajs],
                                        max_tokens_per_row=self.cfg.max_tokens_per_forward, kv_out=kv_out)
        return pad_to_batch(lps)

    def policy_forward(self, trajs: list[Trajectory]) -> PolicyForward:
        """The batch's forward under the current weights, keeping its keys/values (see PolicyForward).

        With one mini-batch and engine log-probs that are pi_old, this is the update's own first
        forward (with grad, held until the update; its activations dwarf the keys/values). Otherwise
        a no-grad forward whose log-probs replace the update's recomputation of pi_old (or, when the
        engine's are used, are unused: the one extra forward branch-only scoring then costs); its
        keys/values are kept only up to ``MAX_HELD_KV_BYTES``, beyond which the scorer recomputes
        them in bounded groups of rollouts."""
        t0 = time.perf_counter()
        grad = engine_logprobs_are_pi_old(self.cfg) and self.cfg.mini_batches == 1
        seqs = [t.token_ids for t in trajs]
        keep = grad or kv_bytes(self.model, sum(map(len, seqs))) <= MAX_HELD_KV_BYTES
        rows: list | None = [] if keep else None
        was_training = self.model.training
        self.model.train(grad)  # the update forwards in train mode
        try:
            logp = self.policy_logprobs(self.model, trajs, grad=grad, kv_out=rows)
        finally:
            self.model.train(was_training)
        kv = TrunkKV.from_rows(seqs, rows) if keep else None
        return PolicyForward(logp if grad else None, None if grad else logp, kv, time.perf_counter() - t0)

    def update(self, batch: Batch) -> None:
        """PPO epochs x mini-batches of AdamW steps on the span-weighted loss (time/logprobs: the
        packed policy forwards; time/update: backward, optimizer and the reference forward)."""
        t_start = time.perf_counter()
        before = batch.forward.seconds if batch.forward is not None else 0.0  # run before scoring, outside this window
        stats = self._optimize(batch.trajectories, batch.advantages, batch.step, batch.forward)
        batch.forward = None  # frees the held graph and keys/values
        t_logprobs = stats.pop("time/logprobs")  # every policy forward of the update, that one included
        stats.update({"time/logprobs": t_logprobs,
                      "time/update": time.perf_counter() - t_start - (t_logprobs - before)})
        batch.add_metrics(stats, "update")

    def _optimize(self, trajs, adv, step: int, forward: PolicyForward | None = None) -> dict:
        cfg = self.cfg
        B = len(trajs)
        T = max(1, max(len(t.response_ids) for t in trajs))
        mask = pad_to_batch([torch.tensor(t.loss_mask, dtype=torch.float32) for t in trajs], length=T)
        t_fwd = forward.seconds if forward is not None else 0.0
        first_logp = forward.logp if forward is not None else None
        engine_old = trainer_old = None  # the engine's log-probs, and the trainer's own of the same tokens (TIS)
        if engine_logprobs_are_pi_old(cfg):
            # the engine's sampling log-probs are pi_old's (weight sync is checked to 1e-4 in the tests)
            old = engine_old = pad_to_batch([torch.tensor(t.rollout_logprobs, dtype=torch.float32) for t in trajs],
                                            length=T)
            if cfg.loss.tis_cap > 0 and cfg.mini_batches > 1:  # else the first forward below is pi_old's
                if forward is not None and forward.old is not None:
                    trainer_old = torch.nn.functional.pad(forward.old, (0, T - forward.old.shape[1]))
                else:
                    t0 = time.perf_counter()
                    trainer_old = self.policy_logprobs(self.model, trajs, grad=False)
                    trainer_old = torch.nn.functional.pad(trainer_old, (0, T - trainer_old.shape[1]))
                    t_fwd += time.perf_counter() - t0
        elif forward is not None and forward.old is not None:  # recomputed under pi_old before scoring
            old = torch.nn.functional.pad(forward.old, (0, T - forward.old.shape[1]))
        else:  # vLLM reports log-probs of the unscaled, untruncated distribution: recompute under pi_old
            t0 = time.perf_counter()
            old = self.policy_logprobs(self.model, trajs, grad=False)
            old = torch.nn.functional.pad(old, (0, T - old.shape[1]))
            t_fwd += time.perf_counter() - t0
        ref = None
        if self.ref_model is not None:
            ref = self.policy_logprobs(self.ref_model, trajs, grad=False).to(self.device)
        order = list(range(B))
        stats_acc: dict[str, list[float]] = defaultdict(list)
        self.model.train()
        for _ in range(cfg.ppo_epochs):
            for part in range(cfg.mini_batches):
                sel = order[part::cfg.mini_batches]
                if not sel:
                    continue
                sub = [trajs[i] for i in sel]
                t0 = time.perf_counter()
                if first_logp is not None and len(sel) == B:  # the forward already run before scoring
                    logp, first_logp = first_logp, None
                else:
                    logp = self.policy_logprobs(self.model, sub, grad=True)
                t_fwd += time.perf_counter() - t0
                Tm = logp.shape[1]
                sub_adv = adv.select(sel) if hasattr(adv, "select") else adv
                weight = None
                if engine_old is not None and cfg.loss.tis_cap > 0:
                    if trainer_old is None:  # one mini-batch: its first forward ran under the rollout weights
                        trainer_old = torch.nn.functional.pad(logp.detach().float().cpu(), (0, T - Tm))
                        stats_acc.update(engine_mismatch_stats(trainer_old, engine_old, mask))
                    old = trainer_old
                    weight = tis_weights(trainer_old[sel, :Tm], engine_old[sel, :Tm], cfg.loss.tis_cap).to(self.device)
                loss, stats = policy_loss(logp, old[sel, :Tm].to(self.device), mask[sel, :Tm].to(self.device),
                                          sub_adv, cfg.loss, ref_logp=None if ref is None else ref[sel, :Tm],
                                          token_weight=weight)
                if self.replay is not None:
                    with self.precision.autocast():
                        replay_loss = self.replay.loss(self.model, step, len(stats_acc["loss"]))
                    loss = loss + cfg.sft_replay_coef * replay_loss
                    stats_acc["sft_replay/loss"].append(replay_loss.item())
                if not torch.isfinite(loss):
                    path = self.save_batch(trajs, step, "nan")
                    raise TrainingError(f"step {step}: loss is {loss.item()}; the batch is saved in {path}. "
                                        f"Last checkpoint: {latest_checkpoint(self.out)}")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                       cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
                self.optimizer.step()
                stats_acc["loss"].append(loss.item())
                stats_acc["grad_norm"].append(float(gnorm))
                for k, v in stats.items():
                    if isinstance(v, (int, float)) and k != "loss":
                        stats_acc[k if "/" in k else f"loss/{k}"].append(float(v))
        self.model.eval()
        out = {k: sum(v) / len(v) for k, v in stats_acc.items()}
        out["time/logprobs"] = t_fwd
        return out

    def save_batch(self, trajs, step: int, tag: str) -> Path:
        path = self.out / f"batch_step{step:06d}_{tag}.jsonl"
        lines = [json.dumps({"prompt": t.prompt_text, "response": t.response_text, "golds": t.golds,
                             "finish_reason": t.finish_reason, "answer": t.answer}) for t in trajs]
        atomic_write_text(path, "\n".join(lines) + "\n")
        return path

    # ------------------------------------------------------------------ one step
    def train_step(self, step: int) -> Batch:
        """One step: every phase in order, hooks after each; returns the filled batch record."""
        t_step = time.perf_counter()
        set_learning_rate(self.optimizer, learning_rate_at(self.cfg, step))
        threads = {"threads/generation": self.threads.choose("generation")}
        batch = self.faults.with_engine(self.rollout, step)  # a dead engine is restarted and the phase redone
        self._run_hooks("rollout", batch)
        for phase in (self.reward, self.score_steps, self.advantages, self.update, self.sync):
            if not batch.trajectories:  # every group was filtered out: nothing to learn from this batch
                break
            if phase == self.score_steps:  # scoring and the update: the step's in-process compute
                threads["threads/update"] = self.threads.choose("update")
            if phase == self.update:
                self.model.train()
            self.faults.with_engine(phase, batch)
            self._run_hooks(phase.__name__, batch)
        batch.add_metrics(threads, "threads")
        batch.metrics["time/step"] = time.perf_counter() - t_step
        return batch

    def _run_hooks(self, phase: str, batch: Batch) -> None:
        for hook in self.hooks:
            hook(phase, batch, self)

    # ------------------------------------------------------------------ the run
    def run(self) -> dict:
        """Train to ``cfg.steps``. SIGTERM (a scheduler stopping the job) ends the run after the
        current step, with a checkpoint of that step; Ctrl-C stops at once and names the last one."""
        import signal
        import threading

        cfg = self.cfg
        last_saved = self.start_step
        step = self.start_step
        train_seconds = self._logged_train_seconds()
        stop = {"signal": None}
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.update(signal="SIGTERM"))
        try:
            with TrainProgress(cfg.steps, initial=self.start_step, description=f"train[{cfg.advantage.method}]") as bar:
                self.threads.log = bar.print
                if cfg.eval_every > 0 and self.start_step == 0:
                    self.logger.log(0, {"time/train_elapsed": 0.0, **self.faults.with_engine(self.periodic_eval, 0, bar)})
                for step in range(self.start_step + 1, cfg.steps + 1):
                    self.faults.step_started(step)
                    batch = self.train_step(step)
                    batch.add_metrics(self.faults.step_metrics(), "faults")
                    train_seconds += batch.metrics["time/step"]
                    batch.metrics["time/train_elapsed"] = train_seconds
                    if cfg.eval_every > 0 and (step % cfg.eval_every == 0 or step == cfg.steps):
                        batch.metrics.update(self.faults.with_engine(self.periodic_eval, step, bar))
                    if step % cfg.log_every == 0 or step == cfg.steps or stop["signal"]:
                        self.logger.log(step, batch.metrics)
                    bar.update(step, batch.metrics)
                    if step % cfg.checkpoint_every == 0 or step == cfg.steps or stop["signal"]:
                        self.checkpoint(step)
                        last_saved = step
                    if stop["signal"]:
                        print(f"stopped by {stop['signal']} after step {step}; checkpoint saved: "
                              f"{self.out / 'checkpoints'}; continue with --resume {self.out}", flush=True)
                        break
        except KeyboardInterrupt:
            print(f"interrupted at step {step}; last checkpoint: step {last_saved} in {self.out / 'checkpoints'}")
            raise
        except FATAL as e:  # checkpoint what is safe, then one line with how to resume
            raise self.faults.stop_run(step, e, last_saved) from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            self.logger.close()
        return {"steps": step, "out": str(self.out), "stopped_by": stop["signal"]}

    def _logged_train_seconds(self) -> float:
        """Training seconds (steps only, evaluations excluded) logged up to the step resumed from."""
        from igsearch.train.logging import read_metrics

        rows = [r for r in read_metrics(self.out) if r.get("step", 0) <= self.start_step]
        return float(rows[-1].get("time/train_elapsed", 0.0)) if rows and self.start_step else 0.0

    def periodic_eval(self, step: int, bar=None) -> dict:
        """Greedy eval (and the sampled probe when ``probe_questions`` > 0) of the current weights.

        Writes every per-question record to ``evals/step_NNNNNN.json``; returns the metrics to log:
        ``eval/em/<data_source>`` (greedy), ``probe/em/<data_source>`` and ``probe/all_fail_frac``."""
        cfg = self.cfg
        t0 = time.perf_counter()
        greedy = self.evaluate()
        metrics = {f"eval/em/{name}": m["em"] for name, m in greedy.metrics.items()}
        record = {"step": step, "greedy": greedy.to_dict()}
        if cfg.probe_questions > 0:
            probe = self.probe()
            metrics.update({f"probe/em/{name}": m["em"] for name, m in probe.metrics.items()})
            metrics["probe/all_fail_frac"] = all_fail_fraction(probe.records)
            record["probe"] = probe.to_dict()
        metrics["time/eval"] = time.perf_counter() - t0
        atomic_write_json(self.out / "evals" / f"step_{step:06d}.json", record)
        if bar is not None:
            bar.print(f"step {step}: greedy EM {metrics['eval/em/overall']:.3f}"
                      + (f", probe EM {metrics['probe/em/overall']:.3f}" if "probe/em/overall" in metrics else ""))
        return metrics

    def probe(self, rows: list[QARow] | None = None):
        """Sampled EM on a fixed probe set: ``probe_questions`` eval questions x ``rollouts_per_question``
        rollouts at the training temperature, with the same seeds at every call."""
        rows = rows if rows is not None else load_qa(self.paths["eval"], limit=self.cfg.probe_questions)
        return evaluate(self.engine, self.retriever, self.tokenizer, rows, template=self.template,
                        config=self._eval_rollout_config(), samples=self.cfg.rollout.rollouts_per_question,
                        temperature=self.cfg.rollout.temperature, seed=self.cfg.seed * 7 + 12345)

    def _eval_rollout_config(self) -> RolloutConfig:
        """The run's rollout settings; ``evaluate`` sets the group size and temperature it needs."""
        return self.cfg.rollout

    def checkpoint(self, step: int, rng: dict | None = None) -> Path:
        try:
            return save_checkpoint(self.out, step, self.model, self.optimizer, self.cfg, tokenizer=self.tokenizer,
                                   keep=self.cfg.keep_checkpoints, rng=rng,
                                   rollout_settings={**asdict(self.cfg.rollout), "template": self.cfg.template})
        except (OSError, RuntimeError) as e:  # a full disk surfaces as OSError or as torch's RuntimeError
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise TrainingError(f"step {step}: could not write its checkpoint ({first}); the previous checkpoint "
                                f"{latest_checkpoint(self.out)} is intact") from None

    def evaluate(self, rows: list[QARow] | None = None, limit: int | None = None):
        """Greedy EM/F1 on the eval split with the current weights (already synced into the engine)."""
        rows = rows if rows is not None else load_qa(self.paths["eval"], limit=limit or self.cfg.eval_questions)
        return evaluate(self.engine, self.retriever, self.tokenizer, rows, template=self.template,
                        config=self._eval_rollout_config())

    def close(self) -> None:
        if hasattr(self.engine, "close"):
            self.engine.close()


def record_precision(out: Path, precision) -> None:
    """Say once what precision the run uses and why, and keep it in the run folder (``precision.json``)."""
    from igsearch.machine import describe_cpu

    print(precision.describe(), flush=True)
    atomic_write_json(out / "precision.json", {**precision.to_dict(), "cpu": describe_cpu(),
                                               "torch": torch.__version__})


def tis_weights(trainer_old: torch.Tensor, engine_old: torch.Tensor, cap: float) -> torch.Tensor:
    """Truncated importance weights min(pi_old / pi_engine, cap) per token ([B, T] log-probs in, detached)."""
    return torch.exp(trainer_old - engine_old).clamp(max=cap).detach()


def engine_mismatch_stats(trainer_old: torch.Tensor, engine_old: torch.Tensor, mask: torch.Tensor) -> dict:
    """How far the engine's log-probs of the sampled tokens are from the trainer's under the same weights
    (mask-1 tokens): mean and max absolute difference, and the k3 estimate of KL(engine || trainer)."""
    m = mask > 0
    if not bool(m.any()):
        return {}
    d = (trainer_old - engine_old)[m]
    return {"rollout/engine_logp_abs_diff": [float(d.abs().mean())], "rollout/engine_logp_max_diff": [float(d.abs().max())],
            "rollout/engine_kl": [float((torch.exp(d) - d - 1).mean())]}


def engine_logprobs_are_pi_old(cfg: TrainConfig) -> bool:
    """True when the engine's sampling log-probs equal pi_old's: temperature 1 and no nucleus cut.

    vLLM reports log-probs of the raw distribution; with temperature != 1 or top_p < 1 the tokens
    were drawn from another distribution, so the trainer recomputes pi_old under the rollout weights
    (the same forward the update uses, without grad)."""
    return cfg.rollout.temperature == 1.0 and cfg.rollout.top_p == 1.0


def learning_rate_at(cfg: TrainConfig, step: int) -> float:
    """The learning rate of training step ``step`` (1-based): linear warm-up over ``warmup_steps``,
    then constant. A pure function of the step, so resuming needs no scheduler state."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    return cfg.lr


def build_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The policy optimizer named by ``cfg.optimizer`` (adamw | sgd)."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.sgd_momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(cfg.adam_beta1, cfg.adam_beta2),
                             eps=cfg.adam_eps)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def groups_with_spread(trajs: list[Trajectory], rewards: list[float]) -> list[int]:
    """Indices of the rollouts whose group (same question) has rewards that are not all equal."""
    by_group: dict[int, list[float]] = defaultdict(list)
    for t, r in zip(trajs, rewards):
        by_group[t.question_index].append(r)
    spread = {g for g, rs in by_group.items() if max(rs) > min(rs)}
    return [i for i, t in enumerate(trajs) if t.question_index in spread]


def all_fail_fraction(records: list[dict]) -> float:
    """Share of questions whose every sampled rollout failed (EM 0), from per-rollout eval records."""
    best: dict[str, float] = defaultdict(float)
    for r in records:
        best[str(r["id"])] = max(best[str(r["id"])], r["em"])
    return sum(v == 0 for v in best.values()) / max(1, len(best))


def batch_metrics(trajs: list[Trajectory], rewards: list[float], group_size: int) -> dict:
    """Reward, EM, share of all-fail groups, searches, lengths and finish reasons of one batch."""
    ems = [exact_match(t.answer, t.golds) if t.answer is not None else 0.0 for t in trajs]
    groups: dict[int, list[float]] = defaultdict(list)
    for t, e in zip(trajs, ems):
        groups[t.question_index].append(e)
    n = max(1, len(trajs))
    out = {
        "reward/mean": sum(rewards) / n,
        "em/mean": sum(ems) / n,
        "groups/all_fail_frac": sum(all(e == 0 for e in g) for g in groups.values()) / max(1, len(groups)),
        "rollout/searches": sum(len(t.steps) for t in trajs) / n,
        "rollout/response_tokens": sum(len(t.response_ids) for t in trajs) / n,
        "rollout/malformed_frac": sum(t.malformed for t in trajs) / n,
        "rollout/answered_frac": sum(t.finish_reason == "answer" for t in trajs) / n,
    }
    by_source: dict[str, list[float]] = defaultdict(list)
    for t, e in zip(trajs, ems):
        by_source[t.data_source or "all"].append(e)
    for src, vals in by_source.items():
        out[f"em/{src}"] = sum(vals) / len(vals)
    return out


def train(cfg: TrainConfig, out_dir, *, resume=None, overwrite: bool = False) -> dict:
    """Run (or resume) training as configured; writes checkpoints, metrics and a final eval."""
    trainer = Trainer(cfg, out_dir, resume=resume, overwrite=overwrite)
    try:
        summary = trainer.run()
        if cfg.eval_questions > 0 and not summary.get("stopped_by"):
            try:
                res = trainer.faults.with_engine(trainer.evaluate)
            except FATAL as e:
                raise TrainingError(f"the run's {cfg.steps} steps are saved ({latest_checkpoint(out_dir)}), but its "
                                    f"final evaluation failed: {str(e).splitlines()[0]}") from None
            atomic_write_json(Path(out_dir) / "eval.json", {"step": cfg.steps, **res.to_dict()})
            summary["eval"] = res.metrics
        return summary
    finally:
        trainer.close()
