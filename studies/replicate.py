"""Replication on the synthetic world: every registered method (GRPO, IG-Search, ...) from one warm start, several seeds.

From ONE warm start (``igsearch.warmstart``: the tiny policy, SFT on the world's warm-up split imitating
``--demonstrator``, default ``lookalike``, the demo's settings), each method is trained for ``--steps``
steps on the world's train split with seeds ``--seeds`` (the demo's preset for that demonstrator otherwise,
``igsearch.demo.demo_preset``: configs/demo.yaml); a method and a seed see the same questions per step
(question sampling is a function of (seed, step)). The trainer evaluates greedily on ``--test-questions``
test questions before training and every ``--eval-every`` steps and keeps every per-question result
(``<run>/evals/step_NNNNNN.json``). This script trains and records the runs; studies/replication_report.py
aggregates them and writes the report. Reported:

- test EM per hop count after training, mean and spread (sample std, min..max) over seeds;
- paired comparisons on the same questions (per-question EM averaged over seeds, questions
  resampled: 95% bootstrap interval; McNemar on single seeds): IG-Search vs GRPO overall and per hop
  count, and every method vs the warm start; the verdict on the paper's claims by the rule stated in
  the report;
- wall-clock to quality: EM against training seconds (rollouts, rewards, IG scoring, update, weight
  sync; evaluations and the benchmark's own probe excluded) and steps, and the time each method takes
  to reach the best EM GRPO reaches;
- all-fail groups: the share of groups in which every rollout failed, per step (trainer's
  ``groups/all_fail_frac``), and the gradient those groups give. The trainer logs one ``grad_norm``
  per optimizer step, not per group, so the benchmark measures it: before each update (by wrapping
  ``Trainer.update`` of the instance) it evaluates the same PPO loss on the all-fail groups' rollouts
  only, back-propagates it and records the unclipped global L2 norm; the gradients are then cleared
  and the normal update runs. GRPO's advantages on an all-fail group are exactly 0, so its norm is 0
  (with kl_coef 0): measured, not assumed. Its time is subtracted from the wall-clock figures.
- search credit (recorded, reported by studies/worlds.py): per step, the mean advantage, outcome part and step
  part apart, of the rollouts that searched fewer times than their question's hop count, as many or more
  (``search_credit``): what pushes a policy to search less.

    python studies/replicate.py --quick          # smoke test: 1 seed, few steps, minutes
    python studies/replicate.py                  # 3 seeds x every method, one process

    # on 2 cores: one warm start, one process per method, then merge
    python studies/replicate.py --setup-only --threads 2
    python studies/replicate.py --methods grpo & python studies/replicate.py --methods ig & wait
    python studies/replicate.py --report-only

Runs already recorded in the work dir (runs/replicate/<method>-seed<seed>/replicate_record.json)
with the same settings are reused, not retrained: the same resolved training config (its ``ig``
section only for the methods that read the IG, IG-Search and IGPO, so a changed IG default retrains
them and no other).
Records do not fingerprint the code: after a change that could move a method's results, move its
records away (re-running one seed and comparing its per-question records tells whether it moved).

Writes studies/results/replication.{md,json} and replication_*.png (``--quick``: replication-quick.*,
a smoke test, not a result). The last line is ``em_<method>=<mean> ...`` (test EM, overall).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from replication_report import write_report

from igsearch.io import atomic_write_text
from igsearch.machine import describe_cpu
from igsearch.measure import add_threads_argument, apply_threads, work_root

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"  # the studies' history of experiments


# ----------------------------------------------------------------------------- all-fail probe


def all_fail_probe(trainer, trajs, adv) -> dict:
    """Gradient norm and advantage size of the loss restricted to the all-fail groups of a batch."""
    from igsearch.algo.advantages import per_token_advantages
    from igsearch.algo.loss import policy_loss
    from igsearch.policy.packing import pad_to_batch
    from igsearch.data.metrics import exact_match

    ems = [exact_match(t.answer, t.golds) if t.answer is not None else 0.0 for t in trajs]
    groups = defaultdict(list)
    for i, t in enumerate(trajs):
        groups[t.question_index].append(i)
    idx = [i for members in groups.values() if all(ems[i] == 0 for i in members) for i in members]
    out = {"n_groups": len(groups), "n_all_fail": sum(all(ems[i] == 0 for i in m) for m in groups.values())}
    if not idx:
        return out
    sub = [trajs[i] for i in idx]
    sub_adv = adv.select(idx) if hasattr(adv, "select") else adv
    T = max(1, max(len(t.response_ids) for t in sub))
    mask = pad_to_batch([torch.tensor(t.loss_mask, dtype=torch.float32) for t in sub], length=T)
    old = pad_to_batch([torch.tensor(t.rollout_logprobs, dtype=torch.float32) for t in sub], length=T)
    tok_adv = per_token_advantages(sub_adv, None, T)
    out["adv_abs_mean"] = float((tok_adv.abs() * mask).sum() / mask.sum().clamp_min(1))
    model = trainer.model
    model.train()
    model.zero_grad(set_to_none=True)
    logp = trainer.policy_logprobs(model, sub, grad=True)
    Tm = logp.shape[1]
    dev = logp.device
    loss, _ = policy_loss(logp, old[:, :Tm].to(dev), mask[:, :Tm].to(dev), sub_adv, trainer.cfg.loss)
    loss.backward()
    sq = sum(float(p.grad.detach().float().pow(2).sum()) for p in model.parameters() if p.grad is not None)
    model.zero_grad(set_to_none=True)
    out["grad_norm"] = math.sqrt(sq)
    out["loss"] = float(loss.detach())
    return out


def hops_of(data_source: str) -> int | None:
    """The hop count a world question's ``data_source`` names (``world_2hop`` -> 2), else None."""
    digits = "".join(ch for ch in data_source.rsplit("_", 1)[-1] if ch.isdigit())
    return int(digits) if digits and data_source.endswith("hop") else None


