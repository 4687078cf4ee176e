"""The demo on several world seeds: when does its dev EM gain reach +0.10 with the interval above 0? (issue #38)

``igsearch demo`` is one RL seed on world 0 from the shipped warm start. This study runs that same command on
other world seeds too (``--seed S`` seeds the world, the warm start and RL; only world 0's warm start ships, so
the others are trained with the demo's recipe, ~20 minutes each at 1 thread), for ``--steps`` steps with an
evaluation every ``--eval-every``, and tabulates at every evaluated step the greedy dev EM's paired change
from step 0 (95% bootstrap interval over the same questions; ``igsearch.stats.compare_records``), per hop count
and overall, with the training minutes up to that step.

The demo's target (issue #38): a change of at least +0.10 overall with its interval above 0. A step count
*meets* it on a world when the change evaluated there does; the page names the first step count that meets it
on every world.

    python studies/demo_worlds.py --worlds 0,1,2 --steps 80 --threads 1 --jobs 2    # ~1 h on 2 cores

fp32 by default (``--precision``): fp32 runs gave the same records on the AVX-512 CPUs measured (Xeon, EPYC Zen 4
and Zen 5), not on an AVX2-only EPYC Zen 3, whose float rounding differs (a 2,964-step warm start of world 0
scored 0.533 test EM there against 0.505); the minutes are this machine's. Finished demos (``<work-dir>/seed<S>/demo.json`` with the same
settings) are reused. Writes studies/results/demo_worlds.{md,json,png}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
TARGET = 0.10  # the demo's target change in overall dev EM (issue #38)
GROUPS = ("world_1hop", "world_2hop", "world_3hop", "overall")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worlds", default="0,1,2", help="comma-separated world seeds (igsearch demo --seed)")
    ap.add_argument("--steps", type=int, default=80, help="RL steps of each demo")
    ap.add_argument("--eval-every", type=int, default=10, help="dev evaluation every N steps")
    ap.add_argument("--sft-steps", type=int, default=None,
                    help="warm-start SFT steps (igsearch demo --sft-steps; default: the demo's). Other than the shipped "
                         "warm start's, world 0's is trained too")
    ap.add_argument("--method", default="ig", help="advantage estimator (igsearch demo --method)")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"), help="the RL runs' precision")
    ap.add_argument("--threads", default="1", help="torch threads per demo (igsearch demo --threads)")
    ap.add_argument("--jobs", type=int, default=1, help="demos run side by side")
    ap.add_argument("--work-dir", default=str(ROOT / "runs" / "demo_worlds"))
    ap.add_argument("--out", default=str(RESULTS / "demo_worlds"), help="output prefix")
    ap.add_argument("--report-only", action="store_true", help="tabulate finished demos, run none")
    return ap.parse_args(argv)


def demo_command(args, seed: int, out: Path) -> list[str]:
    """The ``igsearch demo`` command line of world seed ``seed``."""
    return [str(Path(sys.executable).with_name("igsearch")), "demo", "--out", str(out), "--seed", str(seed),
            "--steps", str(args.steps), "--eval-every", str(args.eval_every), "--method", args.method,
            "--threads", str(args.threads), *(["--sft-steps", str(args.sft_steps)] if args.sft_steps else []),
            f"precision={args.precision}"]


def finished(args, seed: int, out: Path) -> bool:
    """Whether ``out`` holds a finished demo of world ``seed`` with this study's settings."""
    path = out / "demo.json"
    if not path.exists():
        return False
    demo = json.loads(path.read_text())
    chosen = demo.get("precision", "")
    return (demo.get("seed") == seed and demo.get("steps") == args.steps and demo.get("method") == args.method
            and f"precision={args.precision}" in demo.get("overrides", [])
            and (args.sft_steps is None or demo.get("warm_start", {}).get("steps") == args.sft_steps)
            and (args.precision == "auto" or chosen.startswith(f"precision {args.precision}")))


