"""``igsearch demo``: the whole method on the embedded default, on a laptop CPU, no network.

Builds the synthetic world and the warm start (tiny policy, SFT on a warm-up split of questions that
RL and evaluation never see: ``igsearch.warmstart``), then trains it with GRPO + step IG, evaluating greedily on the dev split
before training and every ``--eval-every`` steps, with a sampled probe at the training temperature.
Writes ``DIR/report.md``: EM per hop count before and after RL with paired 95% intervals (questions
resampled) and McNemar tests, the probe's sampled EM, and PNG plots of probe EM and dev EM over steps.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from igsearch.policy.tiny import POLICY_SIZES
from igsearch.warmstart import DEMONSTRATORS, WarmStartConfig

#: the repository's presets folder (configs/)
CONFIGS = Path(__file__).resolve().parent.parent / "configs"
#: the RL preset of each demonstrator's warm start: ``lookalike`` trains 40 steps without replay (the recipe
#: under which RL raised dev EM, studies/results/rl_probe.md); ``oracle`` keeps the replay that held EM there.
DEMO_PRESETS = {"lookalike": "demo.yaml", "oracle": "demo-oracle.yaml"}
#: the demonstrator the demo imitates unless told otherwise: the one RL has something to learn from
DEFAULT_DEMONSTRATOR = "lookalike"


def demo_preset(demonstrator: str = DEFAULT_DEMONSTRATOR) -> Path:
    """The training preset (configs/demo*.yaml) of the demo's RL run on a ``demonstrator`` warm start."""
    return CONFIGS / DEMO_PRESETS[demonstrator]


