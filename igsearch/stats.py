"""Paired comparisons of two evaluations on the same questions: bootstrap intervals and McNemar.

Two evaluations (before/after RL, GRPO/IG-Search, ...) of the same questions are compared question
by question, which removes the between-question variance an unpaired comparison carries:

- :func:`paired_bootstrap`: the mean per-question difference ``b - a`` and its percentile
  bootstrap interval, resampling questions with replacement;
- :func:`hierarchical_bootstrap`: the same difference pooled over worlds and seeds, its interval
  resampling worlds, then seeds, then questions;
- :func:`mcnemar`: the exact two-sided McNemar test on the discordant questions of 0/1 scores;
- :func:`compare_records`: both, overall and per ``data_source`` (hop count on the world), from the
  per-question records :func:`igsearch.evaluation.evaluate` writes. Records with several samples of
  one question (a probe) or several seeds are averaged per question first, so the question stays
  the unit that is resampled.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable, Mapping, Sequence

import numpy as np


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, n_boot: int = 10_000, level: float = 0.95,
                     seed: int = 0) -> tuple[float, float, float]:
    """``(mean(b - a), low, high)``: the mean paired difference and its percentile bootstrap interval.

    ``a`` and ``b`` are per-question scores in the same question order (length n >= 1)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired scores need two equal-length non-empty 1-D arrays, got {a.shape} and {b.shape}")
    diff = b - a
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(n_boot, diff.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    return float(diff.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def hierarchical_bootstrap(diffs: Sequence, *, n_boot: int = 10_000, level: float = 0.95, seed: int = 0,
                           chunk: int = 1_000) -> tuple[float, float, float]:
    """``(estimate, low, high)``: a paired difference pooled over worlds, with a percentile bootstrap interval
    that resamples worlds, then seeds within a world, then questions.

    ``diffs[w]``: float array [S_w, Q_w] of world w: the per-question difference (method B - method A) of seed
    s on question q; seeds of the two methods are paired by index, and a world's seeds share its questions.
    ``estimate`` = mean over worlds of (mean over seeds and questions). A replicate draws W worlds with
    replacement and, for every world drawn, S_w seeds and Q_w questions with replacement (one question draw for
    all its seeds: questions are crossed with seeds), so the interval carries the spread between worlds and
    between seeds as well as between questions. With one world it resamples seeds and questions; with one
    seed, questions only (then it is :func:`paired_bootstrap`'s interval)."""
    worlds = [np.atleast_2d(np.asarray(d, dtype=np.float64)) for d in diffs]
    if not worlds or any(d.size == 0 for d in worlds):
        raise ValueError("hierarchical_bootstrap needs at least one world, each with >= 1 seed and >= 1 question")
    W = len(worlds)
    estimate = float(np.mean([d.mean() for d in worlds]))
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for lo in range(0, n_boot, chunk):
        B = min(chunk, n_boot - lo)
        picks = rng.integers(0, W, size=(B, W))  # the worlds of each replicate
        total = np.zeros(B)
        for w, d in enumerate(worlds):
            S, Q = d.shape
            uses = (picks == w).sum(axis=1)  # how many slots of each replicate drew world w
            slots = int(uses.sum())
            if not slots:
                continue
            # one independent seed and question draw per slot, as counts: mean = c_s @ d @ c_q / (S Q)
            c_s = rng.multinomial(S, np.full(S, 1.0 / S), size=slots)
            c_q = rng.multinomial(Q, np.full(Q, 1.0 / Q), size=slots)
            values = np.einsum("ks,sq,kq->k", c_s, d, c_q) / (S * Q)
            total += np.bincount(np.repeat(np.arange(B), uses), weights=values, minlength=B)
        means[lo:lo + B] = total / W
    tail = (1.0 - level) / 2.0
    return estimate, float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def mcnemar(a: Sequence[float], b: Sequence[float]) -> tuple[int, int, float]:
    """``(n01, n10, p)``: questions right only under ``b`` / only under ``a`` and the exact two-sided
    McNemar p-value (binomial test of n01 against n01 + n10 at 1/2). Scores are 0/1."""
    a, b = np.asarray(a) > 0.5, np.asarray(b) > 0.5
    n01, n10 = int(np.sum(~a & b)), int(np.sum(a & ~b))
    n = n01 + n10
    if n == 0:
        return n01, n10, 1.0
    k = min(n01, n10)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return n01, n10, min(1.0, 2.0 * tail)


def per_question(records: Iterable[Mapping], key: str = "em") -> dict[str, tuple[str, float]]:
    """Question id -> (data_source, mean ``key`` over that question's records)."""
    sums: dict[str, list] = defaultdict(lambda: [None, 0.0, 0])
    for r in records:
        entry = sums[str(r["id"])]
        entry[0] = r["data_source"]
        entry[1] += float(r[key])
        entry[2] += 1
    return {qid: (src, total / n) for qid, (src, total, n) in sums.items()}


def compare_records(a_records: Iterable[Mapping], b_records: Iterable[Mapping], *, key: str = "em",
                    n_boot: int = 10_000, level: float = 0.95, seed: int = 0) -> dict[str, dict]:
    """Paired comparison of ``b`` against ``a`` on the questions both evaluated, overall and per
    data_source: ``{name: {n, a, b, diff, low, high, n01, n10, p_mcnemar}}`` (McNemar only when
    every per-question score is 0/1)."""
    qa, qb = per_question(a_records, key), per_question(b_records, key)
    common = sorted(set(qa) & set(qb))
    if not common:
        raise ValueError("the two evaluations share no question id; a paired comparison needs the same questions")
    groups: dict[str, list[str]] = defaultdict(list)
    for qid in common:
        groups[qa[qid][0]].append(qid)
    names = sorted(groups) + ["overall"]
    groups["overall"] = common
    out = {}
    for name in names:
        ids = groups[name]
        a = [qa[i][1] for i in ids]
        b = [qb[i][1] for i in ids]
        diff, low, high = paired_bootstrap(a, b, n_boot=n_boot, level=level, seed=seed)
        row = {"n": len(ids), "a": float(np.mean(a)), "b": float(np.mean(b)), "diff": diff, "low": low, "high": high}
        if all(x in (0.0, 1.0) for x in a + b):
            row["n01"], row["n10"], row["p_mcnemar"] = mcnemar(a, b)
        out[name] = row
    return out


def format_comparison(cmp: Mapping[str, Mapping], a_name: str, b_name: str, *, level: float = 0.95) -> str:
    """A markdown table of :func:`compare_records`' result."""
    pct = f"{level:.0%}"
    lines = [f"| data_source | n | {a_name} | {b_name} | difference | {pct} interval | McNemar p |",
             "|---|---:|---:|---:|---:|---|---:|"]
    for name, r in cmp.items():
        p = f"{r['p_mcnemar']:.3g} ({r['n01']}/{r['n10']})" if "p_mcnemar" in r else "-"
        lines.append(f"| {name} | {r['n']} | {r['a']:.3f} | {r['b']:.3f} | {r['diff']:+.3f} | "
                     f"[{r['low']:+.3f}, {r['high']:+.3f}] | {p} |")
    return "\n".join(lines)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x``, ties sharing their mean rank (what Spearman's correlation uses)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.arange(1, x.size + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / counts)[inverse]


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def precision_agreement(reference: Sequence[float], other: Sequence[float]) -> dict:
    """How far ``other`` (e.g. step IG computed in bf16) is from ``reference`` (the same values in fp32),
    value by value: the distribution of ``|other - reference|`` (max, mean, median, 95th and 99th
    percentile), Pearson's and Spearman's correlation, and ``sign_agreement``: the share of pairs whose
    signs agree (a zero agrees only with a zero)."""
    a, b = np.asarray(reference, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"precision_agreement needs two equal-length 1-D arrays, got {a.shape} and {b.shape}")
    if a.size == 0:
        return {"n": 0}
    d = np.abs(b - a)
    return {"n": int(a.size), "max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean()),
            "median_abs_diff": float(np.median(d)), "p95_abs_diff": float(np.quantile(d, 0.95)),
            "p99_abs_diff": float(np.quantile(d, 0.99)), "pearson": _correlation(a, b),
            "spearman": _correlation(_ranks(a), _ranks(b)),
            "sign_agreement": float(np.mean(np.sign(a) == np.sign(b)))}
