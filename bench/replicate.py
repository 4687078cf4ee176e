"""Replication on the synthetic world: GRPO vs IG-Search from one SFT warm start, several seeds.

From ONE SFT warm start (the tiny policy, the demo's SFT settings), ``grpo`` and ``ig`` are each
trained for ``--steps`` steps on the world's train split with seeds ``--seeds`` (configs/tiny-cpu.yaml
settings otherwise); a method and a seed see the same questions per step (question sampling is a
function of (seed, step)). Reported:

- EM on the test split (greedy, one rollout per question) per hop count after training, mean and
  spread (sample std and min..max) over seeds; the warm start's EM for reference.
- Training EM and reward over steps (plots, mean over seeds with the min..max band), and test EM at
  ``--eval-every`` steps when set.
- All-fail groups: the share of groups in which every rollout failed (EM 0), per step, from the
  trainer's ``groups/all_fail_frac``.
- The gradient those groups give. The trainer logs one ``grad_norm`` per optimizer step (whole
  batch, after clipping is applied), not per group, so the benchmark measures it directly: before
  each update (by wrapping ``Trainer.update`` of the instance, not changing the trainer), it takes
  the rollouts of the all-fail groups only, evaluates the same PPO loss with the same advantages
  (``adv.select``) at the current weights, back-propagates it and records the global L2 norm of
  that gradient (unclipped), and the mean |per-token advantage| on the policy's tokens of those
  rollouts; the gradients are then cleared and the normal update runs. GRPO's advantages on an
  all-fail group are exactly 0, so its probe norm is 0 (with kl_coef 0): measured too, not assumed.
  The probe costs one extra forward + backward over the all-fail rollouts per step.

    python bench/replicate.py --quick          # smoke test: 1 seed, few steps, minutes
    python bench/replicate.py                  # 3 seeds x 2 methods x 120 steps, one process (~3.3 h here, from the measured s/step)

    # the same on 2 cores in 97 min (measured): one warm start, one process per method, then merge
    python bench/replicate.py --setup-only --threads 2
    python bench/replicate.py --methods grpo & python bench/replicate.py --methods ig & wait
    python bench/replicate.py --report-only

Runs already recorded in the work dir (runs/replicate/<method>-seed<seed>/replicate_record.json)
with the same settings are reused, not retrained.

Writes bench/results/replication.{md,json} and replication_*.png (``--quick``: replication-quick.*,
a smoke test, not a result). The last line is ``em_grpo=<mean> em_ig=<mean>`` (test EM, overall).
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("grpo", "ig")
from benchutil import add_threads_argument, apply_threads, device_name, work_root  # noqa: E402
from igsearch.train.io import atomic_write_text  # noqa: E402


# ----------------------------------------------------------------------------- all-fail probe


def all_fail_probe(trainer, trajs, adv) -> dict:
    """Gradient norm and advantage size of the loss restricted to the all-fail groups of a batch."""
    from igsearch.algo.advantages import per_token_advantages
    from igsearch.algo.loss import policy_loss
    from igsearch.algo.packing import pad_to_batch
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
    loss, _ = policy_loss(logp, old[:, :Tm].to(dev), mask[:, :Tm].to(dev), sub_adv, trainer.cfg)
    loss.backward()
    sq = sum(float(p.grad.detach().float().pow(2).sum()) for p in model.parameters() if p.grad is not None)
    model.zero_grad(set_to_none=True)
    out["grad_norm"] = math.sqrt(sq)
    out["loss"] = float(loss.detach())
    return out


# ----------------------------------------------------------------------------- one run


def train_one(args, cfg_overrides: list[str], run_dir: Path, test_rows, *, eval_start: bool):
    """Train one (method, seed); returns per-step metrics, probes and test evaluations."""
    from igsearch.train.config import load_config
    from igsearch.train.trainer import Trainer

    cfg = load_config(ROOT / "configs" / "tiny-cpu.yaml", cfg_overrides)
    trainer = Trainer(cfg, run_dir)
    probes: list[dict] = []
    orig_update = trainer.update

    def update(trajs, adv, step):  # instance-level wrapper: probe, then the trainer's own update
        probes.append({"step": step, **all_fail_probe(trainer, trajs, adv)})
        return orig_update(trajs, adv, step)

    trainer.update = update
    steps, evals = [], {}
    try:
        if eval_start:
            evals[0] = trainer.evaluate(rows=test_rows).metrics
        for step in range(1, cfg.steps + 1):
            t0 = time.perf_counter()
            res = trainer.train_step(step)
            m = {k: v for k, v in res.metrics.items() if isinstance(v, (int, float))}
            m["step"], m["wall_s"] = step, time.perf_counter() - t0
            steps.append(m)
            trainer.logger.log(step, res.metrics)
            p = probes[-1]
            print(f"[replicate] {cfg.method} seed {cfg.seed} step {step}/{cfg.steps}: reward "
                  f"{m.get('reward/mean', 0):.3f}, all-fail {m.get('groups/all_fail_frac', 0):.2f}, "
                  f"all-fail grad norm {p.get('grad_norm', float('nan')):.3g}, {m['wall_s']:.1f}s", flush=True)
            if (args.eval_every and step % args.eval_every == 0) or step == cfg.steps:
                evals[step] = trainer.evaluate(rows=test_rows).metrics
        trainer.checkpoint(cfg.steps)
    finally:
        trainer.logger.close()
        trainer.close()
    return {"steps": steps, "probes": probes, "evals": evals}


# ----------------------------------------------------------------------------- report


def mean_spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def aggregate(runs: dict) -> dict:
    """runs[method][seed] -> summary per method."""
    out = {}
    for method, by_seed in runs.items():
        finals = [r["evals"][max(r["evals"])] for r in by_seed.values()]
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


def plots(runs: dict, out_prefix: Path, start: dict | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []

    def band(ax, key_fn, label, by_seed, window):
        series = [[key_fn(m) for m in r["steps"]] for r in by_seed.values()]
        n = min(len(s) for s in series)
        smooth = []
        for s in series:
            s = s[:n]
            smooth.append([statistics.fmean(s[max(0, i - window + 1):i + 1]) for i in range(n)])
        xs = list(range(1, n + 1))
        mean = [statistics.fmean(col) for col in zip(*smooth)]
        ax.plot(xs, mean, label=label)
        if len(smooth) > 1:
            ax.fill_between(xs, [min(c) for c in zip(*smooth)], [max(c) for c in zip(*smooth)], alpha=0.2)

    n_steps = max(len(r["steps"]) for by in runs.values() for r in by.values())
    window = max(1, n_steps // 10)
    fig, ax = plt.subplots(1, 3, figsize=(14, 3.8))
    for method, by_seed in runs.items():
        band(ax[0], lambda m: m.get("em/mean", 0.0), method, by_seed, window)
        band(ax[1], lambda m: m.get("groups/all_fail_frac", 0.0), method, by_seed, window)
        pts = defaultdict(list)
        if start and "overall" in start:
            pts[0].append(start["overall"]["em"])  # the shared warm start
        for r in by_seed.values():
            for step, metrics in r["evals"].items():
                pts[int(step)].append(metrics["overall"]["em"])
        xs = sorted(pts)
        ax[2].errorbar(xs, [statistics.fmean(pts[x]) for x in xs],
                       yerr=[statistics.stdev(pts[x]) if len(pts[x]) > 1 else 0 for x in xs], marker="o",
                       capsize=3, label=method)
    ax[0].set_title(f"training EM (rolling mean over {window} steps)")
    ax[1].set_title("share of all-fail groups")
    ax[2].set_title("test EM (greedy), mean ± std over seeds")
    for a in ax:
        a.set_xlabel("step")
        a.legend()
    fig.tight_layout()
    paths.append(out_prefix.with_name(out_prefix.name + "_em.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for method, by_seed in runs.items():
        xs, ys = [], []
        for r in by_seed.values():
            for p in r["probes"]:
                if "grad_norm" in p:
                    xs.append(p["step"])
                    ys.append(p["grad_norm"])
        ax.scatter(xs, ys, s=10, label=method)
    ax.set_xlabel("step"), ax.set_ylabel("grad norm"), ax.legend()
    ax.set_title("gradient norm from the all-fail groups of a batch")
    fig.tight_layout()
    paths.append(out_prefix.with_name(out_prefix.name + "_allfail_grad.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def paired_gaps(runs: dict, source: str) -> list[tuple[float, float]]:
    """Per seed: (IG's final test EM minus GRPO's on ``source``, the noise margin of that difference).

    Same seed = same questions per step. The margin is 1.96 x the standard error of a difference of
    two EMs measured on n test questions each (unpaired, so conservative)."""
    gaps = []
    for seed in sorted(set(runs.get("grpo", {})) & set(runs.get("ig", {}))):
        g, i = (runs[m][seed]["evals"][max(runs[m][seed]["evals"])] for m in ("grpo", "ig"))
        if source in g and source in i:
            gaps.append((i[source]["em"] - g[source]["em"], em_margin(g[source], i[source])))
    return gaps


def em_margin(a: dict, b: dict) -> float:
    """1.96 x SE of the difference of two EMs (each a metrics dict with ``em`` and ``n``)."""
    var = sum(m["em"] * (1 - m["em"]) / max(m.get("n", 1), 1) for m in (a, b))
    return 1.96 * math.sqrt(var)


def verdict(runs: dict, agg: dict, start: dict | None = None) -> list[str]:
    """The paper's three claims, judged on this run with the rule stated in the text."""
    if not {"grpo", "ig"} <= set(runs):
        return ["(both methods are needed to judge the claims)"]

    def judge(gaps: list[tuple[float, float]]) -> str:
        if not gaps:
            return "not measured"
        if all(g > m for g, m in gaps):
            return "held"
        if all(g < -m for g, m in gaps):
            return "did not hold (GRPO ahead on every seed)"
        if all(abs(g) <= m for g, m in gaps):
            return "not shown (no seed differs beyond test-set noise)"
        return "not shown (the seeds disagree)"

    overall = paired_gaps(runs, "overall")
    fmt = lambda gs: ", ".join(f"{g:+.3f} (noise ±{m:.3f})" for g, m in gs)  # noqa: E731
    lines = [
        "## The paper's claims on this run", "",
        "Rule: a claim about EM *held* when IG-Search is ahead of GRPO on every seed by more than the test-set "
        "noise (1.96 x the standard error of a difference of two EMs on n questions), *did not hold* when GRPO is "
        "ahead by more than that on every seed, *not shown* otherwise. Seeds are paired: same questions per step.", "",
    ]
    if start and "overall" in start:
        moves = []
        for m in ("grpo", "ig"):
            finals = [r["evals"][max(r["evals"])]["overall"] for r in runs[m].values()]
            d = statistics.fmean(f["em"] for f in finals) - start["overall"]["em"]
            moves.append(f"{m} {d:+.3f} (noise ±{em_margin(start['overall'], finals[0]):.3f})")
        lines.append("0. Change of overall test EM from the warm start, mean over seeds: " + ", ".join(moves) + ".")
    lines.append(f"1. IG-Search beats the trajectory baseline (overall test EM, IG minus GRPO per seed: {fmt(overall)}): "
                 f"**{judge(overall)}**.")
    hops = sorted(s for s in agg["ig"]["test_em"] if s != "overall")
    mean_gap = {s: statistics.fmean(g for g, _ in gs) for s in hops if (gs := paired_gaps(runs, s))}
    single = [s for s in mean_gap if "1hop" in s]
    multi = [s for s in mean_gap if "1hop" not in s]
    if single and multi:
        most = max(mean_gap, key=mean_gap.get)
        held = judge(overall) == "held" and all(mean_gap[m] > mean_gap[single[0]] for m in multi)
        lines.append("2. The gain is largest on multi-hop questions (mean gap per hop count: "
                     + ", ".join(f"{s} {mean_gap[s]:+.3f}" for s in hops) + f"; largest: {most}): **"
                     + ("held" if held else "did not hold" if judge(overall) == "held" else
                        "not applicable (no overall gain)") + "**.")
    g_ig, g_grpo = agg["ig"]["all_fail_grad_norm_mean"], agg["grpo"]["all_fail_grad_norm_mean"]
    if g_ig is not None and g_grpo is not None:
        ok = g_ig > 0 and g_grpo == 0
        lines.append(f"3. IG-Search still gets a learning signal when every rollout of a group fails (mean gradient "
                     f"norm from all-fail groups: IG {g_ig:.3g}, GRPO {g_grpo:.3g}): **{'held' if ok else 'did not hold'}** "
                     "as a mechanism; whether that signal raises EM is claim 1.")
    return lines + [""]


