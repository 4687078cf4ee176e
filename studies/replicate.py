"""Replication on the synthetic world: every registered method (GRPO, IG-Search, ...) from one warm start, several seeds.

From ONE warm start (``igsearch.warmstart``: the tiny policy, SFT on the world's warm-up split imitating
``--demonstrator``, default ``lookalike``, the demo's settings), each method is trained for ``--steps``
steps on the world's train split with seeds ``--seeds`` (the demo's preset for that demonstrator otherwise,
``igsearch.demo.demo_preset``: configs/demo.yaml); a method and a seed see the same questions per step
(question sampling is a function of (seed, step)). The trainer evaluates greedily on ``--test-questions``
test questions before training and every ``--eval-every`` steps and keeps every per-question result
(``<run>/evals/step_NNNNNN.json``). Reported:

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
import statistics
import sys
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import torch

from igsearch.io import atomic_write_text
from igsearch.measure import add_threads_argument, apply_threads, device_name, work_root

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
        probes.append({"step": batch.step, **all_fail_probe(tr, batch.trajectories, batch.advantages)})
        probes[-1]["seconds"] = time.perf_counter() - t0
        p = probes[-1]
        print(f"[replicate] {cfg.advantage.method} seed {cfg.seed} step {batch.step}/{cfg.steps}: all-fail groups "
              f"{p['n_all_fail']}/{p['n_groups']}, their grad norm {p.get('grad_norm', float('nan')):.3g}", flush=True)

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


# ----------------------------------------------------------------------------- report


def split_standard_error(em: float, n: int) -> float:
    """The standard error of an EM measured on ``n`` questions: sqrt(p (1 - p) / n)."""
    return math.sqrt(max(em * (1 - em), 0.0) / max(n, 1))


def mean_spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def final_eval(run: dict) -> dict:
    return run["evals"][max(run["evals"])]


def aggregate(runs: dict) -> dict:
    """runs[method][seed] -> summary per method."""
    out = {}
    for method, by_seed in runs.items():
        finals = [final_eval(r)["metrics"] for r in by_seed.values()]
        sources = sorted({s for f in finals for s in f}, key=lambda s: (s == "overall", s))
        em = {s: mean_spread([f[s]["em"] for f in finals if s in f]) for s in sources}
        searches = {s: mean_spread([f[s]["searches"] for f in finals if s in f]) for s in sources}
        steps = [m for r in by_seed.values() for m in r["steps"]]
        probes = [p for r in by_seed.values() for p in r["probes"]]
        with_af = [p for p in probes if "grad_norm" in p]
        out[method] = {
            "test_em": em,
            "test_searches": searches,
            "all_fail_frac": statistics.fmean(m.get("groups/all_fail_frac", 0.0) for m in steps),
            "all_fail_groups": sum(p["n_all_fail"] for p in probes),
            "groups": sum(p["n_groups"] for p in probes),
            "all_fail_grad_norm_mean": statistics.fmean(p["grad_norm"] for p in with_af) if with_af else None,
            "all_fail_adv_abs_mean": statistics.fmean(p["adv_abs_mean"] for p in with_af) if with_af else None,
            "batch_grad_norm_mean": statistics.fmean(m["grad_norm"] for m in steps if "grad_norm" in m),
            "steps_with_all_fail": len(with_af),
            "step_wall_s_mean": statistics.fmean(m["wall_s"] for m in steps),
        }
    return out


def pooled_records(runs_of_method: dict, step: int | None = None) -> list[dict]:
    """Every seed's per-question records at ``step`` (None: each run's last evaluation)."""
    out = []
    for r in runs_of_method.values():
        ev = final_eval(r) if step is None else r["evals"][step]
        out += ev["records"]
    return out


def paired(runs: dict, a: str, b: str) -> dict:
    """``compare_records`` of method b against method a (a = "warm start": the step-0 evaluation),
    per-question EM averaged over the seeds both have."""
    from igsearch.stats import compare_records

    seeds = sorted(set(runs[b]) & (set(runs[a]) if a in runs else set(runs[b])))
    rb = pooled_records({s: runs[b][s] for s in seeds})
    if a == "warm start":
        ra = [rec for s in seeds for rec in runs[b][s]["evals"][0]["records"]]
    else:
        ra = pooled_records({s: runs[a][s] for s in seeds})
    return compare_records(ra, rb)


def mean_curve(by_seed: dict) -> list[tuple[int, float, float]]:
    """(step, mean training seconds, mean overall EM) at every evaluation step all seeds share."""
    common = sorted(set.intersection(*(set(r["evals"]) for r in by_seed.values())))
    return [(s, statistics.fmean(r["evals"][s]["train_s"] for r in by_seed.values()),
             statistics.fmean(r["evals"][s]["metrics"]["overall"]["em"] for r in by_seed.values())) for s in common]


def time_to_quality(runs: dict, reference: str = "grpo") -> dict:
    """The best mean EM the reference method reaches by training (evaluations after step 0), and for
    every method the first trained evaluation step (and mean training seconds) at which its mean EM
    over seeds reaches it. ``warm_start_em``: the shared step-0 EM, for reference."""
    if reference not in runs:
        return {}
    ref_curve = [c for c in mean_curve(runs[reference]) if c[0] > 0]
    if not ref_curve:
        return {}
    target = max(em for _, _, em in ref_curve)
    start = [em for s, _, em in mean_curve(runs[reference]) if s == 0]
    out = {"reference": reference, "target_em": target, "warm_start_em": start[0] if start else None, "methods": {}}
    for method, by_seed in runs.items():
        hit = next(((s, t) for s, t, em in mean_curve(by_seed) if s > 0 and em >= target - 1e-12), None)
        out["methods"][method] = {"step": hit[0], "seconds": hit[1]} if hit else None
    return out


def verdict(runs: dict, agg: dict, cmp_ig_grpo: dict | None) -> list[str]:
    """The paper's three claims, judged on this run with the rule stated in the text."""
    if not {"grpo", "ig"} <= set(runs) or not cmp_ig_grpo:
        return ["(both grpo and ig are needed to judge the claims)"]

    def judge(row: dict) -> str:
        if row["low"] > 0:
            return "held"
        if row["high"] < 0:
            return "did not hold (GRPO ahead)"
        return "not shown (the interval contains 0)"

    fmt = lambda r: f"{r['diff']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}]"  # noqa: E731
    overall = cmp_ig_grpo["overall"]
    lines = [
        "## The paper's claims on this run", "",
        "Rule: IG-Search minus GRPO in test EM, per question averaged over the seeds, with a 95% paired bootstrap "
        "interval over questions. A claim *held* when the interval lies above 0, *did not hold* when it lies below "
        "0, and is *not shown* otherwise.", "",
        f"1. IG-Search beats the trajectory baseline (overall: {fmt(overall)}): **{judge(overall)}**.",
    ]
    hops = [s for s in cmp_ig_grpo if s != "overall"]
    single = [s for s in hops if "1hop" in s]
    multi = [s for s in hops if "1hop" not in s]
    if single and multi:
        largest = max(hops, key=lambda s: cmp_ig_grpo[s]["diff"])
        if judge(overall) != "held":
            state = "not applicable (no overall gain)"
        else:
            state = "held" if all(cmp_ig_grpo[m]["diff"] > cmp_ig_grpo[single[0]]["diff"] for m in multi) \
                else "did not hold"
        lines.append("2. The gain is largest on multi-hop questions (per hop count: "
                     + ", ".join(f"{s} {fmt(cmp_ig_grpo[s])}" for s in hops) + f"; largest: {largest}): **{state}**.")
    g_ig, g_grpo = agg["ig"]["all_fail_grad_norm_mean"], agg["grpo"]["all_fail_grad_norm_mean"]
    if g_ig is not None and g_grpo is not None:
        ok = g_ig > 0 and g_grpo == 0
        lines.append(f"3. IG-Search still gets a learning signal when every rollout of a group fails (mean gradient "
                     f"norm from all-fail groups: IG {g_ig:.3g}, GRPO {g_grpo:.3g}): **{'held' if ok else 'did not hold'}** "
                     "as a mechanism; whether that signal raises EM is claim 1.")
    return lines + [""]


