"""Is the demo's warm start robust, and which policy size learns best? Rebuild it on the same world.

One build per call: the world of seed 0 (the demo's), the tiny policy at ``--policy-size`` and its
SFT (``--sft-steps``) with ``--seed`` (initialisation and data order) at ``--threads`` torch threads,
then greedy EM on the 193 dev questions and on the first 200 train questions, and sampled EM on 80 dev
questions x 4 rollouts at temperature 1 (the demo's probe, same seeds).

``--report`` compares the default warm start's builds under ``--root``: each against the first,
paired on the same dev questions (bootstrap interval, McNemar). ``--calibrate`` measures each policy
size's seconds per SFT step and the steps that give it the default's wall-clock; ``--report-sizes``
then compares the sizes built with those steps, seeds pooled per question, against ``base``.
``--rl BUILD`` runs the demo's 10 RL steps from a build; ``--read-check BUILD`` evaluates it with the
documents of a random other query, to tell reading from recall.

    python studies/warm_start_robustness.py --seed 1 --threads 1 --root runs/robustness
    python studies/warm_start_robustness.py --report --root runs/robustness
    python studies/warm_start_robustness.py --calibrate --threads 1
    python studies/warm_start_robustness.py --policy-size large --sft-steps 285 --seed 0 --root runs/robustness
    python studies/warm_start_robustness.py --report-sizes --root runs/robustness

Writes ``ROOT/[SIZE-sftN-]seed<S>-t<T>/robust.json`` per build and studies/results/
warm_start_robustness.{json,md}, policy_size_calibration.json and policy_size.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"  # the studies' history of experiments
#: (policy size, SFT steps) of builds recorded before robust.json named them: the warm start's default until
#: the policy-size study (studies/results/policy_size.md) made it small with 1,482 steps.
LEGACY_BUILD = ("base", 700)


def demo_config(sft: Path, world: Path, extra: list[str] = ()):
    """The demo's training config for the oracle warm starts this study builds (configs/demo-oracle.yaml)
    for the warm start ``sft`` on ``world``."""
    from igsearch.demo import demo_preset
    from igsearch.train.config import load_config

    return load_config(demo_preset("oracle"), [f"model_path={sft}", f"world_dir={world}", "device=cpu", *extra])


def open_evaluation(sft: Path, world: Path):
    """What :func:`igsearch.evaluation.evaluate` needs for the warm start ``sft`` on ``world`` with the demo's
    settings: ``(cfg, paths, tokenizer, engine, retriever)``; the caller closes the engine."""
    from igsearch.policy.load import load_policy
    from igsearch.train.assembly import engine_from_config, make_retriever, resolve_paths

    cfg = demo_config(sft, world)
    paths = resolve_paths(cfg)
    model, tok = load_policy(sft, dtype="float32", device="cpu")
    return cfg, paths, tok, engine_from_config(cfg, Path(sft), model, tok), make_retriever(cfg, paths)


def build_and_measure(seed: int, threads: int, out: Path, policy_size: str, sft_steps: int) -> dict:
    import torch
    from dataclasses import replace

    torch.set_num_threads(threads)
    from igsearch.data.loaders import load_qa
    from igsearch.data.prompts import get_template
    from igsearch.evaluation import evaluate
    from igsearch.warmstart import WarmStartConfig, build_warm_start

    ws_cfg = replace(WarmStartConfig(), policy_size=policy_size, steps=sft_steps)
    t0 = time.perf_counter()
    ws = build_warm_start(out, seed=seed, world_seed=0, config=ws_cfg, progress=False,
                          log=lambda m: print(m, flush=True))
    seconds = time.perf_counter() - t0
    cfg, paths, tok, engine, retriever = open_evaluation(Path(ws["sft"]), Path(ws["world"]))
    template = get_template(cfg.template)
    result = {"seed": seed, "threads": threads, "policy_size": policy_size, "sft_steps": ws_cfg.steps,
              "warm_start_seconds": seconds}
    try:
        for name, rows, kw in (("dev_greedy", load_qa(paths["eval"]), {}),
                               ("train_greedy", load_qa(paths["train"], limit=200), {}),
                               ("dev_sampled", load_qa(paths["eval"], limit=80),
                                {"samples": cfg.rollout.rollouts_per_question, "temperature": cfg.rollout.temperature,
                                 "seed": 12345})):
            res = evaluate(engine, retriever, tok, rows, template=template, config=cfg.rollout, **kw)
            result[name] = res.to_dict()
            print(f"[warm_start_robustness] seed {seed}, {threads} thread(s): {name} EM "
                  f"{res.metrics['overall']['em']:.3f}", flush=True)
    finally:
        engine.close()
    (out / "robust.json").write_text(json.dumps(result))
    return result


class OtherQueryRetriever:
    """Returns, for every query, what the wrapped retriever returns for a random corpus title: documents of
    the same count and format that do not answer the query (seeded, so a check is repeatable)."""

    def __init__(self, retriever, titles: list[str], seed: int = 0):
        import random

        self.retriever, self.titles, self.rng = retriever, titles, random.Random(seed)

    def retrieve(self, queries, topk):
        return self.retriever.retrieve([self.rng.choice(self.titles) for _ in queries], topk)


def read_check(build: Path, threads: int) -> dict:
    """Does the warm start in ``build`` read its documents? Greedy dev EM with the retrieved documents and
    with :class:`OtherQueryRetriever`'s; writes ``build/read_check.json``."""
    import torch

    torch.set_num_threads(threads)
    from igsearch.data.loaders import load_qa
    from igsearch.data.prompts import get_template
    from igsearch.evaluation import evaluate

    if not (build / "sft").is_dir() or not (build / "world" / "corpus.jsonl").is_file():
        raise SystemExit(f"--read-check: {build} has no sft/ and world/corpus.jsonl")
    cfg, paths, tok, engine, real = open_evaluation(build / "sft", build / "world")
    titles = [json.loads(line)["contents"].split("\n", 1)[0] for line in (build / "world" / "corpus.jsonl").open()]
    result = {"threads": threads}
    try:
        for name, retriever in (("retrieved", real), ("other_query", OtherQueryRetriever(real, titles))):
            res = evaluate(engine, retriever, tok, load_qa(paths["eval"]), template=get_template(cfg.template),
                           config=cfg.rollout)
            result[name] = res.metrics
            print(f"[warm_start_robustness] {build.name}: dev EM with {name} documents "
                  f"{res.metrics['overall']['em']:.3f}", flush=True)
    finally:
        engine.close()
    (build / "read_check.json").write_text(json.dumps(result))
    return result