def render(result: dict, agg: dict, png: list[Path], start_metrics: dict | None, runs: dict | None = None) -> str:
    a = result["args"]
    lines = []
    if a["quick"]:
        lines += ["> **SMOKE TEST (`--quick`)**: one seed, a handful of steps; these numbers are not a result.", ""]
    lines += [
        "# Replication on the synthetic world: GRPO vs IG-Search", "",
        f"{result['device']}. From one SFT warm start ({a['sft_steps']} SFT steps), each method trained for "
        f"{a['steps']} steps, seeds {a['seeds']}, {a['questions']} questions x {result['config_rollouts']} rollouts "
        f"per step, configs/tiny-cpu.yaml settings otherwise. Test split: {result['test_questions']} questions, "
        "greedy, one rollout each. Spread: sample std over seeds and [min, max].", "",
        "## Test EM per hop count (after training)", "",
    ]
    sources = list(next(iter(agg.values()))["test_em"])
    head = "| data_source | warm start | " + " | ".join(f"{m} EM" for m in agg) + " | " + \
        " | ".join(f"{m} searches" for m in agg) + " |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for s in sources:
        ws = f"{start_metrics[s]['em']:.3f}" if start_metrics and s in start_metrics else "-"
        cells = [f"{agg[m]['test_em'][s]['mean']:.3f} ± {agg[m]['test_em'][s]['std']:.3f} "
                 f"[{agg[m]['test_em'][s]['min']:.3f}, {agg[m]['test_em'][s]['max']:.3f}]" for m in agg]
        cells += [f"{agg[m]['test_searches'][s]['mean']:.2f}" for m in agg]
        lines.append(f"| {s} | {ws} | " + " | ".join(cells) + " |")
    if runs is not None:
        lines += [""] + verdict(runs, agg, start_metrics)[:-1]
    lines += ["", "## All-fail groups and the gradient they give", "",
              "| method | all-fail share (mean over steps) | all-fail groups / groups | "
              "grad norm from all-fail groups (mean over steps that had any) | mean abs per-token advantage there | "
              "batch grad norm (trainer, mean) | s / step |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for m, s in agg.items():
        g = "-" if s["all_fail_grad_norm_mean"] is None else f"{s['all_fail_grad_norm_mean']:.3g}"
        ad = "-" if s["all_fail_adv_abs_mean"] is None else f"{s['all_fail_adv_abs_mean']:.3g}"
        lines.append(f"| {m} | {s['all_fail_frac']:.3f} | {s['all_fail_groups']} / {s['groups']} | {g} | {ad} | "
                     f"{s['batch_grad_norm_mean']:.3g} | {s['step_wall_s_mean']:.1f} |")
    lines += ["", "The all-fail gradient is measured by the benchmark (see bench/replicate.py): the unclipped L2 "
              "norm of the gradient of the PPO loss restricted to the rollouts of the all-fail groups of the batch, "
              "at the weights before the update, with the method's own advantages.", ""]
    lines += [f"![{p.stem}]({p.name})" for p in png]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 seed, 3 steps, small world, short SFT")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2; --quick 0)")
    ap.add_argument("--steps", type=int, default=None, help="GRPO steps per run (default 120; --quick 3)")
    ap.add_argument("--sft-steps", type=int, default=None, help="SFT warm-start steps (default 700, as the demo; --quick 30)")
    ap.add_argument("--questions", type=int, default=None, help="questions per step (default 16, as the demo; --quick 4)")
    ap.add_argument("--test-questions", type=int, default=None, help="test questions evaluated (default 300; --quick 24)")
    ap.add_argument("--eval-every", type=int, default=None,
                    help="also evaluate on test every N steps (default 20; --quick: at the end only)")
    ap.add_argument("--entities", type=int, default=None, help="world size (default: the default world; --quick 300)")
    ap.add_argument("--world-seed", type=int, default=0)
    add_threads_argument(ap)
    ap.add_argument("--work-dir", default=None, help="world/SFT/runs (default runs/replicate; --quick a temp dir)")
    ap.add_argument("--out", default=None, help="output prefix (default bench/results/replication[-quick])")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help="comma-separated advantage estimators to train (default grpo,ig). Two processes with "
                         "--methods grpo and --methods ig share one --work-dir; a last --report-only call merges")
    ap.add_argument("--setup-only", action="store_true", help="build the world and the SFT warm start, then stop")
    ap.add_argument("--report-only", action="store_true",
                    help="train nothing: report from the runs already recorded in --work-dir")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="training config overrides")
    args = ap.parse_args(argv)
    q = args.quick
    args.seeds = [int(s) for s in (args.seeds or ("0" if q else "0,1,2")).split(",") if s.strip()]
    args.steps = args.steps if args.steps is not None else (3 if q else 120)
    args.sft_steps = args.sft_steps if args.sft_steps is not None else (30 if q else 700)
    args.questions = args.questions if args.questions is not None else (4 if q else 16)
    args.test_questions = args.test_questions if args.test_questions is not None else (24 if q else 300)
    args.entities = args.entities if args.entities is not None else (300 if q else None)
    args.eval_every = args.eval_every if args.eval_every is not None else (0 if q else 20)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not args.methods:
        ap.error("--methods is empty")
    if not args.seeds or args.steps < 1 or args.sft_steps < 0:
        ap.error("need at least one seed, --steps >= 1 and --sft-steps >= 0")
    return args


