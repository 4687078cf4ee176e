"""Should the warm start be trained over a range of passages per search? (issue 27)

A policy warm-started with 2 passages per search scored 0.033 dev EM when evaluated with 3, against
0.817 with 2. A pretrained LLM would not collapse that way. This study measures it on a built demo
warm start (``igsearch demo --build-warm-start`` writes ``<demo>/world``, ``<demo>/policy-init`` and ``<demo>/sft``):

1. greedy dev EM of a warm start trained with topk 2 alone (the demo's default until this study)
   evaluated at topk 1, 2, 3 and 4;
2. a warm start trained the same way (same init, world, seed and steps) but with each demonstration's
   passages per search drawn from ``--topks`` (default 1,2,3, the default since), at the same topk values.

Whichever of the two the demo folder's ``sft`` is (its ``sft_summary.json`` says) is reused; the other is
trained beside it.

Everything else of the rollout settings is the warm start's own (``rollout_settings.json``). Paired
95% bootstrap intervals over the same dev questions compare the two warm starts at every topk.

    python studies/sft_topk_range.py --demo runs/demo            # about 12 minutes on 2 cores

Writes studies/results/sft_topk_range.{json,md,png}.
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


def evaluate_at(model_dir: Path, world: Path, topk: int) -> dict:
    """Greedy EM on ``world/dev.jsonl`` at ``topk`` passages per search, the rest as trained."""
    from igsearch.data.loaders import load_qa
    from igsearch.data.prompts import get_template
    from igsearch.evaluation import evaluate
    from igsearch.policy.load import load_tokenizer
    from igsearch.retrieval import load_retriever
    from igsearch.rollout.agent import RolloutConfig
    from igsearch.rollout.engine import build_engine
    from igsearch.rollout.trained import read_rollout_settings

    trained = read_rollout_settings(model_dir)
    template = trained.pop("template")
    trained["topk"] = topk
    rows = load_qa(world / "dev.jsonl")
    engine = build_engine("vllm", model_dir, dtype="float32")
    try:
        res = evaluate(engine, load_retriever("bm25", corpus=world / "corpus.jsonl"), load_tokenizer(model_dir), rows,
                       template=get_template(template), config=RolloutConfig(**trained))
    finally:
        engine.close()
    return {"topk": topk, "em": res.metrics["overall"]["em"],
            "per_question": {r["id"]: r["em"] for r in res.to_dict()["records"]}}


def demo_parts(demo: Path) -> tuple[Path, Path, Path]:
    """(world, initial policy, warm start) of a built demo folder; exits with one line when one is missing."""
    world, init, sft = demo / "world", demo / "policy-init", demo / "sft"
    for p in (world / "dev.jsonl", init / "config.json", sft / "sft_summary.json"):
        if not p.exists():
            raise SystemExit(f"{p} not found: build the demo first (igsearch demo --build-warm-start --out {demo})")
    return world, init, sft


def paired(a: dict, b: dict, seed: int = 0) -> tuple[float, float, float]:
    """Mean of b - a over the shared questions and its 95% bootstrap interval."""
    from igsearch.stats import paired_bootstrap

    ids = sorted(set(a) & set(b))
    return paired_bootstrap([a[i] for i in ids], [b[i] for i in ids], seed=seed)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--demo", default="runs/demo", help="a built demo folder (world, policy-init, sft)")
    ap.add_argument("--topks", default="1,2,3", help="passages per search the range warm start draws from")
    ap.add_argument("--eval-topks", default="1,2,3,4")
    ap.add_argument("--seed", type=int, default=0, help="the demo's seed (its warm start's)")
    ap.add_argument("--out", default=str(RESULTS / "sft_topk_range"))
    args = ap.parse_args(argv)
    from igsearch.machine import cpu_avx512_flags
    from igsearch.measure import device_name
    from igsearch.train.sft import run_sft
    from igsearch.warmstart import DEMONSTRATORS, WarmStartConfig

    demo = Path(args.demo)
    world, init, fixed = demo_parts(demo)
    topks = [int(k) for k in args.topks.split(",")]
    ws = replace(WarmStartConfig(), distractor=DEMONSTRATORS["lookalike"])
    demo_topk = json.loads((fixed / "sft_summary.json").read_text())["topk"]
    ranged = demo.parent / f"{demo.name}-sft-topk{''.join(map(str, topks))}"
    if isinstance(demo_topk, list):  # the demo's warm start is the range one: train the single-topk one
        ranged, fixed = fixed, demo.parent / f"{demo.name}-sft-topk{ws.topk}"
    t0 = time.perf_counter()
    for out, topk in ((fixed, ws.topk), (ranged, topks)):
        if not (out / "config.json").exists():
            print(f"[sft_topk_range] SFT with topk {topk} -> {out}", flush=True)
            run_sft(init, world, out, **{**ws.sft_kwargs(), "topk": topk}, seed=args.seed)
    sft_s = time.perf_counter() - t0
    rows = []
    for k in [int(k) for k in args.eval_topks.split(",")]:
        a, b = evaluate_at(fixed, world, k), evaluate_at(ranged, world, k)
        diff = paired(a["per_question"], b["per_question"])
        rows.append({"topk": k, "fixed_em": a["em"], "range_em": b["em"], "diff": diff,
                     "fixed": a["per_question"], "range": b["per_question"]})
        print(f"[sft_topk_range] topk {k}: warm start (topk {ws.topk}) {a['em']:.3f}, range {topks} {b['em']:.3f}, "
              f"change {diff[0]:+.3f} [{diff[1]:+.3f}, {diff[2]:+.3f}]", flush=True)
    result = {"study": "sft_topk_range", "time": time.strftime("%Y-%m-%d"), "device": device_name("cpu"),
              "avx512": cpu_avx512_flags(), "demo": str(demo), "fixed_topk": ws.topk, "range_topks": topks,
              "sft_seconds": sft_s, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    lines = [f"# Warm start over a range of passages per search ({result['device']}, AVX-512: "
             f"{', '.join(result['avx512']) or 'none'}, {result['time']})", "",
             f"Greedy EM on the demo world's {len(rows[0]['fixed'])} dev questions. The demo's warm start was "
             f"trained with topk {ws.topk}; the range warm start with each demonstration's topk drawn from {topks}, "
             "everything else the same (init, world, seed, 1,482 steps). Paired 95% bootstrap intervals over "
             "questions.", "", "| evaluated at topk | warm start (topk 2) | range warm start | change [95%] |",
             "|---:|---:|---:|---|"]
    lines += [f"| {r['topk']} | {r['fixed_em']:.3f} | {r['range_em']:.3f} | {r['diff'][0]:+.3f} "
              f"[{r['diff'][1]:+.3f}, {r['diff'][2]:+.3f}] |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ks = [r["topk"] for r in rows]
    ax.plot(ks, [r["fixed_em"] for r in rows], "o-", label=f"warm start (topk {ws.topk})")
    ax.plot(ks, [r["range_em"] for r in rows], "s-", label=f"range warm start ({args.topks})")
    ax.set_xlabel("passages per search at evaluation (topk)")
    ax.set_ylabel("greedy dev EM")
    ax.set_xticks(ks)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
