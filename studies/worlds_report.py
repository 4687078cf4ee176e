"""The report of studies/worlds.py: methods compared over several worlds, each with its own warm start.

Input ``worlds[w]``: ``{"manifest", "warm_start": {split: metrics}, "runs": runs[method][seed], ...}`` where a
run is studies/replicate.py's record (evaluations ``{step: {"metrics", "records", "train_s"}}``). Reported:

- **warm starts** per world and hop count on dev and test, and whether they are alike: every world's test EM
  within :data:`ALIKE_EM` of the worlds' mean and 1-hop test EM above :data:`ALIKE_ONE_HOP`;
- **method - GRPO** in final test EM: per world (seed s paired with seed s, seeds then questions resampled)
  and pooled over worlds, the estimate the mean over worlds of each world's mean difference and the 95%
  interval from :func:`igsearch.stats.hierarchical_bootstrap` (worlds, then seeds within a world, then
  questions), overall and per hop count;
- **the verdict** on the pooled IG-Search - GRPO interval: *held* above 0, *did not hold* below 0, *not
  shown* otherwise;
- **wall-clock to quality**: EM against training minutes, per world (seed means) and pooled (the mean over
  worlds at each evaluation step, minutes averaged the same way), and the training time each method takes to
  reach GRPO's best, per world and pooled;
- **searches**: searches per question and EM per hop count, warm start against each method after training,
  pooled over worlds, with the worlds where a method lowered both the searches and the multi-hop EM (search
  collapse);
- **the step IG per world**: IG-Search's step IG over its training steps (mean, spread, share positive, share
  of search steps scored) and its part of the advantage on multi-hop rollouts that searched as many times as
  the hops or fewer, beside that world's IG-Search - GRPO, to say what the step IG looked like where it lost.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from replication_report import VERDICTS, final_eval, mean_curve, seed_paired, seed_question_diffs, time_to_target
from replication_report import judge_interval as judge

from igsearch.io import atomic_write_text
from igsearch.measure import measurement_header

ALIKE_EM = 0.05        # the issue's aim: warm-start test EM within ±0.05 of each other ...
ALIKE_ONE_HOP = 0.85   # ... and 1-hop test EM above 0.85 on every world
REFERENCE = "grpo"
FULL_WORLDS, FULL_SEEDS = 4, 3  # the study's minimum (issue #38): fewer make a partial page
OVERALL = "overall"
# searches per question that fall by more than this while multi-hop EM falls too mark a search collapse
COLLAPSE_SEARCHES = 0.1


def hop_sources(metrics: dict) -> list[str]:
    """The data sources of an evaluation's metrics (hop counts on the world), ``overall`` last."""
    return sorted(s for s in metrics if s != OVERALL) + [OVERALL]


# ----------------------------------------------------------------------------- warm starts


def warm_start_alike(worlds: dict) -> dict:
    """Whether the worlds' warm starts are alike: test EM per world, their mean, the largest distance from
    it, the lowest 1-hop test EM, and the two checks."""
    test = {w: d["warm_start"]["test"] for w, d in worlds.items()}
    em = {w: m[OVERALL]["em"] for w, m in test.items()}
    mean = statistics.fmean(em.values())
    one_hop = {w: m[s]["em"] for w, m in test.items() for s in m if "1hop" in s}
    out = {"test_em": em, "mean": mean, "max_distance": max(abs(v - mean) for v in em.values()),
           "one_hop": one_hop, "min_one_hop": min(one_hop.values()) if one_hop else None}
    out["em_alike"] = out["max_distance"] <= ALIKE_EM
    out["one_hop_above"] = out["min_one_hop"] is not None and out["min_one_hop"] > ALIKE_ONE_HOP
    return out


# ----------------------------------------------------------------------------- differences


