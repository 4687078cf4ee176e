"""The replication's report (studies/replicate.py trains; this aggregates, judges, plots and writes).

From the recorded runs ``runs[method][seed]`` (``replicate_record.json``: per-step metrics, all-fail
probes, evaluations ``{step: {"metrics", "records", "train_s"}}``):

- test EM per hop count after training, mean and spread (sample std, min..max) over seeds;
- paired comparisons on the same questions (per-question EM averaged over seeds, questions
  resampled: 95% bootstrap interval; McNemar on single seeds): IG-Search vs GRPO overall and per hop
  count, and every method vs the warm start; the verdict on the paper's claims by the rule stated in
  the report;
- wall-clock to quality: EM against training seconds and steps, and the time each method takes to
  reach the best EM GRPO reaches;
- all-fail groups: their share per step and the gradient norm the all-fail probe measured.

:func:`write_report` writes ``<prefix>.json``, ``<prefix>.md`` and ``<prefix>_em.png``,
``<prefix>_allfail_grad.png``.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from pathlib import Path


from igsearch.io import atomic_write_text
from igsearch.measure import measurement_header


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


def seed_paired(runs: dict, a: str, b: str, *, n_boot: int = 10_000) -> dict:
    """Method b minus method a in final test EM, seed s of b paired with seed s of a, per ``data_source`` and
    ``overall``: ``{"diff", "low", "high", "seeds", "n"}`` with a 95% interval that resamples seeds, then
    questions (:func:`igsearch.stats.hierarchical_bootstrap` on one world), so that it carries the spread
    between seeds, which :func:`paired` (questions resampled, EM averaged over seeds) leaves out."""
    from igsearch.stats import hierarchical_bootstrap

    seeds = sorted(set(runs[a]) & set(runs[b]))
    first = {r["id"]: r for r in final_eval(runs[a][seeds[0]])["records"]}
    sources = sorted({r["data_source"] for r in first.values()}) + ["overall"]
    out = {}
    for source in sources:
        d = seed_question_diffs(runs, a, b, source)
        diff, low, high = hierarchical_bootstrap([d], n_boot=n_boot)
        out[source] = {"diff": diff, "low": low, "high": high, "seeds": len(seeds), "n": d.shape[1]}
    return out


def seed_question_diffs(runs: dict, a: str, b: str, source: str):
    """float array [S, Q]: final test EM of method b minus method a on each question of ``source``
    (``overall``: all) that every seed of both evaluated, seed s of b paired with seed s of a."""
    import numpy as np

    seeds = sorted(set(runs[a]) & set(runs[b]))
    by_seed = {m: [{r["id"]: r for r in final_eval(runs[m][s])["records"]} for s in seeds] for m in (a, b)}
    ids = sorted(set.intersection(*(set(x) for x in by_seed[a] + by_seed[b])))
    ids = [i for i in ids if source == "overall" or by_seed[a][0][i]["data_source"] == source]
    return np.array([[by_seed[b][k][i]["em"] - by_seed[a][k][i]["em"] for i in ids] for k in range(len(seeds))])


def mean_curve(by_seed: dict) -> list[tuple[int, float, float]]:
    """(step, mean training seconds, mean overall EM) at every evaluation step all seeds share."""
    common = sorted(set.intersection(*(set(r["evals"]) for r in by_seed.values())))
    return [(s, statistics.fmean(r["evals"][s]["train_s"] for r in by_seed.values()),
             statistics.fmean(r["evals"][s]["metrics"]["overall"]["em"] for r in by_seed.values())) for s in common]


def time_to_quality(runs: dict, reference: str = "grpo") -> dict:
    """:func:`time_to_target` on the seed-mean curves of ``runs[method][seed]``."""
    return time_to_target({m: mean_curve(by_seed) for m, by_seed in runs.items()}, reference)


def time_to_target(curves: dict, reference: str = "grpo") -> dict:
    """The best EM the reference method's curve reaches by training (evaluations after step 0), and for
    every method the first trained evaluation step (and its training seconds) at which its curve reaches it.
    ``curves[method]``: [(step, training seconds, EM)] (:func:`mean_curve`). ``warm_start_em``: the
    reference's step-0 EM, for reference."""
    if reference not in curves:
        return {}
    ref_curve = [c for c in curves[reference] if c[0] > 0]
    if not ref_curve:
        return {}
    target = max(em for _, _, em in ref_curve)
    start = [em for s, _, em in curves[reference] if s == 0]
    out = {"reference": reference, "target_em": target, "warm_start_em": start[0] if start else None, "methods": {}}
    for method, curve in curves.items():
        hit = next(((s, t) for s, t, em in curve if s > 0 and em >= target - 1e-12), None)
        out["methods"][method] = {"step": hit[0], "seconds": hit[1]} if hit else None
    return out