def run_demo_rl(build: Path, threads: int, steps: int = 10) -> dict:
    """The demo's RL phase on an oracle warm start (configs/demo-oracle.yaml, IG-Search, ``steps`` steps, the build's seed) from the
    warm start in ``build``, greedy dev EM at step 0 and at the end, no sampled probe. Writes
    ``build/rl.json`` with both evaluations' records and the wall-clock of the RL steps."""
    import torch

    torch.set_num_threads(threads)
    from igsearch.demo import load_evals
    from igsearch.train.trainer import Trainer

    if not (build / "robust.json").is_file() or not (build / "sft").is_dir():
        raise SystemExit(f"--rl: {build} is not a build of this script (no robust.json and sft/ in it)")
    built = json.loads((build / "robust.json").read_text())
    cfg = demo_config(build / "sft", build / "world",
                      [f"steps={steps}", f"seed={built['seed']}", "advantage.method=ig", f"checkpoint_every={steps}",
                       "keep_checkpoints=1", "eval_questions=200", "probe_questions=0", f"eval_every={steps}",
                       "tensorboard=false"])
    t0 = time.perf_counter()
    trainer = Trainer(cfg, build / "rl", overwrite=True)
    try:
        trainer.run()
    finally:
        trainer.close()
    evals = load_evals(build / "rl")
    first, last = evals[0], evals[max(evals)]
    result = {"steps": steps, "threads": threads, "seconds": time.perf_counter() - t0,
              "before": first["greedy"], "after": last["greedy"]}
    (build / "rl.json").write_text(json.dumps(result))
    print(f"[warm_start_robustness] {build.name}: dev EM {first['greedy']['metrics']['overall']['em']:.3f} -> "
          f"{last['greedy']['metrics']['overall']['em']:.3f} after {steps} RL steps", flush=True)
    return result


def load_runs(root: Path) -> list[dict]:
    """Every build's ``robust.json`` under ``root`` (sorted by folder), with the policy size and SFT
    steps filled in for builds recorded before those fields (:data:`LEGACY_BUILD`) and the policy's
    parameter count read from its weights."""
    runs = []
    for path in sorted(root.glob("*/robust.json")):
        r = json.loads(path.read_text())
        r.setdefault("policy_size", LEGACY_BUILD[0])
        r.setdefault("sft_steps", LEGACY_BUILD[1])
        r["folder"] = path.parent.name
        rl = path.parent / "rl.json"
        if rl.exists():
            r["rl"] = json.loads(rl.read_text())
        runs.append(r)
    # builds whose weights were deleted: the same size's count from a kept build's vocabulary (one world)
    vocab = next((json.loads(c.read_text())["vocab_size"] for c in sorted(root.glob("*/sft/config.json"))), None)
    for r in runs:
        sft = root / r["folder"] / "sft"
        r["parameters"] = (count_parameters(sft) if sft.is_dir()
                           else shape_parameters(r["policy_size"], vocab) if vocab else None)
    return runs


