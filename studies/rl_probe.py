"""Does RL improve a warm start? Methods x seeds from one warm start, paired on the same dev questions.

Each run trains ``--method`` with ``--seed`` from the warm start folder (``world/`` and ``sft/``) with the
demo's settings for the look-alike warm start (configs/demo.yaml) plus ``key=value`` overrides, and the
trainer evaluates greedily on the dev questions before RL and every ``--eval-every`` steps (per-question
records in ``<run>/evals/``). ``--report`` pools the runs under ``--root`` per (method, recipe):

- per hop count, greedy dev EM before and after, per-question EM averaged over seeds, with a paired
  95% bootstrap interval over questions;
- every method against GRPO on the same questions (same recipe);
- searches per question before and after;
- which decision moved: every greedy answer is classed as right, the look-alike's (the answer the
  demonstrator reaches when it follows the look-alike at every non-final hop) or other (copy errors,
  stopping), before and after, summed over seeds.

    python studies/rl_probe.py runs/ws-d0.6 --method grpo --seed 0 --steps 20 --root runs/probe sft_replay_coef=0
    python studies/rl_probe.py --report --root runs/probe --out studies/results/rl_probe   # .md, .json, .png

Each run writes ``ROOT/<recipe>/<method>-s<seed>/`` (the trainer's run folder, with ``probe.json``:
the warm start, the overrides and the wall-clock).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def recipe_name(warm: Path, steps: int, overrides: list[str]) -> str:
    """A short, stable folder name for (warm start, steps, overrides)."""
    key = json.dumps([Path(warm).name, steps, sorted(overrides)])
    return f"{Path(warm).name}-{steps}st-{hashlib.sha1(key.encode()).hexdigest()[:6]}"


def run_one(warm: Path, method: str, seed: int, steps: int, eval_every: int, overrides: list[str], root: Path) -> Path:
    from igsearch.demo import demo_preset
    from igsearch.train.config import load_config
    from igsearch.io import atomic_write_json
    from igsearch.train.trainer import Trainer

    out = root / recipe_name(warm, steps, overrides) / f"{method}-s{seed}"
    cfg = load_config(demo_preset("lookalike"), [
        f"model_path={warm / 'sft'}", f"world_dir={warm / 'world'}", f"steps={steps}",
        f"seed={seed}", f"advantage.method={method}", f"checkpoint_every={steps}", "eval_questions=100000",
        "probe_questions=0", f"eval_every={eval_every}", *overrides])
    t0 = time.perf_counter()
    trainer = Trainer(cfg, out, overwrite=True)
    try:
        trainer.run()
    finally:
        trainer.close()
    atomic_write_json(out / "probe.json", {"warm_start": str(warm), "method": method, "seed": seed, "steps": steps,
                                           "overrides": overrides, "seconds": time.perf_counter() - t0})
    return out


def load_runs(root: Path) -> dict[tuple[str, str], dict[int, dict]]:
    """(recipe, method) -> seed -> {"first": eval record, "last": eval record, "meta": probe.json}."""
    runs: dict[tuple[str, str], dict[int, dict]] = defaultdict(dict)
    for meta_path in sorted(root.glob("*/*/probe.json")):
        meta = json.loads(meta_path.read_text())
        evals = sorted((meta_path.parent / "evals").glob("step_*.json"))
        if len(evals) < 2:
            continue
        first, last = (json.loads(p.read_text()) for p in (evals[0], evals[-1]))
        runs[(meta_path.parent.parent.name, meta["method"])][meta["seed"]] = {"first": first, "last": last, "meta": meta}
    return runs


def pooled(records_per_seed: list[list[dict]]) -> list[dict]:
    """One record per question with EM and searches averaged over seeds (the paired unit is the question)."""
    acc: dict[str, dict] = {}
    for records in records_per_seed:
        for r in records:
            e = acc.setdefault(str(r["id"]), {"id": r["id"], "data_source": r["data_source"], "em": 0.0,
                                              "searches": 0.0, "k": 0})
            e["em"] += r["em"]
            e["searches"] += r["searches"]
            e["k"] += 1
    return [{**e, "em": e["em"] / e["k"], "searches": e["searches"] / e["k"]} for e in acc.values()]


def lookalike_answers(world: Path, topk: int = 2) -> dict[str, str]:
    """Question id -> the answer of the demonstrator that follows the look-alike at every non-final hop
    that has one (dev split of ``world``); questions whose look-alike chain ends at the right answer are
    left out."""
    from igsearch.data.loaders import load_qa
    from igsearch.data.metrics import exact_match, extract_answer
    from igsearch.retrieval.bm25 import BM25Retriever
    from igsearch.world import oracle_response

    retriever = BM25Retriever.from_corpus(world / "corpus.jsonl")
    out = {}
    for row in load_qa(world / "dev.jsonl"):
        answer = extract_answer(oracle_response(row, retriever, topk=topk, distractor=1.0)) or ""
        if not exact_match(answer, row.golden_answers):
            out[str(row.id)] = answer
    return out


def decision_classes(records: list[dict], astray: dict[str, str]) -> dict[str, int]:
    """Counts of greedy answers that are right, the look-alike chain's, or other."""
    from igsearch.data.metrics import exact_match

    counts = {"right": 0, "lookalike": 0, "other": 0}
    for r in records:
        if r["em"] > 0:
            counts["right"] += 1
        elif str(r["id"]) in astray and r["prediction"] and exact_match(r["prediction"], [astray[str(r["id"])]]):
            counts["lookalike"] += 1
        else:
            counts["other"] += 1
    return counts


