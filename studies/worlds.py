"""IG-Search against GRPO (and RLOO) over several worlds, each with its own warm start (issue #38).

For every world seed of ``--worlds`` this builds the world and trains its warm start with one recipe (the
demo's, the look-alike demonstrator, ``--sft-steps`` SFT steps; cached under ``<work-dir>/world<w>/``), evaluates
the warm start greedily on the world's dev and test splits per hop count (``igsearch eval``, the rollout
settings it was trained under), and trains every method of ``--methods`` with every seed of ``--seeds`` for
``--steps`` steps from it, evaluating test every ``--eval-every`` steps (studies/replicate.py's runs: one
record per run, reused when its settings match). studies/worlds_report.py aggregates:

- the warm starts per world and hop count, and whether they are alike (test EM within ±0.05 of their mean,
  1-hop above 0.85);
- IG-Search - GRPO (and every other method - GRPO) per world, with seeds then questions resampled, and pooled
  over worlds with ``igsearch.stats.hierarchical_bootstrap`` (worlds, then seeds, then questions), overall and
  per hop count; the verdict by the stated rule on the pooled interval;
- EM against training minutes, per world and averaged over worlds, and the time each method takes to reach
  GRPO's best;
- searches per question and EM per hop count before and after RL (search collapse).

    python studies/worlds.py --quick                         # smoke test: 2 small worlds, minutes; not a result
    python studies/worlds.py --setup-only --threads 2        # the warm starts and their evaluation
    # on 2 cores, one process per world pair, then the report
    python studies/worlds.py --worlds 0,1 --threads 1 & python studies/worlds.py --worlds 2,3 --threads 1 & wait
    python studies/worlds.py --report-only
    # or both cores on one world: each run is locked by the process training it, the other one skips it and
    # takes up its record when written (a world's runs must all start from one warm-start build, see below)
    R="--records-dir studies/results/worlds_records"   # their own pages (--out), the study's records
    python studies/worlds.py --worlds 0 --threads 1 --out runs/w0a $R &
    python studies/worlds.py --worlds 0 --threads 1 --seeds 2,1,0 --methods ig,rloo,grpo --out runs/w0b $R & wait

The power tries (issue #38) are warm starts of other worlds and policies, built and evaluated the same way:

    python studies/worlds.py --setup-only --worlds 0 --relations dense --eval-split 1000 --sft-max-len 1344 \
        --work-dir runs/power/dense --out studies/results/power-dense          # 800 entities, 14 relations
    python studies/worlds.py --setup-only --worlds 0 --entities 1400 --eval-split 1000 --policy-size large \
        --work-dir runs/power/large1400 --out studies/results/power-large1400  # ~4x the parameters

Writes studies/results/worlds.{md,json} and worlds_*.png (``--quick``: worlds-quick.*). Interrupted runs are
retrained from their start; finished ones are kept (``replicate_record.json``), and also, with each world's
warm-start evaluation, in ``<out>_records/`` (studies/worlds_store.py; commit it): a new checkout, which has no
``runs/``, reports from them with ``--report-only`` and trains only the runs not stored, rebuilding a world's
warm start only then (and only pooling its runs with the stored ones when it scores the same).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import replicate
from worlds_report import write_report
from worlds_store import WorldRecords, records_dir

from igsearch.io import atomic_write_text
from igsearch.measure import add_threads_argument, apply_threads

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
#: the study's warm-start recipe: the demo's with twice its SFT steps. At the demo's 1,482 steps warm starts
#: of the same recipe scored 0.398-0.481 test EM from build to build (studies/results/world_stats_warmstarts.md)
#: and dev EM still rose steeply with the budget (studies/results/sft_budget.md)
STUDY_SFT_STEPS = 2964
EVAL_SPLITS = ("dev", "test")
#: every run's overrides before the user's: fp32, because bf16 cost IG-Search 0.035 [0.003, 0.073] test EM on the
#: replication (studies/results/replication_precision.md), and fp32 runs gave the same records on every AVX-512 CPU
#: measured (not on an AVX2-only Zen 3: its warm starts differ, so studies/worlds_store.py checks rebuilt ones)
STUDY_OVERRIDES = ["precision=fp32"]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: worlds 0,1 of 300 entities, 30 SFT steps, 1 seed, 2 steps of grpo and ig")
    ap.add_argument("--worlds", default=None, help="comma-separated world seeds (default 0,1,2,3)")
    ap.add_argument("--methods", default=None, help="comma-separated methods (default grpo,rloo,ig)")
    ap.add_argument("--seeds", default=None, help="comma-separated RL seeds (default 0,1,2)")
    ap.add_argument("--steps", type=int, default=None, help="RL steps per run (default 80)")
    ap.add_argument("--eval-every", type=int, default=None, help="test evaluation every N steps (default 10)")
    ap.add_argument("--sft-steps", type=int, default=None, help=f"warm-start SFT steps (default {STUDY_SFT_STEPS})")
    ap.add_argument("--entities", type=int, default=None, help="entities per world (default: the demo's, 800)")
    ap.add_argument("--eval-split", type=int, default=None,
                    help="dev and test questions each (default: the demo's split, 200 and 300)")
    ap.add_argument("--relations", default=None, help="the worlds' relations: base (default) or dense")
    ap.add_argument("--policy-size", default=None, help="the tiny policy's size (default: the warm start's, small)")
    ap.add_argument("--sft-max-len", type=int, default=None, help="the SFT's longest sequence (default 1024)")
    ap.add_argument("--work-dir", default=None, help="worlds, warm starts and runs (default runs/worlds)")
    ap.add_argument("--out", default=None, help="output prefix (default studies/results/worlds[-quick])")
    ap.add_argument("--records-dir", type=Path, default=None,
                    help="where finished runs and warm-start evaluations are kept for later checkouts "
                         "(default: beside the report, <out>_records; --quick: inside the work dir)")
    ap.add_argument("--setup-only", action="store_true", help="build and evaluate the warm starts, then stop")
    ap.add_argument("--report-only", action="store_true", help="train nothing: report from the recorded runs")
    add_threads_argument(ap)
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="training config overrides (every run)")
    args = ap.parse_args(argv)
    q = args.quick
    args.worlds = [int(w) for w in (args.worlds or ("0,1" if q else "0,1,2,3")).split(",") if w.strip()]
    args.methods = args.methods or ("grpo,ig" if q else "grpo,rloo,ig")
    args.seeds = args.seeds or ("0" if q else "0,1,2")
    args.steps = args.steps if args.steps is not None else (2 if q else 80)
    args.eval_every = args.eval_every if args.eval_every is not None else (2 if q else 10)
    args.sft_steps = args.sft_steps if args.sft_steps is not None else (30 if q else STUDY_SFT_STEPS)
    if not args.worlds or len(set(args.worlds)) != len(args.worlds):
        ap.error(f"--worlds must name distinct world seeds, got {args.worlds}")
    args.work_dir = Path(args.work_dir or ROOT / "runs" / ("worlds-quick" if q else "worlds"))
    args.out = Path(args.out) if args.out else RESULTS / ("worlds-quick" if q else "worlds")
    args.records_dir = args.records_dir or (args.work_dir / "records" if q else records_dir(args.out))
    return args


def replicate_args(args, world_seed: int):
    """studies/replicate.py's arguments for one world of the study (its runs, warm start and records)."""
    argv = ["--world-seed", str(world_seed), "--methods", args.methods, "--seeds", args.seeds,
            "--steps", str(args.steps), "--eval-every", str(args.eval_every), "--sft-steps", str(args.sft_steps),
            "--work-dir", str(args.work_dir / f"world{world_seed}")]
    for flag in ("entities", "eval_split", "relations", "policy_size", "sft_max_len"):  # passed on when given
        if getattr(args, flag) is not None:
            argv += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if args.quick:
        argv += ["--quick"]
    if args.report_only:
        argv += ["--report-only"]
    return replicate.parse_args([*argv, *STUDY_OVERRIDES, *args.overrides])