def search_credit(trajs, adv) -> dict:
    """Which search counts a batch's advantages push towards: per ``"<hops>:<fewer|as many|more>"`` (searches
    against the question's hop count), the rollouts' number and the sums of their mean per-token advantage
    over the response's loss tokens, split into the outcome part (``seq_adv``, the same on every token) and
    the step part (the spans: IG-Search's step IG, GiGPO's step groups; 0 for GRPO and RLOO). A positive
    mean on ``fewer`` rollouts of multi-hop questions is a push towards searching less."""
    from igsearch.algo.advantages import per_token_advantages

    T = max(1, max(len(t.response_ids) for t in trajs))
    step_part = per_token_advantages(adv, None, T) - adv.seq_adv.detach().float().reshape(-1, 1)
    out: dict[str, dict] = {}
    for i, t in enumerate(trajs):
        hops = hops_of(t.data_source)
        mask = torch.tensor(t.loss_mask[:T], dtype=torch.float32)
        if hops is None or float(mask.sum()) == 0:
            continue
        n = len(t.steps)
        rel = "fewer" if n < hops else "as many" if n == hops else "more"
        row = out.setdefault(f"{hops}:{rel}", {"n": 0, "outcome_sum": 0.0, "step_sum": 0.0})
        row["n"] += 1
        row["outcome_sum"] += float(adv.seq_adv[i])
        row["step_sum"] += float((step_part[i, :mask.numel()] * mask).sum() / mask.sum())
    return out


# ----------------------------------------------------------------------------- one run