def plot_over_steps(root: Path, path: Path) -> None:
    """Greedy dev EM over RL steps, one line per (recipe, method) averaged over its seeds (thin: each seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, dict[int, list[tuple[int, float]]]] = defaultdict(dict)
    for meta_path in sorted(root.glob("*/*/probe.json")):
        meta = json.loads(meta_path.read_text())
        points = []
        for p in sorted((meta_path.parent / "evals").glob("step_*.json")):
            rec = json.loads(p.read_text())
            points.append((rec["step"], rec["greedy"]["metrics"]["overall"]["em"]))
        series[f"{meta_path.parent.parent.name}/{meta['method']}"][meta["seed"]] = points
    fig, ax = plt.subplots(figsize=(7, 4))
    for (key, seeds), color in zip(sorted(series.items()), plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4):
        steps = sorted({s for pts in seeds.values() for s, _ in pts})
        for pts in seeds.values():
            ax.plot([s for s, _ in pts], [e for _, e in pts], color=color, alpha=0.25, linewidth=0.8)
        mean = [sum(dict(pts).get(s, float("nan")) for pts in seeds.values()) / len(seeds) for s in steps]
        ax.plot(steps, mean, color=color, marker="o", label=f"{key} ({len(seeds)} seeds)")
    ax.set_xlabel("RL step"), ax.set_ylabel("greedy dev EM"), ax.legend(fontsize=7)
    ax.set_title("greedy dev EM over RL steps (mean over seeds; thin lines: each seed)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(root: Path) -> dict:
    from igsearch.stats import compare_records

    runs = load_runs(root)
    out: dict = {"runs": {}, "vs_grpo": {}}
    astray_by_world: dict[str, dict] = {}
    for (recipe, method), seeds in sorted(runs.items()):
        before = pooled([s["first"]["greedy"]["records"] for s in seeds.values()])
        after = pooled([s["last"]["greedy"]["records"] for s in seeds.values()])
        out["runs"][f"{recipe}/{method}"] = {
            "recipe": recipe, "method": method, "seeds": sorted(seeds),
            "steps": [s["last"]["step"] for s in seeds.values()],
            "overrides": next(iter(seeds.values()))["meta"]["overrides"],
            "seconds": [round(s["meta"]["seconds"]) for s in seeds.values()],
            "per_seed_after": {seed: s["last"]["greedy"]["metrics"]["overall"]["em"] for seed, s in seeds.items()},
            "searches": [sum(r["searches"] for r in before) / len(before), sum(r["searches"] for r in after) / len(after)],
            "change": compare_records(before, after),
            "_after": after,
        }
        warm = Path(next(iter(seeds.values()))["meta"]["warm_start"])
        if warm.is_dir():
            astray = astray_by_world.setdefault(str(warm), lookalike_answers(warm / "world"))
            out["runs"][f"{recipe}/{method}"]["decisions"] = {
                when: decision_classes([r for s in seeds.values() for r in s[key]["greedy"]["records"]], astray)
                for when, key in (("before", "first"), ("after", "last"))}
    for key, res in out["runs"].items():
        base = out["runs"].get(f"{res['recipe']}/grpo")
        if base is not None and res["method"] != "grpo":
            common = set(base["seeds"]) & set(res["seeds"])
            if common:
                out["vs_grpo"][key] = compare_records(base["_after"], res["_after"])
    for res in out["runs"].values():
        res.pop("_after")
    return out


def render(rep: dict) -> str:
    lines = ["| recipe | method | seeds | hops | n | before | after | change [95%] | searches before -> after |",
             "|---|---|---|---|---:|---:|---:|---|---|"]
    for res in rep["runs"].values():
        for name, r in res["change"].items():
            s = f"{res['searches'][0]:.2f} -> {res['searches'][1]:.2f}" if name == "overall" else ""
            lines.append(f"| {res['recipe']} | {res['method']} | {len(res['seeds'])} | {name} | {r['n']} | {r['a']:.3f} | "
                         f"{r['b']:.3f} | {r['diff']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}] | {s} |")
    if rep["vs_grpo"]:
        lines += ["", "| recipe/method vs GRPO (after) | hops | n | GRPO | method | difference [95%] |",
                  "|---|---|---:|---:|---:|---|"]
        for key, cmp in rep["vs_grpo"].items():
            for name, r in cmp.items():
                lines.append(f"| {key} | {name} | {r['n']} | {r['a']:.3f} | {r['b']:.3f} | "
                             f"{r['diff']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}] |")
    if any("decisions" in res for res in rep["runs"].values()):
        lines += ["", "Greedy answers by decision, summed over seeds (right / the look-alike chain's / other):", "",
                  "| recipe | method | before | after |", "|---|---|---|---|"]
        for res in rep["runs"].values():
            if "decisions" in res:
                b, a = res["decisions"]["before"], res["decisions"]["after"]
                lines.append(f"| {res['recipe']} | {res['method']} | {b['right']} / {b['lookalike']} / {b['other']} | "
                             f"{a['right']} / {a['lookalike']} / {a['other']} |")
    lines += ["", "Recipes (overrides on top of the demo's):"]
    seen = set()
    for res in rep["runs"].values():
        if res["recipe"] not in seen:
            seen.add(res["recipe"])
            lines.append(f"- `{res['recipe']}`: {' '.join(res['overrides']) or '(none)'}; steps {res['steps']}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("warm_start", nargs="?", type=Path, help="warm start folder (world/ and sft/ inside)")
    ap.add_argument("--method", default="grpo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--eval-every", type=int, default=None, help="default: --steps (before and after only)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--root", type=Path, default=ROOT / "runs" / "probe")
    ap.add_argument("--report", action="store_true", help="summarise the runs under --root")
    ap.add_argument("--out", type=Path, default=None, help="with --report: write OUT.md and OUT.json")
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    args = ap.parse_intermixed_args(argv)
    if args.report:
        rep = report(args.root)
        text = render(rep)
        print(text)
        if args.out:
            from igsearch.io import atomic_write_json, atomic_write_text

            atomic_write_json(Path(f"{args.out}.json"), rep)
            atomic_write_text(Path(f"{args.out}.md"), text)
            plot_over_steps(args.root, Path(f"{args.out}.png"))
        return 0
    if args.warm_start is None or not (args.warm_start / "sft" / "sft_summary.json").is_file():
        print(f"{args.warm_start}: not a warm start folder (sft/sft_summary.json missing)", file=sys.stderr)
        return 2
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = run_one(args.warm_start, args.method, args.seed, args.steps, args.eval_every or args.steps,
                  args.overrides, args.root)
    print(f"run: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
