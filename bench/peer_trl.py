"""igsearch's training step against TRL's GRPOTrainer (trl 1.16.0) on the same model, questions and settings.

Arms (each a trainer of its own, built once; its start-up time is reported on its own line):

- ``igsearch-grpo`` / ``igsearch-ig``: our ``Trainer`` (vLLM engine on the CPU, packed forward, fused
  log-prob gather), GRPO and IG-Search.
- ``trl-hf``: TRL's ``GRPOTrainer`` as a TRL user gets it for a multi-turn search agent: our agent loop
  as its ``rollout_func`` on transformers ``generate`` (TRL has no multi-turn search loop of its own),
  documents masked by ``env_mask``, the EM reward.
- ``trl-vllm``: the same, with our vLLM engine inside ``rollout_func`` (synced after every step): the same
  engine on both sides, so the difference is the trainer.
- ``trl-ig``: TRL + IG-Search through ``igsearch.integrations.trl`` (vLLM engine).
- Replay (``--replay``, on by default): ``igsearch-replay`` and ``trl-replay`` train on the rollouts the
  ``igsearch-grpo`` arm recorded, step for step, so the update is compared on identical tokens.

Kept equal: the model folder (fp32), the questions of every step (TRL's dataset is laid out in the
order our trainer samples them, unshuffled), G, max tokens, temperature 1, AdamW with a constant lr
(``warmup_steps=0``), ``beta=0`` (no reference model), one optimizer step per batch, and the loss
aggregation (``token-mean`` = TRL's ``dapo``: sum over the batch's policy tokens / their number).
TRL's ``train()`` runs in a thread that waits at every step boundary (a callback), so all arms step in
one process, interleaved: round r runs one step of every arm in turn (ABAB...), ``--rounds`` times.

Per step and arm: seconds, split into rollout (generation + retrieval), scoring (step IG), old
log-probs and bookkeeping (TRL's ``_generate_and_score_completions`` less the rollout and scoring), update
(forward, backward, optimizer) and sync (weights into the vLLM engine); model tokens per second (prompt +
response tokens of the batch), trained tokens per second (policy-written tokens), the padding share of
the training forward (TRL pads prompts and completions to the batch's longest; our packed forward pads
nothing), and the peak RSS of the process tree (this process and its engines, sampled every 0.2 s).

    python bench/peer_trl.py --quick            # CPU, about 8 minutes on 2 cores
    python bench/peer_trl.py --preset gpu       # Qwen2.5-0.5B shape on a GPU (bench/gpu_suite.sh)

Writes bench/results/peer_trl-<device>.json and .png; the last lines are the summary:
``igsearch_grpo_vs_trl_hf=`` (TRL-hf s/step over igsearch GRPO's), ``igsearch_grpo_vs_trl_same_engine=``
(TRL-vllm over igsearch GRPO), ``igsearch_ig_vs_trl_grpo=`` (TRL-hf GRPO over igsearch IG-Search) and,
with replay, ``update_igsearch_vs_trl_replay=``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

#: Qwen2.5-0.5B's shape (its config.json), built with random weights for the gpu preset (no download)
QWEN25_05B_SHAPE = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                        num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1000000.0, rms_norm_eps=1e-6,
                        max_position_embeddings=32768)
PHASES = ("rollout", "scoring", "old_logprobs", "update", "sync")
ARMS = ("igsearch-grpo", "igsearch-ig", "trl-hf", "trl-vllm", "trl-ig")
#: (trainer, method, engine) of every arm
ARM_SPEC = {"igsearch-grpo": ("igsearch", "grpo", "vllm"), "igsearch-ig": ("igsearch", "ig", "vllm"),
            "trl-hf": ("trl", "grpo", "hf"), "trl-vllm": ("trl", "grpo", "vllm"), "trl-ig": ("trl", "ig", "vllm"),
            "igsearch-replay": ("igsearch", "grpo", "replay"), "trl-replay": ("trl", "grpo", "replay")}


# ----------------------------------------------------------------------------- memory


class PeakRSS:
    """Peak resident memory of this process tree (the trainers and their engine processes), sampled."""

    def __init__(self, every_s: float = 0.2):
        import psutil

        self.me, self.psutil, self.every = psutil.Process(), psutil, every_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        total = 0
        for p in [self.me, *self.me.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except (self.psutil.NoSuchProcess, self.psutil.AccessDenied):
                pass
        self.peak = max(self.peak, total)
        return total

    def _run(self):
        while not self._stop.wait(self.every):
            self.sample()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# ----------------------------------------------------------------------------- batches


def batch_tokens(trajs) -> dict:
    """Tokens of one batch: model tokens (prompt + response), trained (policy-written) and TRL's padded
    training width (B x (longest prompt + longest completion))."""
    model = sum(len(t.prompt_ids) + len(t.response_ids) for t in trajs)
    trained = sum(sum(t.loss_mask) for t in trajs)
    padded = len(trajs) * (max(len(t.prompt_ids) for t in trajs) + max(len(t.response_ids) for t in trajs))
    return {"model_tokens": model, "trained_tokens": trained, "trl_padded_tokens": padded}


# ----------------------------------------------------------------------------- igsearch arms


class IgsearchArm:
    """Our Trainer, stepped by ``step()``; ``replay``: trains on recorded rollouts instead of generating."""

    def __init__(self, name: str, cfg, out: Path, replay: list | None = None):
        from igsearch.train.trainer import Trainer

        self.name, self.replay = name, replay
        t0 = time.perf_counter()
        self.trainer = Trainer(cfg, out, overwrite=True)
        self.startup_s = time.perf_counter() - t0
        self.k = 0
        self.recorded: list = []

    def step(self) -> dict:
        from igsearch.train.trainer import Batch

        self.k += 1
        tr = self.trainer
        if self.replay is None:
            batch = tr.train_step(self.k)
            self.recorded.append((batch.rows, batch.trajectories))
            m = batch.metrics
            rollout = m["time/generation"] + m["time/retrieval"]
        else:  # the recorded rollouts of step k, then every phase after the rollout
            t0 = time.perf_counter()
            rows, trajs = self.replay[(self.k - 1) % len(self.replay)]
            batch = Batch(self.k, rows, [t for t in trajs])
            for phase in (tr.reward, tr.score_steps, tr.advantages, tr.update):
                if phase == tr.update:
                    tr.model.train()
                phase(batch)
            m = batch.metrics
            m["time/step"] = time.perf_counter() - t0
            m["time/sync"] = 0.0
            rollout = 0.0
        scoring, sync = m.get("time/scoring", 0.0), m.get("time/sync", 0.0)
        # the update: the policy forward (for ig-trunk run before scoring, its keys/values reused), loss,
        # backward and optimizer; rewards and advantages (milliseconds) are in it too
        phases = {"rollout": rollout, "scoring": scoring, "old_logprobs": 0.0,
                  "update": max(0.0, m["time/step"] - rollout - scoring - sync), "sync": sync}
        return {"step_s": m["time/step"], "phases": phases, "padding_share": 0.0,
                **batch_tokens(batch.trajectories)}

    def close(self):
        self.trainer.close()


# ----------------------------------------------------------------------------- TRL arms


class TrlArm:
    """TRL's ``train()`` in a thread that stops at every step boundary until ``step()`` lets it go on."""

    def __init__(self, name: str, cfg, out: Path, method: str, engine_kind: str, steps: int, rows,
                 replay: list | None = None):
        from transformers import TrainerCallback

        from igsearch.data.prompts import get_template
        from igsearch.integrations.trl import ExactMatchReward, SearchRollout
        from igsearch.integrations.trl.build import grpo_config, our_optimizer, qa_dataset
        from igsearch.integrations.trl.trainer import IGSearchGRPOTrainer
        from igsearch.policy.load import load_policy
        from igsearch.train.assembly import engine_from_config, make_retriever, resolve_paths
        from trl import GRPOTrainer

        self.name, self.steps = name, steps
        t0 = time.perf_counter()
        paths = resolve_paths(cfg)
        model, tok = load_policy(paths["model"], dtype=cfg.dtype, device="cpu" if cfg.device == "cpu" else cfg.device,
                                 attn_implementation=cfg.attn_implementation)
        retriever = make_retriever(cfg, paths)
        engine = engine_from_config(cfg, paths["model"], model, tok) if engine_kind == "vllm" else None
        template = get_template(cfg.template)
        args = grpo_config(cfg, out, max_steps=steps, shuffle_dataset=False, disable_tqdm=True, logging_steps=10**6)
        dataset = qa_dataset(rows, tok, template)  # the questions of our trainer's steps 1..steps, in order
        arm = self

        class Gate(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                arm._ready.set()
                arm._go.acquire()
                arm._t_begin = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                arm._step_s = time.perf_counter() - arm._t_begin
                arm._done.release()

        if method == "grpo":  # plain TRL: what a TRL user gets with our agent as its rollout_func
            rollout = SearchRollout(retriever, tok, cfg.rollout, template=template, engine=engine, seed=cfg.seed)
            self.trainer = GRPOTrainer(model=model, reward_funcs=[ExactMatchReward(cfg.format_penalty)], args=args,
                                       train_dataset=dataset, processing_class=tok, callbacks=[Gate()],
                                       optimizers=our_optimizer(model, cfg), rollout_func=rollout)
        else:
            self.trainer = IGSearchGRPOTrainer(model, igsearch_config=cfg, retriever=retriever, args=args,
                                               train_dataset=dataset, engine=engine, processing_class=tok,
                                               callbacks=[Gate()], optimizers=our_optimizer(model, cfg))
            rollout = self.trainer.igsearch_rollout
        self.rollout = rollout
        if replay is not None:
            rollout.__class__ = _replaying(type(rollout))
            rollout.recorded = replay
        self._wrap_timers(engine)
        self._go, self._done, self._ready = threading.Semaphore(0), threading.Semaphore(0), threading.Event()
        self._error: BaseException | None = None
        self.k = 0
        self._thread = threading.Thread(target=self._train, daemon=True)
        self._thread.start()
        while not self._ready.wait(1.0):  # train()'s own set-up, up to the first step's gate
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"{name}: TRL's train() stopped before its first step: {self._error!r}")
        self.startup_s = time.perf_counter() - t0

    def _wrap_timers(self, engine):
        """Accumulate into ``self.t`` the seconds of TRL's generate-and-score, of our rollout function
        (which syncs the engine first) and of the engine's weight sync."""
        self.t = {"gen_score": 0.0, "rollout": 0.0, "sync": 0.0}
        tr = self.trainer
        tr._generate_and_score_completions = _timed(tr._generate_and_score_completions, self.t, "gen_score")
        rollout_call = _timed(self.rollout.__call__, self.t, "rollout")  # TRL calls the object: wrap its class

        class Timed(type(self.rollout)):
            def __call__(self, prompts, trainer):
                return rollout_call(prompts, trainer)

        self.rollout.__class__ = Timed
        if engine is not None:
            engine.sync_weights = _timed(engine.sync_weights, self.t, "sync")

    def _train(self):
        try:
            self.trainer.train()
        except BaseException as e:  # noqa: BLE001  (reported by step())
            self._error = e
            self._ready.set()
            self._done.release()

    def step(self) -> dict:
        for k in self.t:
            self.t[k] = 0.0
        t0 = time.perf_counter()
        self._go.release()
        self._done.acquire()
        if self._error is not None:
            raise RuntimeError(f"{self.name}: TRL's train() failed: {self._error!r}") from self._error
        self.k += 1
        if self.k == self.steps:  # train() ends after its last step: let it, before another arm is timed
            self._thread.join()
        wall = time.perf_counter() - t0
        last = self.rollout.last
        trajs = last.trajectories
        scoring = 0.0
        ig_last = getattr(self.trainer, "igsearch_last", None)
        if ig_last is not None:
            scoring = ig_last.metrics.get("time/scoring", 0.0)
        rollout = self.t["rollout"] - self.t["sync"]
        phases = {"rollout": rollout, "scoring": scoring,
                  "old_logprobs": max(0.0, self.t["gen_score"] - self.t["rollout"] - scoring),
                  "update": max(0.0, self._step_s - self.t["gen_score"]), "sync": self.t["sync"]}
        tokens = batch_tokens(trajs)
        real = tokens["model_tokens"]
        return {"step_s": self._step_s, "wall_s": wall, "phases": phases,
                "padding_share": 1.0 - real / tokens["trl_padded_tokens"], **tokens}

    def close(self):
        while self._thread.is_alive() and self._error is None:  # let train() finish its remaining steps
            self._go.release()
            self._done.acquire(timeout=600)
        self._thread.join(timeout=60)
        engine = self.rollout.external_engine
        if engine is not None and hasattr(engine, "close"):
            engine.close()