def prepare(args, root: Path, test_limit: int):
    """World, tiny policy and SFT warm start under ``root``; reused when ``root/setup.json`` matches.

    Returns (world_dir, sft_dir, manifest, test_rows, setup_seconds); ``test_limit`` 0 loads no test rows."""
    from igsearch.data.loaders import load_qa
    from igsearch.demo import DEMO_SFT
    from igsearch.policy.tiny import build_tiny_policy
    from igsearch.train.sft import run_sft
    from igsearch.world import build_world

    t0 = time.perf_counter()
    world = root / "world"
    key = {"world_seed": args.world_seed, "entities": args.entities, "sft_steps": args.sft_steps}
    setup_file = root / "setup.json"
    setup = json.loads(setup_file.read_text()) if setup_file.exists() else None
    if setup and setup.get("key") == key:
        print(f"[replicate] reusing the world and warm start in {root} ({setup_file.name} matches)", flush=True)
        manifest, sft = setup["manifest"], Path(setup["sft"])
    else:
        manifest = build_world(world, seed=args.world_seed, n_entities=args.entities)
        init = build_tiny_policy(world, root / "policy-init", seed=args.world_seed)
        sft_kw = {k: v for k, v in DEMO_SFT.items() if k != "steps"}
        sft = run_sft(init, world, root / "sft", steps=args.sft_steps, seed=args.world_seed, progress=False,
                      **sft_kw) if args.sft_steps > 0 else init
        atomic_write_text(setup_file, json.dumps({"key": key, "manifest": manifest, "sft": str(sft)}, default=str))
    test_rows = load_qa(world / "test.jsonl", limit=test_limit) if test_limit else []
    return world, Path(sft), manifest, test_rows, time.perf_counter() - t0