def train_one(args, cfg_overrides: list[str], run_dir: Path) -> dict:
    """Train one (method, seed) with the trainer's periodic test evaluation; returns per-step metrics,
    all-fail probes and the evaluations ``{step: {"metrics", "records", "train_s"}}``."""
    from igsearch.demo import load_evals
    from igsearch.train.logging import read_metrics
    from igsearch.train.trainer import Trainer

    cfg = run_config(args, cfg_overrides)
    trainer = Trainer(cfg, run_dir, overwrite=True)
    probes: list[dict] = []

    def probe_all_fail(phase, batch, tr):  # after the advantages, before the update: same weights, same batch
        if phase != "advantages":
            return
        t0 = time.perf_counter()
        probes.append({"step": batch.step, **all_fail_probe(tr, batch.trajectories, batch.advantages),
                       "search_credit": search_credit(batch.trajectories, batch.advantages)})
        probes[-1]["seconds"] = time.perf_counter() - t0
        p = probes[-1]
        norm = f", their grad norm {p['grad_norm']:.3g}" if "grad_norm" in p else ""  # none without such groups
        print(f"[replicate] {cfg.advantage.method} seed {cfg.seed} step {batch.step}/{cfg.steps}: all-fail groups "
              f"{p['n_all_fail']}/{p['n_groups']}{norm}", flush=True)

    trainer.add_hook(probe_all_fail)
    try:
        ran = trainer.run()
    finally:
        trainer.logger.close()
        trainer.close()
    if ran["stopped_by"] or ran["steps"] < cfg.steps:  # a stopped run must not be recorded (it would be reused)
        raise SystemExit(f"replicate: {cfg.advantage.method} seed {cfg.seed} stopped at step {ran['steps']} of {cfg.steps} "
                         f"({ran['stopped_by'] or 'interrupted'}); no record written, run it again")
    rows = read_metrics(run_dir)
    steps = [{k: v for k, v in r.items() if isinstance(v, (int, float))} for r in rows if "reward/mean" in r]
    probe_s = {p["step"]: p["seconds"] for p in probes}
    train_s, spent, probe_total = {0: 0.0}, 0.0, 0.0
    for m in steps:  # training seconds without the benchmark's own probe
        probe_total += probe_s.get(m["step"], 0.0)
        spent = m["time/train_elapsed"] - probe_total
        train_s[m["step"]] = spent
        m["wall_s"] = m["time/step"] - probe_s.get(m["step"], 0.0)
    evals = {step: {"metrics": rec["greedy"]["metrics"], "records": compact(rec["greedy"]["records"]),
                    "train_s": train_s.get(step, spent)}
             for step, rec in load_evals(run_dir).items()}
    return {"steps": steps, "probes": probes, "evals": evals}


def compact(records: list[dict]) -> list[dict]:
    """The fields of a per-question record the report needs."""
    return [{"id": r["id"], "data_source": r["data_source"], "em": r["em"]} for r in records]


# ----------------------------------------------------------------------------- main