def run_demo(args, seed: int, out: Path) -> None:
    """Run one demo (its output to ``<out>.log``); raise SystemExit naming the log when it fails."""
    log = out.with_suffix(".log")
    print(f"[demo_worlds] world {seed}: {' '.join(['igsearch', *demo_command(args, seed, out)[1:]])} (log {log})", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.call(demo_command(args, seed, out), stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
    if rc != 0:
        raise SystemExit(f"demo_worlds: the demo of world {seed} failed (exit {rc}); see {log}")
    print(f"[demo_worlds] world {seed} done in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)


def world_changes(out: Path) -> dict:
    """One demo's paired changes: ``{"warm_start": metrics, "rows": [{step, train_min, <group>: cmp}]}``, each
    step's comparison against step 0 over the same dev questions, and the demo's time breakdown."""
    from igsearch.demo import load_evals
    from igsearch.stats import compare_records
    from igsearch.train.logging import read_metrics

    evals = load_evals(out / "train")
    elapsed = {int(row["step"]): row["time/train_elapsed"] for row in read_metrics(out / "train")
               if "time/train_elapsed" in row}
    first = evals[0]["greedy"]["records"]
    rows = []
    for step in sorted(evals):
        cmp = compare_records(first, evals[step]["greedy"]["records"])
        rows.append({"step": step, "train_min": elapsed.get(step, float("nan")) / 60,
                     **{g: {k: cmp[g][k] for k in ("n", "a", "b", "diff", "low", "high")} for g in GROUPS if g in cmp}})
    demo = json.loads((out / "demo.json").read_text())
    return {"warm_start": evals[0]["greedy"]["metrics"], "last_metrics": evals[max(evals)]["greedy"]["metrics"],
            "rows": rows, "precision": demo.get("precision"),
            "time_breakdown": demo.get("time_breakdown"), "warm_start_shipped": demo["warm_start"].get("shipped"),
            "warm_start_seconds": demo["warm_start"].get("seconds"), "warm_start_steps": demo["warm_start"].get("steps")}


def meets(row: dict) -> bool:
    """Whether one evaluation's overall change meets the target (a change of exactly +0.10 counts: EM
    differences are ratios of question counts, so the tolerance absorbs their float rounding)."""
    return row["overall"]["diff"] >= TARGET - 1e-9 and row["overall"]["low"] > 0


def first_meeting_step(per_world: dict) -> int | None:
    """The first evaluated step at which every world meets the target, or None."""
    steps = sorted({r["step"] for w in per_world.values() for r in w["rows"]})
    for step in steps:
        rows = [next((r for r in w["rows"] if r["step"] == step), None) for w in per_world.values()]
        if step > 0 and all(r is not None and meets(r) for r in rows):
            return step
    return None


def fmt(c: dict) -> str:
    return f"{c['diff']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]"


def warm_start_line(pw: dict) -> str:
    """Where a world's warm start came from: shipped, or trained here with N SFT steps."""
    return "shipped" if pw["warm_start_shipped"] else f"trained ({pw['warm_start_steps']} SFT steps)"


def render(result: dict) -> str:
    a = result["args"]
    lines = [f"# The demo on {len(result['worlds'])} world seeds: dev EM change over steps", "",
             f"{result['cpu']}, torch {result['torch']}, {a['threads']} thread(s) a demo, {a['jobs']} side by side, "
             f"{result['time']}.", "",
             f"`igsearch demo --seed S --steps {a['steps']} --eval-every {a['eval_every']} --method {a['method']}"
             + (f" --sft-steps {a['sft_steps']}" if a.get("sft_steps") else "")
             + f" precision={a['precision']}` for world seeds {', '.join(map(str, result['worlds']))}; warm starts: "
             + ", ".join(f"world {w} {warm_start_line(result['per_world'][str(w)])}" for w in result["worlds"])
             + ". Greedy EM on the world's dev questions, "
             "each step paired with step 0 over the same questions, 95% bootstrap interval. Reproduce: "
             "`python studies/demo_worlds.py` with the arguments above (its docstring).", "",
             f"Target (issue #38): overall change at least +{TARGET:.2f} with its interval above 0.", ""]
    step = result["first_meeting_step"]
    verdict = str(step) if step is not None else f"none (up to step {a['steps']})"
    lines += [f"**First step count meeting it on every world: {verdict}**.", ""]
    lines += ["## Overall change from step 0", "",
              "| step | " + " | ".join(f"world {w}" for w in result["worlds"]) + " | training min (mean) |",
              "|---:|" + "---|" * len(result["worlds"]) + "---:|"]
    steps = sorted({r["step"] for w in result["per_world"].values() for r in w["rows"]} - {0})
    for s in steps:
        cells, mins = [], []
        for w in result["worlds"]:
            r = next((r for r in result["per_world"][str(w)]["rows"] if r["step"] == s), None)
            cells.append("" if r is None else fmt(r["overall"]) + (" ✓" if meets(r) else ""))
            if r is not None:
                mins.append(r["train_min"])
        lines.append(f"| {s} | " + " | ".join(cells) + f" | {sum(mins) / max(len(mins), 1):.1f} |")
    lines += ["", "✓: meets the target.", "", "## Per hop count: step 0 and the last step", "",
              "Searches per question falling with multi-hop EM is the search collapse issue #38 asks about.", "",
              "| world | hops | EM step 0 | EM last | change [95%] | searches / question, step 0 -> last |",
              "|---|---|---:|---:|---|---|"]
    for w in result["worlds"]:
        pw = result["per_world"][str(w)]
        last = pw["rows"][-1]
        for g in GROUPS:
            if g not in last:
                continue
            before, after = pw["warm_start"].get(g, {}), pw["last_metrics"].get(g, {})
            lines.append(f"| {w} | {g} | {last[g]['a']:.3f} | {last[g]['b']:.3f} (step {last['step']}) | {fmt(last[g])} | "
                         f"{before.get('searches', float('nan')):.2f} -> {after.get('searches', float('nan')):.2f} |")
    lines += ["", "## Where the time went (seconds, this machine)", "",
              "| world | precision | warm start | RL steps | evaluations | total |", "|---|---|---:|---:|---:|---:|"]
    for w in result["worlds"]:
        pw = result["per_world"][str(w)]
        bd = {b["phase"]: b["seconds"] for b in (pw["time_breakdown"] or []) if "phase" in b}
        ws = "shipped" if pw["warm_start_shipped"] else f"{pw['warm_start_seconds'] or 0:.0f} (trained)"
        lines.append(f"| {w} | {(pw['precision'] or '').split(':')[0]} | {ws} | {bd.get('RL steps', float('nan')):.0f} "
                     f"| {bd.get('RL evaluations', float('nan')):.0f} | {bd.get('total', float('nan')):.0f} |")
    lines += ["", f"![dev EM change over steps]({Path(result['plot']).name})"]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for w in result["worlds"]:
        rows = result["per_world"][str(w)]["rows"]
        x = [r["step"] for r in rows]
        ax.plot(x, [r["overall"]["diff"] for r in rows], marker="o", label=f"world {w}")
        ax.fill_between(x, [r["overall"]["low"] for r in rows], [r["overall"]["high"] for r in rows], alpha=0.15)
    ax.axhline(TARGET, color="k", ls="--", lw=0.8, label=f"target +{TARGET:.2f}")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("RL step")
    ax.set_ylabel("greedy dev EM change from step 0")
    ax.set_title("bands: 95% paired interval (questions resampled)", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def runs_provenance(previous: Path, worlds: list[int]) -> tuple[dict, dict]:
    """(result fields, args fields) saying where and how the demos ran, for a page regenerated with
    ``--report-only``: this invocation's machine, date, ``--threads`` and ``--jobs`` are not the demos'. Taken from
    the page it replaces (``previous``, same worlds), else marked not recorded."""
    try:
        prev = json.loads(previous.read_text()) if previous.exists() else {}
    except ValueError:  # a damaged page is replaced; its provenance is lost with it
        prev = {}
    if isinstance(prev, dict) and prev.get("worlds") == worlds and "args" in prev:
        return ({k: prev[k] for k in ("time", "cpu", "torch", "total_s") if k in prev},
                {k: prev["args"][k] for k in ("threads", "jobs") if k in prev["args"]})
    return ({"time": "date not recorded", "cpu": "CPU not recorded (page regenerated with --report-only)",
             "torch": "?"}, {"threads": "?", "jobs": "?"})


def main(argv=None) -> int:
    args = parse_args(argv)
    worlds = [int(w) for w in args.worlds.split(",")]
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    todo = [w for w in worlds if not finished(args, w, work / f"seed{w}")]
    if todo and args.report_only:
        raise SystemExit(f"demo_worlds: --report-only but worlds {todo} have no finished demo under {work}")
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(lambda w: run_demo(args, w, work / f"seed{w}"), todo))

    import torch

    from igsearch.io import atomic_write_json, atomic_write_text
    from igsearch.machine import describe_cpu

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    per_world = {str(w): world_changes(work / f"seed{w}") for w in worlds}
    result = {"study": "demo_worlds", "time": time.strftime("%Y-%m-%d"), "cpu": describe_cpu(),
              "torch": torch.__version__, "args": vars(args), "worlds": worlds, "target": TARGET,
              "per_world": per_world, "first_meeting_step": first_meeting_step(per_world),
              "plot": str(out.with_name(out.name + ".png")), "total_s": time.perf_counter() - t0}
    if args.report_only:
        fields, run_args = runs_provenance(out.with_suffix(".json"), worlds)
        result.update(fields)
        result["args"] = {**result["args"], **run_args}
    plot(result, Path(result["plot"]))
    atomic_write_json(out.with_suffix(".json"), result)
    md = render(result)
    atomic_write_text(out.with_suffix(".md"), md)
    print(md, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