def pooled_difference(worlds: dict, a: str, b: str, *, n_boot: int = 10_000) -> dict:
    """Method b minus method a pooled over the worlds that ran both, per hop count and ``overall``:
    ``{source: {"diff", "low", "high", "worlds", "seeds", "n"}}`` (95% interval: worlds, then seeds, then
    questions resampled)."""
    from igsearch.stats import hierarchical_bootstrap

    with_both = [d["runs"] for d in worlds.values() if a in d["runs"] and b in d["runs"]]
    if not with_both:
        return {}
    sources = hop_sources(final_eval(next(iter(with_both[0][a].values())))["metrics"])
    out = {}
    for source in sources:
        diffs = [seed_question_diffs(runs, a, b, source) for runs in with_both]
        diffs = [d for d in diffs if d.size]
        if not diffs:
            continue
        diff, low, high = hierarchical_bootstrap(diffs, n_boot=n_boot)
        out[source] = {"diff": diff, "low": low, "high": high, "worlds": len(diffs),
                       "seeds": min(d.shape[0] for d in diffs), "n": sum(d.shape[1] for d in diffs)}
    return out


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def fmt(row: dict) -> str:
    return f"{row['diff']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}]"


# ----------------------------------------------------------------------------- wall-clock and searches


def pooled_curve(worlds: dict, method: str) -> list[tuple[int, float, float]]:
    """(step, training seconds, EM) averaged over the worlds that ran ``method``, at the evaluation steps all of
    them share (each world's point is its seed mean, :func:`mean_curve`)."""
    curves = [dict((s, (t, em)) for s, t, em in mean_curve(d["runs"][method]))
              for d in worlds.values() if method in d["runs"]]
    if not curves:
        return []
    common = sorted(set.intersection(*(set(c) for c in curves)))
    return [(s, statistics.fmean(c[s][0] for c in curves), statistics.fmean(c[s][1] for c in curves))
            for s in common]


def searches_table(worlds: dict) -> dict:
    """Per method and hop count: the warm start's and the trained policies' test EM and searches per question,
    averaged over worlds (each world's trained value its seed mean), and the worlds where the method lowered
    searches per question by more than :data:`COLLAPSE_SEARCHES` while multi-hop EM fell."""
    methods = sorted({m for d in worlds.values() for m in d["runs"]})
    out = {}
    for method in methods:
        rows, collapsed = {}, []
        for w, d in worlds.items():
            if method not in d["runs"]:
                continue
            warm = next(iter(d["runs"][method].values()))["evals"][0]["metrics"]
            finals = [final_eval(r)["metrics"] for r in d["runs"][method].values()]
            multi_em_fell = False
            for s in hop_sources(warm):
                after_em = statistics.fmean(f[s]["em"] for f in finals)
                after_searches = statistics.fmean(f[s]["searches"] for f in finals)
                row = rows.setdefault(s, {"warm_em": [], "em": [], "warm_searches": [], "searches": []})
                row["warm_em"].append(warm[s]["em"]), row["em"].append(after_em)
                row["warm_searches"].append(warm[s]["searches"]), row["searches"].append(after_searches)
                if s != OVERALL and "1hop" not in s and after_em < warm[s]["em"]:
                    multi_em_fell = True
            overall = rows[OVERALL]
            if overall["warm_searches"][-1] - overall["searches"][-1] > COLLAPSE_SEARCHES and multi_em_fell:
                collapsed.append(w)
        out[method] = {"per_hop": {s: {k: statistics.fmean(v) for k, v in row.items()} for s, row in rows.items()},
                       "collapsed_worlds": collapsed}
    return out


def search_credit_table(worlds: dict) -> dict:
    """Per method and ``"<hops>:<fewer|as many|more>"``: the rollouts (over worlds, seeds and steps) and their
    mean advantage, outcome part and step part (studies/replicate.py's ``search_credit`` probe; runs recorded
    before it have none)."""
    out: dict[str, dict] = {}
    for d in worlds.values():
        for method, by_seed in d["runs"].items():
            for run in by_seed.values():
                for probe in run["probes"]:
                    for key, row in probe.get("search_credit", {}).items():
                        acc = out.setdefault(method, {}).setdefault(key, {"n": 0, "outcome_sum": 0.0, "step_sum": 0.0})
                        for k in acc:
                            acc[k] += row[k]
    return {m: {k: {"n": r["n"], "outcome": r["outcome_sum"] / r["n"], "step": r["step_sum"] / r["n"]}
                for k, r in sorted(rows.items()) if r["n"]} for m, rows in out.items()}