def parse_args(argv=None):
    import igsearch.methods  # noqa: F401  (registers the built-in methods)
    from igsearch.algo.advantages import list_advantage_estimators
    from igsearch.policy.tiny import POLICY_SIZES
    from igsearch.warmstart import DEMONSTRATORS, WarmStartConfig
    from igsearch.world.graph import RELATION_SETS

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 seed, 3 steps, small world, short SFT")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2; --quick 0)")
    ap.add_argument("--steps", type=int, default=None, help="RL steps per run (default 60; --quick 3)")
    ap.add_argument("--sft-steps", type=int, default=None, help="SFT warm-start steps (default: the demo's; --quick 30)")
    ap.add_argument("--questions", type=int, default=None, help="questions per step (default 16, as the demo; --quick 4)")
    ap.add_argument("--test-questions", type=int, default=None, help="test questions evaluated (default 300; --quick 24)")
    ap.add_argument("--eval-every", type=int, default=None, help="evaluate on test every N steps (default 10; --quick 3)")
    ap.add_argument("--entities", type=int, default=None, help="world size (default: the demo's; --quick 300)")
    ap.add_argument("--eval-split", type=int, default=0,
                    help="dev and test questions each (default 0: the demo world's split, 200 and 300). 1,000 each "
                         "needs --entities 1400, where the tiny warm start is far weaker (greedy test EM 0.263 "
                         "against 0.498 at 800 entities, studies/results/eval_split_1000.md): its EM comes from the "
                         "documents it memorised in SFT, and the same SFT spreads over more of them")
    ap.add_argument("--demonstrator", default="lookalike", choices=list(DEMONSTRATORS),
                    help="what the warm start imitates (default lookalike: the testbed where step credit can pay; "
                         "oracle: the perfect demonstrator, which leaves RL nothing to learn)")
    ap.add_argument("--world-seed", type=int, default=0)
    ap.add_argument("--relations", default=WarmStartConfig.relations, choices=list(RELATION_SETS),
                    help="the world's relations (default base, the demo's; dense: 14 relations, five times the "
                         "questions from as many passages, so 1,000-question dev and test fit 800 entities)")
    ap.add_argument("--sft-max-len", type=int, default=WarmStartConfig.max_len,
                    help=f"the SFT's longest sequence in tokens, longer demonstrations cut at the end (default "
                         f"{WarmStartConfig.max_len}; a dense world's 3-hop demonstrations at 3 passages a search "
                         "need about 1,200)")
    ap.add_argument("--policy-size", default=WarmStartConfig.policy_size, choices=list(POLICY_SIZES),
                    help=f"the tiny policy's size (default {WarmStartConfig.policy_size}; large has about 4x its "
                         "parameters)")
    add_threads_argument(ap)
    ap.add_argument("--work-dir", default=None, help="worlds/SFT/runs (default runs/replicate; --quick a temp dir)")
    ap.add_argument("--out", default=None, help="output prefix (default studies/results/replication[-quick])")
    ap.add_argument("--methods", default=",".join(list_advantage_estimators()),
                    help="comma-separated advantage estimators to train (default: every registered one). Processes "
                         "with different --methods share one --work-dir; a last --report-only call merges")
    ap.add_argument("--setup-only", action="store_true", help="build the worlds and the warm start, then stop")
    ap.add_argument("--report-only", action="store_true",
                    help="train nothing: report from the runs already recorded in --work-dir")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="training config overrides")
    args = ap.parse_args(argv)

    q = args.quick
    args.seeds = [int(s) for s in (args.seeds or ("0" if q else "0,1,2")).split(",") if s.strip()]
    args.steps = args.steps if args.steps is not None else (3 if q else 60)
    args.sft_steps = args.sft_steps if args.sft_steps is not None else (30 if q else WarmStartConfig.steps)
    args.questions = args.questions if args.questions is not None else (4 if q else 16)
    args.test_questions = args.test_questions if args.test_questions is not None else (
        24 if q else max(300, args.eval_split))
    args.entities = args.entities if args.entities is not None else (300 if q else WarmStartConfig.entities)
    args.eval_every = args.eval_every if args.eval_every is not None else (3 if q else 10)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not args.methods:
        ap.error("--methods is empty")
    if not args.seeds or args.steps < 1 or args.sft_steps < 0 or args.eval_every < 1:
        ap.error("need at least one seed, --steps >= 1, --eval-every >= 1 and --sft-steps >= 0")
    return args


def warm_start_config(args):
    """The warm start's settings: the demo's, with the benchmark's SFT steps, world size, eval split and
    demonstrator."""
    from dataclasses import replace

    from igsearch.warmstart import DEMONSTRATORS, WarmStartConfig

    return replace(WarmStartConfig(), steps=args.sft_steps, entities=args.entities, eval_split_size=args.eval_split,
                   distractor=DEMONSTRATORS[args.demonstrator], relations=args.relations,
                   policy_size=args.policy_size, max_len=args.sft_max_len)


def setup_key(args) -> dict:
    """What identifies the world and warm start of ``args`` (``root/setup.json``'s ``key``)."""
    return {"world_seed": args.world_seed, "warm_start": warm_start_config(args).setup_key()}


def prepare(args, root: Path):
    """World, tiny policy and warm start under ``root``; reused when ``root/setup.json`` matches. The demo's
    settings get the shipped warm start (``igsearch.warmstart.SHIPPED_WARM_STARTS``), as ``igsearch demo`` does.

    Returns (world_dir, sft_dir, manifest, setup_seconds)."""
    from igsearch.warmstart import build_warm_start

    t0 = time.perf_counter()
    ws_cfg = warm_start_config(args)
    key = setup_key(args)
    setup_file = root / "setup.json"
    setup = json.loads(setup_file.read_text()) if setup_file.exists() else None
    if setup and setup.get("key") == key:
        # a warm start built with the same settings (by this script or, pointed to by hand, by `igsearch demo`)
        print(f"[replicate] reusing the world and warm start of {setup_file} (settings match)", flush=True)
        sft, world = Path(setup["sft"]), Path(setup["world"])
    else:
        ws = build_warm_start(root, seed=args.world_seed, config=ws_cfg, progress=True, shipped=True,
                              log=lambda msg: print(f"[replicate] {msg}", flush=True))
        sft, world = ws["sft"], ws["world"]
        atomic_write_text(setup_file, json.dumps({"key": key, "sft": str(sft), "world": str(world)}, default=str))
    manifest = json.loads((world / "manifest.json").read_text())
    return world, sft, manifest, time.perf_counter() - t0


