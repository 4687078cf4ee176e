"""The measurement behind the defaults ig.beta=0.5 and ig.clip=2.0 (docs/DESIGN.md section 4).

The paper does not publish beta (weight of the step term) or c (clip of the normalised step IG).
This benchmark samples rollouts of the SFT warm start (the replication's, in --work-dir), scores
every step's IG with the tree scorer, and then, for each (beta, c) of a grid, builds the per-token
advantages A_i + beta * IGn_{i,t} on the query tokens and measures what the step term does:

- ``clip_frac``: share of scored steps whose group-normalised IG lies outside [-c, c].
- ``success_punished``: share of the query tokens of *successful* rollouts (in groups with both
  outcomes) whose advantage the step term turns negative: the step term overriding a correct answer.
  ``success_punished_steps`` counts the same per search step (k of n), with a 95% Wilson upper
  bound ``success_punished_ub`` (tokens of one step are not independent; steps are the sample).
- ``failure_credited``: share of the query tokens of *failed* rollouts in mixed groups whose
  advantage turns positive: a good search in a failed trajectory still gets credit (IG's purpose).
- ``all_fail_signal``: mean |beta * IGn| on the query tokens of all-fail groups divided by the mean
  |A_i| of rollouts in mixed groups: the signal IG gives where GRPO gives none, relative to the
  signal GRPO gives where it has one.

Also reported: mean raw IG of steps in successful vs failed rollouts (IG should be higher where the
answer came out right) and the quantiles of the normalised IG.

The rule the defaults follow (stated in the report): c is the tightest clip of the grid that touches
at most 5% of the steps (clip outliers only); beta is the largest whose ``success_punished_ub`` is
at most 10% (the step term may credit searches of failed rollouts, but must not, beyond sampling
noise, override the outcome of successful ones).

    python studies/ig_coefficients.py --quick    # tiny world, short SFT, minutes
    python studies/ig_coefficients.py            # the replication's warm start, 8 x 16 questions x 4 rollouts
    python studies/ig_coefficients.py --from-json studies/results/ig_coefficients.json   # re-analyse, no sampling

Writes studies/results/ig_coefficients{-quick}.{json,md,png}; the last line is
``beta=<b> clip=<c> success_punished=<x> all_fail_signal=<y>`` for the configured defaults.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from igsearch.io import atomic_write_text
from igsearch.measure import add_threads_argument, apply_threads, device_name, work_root

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"  # the studies' history of experiments
BETAS = (0.1, 0.25, 0.5, 0.75, 1.0, 2.0)
CLIPS = (1.0, 2.0, 3.0, None)
MAX_SUCCESS_PUNISHED = 0.10
MAX_CLIP_FRAC = 0.05


def probe_config(args, root: Path):
    """The run config the rollouts are sampled and scored with: the replication's IG-Search run (seed
    ``args.seed``) on the warm start under ``root`` (built there if missing)."""
    from replicate import prepare, run_config, run_overrides

    world, sft, _, _ = prepare(args, root)
    return run_config(args, run_overrides(args, world, sft, "ig", args.seed))


def sample_batches(args, root: Path):
    """Rollouts + step IG of the warm start: (one dict (rewards, group_ids, step_ig, query_spans, lengths) per
    batch, the run config they were sampled and scored with)."""
    from igsearch.algo.rewards import trajectory_rewards
    from igsearch.train.trainer import Trainer

    cfg = probe_config(args, root)
    trainer = Trainer(cfg, root / "ig-coefficients-probe", overwrite=True)
    batches = []
    try:
        for b in range(args.batches):
            step = 10_000 + b  # question draws disjoint from the training steps' of the same seed
            batch = trainer.rollout(step)
            trajs = batch.trajectories
            rewards = trajectory_rewards(trajs, format_penalty=cfg.format_penalty)
            trainer.score_steps(batch, needs={"step_ig"})
            step_ig = batch.scores["step_ig"]
            batches.append({
                "rewards": [float(r) for r in rewards],
                "group_ids": [t.question_index for t in trajs],
                "step_ig": [list(x) for x in step_ig],
                "query_spans": [[list(s.query) for s in t.steps] for t in trajs],
                "lengths": [len(t.response_ids) for t in trajs],
            })
            print(f"[ig_coefficients] batch {b + 1}/{args.batches}: {len(trajs)} rollouts, reward "
                  f"{statistics.fmean(rewards):.3f}", flush=True)
    finally:
        trainer.logger.close()
        trainer.close()
    return batches, cfg


def effects(batches: list[dict], beta: float, clip: float | None, norm: str = "group") -> dict:
    """What the step term does at (beta, clip): the shares and ratio described in the module docstring."""
    import igsearch.methods  # noqa: F401  (registers the ig estimator)
    from igsearch.algo.advantages import AdvantageConfig, AdvantageInput, compute_advantages
    from igsearch.ig.config import IGConfig

    cfg = AdvantageConfig(method="ig").with_options(IGConfig(beta=beta, clip=clip, norm=norm))
    tok = {"success": [0, 0], "failure": [0, 0]}  # [flipped tokens, tokens]
    steps = {"success": [0, 0], "failure": [0, 0]}  # [flipped steps, steps]
    all_fail_abs, mixed_abs, clipped, scored = [], [], 0.0, 0.0
    for batch in batches:
        inp = AdvantageInput(batch["rewards"], batch["group_ids"],
                             [[tuple(s) for s in row] for row in batch["query_spans"]], batch["lengths"],
                             scores={"step_ig": batch["step_ig"]})
        out = compute_advantages(inp, cfg)
        clipped += out.stats["ig/clip_frac"] * out.stats["ig/scored_steps"]
        scored += out.stats["ig/scored_steps"]
        groups: dict[int, list[int]] = {}
        for i, g in enumerate(batch["group_ids"]):
            groups.setdefault(g, []).append(i)
        kind = {}
        for members in groups.values():
            ok = [batch["rewards"][i] > 0 for i in members]
            label = "mixed" if any(ok) and not all(ok) else ("all_fail" if not any(ok) else "all_ok")
            for i in members:
                kind[i] = label
                if label == "mixed":
                    mixed_abs.append(abs(float(out.seq_adv[i])))
        for (i, start, end), v in zip(out.spans.tolist(), out.span_values.tolist()):
            n = end - start
            step_term = beta * v
            if kind[i] == "all_fail":
                all_fail_abs.extend([abs(step_term)] * n)
            elif kind[i] == "mixed":
                a = float(out.seq_adv[i])
                which = "success" if batch["rewards"][i] > 0 else "failure"
                flipped = (a + step_term < 0) if which == "success" else (a + step_term > 0)
                tok[which][0] += n * flipped
                tok[which][1] += n
                steps[which][0] += int(flipped)
                steps[which][1] += 1
    share = lambda k: tok[k][0] / tok[k][1] if tok[k][1] else float("nan")  # noqa: E731
    mixed = statistics.fmean(mixed_abs) if mixed_abs else float("nan")
    return {
        "beta": beta, "clip": clip, "norm": norm,
        "clip_frac": clipped / scored if scored else 0.0,
        "success_punished": share("success"),
        "success_punished_steps": steps["success"],
        "success_punished_ub": wilson_upper(*steps["success"]),
        "failure_credited": share("failure"),
        "all_fail_signal": (statistics.fmean(all_fail_abs) / mixed) if all_fail_abs and mixed_abs else float("nan"),
        "query_tokens": {k: v[1] for k, v in tok.items()} | {"all_fail": len(all_fail_abs)},
    }


def ig_summary(batches: list[dict]) -> dict:
    """Raw IG of scored steps in successful vs failed rollouts, and how many steps were scored."""
    succ, fail, n_steps = [], [], 0
    for b in batches:
        for r, row in zip(b["rewards"], b["step_ig"]):
            n_steps += len(row)
            (succ if r > 0 else fail).extend(v for v in row if v is not None)
    stat = lambda xs: {"n": len(xs), "mean": statistics.fmean(xs) if xs else None,  # noqa: E731
                       "positive_frac": sum(v > 0 for v in xs) / len(xs) if xs else None}
    return {"steps": n_steps, "success": stat(succ), "failure": stat(fail),
            "rollouts": sum(len(b["rewards"]) for b in batches)}


def wilson_upper(k: int, n: int, z: float = 1.96) -> float:
    """Upper end of the Wilson score interval of a proportion k/n (1.0 when n is 0)."""
    if n == 0:
        return 1.0
    p = k / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, (centre + half) / (1 + z * z / n))


def choose(grid: list[dict]) -> dict | None:
    """The row the stated rule picks: the tightest clip with clip_frac <= 5%, then the largest beta
    whose success_punished_ub <= 10%. None when no row qualifies."""
    clips = sorted({g["clip"] for g in grid if g["clip"] is not None and g["clip_frac"] <= MAX_CLIP_FRAC})
    clip = clips[0] if clips else None
    ok = [g for g in grid if g["clip"] == clip and g["success_punished_ub"] <= MAX_SUCCESS_PUNISHED]
    return max(ok, key=lambda g: g["beta"]) if ok else None


def plot(grid: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(14, 3.8))
    for clip in CLIPS:
        rows = [g for g in grid if g["clip"] == clip]
        label = f"c={clip}" if clip is not None else "no clip"
        for a, key in zip(ax, ("success_punished_ub", "failure_credited", "all_fail_signal")):
            a.plot([g["beta"] for g in rows], [g[key] for g in rows], marker="o", label=label)
    ax[0].axhline(MAX_SUCCESS_PUNISHED, color="grey", ls="--", lw=1)
    titles = ("successful search steps turned negative (95% upper bound)", "query tokens of failed rollouts turned positive",
              "all-fail step signal / GRPO signal in mixed groups")
    for a, t in zip(ax, titles):
        a.set_xscale("log"), a.set_xlim(min(BETAS) * 0.8, max(BETAS) * 1.25), a.set_xlabel("beta"), a.set_title(t, fontsize=9), a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(result: dict) -> str:
    s = result["ig"]
    fmt = lambda x: "-" if x is None or x != x else f"{x:.3f}"  # noqa: E731
    lines = []
    if result["args"]["quick"]:
        lines += ["> **SMOKE TEST (`--quick`)**: tiny world and a short warm start; not a measurement.", ""]
    lines += [
        "# Step-term coefficients: beta and the IG clip c", "",
        f"{result['device']}, {result['time'][:10]}. {s['rollouts']} rollouts of the SFT warm start "
        f"({result['args']['questions']} questions x 4 per batch, {result['args']['batches']} batches, "
        f"temperature 1), {s['steps']} search steps. Group-normalised IG (docs/DESIGN.md section 4), the "
        f"answer tokenized `{result.get('answer_tokens', 'separate')}` (`ig_answer_tokens`).", "",
        "| rollouts | scored steps | mean raw IG | share of steps with IG > 0 |", "|---|---:|---:|---:|",
        f"| successful | {s['success']['n']} | {fmt(s['success']['mean'])} | {fmt(s['success']['positive_frac'])} |",
        f"| failed | {s['failure']['n']} | {fmt(s['failure']['mean'])} | {fmt(s['failure']['positive_frac'])} |", "",
        "| beta | c | steps clipped | successful query tokens turned negative | successful search steps turned "
        "negative (95% upper bound) | failed query tokens (mixed groups) turned positive | all-fail signal / GRPO "
        "signal |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for g in result["grid"]:
        mark = " **(default)**" if (g["beta"], g["clip"]) == tuple(result["defaults"]) else ""
        lines.append(f"| {g['beta']}{mark} | {g['clip'] if g['clip'] is not None else 'none'} | {fmt(g['clip_frac'])} "
                     f"| {fmt(g['success_punished'])} | {g['success_punished_steps'][0]}/{g['success_punished_steps'][1]} "
                     f"({fmt(g['success_punished_ub'])}) | {fmt(g['failure_credited'])} | {fmt(g['all_fail_signal'])} |")
    pick = result["chosen"]
    lines += ["", f"Rule: c is the tightest clip that touches at most {MAX_CLIP_FRAC:.0%} of the steps; beta is the "
              f"largest whose 95% upper bound on successful search steps turned negative is at most "
              f"{MAX_SUCCESS_PUNISHED:.0%}.",
              f"The rule picks beta={pick['beta']}, c={pick['clip']}." if pick else "No grid point meets the rule.",
              "", f"![ig coefficients]({Path(result['plot']).name})"]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny world, short SFT, 1 small batch")
    ap.add_argument("--batches", type=int, default=None, help="rollout batches (default 8; --quick 1)")
    ap.add_argument("--questions", type=int, default=None, help="questions per batch (default 16; --quick 4)")
    ap.add_argument("--sft-steps", type=int, default=None, help="SFT steps if the warm start is built (default: the replication's)")
    ap.add_argument("--entities", type=int, default=None)
    ap.add_argument("--world-seed", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    add_threads_argument(ap)
    ap.add_argument("--work-dir", default=None, help="warm start dir (default runs/replicate, shared with replicate.py)")
    ap.add_argument("--from-json", default=None,
                    help="re-analyse the rollouts stored in an earlier result JSON instead of sampling new ones")
    ap.add_argument("--out", default=None, help="output prefix (default studies/results/ig_coefficients[-quick])")
    args = ap.parse_args(argv)
    q = args.quick
    args.batches = args.batches or (1 if q else 8)
    args.questions = args.questions or (4 if q else 16)
    from replicate import parse_args as replication_args

    shared = replication_args(["--quick"] if q else [])  # the replication's warm start, unless told otherwise
    args.sft_steps = args.sft_steps if args.sft_steps is not None else shared.sft_steps
    args.entities = args.entities if args.entities is not None else shared.entities
    for shared_setting in ("eval_split", "demonstrator", "relations", "policy_size", "sft_max_len"):
        setattr(args, shared_setting, getattr(shared, shared_setting))
    # what replicate.run_overrides reads beyond the above: one step, no evaluation
    args.steps, args.overrides, args.test_questions, args.eval_every = 1, [], 0, 0
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    apply_threads(args.threads)
    from igsearch.train.config import load_config

    root, tmp = work_root(args.work_dir or (None if args.quick else ROOT / "runs" / "replicate"), "ig-coefficients-")
    if args.from_json:
        try:
            old = json.loads(Path(args.from_json).read_text())
            batches, args_used = old["batches"], old["args"]
            sampled = {"time": old["time"], "device": old["device"]}  # the analysis is a pure function of these
        except (OSError, ValueError, KeyError) as e:
            raise SystemExit(f"ig_coefficients: cannot read stored rollouts from {args.from_json}: {e}")
        for k in ("batches", "questions", "sft_steps", "seed", "quick"):
            setattr(args, k, args_used[k])
        cfg = load_config(ROOT / "configs" / "tiny-cpu.yaml", [])  # the preset the sampling path runs on
        answer_tokens = old.get("answer_tokens", "separate")  # results from before the field scored it so
    else:
        batches, cfg = sample_batches(args, root)
        answer_tokens = cfg.scoring.answer_tokens
        sampled = {"time": datetime.now(timezone.utc).isoformat(),
                   "device": device_name("cuda" if torch.cuda.is_available() else "cpu")}
    grid = [effects(batches, b, c) for c in CLIPS for b in BETAS]
    defaults = (cfg.method_options("ig").beta, cfg.method_options("ig").clip)
    prefix = Path(args.out) if args.out else RESULTS / ("ig_coefficients-quick" if args.quick else "ig_coefficients")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    png = prefix.with_suffix(".png")
    plot(grid, png)
    result = {"benchmark": "ig_coefficients", **sampled, "torch": torch.__version__,
              "args": {"quick": args.quick, "batches": args.batches, "questions": args.questions,
                       "sft_steps": args.sft_steps, "seed": args.seed},
              "answer_tokens": answer_tokens, "ig": ig_summary(batches), "grid": grid, "defaults": list(defaults),
              "chosen": choose(grid),
              "plot": str(png), "batches": batches}
    atomic_write_text(prefix.with_suffix(".json"), json.dumps(result, indent=1))
    md = render(result)
    atomic_write_text(prefix.with_suffix(".md"), md)
    if tmp is not None:
        tmp.cleanup()
    d = next(g for g in grid if (g["beta"], g["clip"]) == defaults)
    print(f"\n{md}")
    print(f"beta={d['beta']} clip={d['clip']} success_punished={d['success_punished']:.3f} "
          f"all_fail_signal={d['all_fail_signal']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
