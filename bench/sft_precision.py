"""The warm start's SFT in fp32 and in bf16: seconds per step and the projected build time, same run.

The demo's warm-start recipe (``igsearch.warmstart.WarmStartConfig`` with the look-alike demonstrator: the
small tiny policy, batches of 16 demonstrations, the cosine schedule) on the demo's world, trained for
``--steps`` steps from the same initial weights under each precision (``igsearch.precision``), the two
alternating ``--repeats`` times so that a change of the machine's load hits both. Reported: seconds per SFT
step (median, min, max), the loss at the end of each, and the full build's SFT (``WarmStartConfig.steps``
steps) projected from the per-step time.

    python bench/sft_precision.py --steps 60 --repeats 2 --threads 1

The last line is ``sft_step_fp32=<s> sft_step_bf16=<s> bf16_sft_speedup=<ratio>``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from igsearch.measure import add_threads_argument, apply_threads

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60, help="SFT steps per run (default 60)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per precision, alternating (default 2)")
    ap.add_argument("--quick", action="store_true", help="10 steps, 1 repeat")
    ap.add_argument("--out", default=str(RESULTS / "sft_precision.json"))
    add_threads_argument(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.repeats = 10, 1
    apply_threads(args.threads)
    from igsearch.machine import describe_cpu
    from igsearch.policy.tiny import build_tiny_policy, policy_shape
    from igsearch.precision import resolve_precision
    from igsearch.train.sft import run_sft
    from igsearch.warmstart import DEMONSTRATORS, WarmStartConfig, world_split_sizes
    from igsearch.world import build_world

    ws = replace(WarmStartConfig(), distractor=DEMONSTRATORS["lookalike"])
    runs: dict[str, list[dict]] = {"fp32": [], "bf16": []}
    with tempfile.TemporaryDirectory(prefix="sft-precision-") as tmp:
        root = Path(tmp)
        build_world(root / "world", seed=0, n_entities=ws.entities, split_sizes=world_split_sizes(ws.entities))
        init = build_tiny_policy(root / "world", root / "init", seed=0, vocab_size=ws.vocab_size,
                                 **policy_shape(ws.policy_size))
        for r in range(args.repeats):
            for name in runs:
                out = run_sft(init, root / "world", root / f"sft-{name}-{r}",
                              **{**ws.sft_kwargs(), "steps": args.steps, "precision": name}, seed=0, progress=False,
                              threads=args.threads or None)
                summary = json.loads((out / "sft_summary.json").read_text())
                runs[name].append({"seconds_per_step": summary["train_seconds"] / args.steps,
                                   "loss_last": summary["loss_last"], "tokens_per_step": summary["tokens_per_step"]})
                print(f"[sft_precision] {name} run {r}: {runs[name][-1]['seconds_per_step']:.3f} s/step, "
                      f"loss {summary['loss_last']:.3f}", flush=True)
    per = {name: sorted(x["seconds_per_step"] for x in rs) for name, rs in runs.items()}
    med = {name: statistics.median(v) for name, v in per.items()}
    result = {"benchmark": "sft_precision", "time": datetime.now(timezone.utc).isoformat(), "cpu": describe_cpu(),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "steps": args.steps,
              "repeats": args.repeats, "precision": {n: resolve_precision(n).to_dict() for n in runs}, "runs": runs,
              "seconds_per_step": {n: {"median": med[n], "min": per[n][0], "max": per[n][-1]} for n in per},
              "projected_build_s": {n: med[n] * ws.steps for n in med}, "full_build_steps": ws.steps,
              "bf16_speedup": med["fp32"] / med["bf16"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"SFT of the demo's warm start, {args.steps} steps x {args.repeats} per precision, {result['cpu']}, "
          f"{result['threads']} thread(s). JSON: {args.out}")
    print("| precision | s/step median (min-max) | loss at the end | projected SFT of the build (%d steps) |" % ws.steps)
    print("|---|---|---|---|")
    for n in per:
        loss = statistics.fmean(x["loss_last"] for x in runs[n])
        print(f"| {n} | {med[n]:.3f} ({per[n][0]:.3f}-{per[n][-1]:.3f}) | {loss:.3f} | "
              f"{med[n] * ws.steps / 60:.1f} min |")
    print(f"sft_step_fp32={med['fp32']:.3f} sft_step_bf16={med['bf16']:.3f} bf16_sft_speedup={result['bf16_speedup']:.2f}")
    return result


if __name__ == "__main__":
    main()