STEP_IG_METRICS = ("ig/mean", "ig/std", "ig/positive_frac", "ig/scored_frac")


def step_ig_by_world(worlds: dict, method: str = "ig") -> dict:
    """Per world that ran ``method``: the training steps' step-IG metrics averaged over seeds and steps
    (:data:`STEP_IG_METRICS`), and the mean step part of the advantage per response token on multi-hop rollouts
    that searched as many times as the hops (``step_as_many``) or fewer (``step_fewer``); None where no rollout
    or no metric was recorded."""
    out = {}
    for w, d in worlds.items():
        runs = d["runs"].get(method)
        if not runs:
            continue
        steps = [m for r in runs.values() for m in r["steps"]]
        row = {k: statistics.fmean(m[k] for m in steps if k in m) if any(k in m for m in steps) else None
               for k in STEP_IG_METRICS}
        credit = search_credit_table({w: {"runs": {method: runs}}}).get(method, {})
        for name, kind in (("step_as_many", "as many"), ("step_fewer", "fewer")):
            cells = [c for key, c in credit.items() if key.split(":")[0] != "1" and key.split(":")[1] == kind]
            n = sum(c["n"] for c in cells)
            row[name] = sum(c["n"] * c["step"] for c in cells) / n if n else None
        out[w] = row
    return out


# ----------------------------------------------------------------------------- plots