def add_demo_command(subparsers) -> None:
    p = subparsers.add_parser("demo", help="world -> warm start -> GRPO with IG -> eval, with a report (CPU, minutes)")
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--steps", type=int, default=None,
                   help="RL steps (default: the preset's, 40 for lookalike and 10 for oracle)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", default="ig", help="advantage estimator: ig (default) | grpo | any registered name")
    p.add_argument("--sft-steps", type=int, default=WarmStartConfig.steps)
    p.add_argument("--build-warm-start", action="store_true",
                   help="train the warm start here (SFT, ~10 min on an AVX-512 Xeon, ~19 on an AMD Zen 3) even when a "
                        "shipped one was trained with these settings on this world (igsearch/assets/warm_starts)")
    p.add_argument("--policy-size", default=WarmStartConfig.policy_size, choices=list(POLICY_SIZES),
                   help="tiny policy's size (default small, ~1.4M parameters; studies/results/policy_size.md compares them). "
                        "Scale --sft-steps with it: the default's steps are for small")
    p.add_argument("--demonstrator", default=DEFAULT_DEMONSTRATOR, choices=list(DEMONSTRATORS),
                   help="what the warm start imitates: lookalike (default: knows the protocol but, after a non-final "
                        "hop, searches a look-alike entity with probability 0.6, which RL learns to avoid) or oracle "
                        "(perfect: RL has little to learn; igsearch.warmstart.DEMONSTRATORS)")
    p.add_argument("--entities", type=int, default=WarmStartConfig.entities,
                   help="world size (default 800; question splits scale with it)")
    p.add_argument("--eval-questions", type=int, default=200, help="dev questions evaluated greedily (default 200)")
    p.add_argument("--probe-questions", type=int, default=80,
                   help="dev questions of the sampled probe, x rollouts_per_question rollouts (default 80)")
    p.add_argument("--eval-every", type=int, default=10,
                   help="evaluate every N RL steps (default 10; each evaluation costs about 2.5 RL steps)")
    p.add_argument("--threads", default=None, help="torch CPU threads for SFT and RL: auto (from the load, "
                                                   "igsearch.threads) | N; default: IGSEARCH_THREADS, else auto")
    p.add_argument("--config", default=None,
                   help="training preset (default: the demonstrator's, configs/demo.yaml or configs/demo-oracle.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="training config overrides")
    p.set_defaults(func=run_demo)


def run_demo(args) -> int:
    from igsearch.data.loaders import load_qa
    from igsearch.evaluation import format_table
    from igsearch.train.config import load_config
    from igsearch.io import atomic_write_json, atomic_write_text
    from igsearch.train.trainer import Trainer
    from igsearch.warmstart import build_warm_start

    console = Console()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    def phase(name):
        console.rule(f"[bold]{name}")
        return time.perf_counter()

    t0 = phase("1/3 world, tiny policy, SFT warm start on the warm-up split")
    ws_cfg = replace(WarmStartConfig(), steps=args.sft_steps, entities=args.entities, policy_size=args.policy_size,
                     distractor=DEMONSTRATORS[args.demonstrator])
    ws = build_warm_start(out, seed=args.seed, config=ws_cfg, log=console.print, threads=args.threads,
                          shipped=not args.build_warm_start)
    timings["warm_start"] = time.perf_counter() - t0

    overrides = [f"model_path={ws['sft']}", f"world_dir={ws['world']}", f"seed={args.seed}", f"advantage.method={args.method}",
                 f"eval_questions={args.eval_questions}", f"probe_questions={args.probe_questions}",
                 *([f"steps={args.steps}"] if args.steps is not None else []),
                 f"threads={args.threads or 'auto'}", *args.overrides]
    preset = args.config or demo_preset(args.demonstrator)
    cfg = load_config(preset, overrides, validate=False)
    args.steps = cfg.steps
    cfg.checkpoint_every, cfg.eval_every = max(1, cfg.steps), min(args.eval_every, cfg.steps)
    cfg.validate(str(preset))
    run_dir = out / "train"
    t0 = phase("2/3 the warm start on this world: greedy EM on train vs dev questions")
    trainer = Trainer(cfg, run_dir, overwrite=True)
    precision = trainer.precision.describe()
    timings["trainer_start"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    try:
        train_rows = load_qa(Path(ws["world"]) / "train.jsonl", limit=args.eval_questions)
        warm_train = trainer.evaluate(rows=train_rows)
        console.print(format_table(warm_train.metrics, "warm start, train questions"))
        timings["warm_start_train_eval"] = time.perf_counter() - t0

        t0 = phase(f"3/3 GRPO with {args.method} for {args.steps} steps, dev eval every {cfg.eval_every}")
        trainer.run()
        timings["rl_with_evals"] = time.perf_counter() - t0
    finally:
        trainer.close()
    timings["total"] = time.perf_counter() - t_all
    evals = load_evals(run_dir)
    first, last = evals[0], evals[max(evals)]
    result = summarize_demo(first, last, warm_train.metrics)
    plots = write_plots(run_dir, out)
    breakdown = time_breakdown(timings, Path(ws["sft"]), run_dir)
    atomic_write_json(out / "demo.json", {
        **result, "timings_s": timings, "time_breakdown": breakdown, "method": args.method, "steps": args.steps, "seed": args.seed,
        "precision": precision,
        "warm_start": {**ws["config"], "seconds": ws["seconds"], "shipped": ws["shipped"]}, "overrides": overrides,
    })
    report = render_report(result, breakdown, plots, args, cfg, shipped=ws["shipped"], precision=precision)
    atomic_write_text(out / "report.md", report)
    print(report, flush=True)
    console.print(f"[bold green]report: {out / 'report.md'}")
    return 0


def load_evals(run_dir: Path) -> dict[int, dict]:
    """step -> the record ``Trainer.periodic_eval`` wrote to ``run_dir/evals/step_NNNNNN.json``."""
    out = {}
    for path in sorted((Path(run_dir) / "evals").glob("step_*.json")):
        rec = json.loads(path.read_text())
        out[int(rec["step"])] = rec
    if not out:
        raise FileNotFoundError(f"{run_dir}/evals: no evaluations recorded (eval_every must be > 0)")
    return out


def summarize_demo(first: dict, last: dict, warm_train: dict) -> dict:
    """Before/after metrics and paired comparisons (greedy dev EM, and the probe's sampled EM)."""
    from igsearch.stats import compare_records

    out = {
        "before": first["greedy"]["metrics"], "after": last["greedy"]["metrics"],
        "steps_compared": [first["step"], last["step"]], "warm_start_train": warm_train,
        "paired_greedy": compare_records(first["greedy"]["records"], last["greedy"]["records"]),
    }
    if "probe" in first and "probe" in last:
        out["probe_before"], out["probe_after"] = first["probe"]["metrics"], last["probe"]["metrics"]
        out["paired_probe"] = compare_records(first["probe"]["records"], last["probe"]["records"])
    return out


def write_plots(run_dir: Path, out: Path) -> list[Path]:
    """PNG plots: probe and dev EM over steps (evaluations), training reward and all-fail groups."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from igsearch.train.logging import read_metrics

    rows = read_metrics(run_dir)
    if not rows:
        return []
    paths = []
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
    evals = [r for r in rows if "eval/em/overall" in r]
    xs = [r["step"] for r in evals]
    for key in sorted({k for r in evals for k in r if k.startswith("eval/em/") and k != "eval/em/overall"}):
        ax[0].plot(xs, [r.get(key, float("nan")) for r in evals], marker=".", label=key.removeprefix("eval/em/"))
    ax[0].plot(xs, [r["eval/em/overall"] for r in evals], color="black", marker="o", linewidth=2, label="dev, greedy")
    if any("probe/em/overall" in r for r in evals):
        ax[0].plot(xs, [r.get("probe/em/overall", float("nan")) for r in evals], color="tab:red", marker="s",
                   linestyle="--", linewidth=2, label="probe, sampled")
    ax[0].set_xlabel("RL step"), ax[0].set_ylabel("EM"), ax[0].set_title("dev EM (greedy) and probe EM (sampled)")
    ax[0].legend(fontsize=7)
    train = [r for r in rows if "reward/mean" in r]
    ax[1].plot([r["step"] for r in train], [r["reward/mean"] for r in train], marker=".", label="batch reward")
    ax[1].plot([r["step"] for r in train], [r.get("groups/all_fail_frac", float("nan")) for r in train],
               marker=".", label="all-fail groups")
    ax[1].set_xlabel("RL step"), ax[1].set_title("training batches (noisy: not the measure of learning)")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "em_over_steps.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    if any("step_ig/real_mean" in r for r in train):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        steps = [r["step"] for r in train]
        ax.plot(steps, [r.get("step_ig/real_mean", float("nan")) for r in train], label="s(a*|real)")
        ax.plot(steps, [r.get("step_ig/baseline_mean", float("nan")) for r in train], label="s(a*|random)")
        ax.set_xlabel("step"), ax.set_title("gold-answer score, real vs counterfactual docs"), ax.legend()
        fig.tight_layout()
        paths.append(out / "ig_scores.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


#: the phases of an RL step that ``Trainer.train_step`` times (metrics ``time/<name>``), in order
RL_STEP_PHASES = ("generation", "retrieval", "scoring", "logprobs", "update", "sync")


def time_breakdown(timings: dict, sft_dir: Path, run_dir: Path) -> list[dict]:
    """Where the demo's wall time went: rows ``{"phase", "seconds", "detail"}`` from the demo's phase
    timings, the warm start's ``sft_summary.json`` and the RL run's metrics (sums of ``time/*``)."""
    from igsearch.train.logging import read_metrics

    sft = json.loads((Path(sft_dir) / "sft_summary.json").read_text())
    rows = read_metrics(run_dir)
    steps = [r for r in rows if "time/step" in r]
    evals = [r for r in rows if "time/eval" in r]
    shipped = (Path(sft_dir) / "provenance.json").is_file()
    sft_s = 0.0 if shipped else float(sft.get("train_seconds", 0.0))
    out = [
        {"phase": "world" + ("" if shipped else ", tiny policy, SFT examples"), "seconds": timings["warm_start"] - sft_s,
         "detail": "and the shipped warm start copied" if shipped else ""},
        {"phase": "SFT", "seconds": sft_s,
         "detail": "none: the warm start is the shipped one (--build-warm-start trains it)" if shipped else
         f"{sft['steps']} steps x {sft['batch_size']} demonstrations, {sft_s / max(1, sft['steps']):.3f} s "
         f"and {sft.get('tokens_per_step', 0):,.0f} tokens a step"},
        {"phase": "trainer start (policy, vLLM engine, retriever)", "seconds": timings["trainer_start"], "detail": ""},
        {"phase": "warm start on train questions", "seconds": timings["warm_start_train_eval"], "detail": "greedy"},
    ]
    step_s = sum(r["time/step"] for r in steps)
    split = ", ".join(f"{name} {sum(r.get(f'time/{name}', 0.0) for r in steps):.0f}" for name in RL_STEP_PHASES)
    eval_s = sum(r["time/eval"] for r in evals)
    out += [
        {"phase": "RL steps", "seconds": step_s, "detail": f"{len(steps)} steps, {step_s / max(1, len(steps)):.2f} s a "
                                                          f"step (s: {split})"},
        {"phase": "RL evaluations", "seconds": eval_s,
         "detail": f"{len(evals)} evaluations, {eval_s / max(1, len(evals)):.1f} s each (greedy dev + sampled probe)"},
        {"phase": "other (checkpoints, plots, engine weight loads)",
         "seconds": timings["total"] - sum(r["seconds"] for r in out) - step_s - eval_s,
         "detail": ""},
        {"phase": "total", "seconds": timings["total"], "detail": ""},
    ]
    return out


def render_report(result: dict, breakdown: list[dict], plots: list[Path], args, cfg, shipped: dict | None = None,
                  precision: str = "fp32") -> str:
    """The demo's report.md; ``precision``: the run's ``Precision.describe()`` line."""
    from igsearch.stats import format_comparison

    s0, s1 = result["steps_compared"]
    wt, wd = result["warm_start_train"]["overall"], result["before"]["overall"]
    lines = [
        "# igsearch demo report", "",
        f"GRPO with `{args.method}` for {args.steps} steps from the warm start (the `{args.policy_size}` policy, "
        f"{args.sft_steps} SFT steps on the warm-up split imitating the `{args.demonstrator}` demonstrator"
        + (f"; the shipped warm start, trained by this code on {shipped['trained_on']}, {shipped['date']}" if shipped
           else "") + "), seed "
        f"{args.seed}; {cfg.questions_per_step} questions x {cfg.rollout.rollouts_per_question} rollouts per step at "
        f"temperature {cfg.rollout.temperature}, lr {cfg.lr}"
        + (f", plus a supervised replay of the warm start's oracle trajectories in every update (PPO-ptx, "
           f"sft_replay_coef {cfg.sft_replay_coef}, {cfg.sft_replay_batch} per update)" if cfg.sft_replay_coef > 0 else "")
        + ".", "",
        "## Dev EM, greedy, before (step 0) and after RL (step {}), paired on the same {} questions".format(
            s1, wd["n"]), "",
        format_comparison(result["paired_greedy"], f"step {s0}", f"step {s1}"), "",
        "Difference: after minus before; interval: 95% paired bootstrap over questions; McNemar: exact "
        "two-sided p (questions gained / lost). A change counts when the interval excludes 0 *and* McNemar "
        "p < 0.05: with only a few questions that changed, the bootstrap interval is too narrow.", "",
    ]
    if "paired_probe" in result:
        n = result["paired_probe"]["overall"]["n"]
        lines += [f"## Probe: sampled EM at temperature {cfg.rollout.temperature}, {n} dev questions x "
                  f"{cfg.rollout.rollouts_per_question} rollouts, same seeds at every step", "",
                  format_comparison(result["paired_probe"], f"step {s0}", f"step {s1}"), ""]
    lines += [
        "## The warm start on this world", "",
        f"The warm start never saw a train, dev or test question: greedy EM {wt['em']:.3f} on {wt['n']} train questions vs "
        f"{wd['em']:.3f} on {wd['n']} dev questions (searches per question {wt['searches']:.2f} / {wd['searches']:.2f}).", "",
        "| data_source | dev EM before | dev EM after | dev searches before | dev searches after |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, b in result["before"].items():
        a = result["after"].get(name, {})
        lines.append(f"| {name} | {b['em']:.3f} | {a.get('em', float('nan')):.3f} | {b['searches']:.2f} | "
                     f"{a.get('searches', float('nan')):.2f} |")
    from igsearch.machine import describe_cpu

    total = breakdown[-1]["seconds"]
    lines += ["", f"## Where the time went ({describe_cpu()})", "", f"Compute: {precision}.", "",
              "| phase | seconds | share | detail |", "|---|---:|---:|---|"]
    lines += [f"| {r['phase']} | {r['seconds']:.0f} | {r['seconds'] / total:.0%} | {r['detail']} |" for r in breakdown]
    lines.append("")
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"