def run_config(args, overrides: list[str]):
    """The training config of a run: the demo's preset for the warm start's demonstrator
    (``igsearch.demo.demo_preset``), then ``overrides``."""
    from igsearch.demo import demo_preset
    from igsearch.train.config import load_config

    return load_config(demo_preset(args.demonstrator), overrides)


def run_overrides(args, world: Path, sft: Path, method: str, seed: int) -> list[str]:
    """The overrides of one (method, seed) on the demo's preset: the benchmark's own settings."""
    return [f"model_path={sft}", f"world_dir={world}", f"eval_data={world / 'test.jsonl'}",
            f"steps={args.steps}", f"seed={seed}", f"advantage.method={method}", f"checkpoint_every={args.steps}",
            f"questions_per_step={args.questions}", f"eval_questions={args.test_questions}",
            f"eval_every={args.eval_every}", "probe_questions=0", "tensorboard=false", "keep_checkpoints=1",
            *args.overrides]


#: the step scorers that score continuations: they read the run's ``scoring`` section (IG-Search's step IG,
#: IGPO's turn gains)
CONTINUATION_SCORERS = frozenset({"step_ig", "turn_gain"})
RECORDS = "replication records"  # the source named when an older version's names are read from them


def run_identity(run_cfg, method: str) -> dict:
    """What a recorded run of ``method`` must match to be reused: its resolved training config in today's
    spelling (with the run's own method's section, the only one a config saves), without the ``scoring``
    section when the method scores no continuation (a changed scoring default, e.g.
    ``scoring.answer_tokens``, retrains IG-Search and IGPO only)."""
    from igsearch.algo.advantages import estimator_needs

    identity = json.loads(json.dumps(run_cfg.to_dict(), default=str))
    identity.pop("config_version", None)
    if not estimator_needs(method) & CONTINUATION_SCORERS:
        identity.pop("scoring", None)
    return identity


def recorded_identity(rec: dict, method: str) -> dict | None:
    """:func:`run_identity` of a record, whichever version wrote it (its config read through
    ``TrainConfig.from_dict``, which maps an older version's names). Records made before the demo's presets
    hold their overrides on configs/tiny-cpu.yaml and their IG settings apart: resolved here, and None (not
    reusable) when those no longer resolve to what they were scored with."""
    from igsearch.train.config import TrainConfig, load_config
    from igsearch.train.config_legacy import legacy_name, migrate_overrides

    if "config" in rec:
        return run_identity(TrainConfig.from_dict(rec["config"], source=RECORDS), method)
    if "overrides" not in rec:
        return None
    cfg = load_config(ROOT / "configs" / "tiny-cpu.yaml", migrate_overrides(rec["overrides"], RECORDS))
    identity = run_identity(cfg, method)
    for old, value in (rec.get("ig_settings") or {}).items():
        section, _, name = (legacy_name(old) or f"ig.{old}").partition(".")
        if section in identity and identity[section].get(name) != value:
            return None
    return identity


def _recorded(args, root: Path, world: Path, sft: Path, method: str, seed: int):
    """(overrides, config, identity, the record when one with that identity is in ``root``, else None)."""
    overrides = run_overrides(args, world, sft, method, seed)
    run_cfg = run_config(args, overrides)
    record_file = root / f"{method}-seed{seed}" / "replicate_record.json"
    rec = json.loads(record_file.read_text()) if record_file.exists() else None
    identity = run_identity(run_cfg, method)
    return overrides, run_cfg, identity, (rec if rec is not None and recorded_identity(rec, method) == identity
                                          else None)


def missing_runs(args, root: Path, world: Path, sft: Path) -> list[tuple[str, int]]:
    """The (method, seed) pairs of ``args`` with no record of their settings in ``root``: what
    :func:`record_runs` would train."""
    return [(m, s) for s in args.seeds for m in args.methods if _recorded(args, root, world, sft, m, s)[3] is None]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def claim_run(run_dir: Path) -> int | None:
    """Take the lock of one run (``<run_dir>.lock``, holding this process's id) so that two processes working
    on one study (e.g. one per seed order) never train the same run; a lock whose process is gone is taken
    over. Returns None when taken, else the id of the live process that holds it."""
    lock = run_dir.parent / f"{run_dir.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                holder = 0
            if holder and holder != os.getpid() and _pid_alive(holder):
                return holder
            lock.unlink(missing_ok=True)  # its process is gone (or it is being written: retried)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return None
    return -1