def _timed(fn, totals: dict, key: str):
    """``fn`` that adds its wall seconds to ``totals[key]`` at every call."""

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - t0

    return wrapper


def _replaying(cls):
    """``cls`` (a SearchRollout class) whose call returns the recorded rollouts of the step instead of
    generating (``self.recorded``: [(rows, trajectories)] per step)."""
    from igsearch.integrations.trl.rollout import RolloutRecord, trl_fields
    from igsearch.rollout.agent import RolloutTimings

    class Replaying(cls):
        def __call__(self, prompts, trainer):
            step = int(trainer.state.global_step)
            _, trajs = self.recorded[step % len(self.recorded)]
            if len(trajs) != len(prompts):
                raise RuntimeError(f"replay: {len(trajs)} recorded rollouts for {len(prompts)} prompts")
            self.last = RolloutRecord(list(trajs), RolloutTimings(), step, 0)
            return trl_fields(trajs)

    return Replaying


# ----------------------------------------------------------------------------- report


def summarize(records: dict[str, list[dict]]) -> dict:
    out = {}
    for arm, recs in records.items():
        steps = [r["step_s"] for r in recs]
        out[arm] = {
            "steps": len(recs),
            "step_s_median": statistics.median(steps), "step_s_min": min(steps), "step_s_max": max(steps),
            "phases_median": {p: statistics.median(r["phases"][p] for r in recs) for p in PHASES},
            "model_tokens_per_s": statistics.median(r["model_tokens"] / r["step_s"] for r in recs),
            "trained_tokens_per_s": statistics.median(r["trained_tokens"] / r["step_s"] for r in recs),
            "padding_share": statistics.median(r["padding_share"] for r in recs),
        }
    return out