def shape_parameters(size: str, vocab_size: int) -> int:
    """Parameters of the tiny policy of ``size`` with ``vocab_size`` tokens (built on the meta device)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from igsearch.policy.tiny import policy_shape

    with torch.device("meta"):
        model = Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab_size, tie_word_embeddings=False, **policy_shape(size)))
    return sum(p.numel() for p in model.parameters())


def count_parameters(policy_dir: Path) -> int:
    """Parameters of a saved policy, from its safetensors headers (no weights loaded)."""
    from safetensors import safe_open

    total = 0
    for f in sorted(Path(policy_dir).glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():
                n = 1
                for d in st.get_slice(name).get_shape():
                    n *= d
                total += n
    return total


def calibrate(threads: int, repeats: int = 2, steps: tuple[int, int] = (4, 16)) -> dict:
    """Seconds per SFT step of every policy size at ``threads`` threads, on the world of seed 0 and the
    warm start's SFT settings, and the SFT steps that give each size the wall-clock of
    :data:`LEGACY_BUILD` (700 steps of ``base``). A step's cost is the difference of two short runs, so
    the fixed cost of loading and saving cancels; the sizes are measured in turn, ``repeats`` times,
    and the steps come from the medians. Writes studies/results/policy_size_calibration.json."""
    import statistics
    import tempfile

    import torch

    torch.set_num_threads(threads)
    from igsearch.measure import device_name
    from igsearch.policy.tiny import POLICY_SIZES, build_tiny_policy, policy_shape
    from igsearch.train.sft import run_sft
    from igsearch.warmstart import WarmStartConfig, world_split_sizes
    from igsearch.world import build_world

    cfg = WarmStartConfig()
    per_step: dict[str, list[float]] = {size: [] for size in POLICY_SIZES}
    with tempfile.TemporaryDirectory(prefix="igsearch-calibrate-") as tmp:
        world = Path(tmp) / "world"
        build_world(world, seed=0, n_entities=cfg.entities, split_sizes=world_split_sizes(cfg.entities))
        for repeat in range(repeats):
            for size in POLICY_SIZES:
                init = build_tiny_policy(world, Path(tmp) / f"{size}-init", seed=0, vocab_size=cfg.vocab_size,
                                         **policy_shape(size))
                seconds = []
                for n in steps:
                    t0 = time.perf_counter()
                    run_sft(init, world, Path(tmp) / f"{size}-sft", **{**cfg.sft_kwargs(), "steps": n}, seed=0,
                            progress=False)
                    seconds.append(time.perf_counter() - t0)
                per_step[size].append((seconds[1] - seconds[0]) / (steps[1] - steps[0]))
                print(f"[calibrate] repeat {repeat + 1}/{repeats}, {size}: {per_step[size][-1]:.3f} s per SFT step",
                      flush=True)
    median = {size: statistics.median(v) for size, v in per_step.items()}
    legacy_size, legacy_steps = LEGACY_BUILD
    result = {"device": device_name("cpu"), "threads": threads, "date": time.strftime("%Y-%m-%d"),
              "seconds_per_step": median, "seconds_per_step_runs": per_step,
              "equal_wallclock_steps": {k: round(legacy_steps * median[legacy_size] / v) for k, v in median.items()}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "policy_size_calibration.json").write_text(json.dumps(result, indent=2))
    return result


def report(root: Path) -> str:
    from igsearch.stats import compare_records

    from igsearch.warmstart import WarmStartConfig

    default = (WarmStartConfig.policy_size, WarmStartConfig.steps)
    runs = [r for r in load_runs(root) if (r["policy_size"], r["sft_steps"]) == default]
    if not runs:
        raise SystemExit(f"no */robust.json of the default warm start ({default[0]}, {default[1]} SFT steps) under {root}")
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


def report_sizes(root: Path, threads: int = 1) -> str:
    """Compare the policy sizes built under ``root`` at ``threads`` threads: per build, and per
    (size, SFT steps) with dev EM averaged over its seeds and paired per question against
    :data:`LEGACY_BUILD` (each question's EM averaged over a group's seeds; 95% bootstrap interval,
    overall and per hop count). Writes studies/results/policy_size.{json,md,png}."""
    from collections import defaultdict

    from igsearch.stats import compare_records

    runs = [r for r in load_runs(root) if r["threads"] == threads]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        groups[(r["policy_size"], r["sft_steps"])].append(r)
    base_key = LEGACY_BUILD
    if base_key not in groups or len(groups) < 2:
        raise SystemExit(f"need builds of {base_key[0]} with {base_key[1]} SFT steps and of another size or step count "
                         f"at {threads} thread(s) under {root}")
    calib_path = RESULTS / "policy_size_calibration.json"
    calib = json.loads(calib_path.read_text()) if calib_path.exists() else None
    base_dev = [rec for r in groups[base_key] for rec in r["dev_greedy"]["records"]]
    lines = [f"# Policy size and SFT steps: warm starts on the world of seed 0 ({threads} thread)", ""]
    if calib:
        lines += [f"SFT cost per step, measured by `--calibrate` on {calib['device']}, {calib['date']} (batch 16, "
                  "the warm start's settings; median and range of the repeats), and the SFT steps that give each "
                  f"size the wall-clock of {LEGACY_BUILD[1]} steps of {LEGACY_BUILD[0]}:", "",
                  "| size | s per SFT step | range | steps for equal wall-clock |", "|---|---:|---|---:|"]
        for k, v in calib["seconds_per_step"].items():
            runs_k = calib.get("seconds_per_step_runs", {}).get(k, [v])
            lines.append(f"| {k} | {v:.2f} | {min(runs_k):.2f} - {max(runs_k):.2f} | {calib['equal_wallclock_steps'][k]} |")
        lines.append("")
    lines += ["Per build: greedy EM on the 193 dev questions and the first 200 train questions, sampled EM on 80 dev "
              "questions x 4 rollouts at T 1.0 (the demo's probe).", "",
              "| size | parameters | SFT steps | seed | build s | dev EM | train EM | sampled dev EM |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        params = f"{r['parameters'] / 1e6:.2f}M" if r["parameters"] else "-"
        lines.append(f"| {r['policy_size']} | {params} | {r['sft_steps']} | {r['seed']} | "
                     f"{r['warm_start_seconds']:.0f} | {r['dev_greedy']['metrics']['overall']['em']:.3f} | "
                     f"{r['train_greedy']['metrics']['overall']['em']:.3f} | "
                     f"{r['dev_sampled']['metrics']['overall']['em']:.3f} |")
    lines += ["", "Per size, over its seeds: dev EM mean and range; the paired difference against base (each "
              "question's EM averaged over the seeds of each size) overall and per hop count.", "",
              "| size | SFT steps | seeds | dev EM mean | dev EM range | sampled mean | vs base [95%] | 1-hop | 2-hop | 3-hop |",
              "|---|---:|---:|---:|---|---:|---|---|---|---|"]
    summary = []
    for (size, steps), rs in groups.items():
        devs = [r["dev_greedy"]["metrics"]["overall"]["em"] for r in rs]
        sampled = [r["dev_sampled"]["metrics"]["overall"]["em"] for r in rs]
        cmp = compare_records(base_dev, [rec for r in rs for rec in r["dev_greedy"]["records"]])
        row = {"policy_size": size, "sft_steps": steps, "parameters": max(r["parameters"] or 0 for r in rs), "seeds": [r["seed"] for r in rs],
               "dev_em": devs, "sampled_em": sampled, "vs_base": cmp}
        summary.append(row)
        hops = [cmp.get(f"world_{h}hop") for h in (1, 2, 3)]
        cells = [f"{c['diff']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]" if c else "-" for c in hops]
        o = cmp["overall"]
        lines.append(f"| {size} | {steps} | {len(rs)} | {sum(devs) / len(devs):.3f} | {min(devs):.3f} - {max(devs):.3f} | "
                     f"{sum(sampled) / len(sampled):.3f} | {o['diff']:+.3f} [{o['low']:+.3f}, {o['high']:+.3f}] | "
                     + " | ".join(cells) + " |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    png = RESULTS / "policy_size.png"
    plot_sizes(summary, png)
    rl_groups = [(key, rs) for key, rs in groups.items() if all("rl" in r for r in rs)]
    if rl_groups:
        lines += ["", "After the demo's RL phase (IG-Search, 10 steps, configs/demo-oracle.yaml, each build's seed): greedy dev "
                  "EM, paired against the same builds' step-0 evaluation (seeds pooled per question).", "",
                  "| size | seeds | dev EM after RL, mean | range | change vs warm start [95%] | RL s per build (mean) |",
                  "|---|---:|---:|---|---|---:|"]
        for (size, steps), rs in rl_groups:
            after = [r["rl"]["after"]["metrics"]["overall"]["em"] for r in rs]
            c = compare_records([x for r in rs for x in r["rl"]["before"]["records"]],
                                [x for r in rs for x in r["rl"]["after"]["records"]])["overall"]
            next(g for g in summary if (g["policy_size"], g["sft_steps"]) == (size, steps))["rl"] = {
                "after_em": after, "vs_warm_start": c, "seconds": [r["rl"]["seconds"] for r in rs]}
            lines.append(f"| {size} | {len(rs)} | {sum(after) / len(after):.3f} | {min(after):.3f} - {max(after):.3f} | "
                         f"{c['diff']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}] | "
                         f"{sum(r['rl']['seconds'] for r in rs) / len(rs):.0f} |")
    lines += ["", f"![dev EM per build]({png.name})", ""]
    (RESULTS / "policy_size.json").write_text(json.dumps({"threads": threads, "calibration": calib, "groups": summary,
                                                          "runs": [{k: v for k, v in r.items() if k not in
                                                                    ("dev_greedy", "train_greedy", "dev_sampled", "rl")}
                                                                   for r in runs]}, indent=2))
    text = "\n".join(lines) + "\n"
    (RESULTS / "policy_size.md").write_text(text)
    return text


def plot_sizes(summary: list[dict], path: Path) -> None:
    """Dev EM of every build (dots) and each size's mean (bar), sizes by parameter count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = sorted(summary, key=lambda g: (g["parameters"], g["sft_steps"]))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, g in enumerate(summary):
        ax.bar(i, sum(g["dev_em"]) / len(g["dev_em"]), color="#9ecae1", width=0.6)
        ax.scatter([i] * len(g["dev_em"]), g["dev_em"], color="#08519c", zorder=3, label="one seed" if i == 0 else None)
    ax.set_xticks(range(len(summary)),
                  [f"{g['policy_size']}\n{g['parameters'] / 1e6:.1f}M params\n{g['sft_steps']} SFT steps" for g in summary])
    ax.set_ylabel("greedy dev EM of the warm start")
    ax.set_ylim(0, 1)
    ax.set_title("warm starts by policy size and SFT steps (193 dev questions)")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    from igsearch.policy.tiny import POLICY_SIZES

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--root", default="runs/robustness", help="where the builds go (one folder each)")
    ap.add_argument("--policy-size", default=None, choices=list(POLICY_SIZES),
                    help="a name in igsearch.policy.tiny.POLICY_SIZES (default: the warm start's, WarmStartConfig)")
    ap.add_argument("--sft-steps", type=int, default=None, help="SFT steps (default: the warm start's, WarmStartConfig)")
    ap.add_argument("--report", action="store_true", help="compare the builds under --root instead of building")
    ap.add_argument("--report-sizes", action="store_true",
                    help="compare the policy sizes built under --root at --threads (studies/results/policy_size.md)")
    ap.add_argument("--rl", default=None, metavar="BUILD",
                    help="run the demo's 10 RL steps from the warm start in folder BUILD under --root (writes BUILD/rl.json)")
    ap.add_argument("--read-check", default=None, metavar="BUILD",
                    help="greedy dev EM of the warm start in BUILD with its retrieved documents and with a random "
                         "other query's (writes BUILD/read_check.json)")
    ap.add_argument("--calibrate", action="store_true",
                    help="measure each policy size's seconds per SFT step at --threads and the steps for equal wall-clock")
    ap.add_argument("--repeats", type=int, default=2, help="--calibrate: measurements per size (default 2)")
    args = ap.parse_args(argv)
    if args.report:
        print(report(Path(args.root)))
        return 0
    if args.report_sizes:
        print(report_sizes(Path(args.root), args.threads))
        return 0
    if args.rl:
        run_demo_rl(Path(args.root) / args.rl, args.threads)
        return 0
    if args.read_check:
        read_check(Path(args.root) / args.read_check, args.threads)
        return 0
    if args.calibrate:
        print(json.dumps(calibrate(args.threads, args.repeats), indent=2))
        return 0
    from igsearch.warmstart import WarmStartConfig

    args.policy_size = args.policy_size or WarmStartConfig.policy_size
    args.sft_steps = args.sft_steps or WarmStartConfig.steps
    name = f"{args.policy_size}-sft{args.sft_steps}-seed{args.seed}-t{args.threads}"
    build_and_measure(args.seed, args.threads, Path(args.root) / name, args.policy_size, args.sft_steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