def release_run(run_dir: Path) -> None:
    (run_dir.parent / f"{run_dir.name}.lock").unlink(missing_ok=True)


def record_runs(args, root: Path, world: Path, sft: Path, on_record=None, wait_s: float = 30.0
                ) -> tuple[dict, int, str | None]:
    """Train, or reuse when recorded with the same settings, every (method, seed) of ``args`` from the warm
    start ``sft`` on ``world``, each under ``root/<method>-seed<seed>/``, in the order of ``args.seeds`` then
    ``args.methods``; a run another live process is training (:func:`claim_run`) is left for later and its
    record reused once written (checked every ``wait_s`` seconds). ``on_record(method, seed, record)`` is
    called with each record, trained or reused, as soon as it is there.

    Returns (``runs[method][seed]``: the records, rollouts per question, the scoring's ``answer_tokens``)."""
    runs: dict = {m: {} for m in args.methods}
    config_rollouts = answer_tokens = None
    pending = [(seed, method) for seed in args.seeds for method in args.methods]
    while pending:
        later = []
        for seed, method in pending:
            overrides, run_cfg, identity, rec = _recorded(args, root, world, sft, method, seed)
            config_rollouts, answer_tokens = run_cfg.rollout.rollouts_per_question, run_cfg.scoring.answer_tokens
            run_dir = root / f"{method}-seed{seed}"
            record_file = run_dir / "replicate_record.json"
            if rec is not None:
                print(f"[replicate] reusing {record_file}", flush=True)
                rec["evals"] = {int(k): v for k, v in rec["evals"].items()}
            elif args.report_only:
                raise SystemExit(f"replicate: --report-only but {record_file} is missing or was made with "
                                 "other settings; run it first")
            elif (holder := claim_run(run_dir)) is not None:
                print(f"[replicate] {method} seed {seed} is being trained by process {holder}: later", flush=True)
                later.append((seed, method))
                continue
            else:
                try:
                    if run_dir.exists():  # a stale or interrupted run with other settings: start it afresh
                        import shutil

                        shutil.rmtree(run_dir)
                    rec = train_one(args, overrides, run_dir)
                    rec["overrides"], rec["config"], rec["cpu"] = overrides, identity, describe_cpu()
                    atomic_write_text(record_file, json.dumps(rec, indent=1, default=str))
                finally:
                    release_run(run_dir)
            runs[method][seed] = rec
            if on_record is not None:
                on_record(method, seed, rec)
        if later and len(later) == len(pending):  # only runs of other processes are left: wait for them
            time.sleep(wait_s)
        pending = later
    runs = {m: {s: runs[m][s] for s in args.seeds} for m in args.methods}
    return runs, config_rollouts, answer_tokens


def main(argv=None) -> int:
    args = parse_args(argv)
    apply_threads(args.threads)

    root, tmp = work_root(args.work_dir or (None if args.quick else ROOT / "runs" / "replicate"), "replicate-")
    t_all = time.perf_counter()
    world, sft, manifest, t_setup = prepare(args, root)
    if args.setup_only:
        print(f"[replicate] setup done in {t_setup:.0f}s: {root}")
        return 0

    runs, config_rollouts, answer_tokens = record_runs(args, root, world, sft)

    prefix = Path(args.out) if args.out else RESULTS / ("replication-quick" if args.quick else "replication")
    result, md = write_report(args, runs, prefix, manifest=manifest, config_rollouts=config_rollouts,
                              answer_tokens=answer_tokens, setup_s=t_setup, started=t_all)
    if tmp is not None:
        tmp.cleanup()
    print(f"\n{md}\nJSON: {prefix.with_suffix('.json')}  ({result['total_s'] / 60:.1f} min)")
    agg = result["summary"]
    print(" ".join(f"em_{m}={agg[m]['test_em']['overall']['mean']:.3f}" for m in agg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
