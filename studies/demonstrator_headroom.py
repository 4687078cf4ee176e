"""How much a warm start leaves for RL: greedy EM, sampled EM and pass@k per hop count on dev.

For each warm start folder (``igsearch.warmstart.build_warm_start``'s layout: ``world/`` and
``sft/``), with the demo's rollout settings (configs/demo.yaml):

- greedy EM on the dev questions;
- ``--samples`` rollouts per question at the training temperature (fixed seeds): sampled EM (the mean
  over rollouts) and pass@k (a question counts when any of its k rollouts is right);
- the headroom pass@k - greedy EM, the most an RL run that learns to pick its best sample could add;
- the standard error of greedy EM that the split's size gives, sqrt(p (1 - p) / n).

    python studies/demonstrator_headroom.py runs/ws-d0.6 runs/ws-oracle --out studies/results/demonstrator_headroom

Writes OUT.json (per folder, per hop count), OUT.md (a table) and OUT.png (the three EMs per hop).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"  # the studies' history of experiments


def pass_at_k(records: list[dict]) -> dict[str, dict[str, float]]:
    """Per data_source and overall: pass@k (any of a question's samples right) and sampled EM."""
    by_q: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_q[str(r["id"])].append(r)
    groups: dict[str, list[list[dict]]] = defaultdict(list)
    for rs in by_q.values():
        groups[rs[0]["data_source"]].append(rs)
        groups["overall"].append(rs)
    return {name: {"n": len(qs), "pass": sum(any(r["em"] > 0 for r in rs) for rs in qs) / len(qs),
                   "sampled_em": sum(r["em"] for rs in qs for r in rs) / sum(len(rs) for rs in qs)}
            for name, qs in groups.items()}


def measure(folder: Path, samples: int, limit: int | None) -> dict:
    from warm_start_robustness import open_evaluation

    from igsearch.data.loaders import load_qa
    from igsearch.evaluation import evaluate

    folder = Path(folder)
    cfg, paths, tok, engine, retriever = open_evaluation(folder / "sft", folder / "world")
    summary = json.loads((folder / "sft" / "sft_summary.json").read_text())
    try:
        rows = load_qa(Path(folder) / "world" / "dev.jsonl", limit=limit)
        t0 = time.perf_counter()
        greedy = evaluate(engine, retriever, tok, rows, template=_template(cfg), config=cfg.rollout)
        t_greedy = time.perf_counter() - t0
        t0 = time.perf_counter()
        sampled = evaluate(engine, retriever, tok, rows, template=_template(cfg), config=cfg.rollout,
                           samples=samples, temperature=cfg.rollout.temperature, seed=12345)
        t_sampled = time.perf_counter() - t0
    finally:
        engine.close()
    per_k = pass_at_k(sampled.records)
    hops = {}
    for name, g in greedy.metrics.items():
        p, n = g["em"], g["n"]
        hops[name] = {"n": n, "greedy_em": p, "greedy_se": math.sqrt(p * (1 - p) / n) if n else float("nan"),
                      "sampled_em": per_k[name]["sampled_em"], f"pass@{samples}": per_k[name]["pass"],
                      "headroom": per_k[name]["pass"] - p, "searches": g["searches"]}
    return {"folder": str(folder), "distractor": summary.get("distractor", 0.0),
            "early_answer": summary.get("early_answer", 0.0), "sft_steps": summary["steps"],
            "samples": samples, "temperature": cfg.rollout.temperature, "per_hop": hops,
            "seconds": {"greedy": t_greedy, "sampled": t_sampled},
            "greedy_records": greedy.records, "sampled_right": sampled_right(sampled.records)}


def sampled_right(records: list[dict]) -> dict[str, int]:
    """Question id -> how many of its sampled rollouts were right (the sampled records themselves are many)."""
    out: dict[str, int] = defaultdict(int)
    for r in records:
        out[str(r["id"])] += int(r["em"] > 0)
    return dict(out)


def _template(cfg):
    from igsearch.data.prompts import get_template

    return get_template(cfg.template)


def render(results: list[dict], samples: int) -> str:
    lines = [f"| warm start | distractor q | hops | n | greedy EM (± se) | sampled EM (T {results[0]['temperature']}) | "
             f"pass@{samples} | pass@{samples} - greedy | searches |", "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for res in results:
        for name, h in res["per_hop"].items():
            lines.append(f"| {Path(res['folder']).name} | {res['distractor']} | {name} | {h['n']} | "
                         f"{h['greedy_em']:.3f} ± {h['greedy_se']:.3f} | {h['sampled_em']:.3f} | "
                         f"{h[f'pass@{samples}']:.3f} | {h['headroom']:+.3f} | {h['searches']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], samples: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results), 3.6), squeeze=False)
    for ax, res in zip(axes[0], results):
        names = list(res["per_hop"])
        xs = range(len(names))
        for off, key, label in ((-0.27, "greedy_em", "greedy"), (0.0, "sampled_em", "sampled"),
                                (0.27, f"pass@{samples}", f"pass@{samples}")):
            ax.bar([x + off for x in xs], [res["per_hop"][n][key] for n in names], width=0.27, label=label)
        ax.set_xticks(list(xs), names, fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(f"{Path(res['folder']).name} (q {res['distractor']})", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="warm start folders (world/ and sft/ inside)")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--limit", type=int, default=None, help="first N dev questions (default all)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS / "demonstrator_headroom")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    results = []
    for folder in args.folders:
        if not (folder / "sft" / "sft_summary.json").is_file():
            print(f"{folder}: no sft/sft_summary.json (build the warm start first)", file=sys.stderr)
            return 2
        results.append(measure(folder, args.samples, args.limit))
        print(render(results[-1:], args.samples), flush=True)
    from igsearch.io import atomic_write_json, atomic_write_text

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(f"{args.out}.json"), results)
    atomic_write_text(Path(f"{args.out}.md"), render(results, args.samples))
    plot(results, args.samples, Path(f"{args.out}.png"))
    print(f"wrote {args.out}.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