def ratios(summary: dict) -> dict:
    s = {a: v["step_s_median"] for a, v in summary.items()}
    out = {}
    if "trl-hf" in s and "igsearch-grpo" in s:
        out["igsearch_grpo_vs_trl_hf"] = s["trl-hf"] / s["igsearch-grpo"]
    if "trl-vllm" in s and "igsearch-grpo" in s:
        out["igsearch_grpo_vs_trl_same_engine"] = s["trl-vllm"] / s["igsearch-grpo"]
    if "trl-hf" in s and "igsearch-ig" in s:
        out["igsearch_ig_vs_trl_grpo"] = s["trl-hf"] / s["igsearch-ig"]
    if "trl-vllm" in s and "igsearch-ig" in s:
        out["igsearch_ig_vs_trl_grpo_same_engine"] = s["trl-vllm"] / s["igsearch-ig"]
    if "trl-ig" in s and "igsearch-ig" in s:
        out["igsearch_ig_vs_trl_ig"] = s["trl-ig"] / s["igsearch-ig"]
    if "trl-replay" in summary and "igsearch-replay" in summary:
        out["update_igsearch_vs_trl_replay"] = (summary["trl-replay"]["phases_median"]["update"]
                                                / summary["igsearch-replay"]["phases_median"]["update"])
    return out