def plots(worlds: dict, pooled: dict, per_world: dict, prefix: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    methods = sorted({m for d in worlds.values() for m in d["runs"]})
    if methods:
        fig, ax = plt.subplots(1, 2, figsize=(12, 4))
        colours = {m: f"C{i}" for i, m in enumerate(methods)}
        for m in methods:
            for d in worlds.values():
                if m in d["runs"]:
                    c = mean_curve(d["runs"][m])
                    ax[0].plot([t / 60 for _, t, _ in c], [em for _, _, em in c], color=colours[m], alpha=0.25)
            c = pooled_curve(worlds, m)
            ax[0].plot([t / 60 for _, t, _ in c], [em for _, _, em in c], color=colours[m], marker="o", label=m)
        ax[0].set_title("test EM against training minutes (thin: one world, bold: mean over worlds)", fontsize=9)
        ax[0].set_xlabel("training minutes (evaluations excluded)"), ax[0].set_ylabel("test EM (greedy)")
        ax[0].legend(fontsize=8)
        labels, rows = [], []
        for w, cmp in per_world.items():
            labels.append(f"world {w}"), rows.append(cmp[OVERALL])
        if pooled.get(OVERALL):
            labels.append("pooled"), rows.append(pooled[OVERALL])
        y = list(range(len(rows)))[::-1]
        ax[1].errorbar([r["diff"] for r in rows], y, xerr=[[r["diff"] - r["low"] for r in rows],
                                                            [r["high"] - r["diff"] for r in rows]],
                       fmt="o", capsize=4)
        ax[1].axvline(0, color="grey", linestyle=":")
        ax[1].set_yticks(y, labels)
        ax[1].set_title("IG-Search - GRPO, final test EM, 95% interval", fontsize=9)
        fig.tight_layout()
        paths.append(prefix.with_name(prefix.name + "_em.png"))
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.6))
    ws = list(worlds)
    sources = [s for s in hop_sources(worlds[ws[0]]["warm_start"]["test"])]
    width = 0.8 / max(1, len(ws))
    for i, w in enumerate(ws):
        test = worlds[w]["warm_start"]["test"]
        ax.bar([j + i * width for j in range(len(sources))], [test[s]["em"] if s in test else 0 for s in sources],
               width, label=f"world {w}")
    ax.axhline(ALIKE_ONE_HOP, color="grey", linestyle=":", linewidth=1)
    ax.set_xticks([j + width * (len(ws) - 1) / 2 for j in range(len(sources))], sources)
    ax.set_ylabel("test EM (greedy)"), ax.set_title("warm starts per hop count"), ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(prefix.with_name(prefix.name + "_warm_starts.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


# ----------------------------------------------------------------------------- the page


def world_line(result: dict) -> str:
    """The worlds' size in words: entities, relations and the dev/test questions of the first world (its manifest)."""
    first = next(iter(result["world_sizes"].values()))
    splits = first["splits"]
    return (f"{first['entities']} entities, {first['relations'] or '?'} relations, "
            f"{splits.get('dev', '-')} dev and {splits.get('test', '-')} test questions")


def render(result: dict, png: list[Path]) -> str:
    a = result["args"]
    lines = []
    if a["quick"]:
        lines += ["> **SMOKE TEST (`--quick`)**: small worlds, a few steps; these numbers are not a result.", ""]
    seeds = [x for x in str(a["seeds"]).split(",") if x.strip()]
    if result["methods"] and (len(a["worlds"]) < FULL_WORLDS or len(seeds) < FULL_SEEDS):
        lines += [f"> **Partial**: {plural(len(a['worlds']), 'world')} x {plural(len(seeds), 'seed')}, where the study needs at least "
                  f"{FULL_WORLDS} x {FULL_SEEDS}; the rule below is applied, but this is not the study's verdict.", ""]
    lines += ["# IG-Search against GRPO over several worlds" if result["methods"] else "# Warm starts of several worlds", "",
              f"{result['device']}, {result['cpu']}, {result['time'][:10]}.", "",
              f"Worlds {a['worlds']} ({world_line(result)}), each with its own warm start (the demo's recipe, "
              f"look-alike demonstrator, {a['sft_steps']} SFT steps, policy size {a.get('policy_size') or 'small'}). "
              + (f"Methods {', '.join(result['methods'])}, RL seeds {a['seeds']}, {a['steps']} steps each, the demo's RL "
                 f"settings, test evaluated greedily every {a['eval_every']} steps. " if result["methods"] else
                 "The warm starts only (`--setup-only`): no RL run is reported here. ")
              + "Reproduce: the commands of studies/worlds.py's docstring.", "",
              "## Warm starts", "",
              "| world | split | " + " | ".join(result["sources"]) + " | searches / question |",
              "|---|---|" + "---:|" * (len(result["sources"]) + 1)]
    for w, warm in result["warm_starts"].items():
        for split, m in warm.items():
            lines.append(f"| {w} | {split} | " + " | ".join(f"{m[s]['em']:.3f}" if s in m else "-"
                                                             for s in result["sources"])
                         + f" | {m[OVERALL]['searches']:.2f} |")
    al = result["alike"]
    lines += ["", f"Alike? Test EM {', '.join(f'{v:.3f}' for v in al['test_em'].values())}: the largest distance from "
              f"their mean ({al['mean']:.3f}) is {al['max_distance']:.3f} (aim: at most {ALIKE_EM}): "
              f"**{'yes' if al['em_alike'] else 'no'}**; 1-hop test EM at least "
              f"{al['min_one_hop'] if al['min_one_hop'] is None else format(al['min_one_hop'], '.3f')} "
              f"(aim: above {ALIKE_ONE_HOP}): **{'yes' if al['one_hop_above'] else 'no'}**.", ""]
    pooled = result["pooled"]
    if result["per_world"]:
        ig = pooled.get("ig vs grpo", {})
        lines += ["## IG-Search minus GRPO", "",
                  "Rule: IG-Search minus GRPO in final test EM, pooled over worlds (the mean over worlds of each world's "
                  "mean over seeds and questions), with a 95% interval that resamples worlds, then seeds within a "
                  "world (seed s of one method paired with seed s of the other), then questions "
                  "(`igsearch.stats.hierarchical_bootstrap`). The claim *held* when the interval lies above 0, *did "
                  "not hold* when it lies below 0, and is *not shown* otherwise.", ""]
        if ig.get(OVERALL):
            lines += [f"**Verdict: {VERDICTS[judge(ig[OVERALL])]}**: IG-Search - GRPO {fmt(ig[OVERALL])} over "
                      f"{plural(ig[OVERALL]['worlds'], 'world')}.", ""]
        head = "| | " + " | ".join(result["sources"]) + " |"
        lines += [head, "|---|" + "---:|" * len(result["sources"])]
        for name in pooled:
            for w, cmp in result["per_world"].get(name, {}).items():
                lines.append(f"| {name}, world {w} | " + " | ".join(fmt(cmp[s]) if s in cmp else "-"
                                                                    for s in result["sources"]) + " |")
            lines.append(f"| **{name}, pooled** | " + " | ".join(fmt(pooled[name][s]) if s in pooled[name] else "-"
                                                                for s in result["sources"]) + " |")
        lines += [""]
        lines += ["## Wall-clock to quality", "",
                  "Target: the best test EM GRPO's curve reaches after step 0; training minutes exclude "
                  "evaluations. Pooled: the curves averaged over worlds at each evaluation step.", "",
                  "| | target EM | " + " | ".join(result["methods"]) + " |", "|---|---:|" + "---:|" * len(result["methods"])]
        for name, ttq in result["time_to_grpo_best"].items():
            if not ttq:
                continue
            cells = []
            for m in result["methods"]:
                hit = ttq["methods"].get(m)
                cells.append(f"{hit['seconds'] / 60:.1f} min (step {hit['step']})" if hit else "not reached")
            lines.append(f"| {name} | {ttq['target_em']:.3f} | " + " | ".join(cells) + " |")
        lines += ["", "## Searches per question and EM per hop count (mean over worlds)", "",
                  "| method | hops | warm start EM | EM after | warm start searches | searches after |",
                  "|---|---|---:|---:|---:|---:|"]
        for m, row in result["searches"].items():
            for s, v in row["per_hop"].items():
                lines.append(f"| {m} | {s} | {v['warm_em']:.3f} | {v['em']:.3f} | {v['warm_searches']:.2f} | "
                             f"{v['searches']:.2f} |")
        collapsed = {m: row["collapsed_worlds"] for m, row in result["searches"].items() if row["collapsed_worlds"]}
        lines += ["", "Search collapse (searches per question down by more than "
                  f"{COLLAPSE_SEARCHES} and a multi-hop EM down): "
                  + ("; ".join(f"{m} on worlds {ws}" for m, ws in collapsed.items()) if collapsed else "none") + ".", ""]
    credit = result.get("search_credit") or {}
    if credit:
        lines += ["## What the advantages push towards", "",
                  "Rollouts of training batches grouped by their searches against the question's hop count; mean "
                  "advantage per response token, the outcome part (the method's trajectory advantage) and the step "
                  "part (IG-Search's step IG; 0 for GRPO and RLOO) apart, over worlds, seeds and steps. A positive "
                  "mean on *fewer* rollouts of multi-hop questions pushes the policy to search less. The format "
                  "penalty is " + result["format_penalty"] + " in these runs.", "",
                  "| method | hops: searches | rollouts | outcome part | step part | sum |", "|---|---|---:|---:|---:|---:|"]
        for m, rows in credit.items():
            for key, r in rows.items():
                lines.append(f"| {m} | {key} | {r['n']} | {r['outcome']:+.3f} | {r['step']:+.3f} | "
                             f"{r['outcome'] + r['step']:+.3f} |")
        lines += [""]
    step_ig, ig_worlds = result.get("step_ig") or {}, result["per_world"].get("ig vs grpo", {})
    if step_ig:
        def cell(v, spec):
            return "-" if v is None else format(v, spec)
        lines += ["## IG-Search's step IG per world", "",
                  "Over IG-Search's training steps and seeds: the step IG of scored search steps (mean, spread, share "
                  "positive), the share of search steps scored, and the step part of the advantage per response "
                  "token on multi-hop rollouts that searched as many times as the hops and fewer; beside each "
                  "world's IG-Search - GRPO.", "",
                  "| world | IG-Search - GRPO | step IG mean | step IG std | positive | scored | step part, as many "
                  "| step part, fewer |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for w, r in step_ig.items():
            diff = ig_worlds.get(w, {}).get(OVERALL)
            lines.append(f"| {w} | {fmt(diff) if diff else '-'} | {cell(r['ig/mean'], '+.3f')} | "
                         f"{cell(r['ig/std'], '.3f')} | {cell(r['ig/positive_frac'], '.2f')} | "
                         f"{cell(r['ig/scored_frac'], '.2f')} | {cell(r['step_as_many'], '+.3f')} | "
                         f"{cell(r['step_fewer'], '+.3f')} |")
        lines += [""]
    lines += [f"![{p.stem}]({p.name})" for p in png]
    return "\n".join(lines) + "\n"


def write_report(args, worlds: dict, prefix: Path, *, started: float, n_boot: int = 10_000) -> tuple[dict, str]:
    """Aggregate, compare, plot and write ``<prefix>.json`` and ``<prefix>.md`` (plots beside them); returns
    (the JSON's content, the Markdown). Worlds without runs (``--setup-only``) report their warm starts only."""
    import time

    methods = sorted({m for d in worlds.values() for m in d["runs"]}, key=lambda m: (m != REFERENCE, m != "ig", m))
    first = next(iter(worlds.values()))
    pooled, per_world = {}, {}
    for m in methods:
        if m == REFERENCE:
            continue
        name = f"{m} vs {REFERENCE}"
        pooled[name] = pooled_difference(worlds, REFERENCE, m, n_boot=n_boot)
        per_world[name] = {w: seed_paired(d["runs"], REFERENCE, m, n_boot=n_boot) for w, d in worlds.items()
                           if REFERENCE in d["runs"] and m in d["runs"]}
    ttq = {f"world {w}": time_to_target({m: mean_curve(by) for m, by in d["runs"].items()}, REFERENCE)
           for w, d in worlds.items() if d["runs"]}
    if methods:
        ttq["pooled"] = time_to_target({m: pooled_curve(worlds, m) for m in methods}, REFERENCE)
    result = {
        **measurement_header("worlds"),
        "args": {"quick": args.quick, "worlds": args.worlds, "methods": args.methods, "seeds": args.seeds,
                 "steps": args.steps, "eval_every": args.eval_every, "sft_steps": args.sft_steps,
                 "overrides": args.overrides, **{k: getattr(args, k, None) for k in
                                                 ("entities", "eval_split", "relations", "policy_size", "sft_max_len")}},
        "sources": hop_sources(first["warm_start"]["test"]),
        "world_sizes": {w: {"entities": d["manifest"]["n_entities"], "splits": d["manifest"]["splits"],
                            "relations": len(d["manifest"].get("relations", []))} for w, d in worlds.items()},
        "warm_starts": {w: d["warm_start"] for w, d in worlds.items()},
        "alike": warm_start_alike(worlds),
        "methods": methods,
        "per_world": per_world,
        "pooled": pooled,
        "time_to_grpo_best": ttq,
        "curves": {m: {"pooled": pooled_curve(worlds, m),
                       **{f"world {w}": mean_curve(d["runs"][m]) for w, d in worlds.items() if m in d["runs"]}}
                   for m in methods},
        "searches": searches_table(worlds) if methods else {},
        "search_credit": search_credit_table(worlds),
        "step_ig": step_ig_by_world(worlds),
        "format_penalty": ", ".join(sorted({str(r["config"]["format_penalty"]) for d in worlds.values()
                                            for by in d["runs"].values() for r in by.values()
                                            if "format_penalty" in r.get("config", {})})) or "unknown",
        "total_s": time.perf_counter() - started,
    }
    prefix.parent.mkdir(parents=True, exist_ok=True)
    png = plots(worlds, pooled.get("ig vs grpo", {}), per_world.get("ig vs grpo", {}), prefix)
    result["plots"] = [p.name for p in png]
    ig = pooled.get("ig vs grpo", {}).get(OVERALL)
    al = result["alike"]
    result["summary_line"] = (f"warm_start_test_em={','.join(f'{v:.3f}' for v in al['test_em'].values())} "
                              f"alike={str(al['em_alike'] and al['one_hop_above']).lower()}"
                              + (f" ig_minus_grpo={ig['diff']:+.3f} low={ig['low']:+.3f} high={ig['high']:+.3f} "
                                 f"verdict={judge(ig)}" if ig else ""))
    atomic_write_text(prefix.with_suffix(".json"), json.dumps(result, indent=1, default=str))
    md = render(result, png)
    atomic_write_text(prefix.with_suffix(".md"), md)
    return result, md


if __name__ == "__main__":
    raise SystemExit("worlds_report: the report of studies/worlds.py, which writes it; to report from the runs "
                     "already recorded, run `python studies/worlds.py --report-only`")
