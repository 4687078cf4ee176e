"""The same replication at two precisions, paired question by question: does bf16 change what RL learns?

Reads the run records of two ``studies/replicate.py`` work folders (e.g. ``--work-dir runs/replicate-bf16 ...
precision=bf16`` and ``--work-dir runs/replicate-fp32 ... precision=fp32``: same warm start, world, seeds and
settings) and compares, per method and at the warm start (step 0, the engine's precision only), test EM of
the second folder minus the first on the same questions: seed s against seed s, with a 95% interval that
resamples seeds, then questions (``igsearch.stats.hierarchical_bootstrap``), and the questions-only interval
over seed-averaged EM (``igsearch.stats.paired_bootstrap``); then IG-Search minus GRPO within each folder
with the seed-aware interval.

    python studies/replication_precision.py runs/replicate-fp32 runs/replicate-bf16 --labels fp32,bf16 \\
        --out studies/results/replication_precision

Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from igsearch.io import atomic_write_text
from igsearch.stats import hierarchical_bootstrap, paired_bootstrap


def load_runs(root: Path, methods: list[str]) -> dict:
    """runs[method][seed] -> the record replicate.py wrote (``<method>-seed<seed>/replicate_record.json``)."""
    runs: dict = {m: {} for m in methods}
    for m in methods:
        for path in sorted(root.glob(f"{m}-seed*/replicate_record.json")):
            seed = int(path.parent.name.rsplit("seed", 1)[1])
            runs[m][seed] = json.loads(path.read_text())
    return runs


def em_matrix(runs_of_method: dict, seeds: list[int], step: str | None, ids: list[str]) -> np.ndarray:
    """EM [seeds, questions] at evaluation ``step`` (None: each run's last)."""
    rows = []
    for s in seeds:
        evals = runs_of_method[s]["evals"]
        ev = evals[step if step is not None else max(evals, key=int)]
        by_id = {r["id"]: r["em"] for r in ev["records"]}
        rows.append([by_id[i] for i in ids])
    return np.asarray(rows, dtype=np.float64)


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    """b - a: the seed-aware and the questions-only intervals."""
    diff, low, high = hierarchical_bootstrap([b - a])
    _, q_low, q_high = paired_bootstrap(a.mean(axis=0), b.mean(axis=0))
    return {"a": float(a.mean()), "b": float(b.mean()), "diff": diff, "low": low, "high": high,
            "questions_only": [q_low, q_high], "seeds": int(a.shape[0]), "n": int(a.shape[1])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("first", type=Path)
    ap.add_argument("second", type=Path)
    ap.add_argument("--labels", default="first,second")
    ap.add_argument("--methods", default="grpo,ig")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    la, lb = args.labels.split(",")
    methods = args.methods.split(",")
    A, B = load_runs(args.first, methods), load_runs(args.second, methods)
    result: dict = {"study": "replication_precision", "time": datetime.now(timezone.utc).isoformat(),
                    "first": str(args.first), "second": str(args.second), "labels": [la, lb], "rows": {}}
    for m in methods:
        seeds = sorted(set(A[m]) & set(B[m]))
        if not seeds:
            raise SystemExit(f"replication_precision: no seed of {m} recorded in both folders")
        last = lambda r: r["evals"][max(r["evals"], key=int)]["records"]  # noqa: E731
        ids = sorted({x["id"] for x in last(A[m][seeds[0]])} & {x["id"] for x in last(B[m][seeds[0]])})
        if m == methods[0]:
            result["rows"]["warm start (step 0)"] = compare(em_matrix(A[m], seeds, "0", ids),
                                                            em_matrix(B[m], seeds, "0", ids))
        result["rows"][f"{m} after training"] = compare(em_matrix(A[m], seeds, None, ids), em_matrix(B[m], seeds, None, ids))
    if {"grpo", "ig"} <= set(methods):
        for label, runs in ((la, A), (lb, B)):
            seeds = sorted(set(runs["grpo"]) & set(runs["ig"]))
            ids = sorted(r["id"] for r in runs["ig"][seeds[0]]["evals"][max(runs["ig"][seeds[0]]["evals"], key=int)]["records"])
            result["rows"][f"ig - grpo, {label}"] = compare(em_matrix(runs["grpo"], seeds, None, ids),
                                                            em_matrix(runs["ig"], seeds, None, ids))
    lines = [f"# The replication at {la} and {lb}, paired question by question", "",
             f"Test EM; `{args.first}` ({la}) and `{args.second}` ({lb}); seed s against seed s. Interval: 95%, "
             "seeds then questions resampled (`igsearch.stats.hierarchical_bootstrap`); in brackets after it the "
             "questions-only interval over seed-averaged EM.", "",
             f"| comparison | seeds | questions | {la} | {lb} | {lb} - {la} [95%, seeds and questions] | questions only |",
             "|---|---:|---:|---:|---:|---|---|"]
    for name, r in result["rows"].items():
        a_name, b_name = ("grpo", "ig") if name.startswith("ig - grpo") else (la, lb)
        lines.append(f"| {name} ({b_name} - {a_name}) | {r['seeds']} | {r['n']} | {r['a']:.3f} | {r['b']:.3f} | "
                     f"{r['diff']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}] | "
                     f"[{r['questions_only'][0]:+.3f}, {r['questions_only'][1]:+.3f}] |")
    md = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(result, indent=1) + "\n")
    atomic_write_text(args.out.with_suffix(".md"), md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