def evaluate_warm_start(sft: Path, world: Path, root: Path, setup_key: dict, *, quick: bool) -> dict:
    """Greedy EM of the warm start ``sft`` on the world's dev and test splits, per hop count:
    ``{split: metrics}`` (``igsearch.evaluation.summarize``'s), cached in ``root/warm_start_eval.json`` for the
    warm start of ``setup_key``."""
    from igsearch.cli import main as igsearch_cli

    cache = root / "warm_start_eval.json"
    if cache.exists():
        done = json.loads(cache.read_text())
        if done.get("setup_key") == setup_key:
            return done["metrics"]
    metrics = {}
    for split in EVAL_SPLITS:
        out = root / "warm_start_eval" / split
        argv = ["eval", "--model", str(sft), "--data", str(world / f"{split}.jsonl"), "--out", str(out),
                "--engine", "hf" if quick else "vllm"]
        print(f"[worlds] evaluating the warm start of {root.name} on {split}", flush=True)
        if igsearch_cli(argv) != 0:
            raise SystemExit(f"worlds: evaluating {sft} on {split} failed (see above)")
        metrics[split] = json.loads((out / "eval.json").read_text())["metrics"]
    atomic_write_text(cache, json.dumps({"setup_key": setup_key, "metrics": metrics}, indent=1))
    return metrics