def plots(runs: dict, out_prefix: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(1, 3, figsize=(15, 3.8))
    for method, by_seed in runs.items():
        curve = mean_curve(by_seed)
        spread = [statistics.stdev([r["evals"][s]["metrics"]["overall"]["em"] for r in by_seed.values()])
                  if len(by_seed) > 1 else 0.0 for s, _, _ in curve]
        ax[0].errorbar([s for s, _, _ in curve], [em for _, _, em in curve], yerr=spread, marker="o", capsize=3,
                       label=method)
        ax[1].plot([t / 60 for _, t, _ in curve], [em for _, _, em in curve], marker="o", label=method)
        series = [[m.get("groups/all_fail_frac", 0.0) for m in r["steps"]] for r in by_seed.values()]
        n = min(len(x) for x in series)
        ax[2].plot(range(1, n + 1), [statistics.fmean(col) for col in zip(*(x[:n] for x in series))], label=method)
    ttq = time_to_quality(runs)
    if ttq:
        ax[1].axhline(ttq["target_em"], color="grey", linestyle=":", label="GRPO's best")
    ax[0].set_title("test EM (greedy), mean ± std over seeds"), ax[0].set_xlabel("step")
    ax[1].set_title("test EM against training wall-clock"), ax[1].set_xlabel("minutes (mean over seeds)")
    ax[2].set_title("share of all-fail groups (mean over seeds)"), ax[2].set_xlabel("step")
    for a in ax:
        a.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_prefix.with_name(out_prefix.name + "_em.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for method, by_seed in runs.items():
        pts = [(p["step"], p["grad_norm"]) for r in by_seed.values() for p in r["probes"] if "grad_norm" in p]
        ax.scatter([x for x, _ in pts], [y for _, y in pts], s=10, label=method)
    ax.set_xlabel("step"), ax.set_ylabel("grad norm"), ax.legend()
    ax.set_title("gradient norm from the all-fail groups of a batch")
    fig.tight_layout()
    paths.append(out_prefix.with_name(out_prefix.name + "_allfail_grad.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def render(result: dict, agg: dict, png: list[Path], runs: dict) -> str:
    from igsearch.stats import format_comparison

    a = result["args"]
    lines = []
    if a["quick"]:
        lines += ["> **SMOKE TEST (`--quick`)**: one seed, a handful of steps; these numbers are not a result.", ""]
    lines += [
        "# Replication on the synthetic world: " + " vs ".join(runs), "",
        f"{result['device']}. From one warm start (SFT on the warm-up split, {a['sft_steps']} steps, demonstrator "
        f"`{a.get('demonstrator', 'oracle')}`), each method "
        f"trained for {a['steps']} steps, seeds {a['seeds']}, {a['questions']} questions x {result['config_rollouts']} "
        f"rollouts per step, the demo's RL settings otherwise (IG-Search and IGPO score the gold answer "
        f"`{result.get('ig_answer_tokens') or 'separate'}`, `ig_answer_tokens`). Test split: "
        f"{result['test_questions']} questions, greedy, one rollout each. Spread: sample std over seeds and "
        "[min, max]. SE: the standard error of one EM on that many questions at the warm start's EM, "
        "sqrt(p(1-p)/n); paired differences below are tighter than that.", "",
        "## Test EM per hop count (after training)", "",
    ]
    warm = result["warm_start_test"] or {}
    sources = list(next(iter(agg.values()))["test_em"])
    head = "| data_source | n (SE) | warm start | " + " | ".join(f"{m} EM" for m in agg) + " | warm start searches | " + \
        " | ".join(f"{m} searches" for m in agg) + " |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for s in sources:
        ws = f"{warm[s]['em']:.3f}" if s in warm else "-"
        n = f"{warm[s]['n']} ({split_standard_error(warm[s]['em'], warm[s]['n']):.3f})" if s in warm else "-"
        cells = [f"{agg[m]['test_em'][s]['mean']:.3f} ± {agg[m]['test_em'][s]['std']:.3f} "
                 f"[{agg[m]['test_em'][s]['min']:.3f}, {agg[m]['test_em'][s]['max']:.3f}]" for m in agg]
        cells += [f"{warm[s]['searches']:.2f}" if s in warm else "-"]
        cells += [f"{agg[m]['test_searches'][s]['mean']:.2f}" for m in agg]
        lines.append(f"| {s} | {n} | {ws} | " + " | ".join(cells) + " |")
    lines += [""] + verdict(runs, agg, result["paired"].get("ig vs grpo"))[:-1]
    for name, cmp in result["paired"].items():
        a_name, b_name = name.split(" vs ")[1], name.split(" vs ")[0]
        lines += ["", f"### Paired: {name} (test EM per question, averaged over seeds)", "",
                  format_comparison(cmp, a_name, b_name)]
    ttq = result["time_to_quality"]
    if ttq:
        lines += ["", "## Wall-clock to quality", "",
                  f"Target: the best test EM GRPO reaches by training (mean over seeds at one evaluation after step 0): "
                  f"{ttq['target_em']:.3f}" + (f" (the warm start: {ttq['warm_start_em']:.3f})" if ttq.get("warm_start_em")
                                               is not None else "") + ". "
                  "Training seconds include rollouts, IG scoring and the update; evaluations are excluded.", "",
                  "| method | step reached | training time to reach it | s / step |", "|---|---:|---:|---:|"]
        for m, hit in ttq["methods"].items():
            cell = f"{hit['step']} | {hit['seconds'] / 60:.1f} min" if hit else "not reached | -"
            lines.append(f"| {m} | {cell} | {agg[m]['step_wall_s_mean']:.1f} |")
    lines += ["", "## All-fail groups and the gradient they give", "",
              "| method | all-fail share (mean over steps) | all-fail groups / groups | "
              "grad norm from all-fail groups (mean over steps that had any) | mean abs per-token advantage there | "
              "batch grad norm (trainer, mean) |",
              "|---|---:|---:|---:|---:|---:|"]
    for m, s in agg.items():
        g = "-" if s["all_fail_grad_norm_mean"] is None else f"{s['all_fail_grad_norm_mean']:.3g}"
        ad = "-" if s["all_fail_adv_abs_mean"] is None else f"{s['all_fail_adv_abs_mean']:.3g}"
        lines.append(f"| {m} | {s['all_fail_frac']:.3f} | {s['all_fail_groups']} / {s['groups']} | {g} | {ad} | "
                     f"{s['batch_grad_norm_mean']:.3g} |")
    lines += ["", "The all-fail gradient is measured by the benchmark (see studies/replicate.py): the unclipped L2 "
              "norm of the gradient of the PPO loss restricted to the rollouts of the all-fail groups of the batch, "
              "at the weights before the update, with the method's own advantages.", ""]
    lines += [f"![{p.stem}]({p.name})" for p in png]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main


def parse_args(argv=None):
    import igsearch.methods  # noqa: F401  (registers the built-in methods)
    from igsearch.algo.advantages import list_advantage_estimators
    from igsearch.warmstart import DEMONSTRATORS, WarmStartConfig

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
                   distractor=DEMONSTRATORS[args.demonstrator])


def prepare(args, root: Path):
    """World, tiny policy and warm start under ``root``; reused when ``root/setup.json`` matches. The demo's
    settings get the shipped warm start (``igsearch.warmstart.SHIPPED_WARM_STARTS``), as ``igsearch demo`` does.

    Returns (world_dir, sft_dir, manifest, setup_seconds)."""
    from igsearch.warmstart import build_warm_start

    t0 = time.perf_counter()
    ws_cfg = warm_start_config(args)
    key = {"world_seed": args.world_seed, "warm_start": ws_cfg.setup_key()}
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


# the step scorers that read the run config's `ig` section (IG-Search's step IG, IGPO's turn gains)
IG_SCORERS = frozenset({"step_ig", "turn_gain"})


def run_identity(run_cfg, method: str) -> dict:
    """What a recorded run of ``method`` must match to be reused: its resolved training config, without
    the ``ig`` section when the method reads no IG (a changed IG default, e.g. ``ig_answer_tokens``,
    retrains IG-Search and IGPO only)."""
    from igsearch.algo.advantages import estimator_needs

    identity = json.loads(json.dumps(run_cfg.to_dict(), default=str))
    if not estimator_needs(method) & IG_SCORERS:
        identity.pop("ig")
    return identity


def recorded_identity(rec: dict, method: str) -> dict | None:
    """:func:`run_identity` of a record. Records made before the demo's presets hold their overrides on
    configs/tiny-cpu.yaml and their ``ig`` section apart: resolved here, and None (not reusable) when that
    section no longer resolves to what they were scored with."""
    from igsearch.train.config import load_config

    if "config" in rec:
        return rec["config"]
    if "overrides" not in rec:
        return None
    identity = run_identity(load_config(ROOT / "configs" / "tiny-cpu.yaml", rec["overrides"]), method)
    scored = rec.get("ig_settings") or {}
    if "ig" in identity and any(identity["ig"].get(k) != v for k, v in scored.items()):
        return None
    return identity


def main(argv=None) -> int:
    args = parse_args(argv)
    apply_threads(args.threads)

    root, tmp = work_root(args.work_dir or (None if args.quick else ROOT / "runs" / "replicate"), "replicate-")
    t_all = time.perf_counter()
    world, sft, manifest, t_setup = prepare(args, root)
    if args.setup_only:
        print(f"[replicate] setup done in {t_setup:.0f}s: {root}")
        return 0

    runs: dict = {m: {} for m in args.methods}
    config_rollouts = answer_tokens = None
    for seed in args.seeds:
        for method in args.methods:
            overrides = run_overrides(args, world, sft, method, seed)
            run_cfg = run_config(args, overrides)
            config_rollouts, answer_tokens = run_cfg.rollout.rollouts_per_question, run_cfg.scoring.answer_tokens
            record_file = root / f"{method}-seed{seed}" / "replicate_record.json"
            rec = json.loads(record_file.read_text()) if record_file.exists() else None
            identity = run_identity(run_cfg, method)
            if rec is not None and recorded_identity(rec, method) == identity:
                print(f"[replicate] reusing {record_file}", flush=True)
                rec["evals"] = {int(k): v for k, v in rec["evals"].items()}
            elif args.report_only:
                raise SystemExit(f"replicate: --report-only but {record_file} is missing or was made with "
                                 "other settings; run it first")
            else:
                run_dir = root / f"{method}-seed{seed}"
                if run_dir.exists():  # a stale or interrupted run with other settings: start it afresh
                    import shutil

                    shutil.rmtree(run_dir)
                rec = train_one(args, overrides, run_dir)
                rec["overrides"], rec["config"] = overrides, identity
                atomic_write_text(record_file, json.dumps(rec, indent=1, default=str))
            runs[method][seed] = rec

    agg = aggregate(runs)
    paired_cmp = {}
    if {"grpo", "ig"} <= set(runs):
        paired_cmp["ig vs grpo"] = paired(runs, "grpo", "ig")
    for m in runs:
        paired_cmp[f"{m} vs warm start"] = paired(runs, "warm start", m)
    first = next(iter(next(iter(runs.values())).values()))
    prefix = Path(args.out) if args.out else RESULTS / ("replication-quick" if args.quick else "replication")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    png = plots(runs, prefix)
    result = {
        "benchmark": "replication",
        "time": datetime.now(timezone.utc).isoformat(),
        "device": device_name("cpu") if not torch.cuda.is_available() else device_name("cuda"),
        "torch": torch.__version__,
        "args": {"quick": args.quick, "seeds": args.seeds, "steps": args.steps, "sft_steps": args.sft_steps,
                 "questions": args.questions, "eval_every": args.eval_every, "overrides": args.overrides,
                 "demonstrator": args.demonstrator, "entities": args.entities, "eval_split": args.eval_split},
        "world": {"entities": manifest["n_entities"], "splits": manifest["splits"]},
        "config_rollouts": config_rollouts,
        "ig_answer_tokens": answer_tokens,
        "test_questions": first["evals"][0]["metrics"]["overall"]["n"],
        "warm_start_test": first["evals"][0]["metrics"],
        "summary": agg,
        "paired": paired_cmp,
        "time_to_quality": time_to_quality(runs),
        "curves": {m: mean_curve(by_seed) for m, by_seed in runs.items()},
        "all_fail_frac_per_step": {m: {s: [x.get("groups/all_fail_frac") for x in r["steps"]] for s, r in by.items()}
                                   for m, by in runs.items()},
        "setup_s": t_setup,
        "total_s": time.perf_counter() - t_all,
        "plots": [p.name for p in png],
    }
    atomic_write_text(prefix.with_suffix(".json"), json.dumps(result, indent=1, default=str))
    md = render(result, agg, png, runs)
    atomic_write_text(prefix.with_suffix(".md"), md)
    if tmp is not None:
        tmp.cleanup()
    print(f"\n{md}\nJSON: {prefix.with_suffix('.json')}  ({result['total_s'] / 60:.1f} min)")
    print(" ".join(f"em_{m}={agg[m]['test_em']['overall']['mean']:.3f}" for m in agg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