def run_overrides(args, world: Path, sft: Path, method: str, seed: int) -> list[str]:
    """The training config of one (method, seed): the demo's RL settings plus the benchmark's own."""
    from igsearch.demo import DEMO_RL_OVERRIDES

    return [*DEMO_RL_OVERRIDES, f"model_path={sft}", f"world_dir={world}", f"eval_data={world / 'test.jsonl'}",
            f"steps={args.steps}", f"seed={seed}", f"method={method}", f"checkpoint_every={args.steps}",
            f"questions_per_step={args.questions}", "eval_questions=0", "tensorboard=false",
            "keep_checkpoints=1", *args.overrides]


def main(argv=None) -> int:
    args = parse_args(argv)
    apply_threads(args.threads)
    from igsearch.train.config import load_config

    root, tmp = work_root(args.work_dir or (None if args.quick else ROOT / "runs" / "replicate"), "replicate-")
    t_all = time.perf_counter()
    world, sft, manifest, test_rows, t_sft = prepare(args, root, args.test_questions)
    if args.setup_only:
        print(f"[replicate] setup done in {t_sft:.0f}s: {root}")
        return 0

    runs: dict = {m: {} for m in args.methods}
    start_metrics = None
    config_rollouts = None
    for seed in args.seeds:
        for method in args.methods:
            overrides = run_overrides(args, world, sft, method, seed)
            config_rollouts = load_config(ROOT / "configs" / "tiny-cpu.yaml", overrides).rollouts_per_question
            record_file = root / f"{method}-seed{seed}" / "replicate_record.json"
            rec = json.loads(record_file.read_text()) if record_file.exists() else None
            if rec is not None and rec.get("overrides") == overrides and rec.get("test_questions") == len(test_rows):
                print(f"[replicate] reusing {record_file}", flush=True)
                rec["evals"] = {int(k): v for k, v in rec["evals"].items()}
            elif args.report_only:
                raise SystemExit(f"replicate: --report-only but {record_file} is missing or was made with "
                                 "other settings; run it first")
            else:
                rec = train_one(args, overrides, root / f"{method}-seed{seed}", test_rows,
                                eval_start=start_metrics is None)
                rec["start"] = rec["evals"].pop(0, None)
                rec.update(overrides=overrides, test_questions=len(test_rows))
                atomic_write_text(record_file, json.dumps(rec, indent=1, default=str))
            if start_metrics is None:
                start_metrics = rec.get("start")
            runs[method][seed] = rec

    agg = aggregate(runs)
    prefix = Path(args.out) if args.out else RESULTS / ("replication-quick" if args.quick else "replication")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    png = plots(runs, prefix, start_metrics)
    result = {
        "benchmark": "replication",
        "time": datetime.now(timezone.utc).isoformat(),
        "device": device_name("cpu") if not torch.cuda.is_available() else device_name("cuda"),
        "torch": torch.__version__,
        "args": {"quick": args.quick, "seeds": args.seeds, "steps": args.steps, "sft_steps": args.sft_steps,
                 "questions": args.questions, "eval_every": args.eval_every, "overrides": args.overrides},
        "world": {"entities": manifest["n_entities"], "splits": manifest["splits"]},
        "config_rollouts": config_rollouts,
        "test_questions": len(test_rows),
        "warm_start_test": start_metrics,
        "summary": agg,
        "runs": runs,
        "setup_s": t_sft,
        "total_s": time.perf_counter() - t_all,
        "plots": [p.name for p in png],
    }
    atomic_write_text(prefix.with_suffix(".json"), json.dumps(result, indent=1, default=str))
    md = render(result, agg, png, start_metrics, runs)
    atomic_write_text(prefix.with_suffix(".md"), md)
    if tmp is not None:
        tmp.cleanup()
    print(f"\n{md}\nJSON: {prefix.with_suffix('.json')}  ({result['total_s'] / 60:.1f} min)")
    line = " ".join(f"em_{m}={agg[m]['test_em']['overall']['mean']:.3f}" for m in agg)
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