def built_on(sft: Path) -> str:
    """The CPU a warm start was trained on: the shipped one's provenance, else this machine (which built it, or
    reused a build of its own ``runs/``)."""
    from igsearch.machine import describe_cpu

    prov = sft / "provenance.json"
    return json.loads(prov.read_text()).get("trained_on", "unknown") if prov.exists() else describe_cpu()


def main(argv=None) -> int:
    args = parse_args(argv)
    apply_threads(args.threads)
    started = time.perf_counter()
    worlds: dict[int, dict] = {}
    for w in args.worlds:
        rargs = replicate_args(args, w)
        root = Path(rargs.work_dir)
        records = WorldRecords(args.records_dir, w, root)
        key = replicate.setup_key(rargs)
        stored = records.setup(key)
        if stored is not None:
            records.restore_runs()
            world, sft = stored["world"], stored["sft"]
        needs_warm_start = stored is None or (
            not args.setup_only and not args.report_only and replicate.missing_runs(rargs, root, world, sft))
        if needs_warm_start:
            if args.report_only and not (root / "setup.json").exists():  # a warm start built here is reused
                raise SystemExit(f"worlds: --report-only but world {w} has no warm start here ({root}) or in "
                                 f"{records.dir}; build it first: python studies/worlds.py --setup-only --worlds {w}")
            world, sft, manifest, setup_s = replicate.prepare(rargs, root)
            warm = evaluate_warm_start(sft, world, root, key, quick=args.quick)
            records.check_rebuilt(key, warm)
            records.save_setup(key, sft, world, manifest, warm, cpu=built_on(sft))
        else:
            manifest, warm, setup_s = stored["manifest"], stored["warm_start"], 0.0
            print(f"[worlds] world {w}: warm start and runs from {records.dir}", flush=True)
        worlds[w] = {"manifest": manifest, "warm_start": warm, "setup_s": setup_s, "runs": {}}
        print(f"[worlds] world {w}: warm start test EM {warm['test']['overall']['em']:.3f}, "
              f"dev EM {warm['dev']['overall']['em']:.3f}", flush=True)
        if not args.setup_only:
            worlds[w]["runs"], worlds[w]["rollouts"], worlds[w]["answer_tokens"] = \
                replicate.record_runs(rargs, root, world, sft, on_record=records.save_run)
    prefix = args.out
    result, md = write_report(args, worlds, prefix, started=started)
    print(f"\n{md}\nJSON: {prefix.with_suffix('.json')}")
    print(result["summary_line"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