def plot(summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(summary)
    fig, ax = plt.subplots(figsize=(9, 4))
    bottom = [0.0] * len(arms)
    for phase in PHASES:
        vals = [summary[a]["phases_median"][phase] for a in arms]
        ax.bar(arms, vals, bottom=bottom, label=phase)
        bottom = [b + v for b, v in zip(bottom, vals)]
    for i, a in enumerate(arms):
        lo, hi, mid = summary[a]["step_s_min"], summary[a]["step_s_max"], summary[a]["step_s_median"]
        ax.errorbar(i + 0.3, mid, yerr=[[mid - lo], [hi - mid]], fmt="k.", capsize=3)
    ax.set_ylabel("seconds per step (median; bar: min-max)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    plt.xticks(rotation=15, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- main


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=["quick", "gpu"], default="quick")
    ap.add_argument("--quick", action="store_true", help="same as --preset quick")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds (one step of every arm each; default 3)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed first rounds (default 1)")
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {', '.join(ARMS)}")
    ap.add_argument("--no-replay", action="store_true", help="skip the replay arms")
    ap.add_argument("--questions", type=int, default=None, help="questions per step (default 8 quick, 32 gpu)")
    ap.add_argument("--entities", type=int, default=None)
    ap.add_argument("--sft-steps", type=int, default=None)
    ap.add_argument("--sft-lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: arms share the cores "
                                                           "with their engines)")
    ap.add_argument("--work-dir", default=None)
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/peer_trl-<device>.json)")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="training config overrides (every arm)")
    args = ap.parse_args(argv)
    if args.quick:
        args.preset = "quick"
    gpu = args.preset == "gpu"
    args.rounds = args.rounds if args.rounds is not None else 3
    args.questions = args.questions or (32 if gpu else 8)
    args.entities = args.entities if args.entities is not None else (None if gpu else 300)
    args.sft_steps = args.sft_steps if args.sft_steps is not None else (60 if gpu else 40)
    # step_overhead's setups read these names
    args.steps, args.overrides = args.rounds, list(args.overrides)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from igsearch.machine import cpu_avx512_flags
    from igsearch.measure import device_name, work_root
    from step_overhead import setup_quick

    if args.preset == "gpu" and not torch.cuda.is_available():
        print("peer_trl: --preset gpu needs a CUDA GPU; on a CPU run `python bench/peer_trl.py --quick`.",
              file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    from igsearch.data.loaders import load_qa
    from igsearch.train.config import TrainConfig, load_config
    from igsearch.train.trainer import sample_questions

    root, tmp = work_root(args.work_dir, "peer_trl-")
    t0 = time.perf_counter()
    if args.preset == "gpu":
        from igsearch.train.scratch import build_random_policy, short_sft
        from igsearch.world import build_world

        world = root / "world"
        build_world(world, seed=args.seed, n_entities=args.entities)
        model = build_random_policy(world, root / "policy-init", shape=QWEN25_05B_SHAPE, seed=args.seed,
                                    dtype=torch.float32)
        model = short_sft(model, world, root / "sft", steps=args.sft_steps, lr=args.sft_lr, seed=args.seed,
                          dtype=torch.float32, tag="peer_trl")
        base = load_config(ROOT / "configs" / "qwen2.5-3b-gpu.yaml", [
            f"model_path={model}", f"world_dir={world}", "train_data=none", "eval_data=none", "dtype=float32",
            "retrieval.retriever=bm25", "retrieval.retriever_url=none", "gradient_checkpointing=false",
            "generation.vllm_gpu_memory_utilization=0.12"])  # four engines share the card
    else:
        base = setup_quick(args, root)
    print(f"[peer_trl] setup (world, policy, short SFT) in {time.perf_counter() - t0:.0f}s", flush=True)
    total = args.warmup + args.rounds

    def config(method: str, engine: str):
        """Every arm's settings: the preset's, equalised (module docstring)."""
        cfg = TrainConfig.from_dict(base.to_dict())
        cfg.advantage.method, cfg.generation.engine = method, "hf" if engine in ("hf", "replay") else "vllm"
        cfg.warmup_steps, cfg.loss.kl_coef, cfg.loss.loss_agg = 0, 0.0, "token-mean"
        cfg.mini_batches, cfg.ppo_epochs, cfg.sft_replay_coef = 1, 1, 0.0
        cfg.questions_per_step, cfg.steps, cfg.eval_questions, cfg.eval_every = args.questions, total, 0, 0
        cfg.tensorboard, cfg.checkpoint_every, cfg.threads = False, 10 * total, str(args.threads)
        return cfg.validate("peer_trl")

    probe = config("grpo", "vllm")
    from igsearch.train.assembly import resolve_paths

    all_rows = load_qa(resolve_paths(probe)["train"])
    step_rows = [all_rows[i] for s in range(1, total + 1)
                 for i in sample_questions(len(all_rows), probe.questions_per_step, probe.seed, s)]
    arm_names = [a for a in args.arms.split(",") if a]
    unknown = sorted(set(arm_names) - set(ARMS))
    if unknown:
        raise SystemExit(f"peer_trl: unknown arm(s) {unknown}; known: {list(ARMS)}")

    records: dict[str, list[dict]] = {a: [] for a in arm_names}
    startup: dict[str, float] = {}
    arms: dict = {}
    with PeakRSS() as rss:
        peaks: dict[str, int] = {}
        try:
            for name in arm_names:
                kind, method, engine = ARM_SPEC[name]
                cfg = config(method, engine)
                if kind == "igsearch":
                    arms[name] = IgsearchArm(name, cfg, root / name)
                else:
                    arms[name] = TrlArm(name, cfg, root / name, method, engine, total, step_rows)
                startup[name] = arms[name].startup_s
                print(f"[peer_trl] {name}: started in {startup[name]:.1f}s", flush=True)
            for r in range(total):
                for name in arm_names:
                    rec = arms[name].step()
                    peaks[name] = max(peaks.get(name, 0), rss.sample())
                    if r >= args.warmup:
                        records[name].append(rec)
                    p = rec["phases"]
                    print(f"[peer_trl] round {r + 1}/{total}{' (warm-up)' if r < args.warmup else ''} {name}: "
                          f"{rec['step_s']:.2f}s (rollout {p['rollout']:.2f}, scoring {p['scoring']:.2f}, old log-probs "
                          f"{p['old_logprobs']:.2f}, update {p['update']:.2f}, sync {p['sync']:.2f}), "
                          f"{rec['model_tokens']} model tokens", flush=True)
            if not args.no_replay and "igsearch-grpo" in arms:
                recorded = arms["igsearch-grpo"].recorded
                for name in ("igsearch-replay", "trl-replay"):
                    kind, method, engine = ARM_SPEC[name]
                    cfg = config(method, engine)  # engine hf: nothing is generated, no vLLM to start
                    arm = (IgsearchArm(name, cfg, root / name, replay=recorded) if kind == "igsearch"
                           else TrlArm(name, cfg, root / name, method, engine, total, step_rows, replay=recorded))
                    arms[name], startup[name], records[name] = arm, arm.startup_s, []
                for r in range(total):
                    for name in ("igsearch-replay", "trl-replay"):
                        rec = arms[name].step()
                        if r >= args.warmup:
                            records[name].append(rec)
                        print(f"[peer_trl] replay round {r + 1}/{total} {name}: {rec['step_s']:.2f}s "
                              f"(update {rec['phases']['update']:.2f})", flush=True)
        finally:
            for arm in arms.values():
                arm.close()
    summary = summarize(records)
    result_ratios = ratios(summary)
    dev = device_name("cuda" if args.preset == "gpu" else "cpu")
    result = {
        "benchmark": "peer_trl", "time": datetime.now(timezone.utc).isoformat(), "device": dev,
        "avx512": cpu_avx512_flags(), "threads": args.threads, "preset": args.preset,
        "torch": torch.__version__, "trl": __import__("trl").__version__,
        "rounds": args.rounds, "warmup_rounds": args.warmup, "questions_per_step": args.questions,
        "rollouts_per_question": probe.rollout.rollouts_per_question, "startup_s": startup,
        "peak_rss_mb_after_arm": {k: v / 2**20 for k, v in peaks.items()}, "peak_rss_mb": rss.peak / 2**20,
        "summary": summary, "ratios": result_ratios, "records": records,
        "notes": "one process, arms interleaved per round; TRL's train() runs in a thread gated at step boundaries; "
                 "igsearch arms use the vLLM engine; TRL arms: GRPOTrainer with our agent as rollout_func",
    }
    slug = dev.lower().replace("(", "").replace(")", "")
    slug = "".join(c if c.isalnum() else "-" for c in slug).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    out = Path(args.out) if args.out else BENCH / "results" / f"peer_trl-{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    plot(summary, out.with_suffix(".png"), f"igsearch vs TRL GRPOTrainer, {dev}, {args.questions} questions x "
                                           f"{probe.rollout.rollouts_per_question} rollouts per step")
    flags = ", ".join(result["avx512"]) or "none"
    print(f"\n{dev}, AVX-512: {flags}; {args.rounds} timed rounds (+{args.warmup} warm-up), "
          f"{args.questions} questions x {probe.rollout.rollouts_per_question} rollouts. JSON: {out}\n")
    print("| arm | s/step median [min, max] | rollout | scoring | old log-probs + bookkeeping | update | sync | "
          "model tok/s | trained tok/s | padding |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for a, v in summary.items():
        p = v["phases_median"]
        print(f"| {a} | {v['step_s_median']:.2f} [{v['step_s_min']:.2f}, {v['step_s_max']:.2f}] | {p['rollout']:.2f} | "
              f"{p['scoring']:.2f} | {p['old_logprobs']:.2f} | {p['update']:.2f} | {p['sync']:.2f} | "
              f"{v['model_tokens_per_s']:.0f} | {v['trained_tokens_per_s']:.0f} | {v['padding_share']:.0%} |")
    print("start-up s: " + ", ".join(f"{a} {s:.1f}" for a, s in startup.items()))
    print(f"peak RSS of the process tree: {result['peak_rss_mb']:.0f} MB")
    print(" ".join(f"{k}={v:.2f}" for k, v in result_ratios.items()))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
