"""How many SFT steps does the demo's warm start need? (issue 27: the demo's time on a CPU without AVX-512)

The warm start is most of ``make demo``'s time (1,482 steps of 16 demonstrations, ~10 of 14 minutes on
an AVX-512 Xeon; its training loss ends near 0.005, so most late steps polish what is already learnt).
This study trains the same warm start (the demo folder's world, initial policy, seed, demonstrator and
every other setting) with fewer steps, the cosine schedule ending at each budget, and measures each on
the demo world's dev questions, greedy, at the demo's topk (2) and at topk 3 (the range of passages the
warm start is trained over must still hold). Each budget is compared with the demo folder's own warm
start, paired over the same questions (95% bootstrap interval).

Greedy EM of the warm start is not the goal by itself: the demo exists to show RL improving it, so the
budget chosen here is then checked by running the demo on it (``igsearch demo --sft-steps N``).

    igsearch demo --build-warm-start --out runs/demo-built      # the world, initial policy and warm start
    python studies/sft_budget.py --demo runs/demo-built --steps 500,750,1000   # ~25 minutes on 2 cores

Budgets already trained (``<demo>-sft-steps<N>/``) are reused, so several invocations with disjoint
``--steps`` can train side by side and a last one with all of them evaluates. Writes
studies/results/sft_budget.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"  # the studies' history of experiments


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--demo", default="runs/demo", help="a built demo folder (world, policy-init, sft)")
    ap.add_argument("--steps", default="500,750,1000", help="SFT step budgets to train and compare")
    ap.add_argument("--eval-topks", default="2,3")
    ap.add_argument("--seed", type=int, default=0, help="the demo's seed (its warm start's)")
    ap.add_argument("--train-only", action="store_true", help="train the budgets, evaluate nothing")
    ap.add_argument("--threads", default=None, help="torch threads of the SFT runs (default: auto)")
    ap.add_argument("--out", default=str(RESULTS / "sft_budget"))
    args = ap.parse_args(argv)
    from sft_topk_range import demo_parts, evaluate_at, paired

    from igsearch.machine import cpu_avx512_flags
    from igsearch.measure import device_name
    from igsearch.train.sft import run_sft
    from igsearch.warmstart import DEMONSTRATORS, WarmStartConfig

    demo = Path(args.demo)
    world, init, reference = demo_parts(demo)
    summary = json.loads((reference / "sft_summary.json").read_text())
    ws = replace(WarmStartConfig(), distractor=summary["distractor"])
    if summary["distractor"] != DEMONSTRATORS["lookalike"] or summary["topk"] != list(ws.sft_topks):
        raise SystemExit(f"{reference}: not the default demo's warm start (distractor {summary['distractor']}, topk "
                         f"{summary['topk']}); rebuild it with `igsearch demo --build-warm-start --out {demo}`")
    budgets = sorted(int(s) for s in args.steps.split(","))
    folders = {summary["steps"]: reference}
    seconds = {}
    for steps in budgets:
        out = demo.parent / f"{demo.name}-sft-steps{steps}"
        folders[steps] = out
        if not (out / "config.json").exists():
            print(f"[sft_budget] SFT with {steps} steps -> {out}", flush=True)
            t0 = time.perf_counter()
            run_sft(init, world, out, **{**ws.sft_kwargs(), "steps": steps}, seed=args.seed, threads=args.threads)
            seconds[steps] = time.perf_counter() - t0
            (out / "sft_seconds.json").write_text(json.dumps({"seconds": seconds[steps], "threads": args.threads}))
    if args.train_only:
        return 0
    rows = []
    for k in [int(k) for k in args.eval_topks.split(",")]:
        ref = evaluate_at(reference, world, k)
        for steps in sorted(folders):
            res = ref if folders[steps] == reference else evaluate_at(folders[steps], world, k)
            diff = paired(ref["per_question"], res["per_question"])
            loss = json.loads((folders[steps] / "sft_summary.json").read_text())["loss_last"]
            rows.append({"steps": steps, "topk": k, "em": res["em"], "diff_vs_reference": diff, "loss_last": loss,
                         "per_question": res["per_question"]})
            print(f"[sft_budget] {steps} steps, topk {k}: dev EM {res['em']:.3f}, vs {summary['steps']} steps "
                  f"{diff[0]:+.3f} [{diff[1]:+.3f}, {diff[2]:+.3f}], final loss {loss:.4f}", flush=True)
    result = {"study": "sft_budget", "time": time.strftime("%Y-%m-%d"), "device": device_name("cpu"),
              "avx512": cpu_avx512_flags(), "demo": str(demo), "reference_steps": summary["steps"],
              "warm_start": ws.sft_kwargs(), "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    n = len(rows[0]["per_question"])
    lines = [f"# SFT budget of the demo's warm start ({result['device']}, AVX-512: "
             f"{', '.join(result['avx512']) or 'none'}, {result['time']})", "",
             f"Greedy EM on the demo world's {n} dev questions of warm starts trained with fewer steps (same world, "
             f"initial policy, seed, demonstrator and settings; the cosine schedule ends at each budget), each paired "
             f"with the {summary['steps']}-step warm start over the same questions (95% bootstrap interval).", "",
             "| SFT steps | final loss | evaluated at topk | dev EM | vs reference [95%] |", "|---:|---:|---:|---:|---|"]
    lines += [f"| {r['steps']} | {r['loss_last']:.4f} | {r['topk']} | {r['em']:.3f} | {r['diff_vs_reference'][0]:+.3f} "
              f"[{r['diff_vs_reference'][1]:+.3f}, {r['diff_vs_reference'][2]:+.3f}] |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for k in sorted({r["topk"] for r in rows}):
        sel = [r for r in rows if r["topk"] == k]
        ax.errorbar([r["steps"] for r in sel], [r["em"] for r in sel], marker="o", label=f"evaluated at topk {k}",
                    yerr=[[r["diff_vs_reference"][0] - r["diff_vs_reference"][1] for r in sel],
                          [r["diff_vs_reference"][2] - r["diff_vs_reference"][0] for r in sel]], capsize=3)
    ax.set_xlabel("SFT steps (batch 16)")
    ax.set_ylabel("greedy dev EM")
    ax.set_title("bars: 95% interval of the paired change", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
