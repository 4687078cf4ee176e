"""Is the demo's warm start robust? Rebuild it with other seeds and thread counts on the same world.

One build per call: the world of seed 0 (the demo's), the tiny policy and its SFT with ``--seed``
(initialisation and data order) at ``--threads`` torch threads, then greedy EM on the 193 dev
questions and on the first 200 train questions, and sampled EM on 80 dev questions x 4 rollouts at
temperature 1 (the demo's probe, same seeds). ``--report`` compares the builds found under
``--root``: each against the first, paired on the same dev questions (bootstrap interval, McNemar).

    python bench/warm_start_robustness.py --seed 1 --threads 1 --root runs/robustness
    python bench/warm_start_robustness.py --report --root runs/robustness

Writes ``ROOT/seed<S>-t<T>/robust.json`` per build and, with ``--report``,
bench/results/warm_start_robustness.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"


def build_and_measure(seed: int, threads: int, out: Path) -> dict:
    import torch

    torch.set_num_threads(threads)
    from igsearch.data.loaders import load_qa
    from igsearch.data.prompts import get_template
    from igsearch.evaluation import evaluate
    from igsearch.policy.load import load_policy
    from igsearch.train.config import load_config
    from igsearch.train.trainer import make_engine, make_retriever, resolve_paths
    from igsearch.warmstart import build_warm_start

    t0 = time.perf_counter()
    ws = build_warm_start(out, seed=seed, world_seed=0, progress=False, log=lambda m: print(m, flush=True))
    seconds = time.perf_counter() - t0
    from igsearch.demo import DEMO_RL_OVERRIDES

    cfg = load_config(ROOT / "configs" / "tiny-cpu.yaml",
                      [*DEMO_RL_OVERRIDES, f"model_path={ws['sft']}", f"world_dir={ws['world']}", "device=cpu"])
    paths = resolve_paths(cfg)
    model, tok = load_policy(ws["sft"], dtype="float32", device="cpu")
    engine = make_engine(cfg, Path(ws["sft"]), model, tok)
    retriever = make_retriever(cfg, paths)
    template = get_template(cfg.template)
    result = {"seed": seed, "threads": threads, "warm_start_seconds": seconds}
    try:
        for name, rows, kw in (("dev_greedy", load_qa(paths["eval"]), {}),
                               ("train_greedy", load_qa(paths["train"], limit=200), {}),
                               ("dev_sampled", load_qa(paths["eval"], limit=80),
                                {"samples": cfg.rollouts_per_question, "temperature": cfg.temperature,
                                 "seed": 12345})):
            res = evaluate(engine, retriever, tok, rows, template=template, config=cfg.rollout, **kw)
            result[name] = res.to_dict()
            print(f"[warm_start_robustness] seed {seed}, {threads} thread(s): {name} EM "
                  f"{res.metrics['overall']['em']:.3f}", flush=True)
    finally:
        engine.close()
    (out / "robust.json").write_text(json.dumps(result))
    return result


def report(root: Path) -> str:
    from igsearch.stats import compare_records

    runs = [json.loads(p.read_text()) for p in sorted(root.glob("*/robust.json"))]
    if not runs:
        raise SystemExit(f"no */robust.json under {root}")
    base = runs[0]
    lines = ["# Warm-start robustness: rebuilds on the world of seed 0", "",
             "Greedy EM on the 193 dev questions and the first 200 train questions; sampled EM: 80 dev questions "
             "x 4 rollouts at T 1.0 (the demo's probe). Differences are paired on the same dev questions "
             f"against seed {base['seed']} at {base['threads']} thread(s) (95% bootstrap interval, McNemar p).", "",
             "| seed | threads | SFT build s | dev EM | train EM | train - dev | sampled dev EM | dev vs first [95%] | McNemar p |",
             "|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    rows = []
    for r in runs:
        dev, train = r["dev_greedy"]["metrics"]["overall"]["em"], r["train_greedy"]["metrics"]["overall"]["em"]
        c = compare_records(base["dev_greedy"]["records"], r["dev_greedy"]["records"])["overall"]
        rows.append({"seed": r["seed"], "threads": r["threads"], "dev": dev, "train": train,
                     "sampled": r["dev_sampled"]["metrics"]["overall"]["em"], "vs_first": c,
                     "seconds": r["warm_start_seconds"]})
        lines.append(f"| {r['seed']} | {r['threads']} | {r['warm_start_seconds']:.0f} | {dev:.3f} | {train:.3f} | "
                     f"{train - dev:+.3f} | {rows[-1]['sampled']:.3f} | {c['diff']:+.3f} [{c['low']:+.3f}, "
                     f"{c['high']:+.3f}] | {c['p_mcnemar']:.2g} |")
    devs = [x["dev"] for x in rows]
    lines += ["", f"Dev EM range over the builds: {min(devs):.3f} - {max(devs):.3f} (spread {max(devs) - min(devs):.3f})."]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "warm_start_robustness.json").write_text(json.dumps({"runs": rows}, indent=2))
    text = "\n".join(lines) + "\n"
    (RESULTS / "warm_start_robustness.md").write_text(text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--root", default="runs/robustness", help="where the builds go (one folder each)")
    ap.add_argument("--report", action="store_true", help="compare the builds under --root instead of building")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.report:
        print(report(Path(args.root)))
        return 0
    build_and_measure(args.seed, args.threads, Path(args.root) / f"seed{args.seed}-t{args.threads}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