#: the rule on one interval of method - GRPO: its verdict, and the words a page gives it
VERDICTS = {"held": "held", "did_not_hold": "did not hold (GRPO ahead)",
            "not_shown": "not shown (the interval contains 0)"}


def judge_interval(row: dict) -> str:
    """``held`` (the interval lies above 0), ``did_not_hold`` (below 0) or ``not_shown``."""
    if row["low"] > 0:
        return "held"
    if row["high"] < 0:
        return "did_not_hold"
    return "not_shown"


def verdict(runs: dict, agg: dict, cmp_ig_grpo: dict | None) -> list[str]:
    """The paper's three claims, judged on this run with the rule stated in the text."""
    if not {"grpo", "ig"} <= set(runs) or not cmp_ig_grpo:
        return ["(both grpo and ig are needed to judge the claims)"]

    def judge(row: dict) -> str:
        return VERDICTS[judge_interval(row)]

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
    with_seeds = result.get("paired_with_seeds", {}).get("ig vs grpo")
    if with_seeds:
        row = with_seeds["overall"]
        lines += ["", f"With the spread between seeds in the interval as well (seed s of IG-Search paired with seed s "
                      f"of GRPO; seeds, then questions resampled: `igsearch.stats.hierarchical_bootstrap`), IG-Search "
                      f"minus GRPO is {row['diff']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}] over {row['seeds']} "
                      "seeds; per hop count: " + ", ".join(f"{s} {r['diff']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}]"
                                                          for s, r in with_seeds.items() if s != "overall") + "."]
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


def write_report(args, runs: dict, prefix: Path, *, manifest: dict, config_rollouts, answer_tokens, setup_s: float,
                 started: float) -> tuple[dict, str]:
    """Aggregate, compare, plot and write ``<prefix>.json`` and ``<prefix>.md`` (plots beside them);
    returns (the JSON's content, the Markdown). ``started``: ``time.perf_counter()`` at the start of the
    replication (``total_s`` runs from there to the plots)."""
    agg = aggregate(runs)
    paired_cmp = {}
    if {"grpo", "ig"} <= set(runs):
        paired_cmp["ig vs grpo"] = paired(runs, "grpo", "ig")
    for m in runs:
        paired_cmp[f"{m} vs warm start"] = paired(runs, "warm start", m)
    first = next(iter(next(iter(runs.values())).values()))
    prefix.parent.mkdir(parents=True, exist_ok=True)
    png = plots(runs, prefix)
    result = {
        **measurement_header("replication"),
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
        "paired_with_seeds": {"ig vs grpo": seed_paired(runs, "grpo", "ig")} if {"grpo", "ig"} <= set(runs) else {},
        "time_to_quality": time_to_quality(runs),
        "curves": {m: mean_curve(by_seed) for m, by_seed in runs.items()},
        "all_fail_frac_per_step": {m: {s: [x.get("groups/all_fail_frac") for x in r["steps"]] for s, r in by.items()}
                                   for m, by in runs.items()},
        "setup_s": setup_s,
        "total_s": time.perf_counter() - started,
        "plots": [p.name for p in png],
    }
    atomic_write_text(prefix.with_suffix(".json"), json.dumps(result, indent=1, default=str))
    md = render(result, agg, png, runs)
    atomic_write_text(prefix.with_suffix(".md"), md)
    return result, md


if __name__ == "__main__":
    sys.exit("replication_report: the report of studies/replicate.py, which writes it; to report from the runs "
             "already recorded, run `python studies/replicate.py --report-only`")
