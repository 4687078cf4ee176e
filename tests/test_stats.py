"""Paired comparisons: bootstrap intervals and McNemar against exact references and simulations."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from igsearch.stats import compare_records, format_comparison, mcnemar, paired_bootstrap, per_question


def test_mcnemar_matches_the_binomial_reference():
    a = [1] * 10 + [0] * 3 + [1] * 20 + [0] * 30
    b = [0] * 10 + [1] * 3 + [1] * 20 + [0] * 30
    n01, n10, p = mcnemar(a, b)
    assert (n01, n10) == (3, 10)
    ref = 2 * sum(math.comb(13, i) for i in range(4)) / 2 ** 13
    assert p == pytest.approx(ref, rel=1e-12)
    assert mcnemar([1, 0], [1, 0]) == (0, 0, 1.0)
    assert mcnemar([0] * 5, [1] * 5)[2] == pytest.approx(2 / 32)


def test_paired_bootstrap_covers_the_true_difference_at_its_level():
    rng = np.random.default_rng(7)
    covered = 0
    for trial in range(200):
        a = (rng.random(151) < 0.3).astype(float)
        flip = rng.random(151) < 0.2   # b: a with some answers changed; true mean diff known
        b = np.where(flip, (rng.random(151) < 0.55).astype(float), a)
        true = 0.2 * (0.55 - 0.3)
        _, low, high = paired_bootstrap(a, b, n_boot=2000, seed=trial)
        covered += low <= true <= high
    assert 0.88 <= covered / 200 <= 0.99


def test_paired_interval_is_narrower_than_the_unpaired_spread():
    rng = np.random.default_rng(1)
    a = (rng.random(301) < 0.4).astype(float)
    b = a.copy()
    b[:12] = 1.0 - b[:12]
    diff, low, high = paired_bootstrap(a, b, seed=0)
    assert diff == pytest.approx(float((b - a).mean()))
    unpaired_half_width = 1.96 * math.sqrt(2 * 0.4 * 0.6 / 301)
    assert (high - low) / 2 < unpaired_half_width / 2


def test_compare_records_pairs_by_id_per_source_and_averages_samples():
    rnd = random.Random(3)
    a, b = [], []
    for i in range(57):
        src = f"world_{i % 3 + 1}hop"
        for s in range(3):
            a.append({"id": f"q{i}", "data_source": src, "em": float(rnd.random() < 0.2), "sample": s})
        b.append({"id": f"q{i}", "data_source": src, "em": float(rnd.random() < 0.5)})
    rnd.shuffle(b)
    b.append({"id": "only-in-b", "data_source": "world_1hop", "em": 1.0})
    cmp = compare_records(a, b, n_boot=500)
    assert set(cmp) == {"world_1hop", "world_2hop", "world_3hop", "overall"}
    assert cmp["overall"]["n"] == 57 and cmp["world_2hop"]["n"] == 19
    qa = per_question(a)
    assert cmp["overall"]["a"] == pytest.approx(np.mean([v for _, v in qa.values()]))
    assert "p_mcnemar" not in cmp["overall"]          # averaged samples are not 0/1
    assert cmp["overall"]["low"] <= cmp["overall"]["diff"] <= cmp["overall"]["high"]
    assert "| overall | 57 |" in format_comparison(cmp, "a", "b")
    with pytest.raises(ValueError, match="share no question"):
        compare_records(a, [{"id": "x", "data_source": "s", "em": 1.0}])
    with pytest.raises(ValueError, match="equal-length"):
        paired_bootstrap([1.0], [1.0, 0.0])


def _coverage(make, truth, *, sims=120, n_boot=400):
    """Share of simulated data sets whose hierarchical / questions-only interval holds ``truth``, and the mean
    width of each."""
    from igsearch.stats import hierarchical_bootstrap, paired_bootstrap

    rng = np.random.default_rng(7)
    hits_h = hits_q = 0
    width_h = width_q = 0.0
    for i in range(sims):
        worlds = make(rng)
        _, lo, hi = hierarchical_bootstrap(worlds, n_boot=n_boot, seed=i)
        hits_h += lo <= truth <= hi
        width_h += hi - lo
        # the usual interval: questions resampled, seeds averaged, worlds pooled as one question list
        flat = np.concatenate([w.mean(axis=0) for w in worlds])
        _, lo, hi = paired_bootstrap(np.zeros_like(flat), flat, n_boot=n_boot, seed=i)
        hits_q += lo <= truth <= hi
        width_q += hi - lo
    return hits_h / sims, hits_q / sims, width_h / sims, width_q / sims


def test_hierarchical_bootstrap_carries_a_world_effect():
    """5 worlds whose true effects scatter around 0.05 (sd 0.05): the estimand is the mean over worlds. The
    hierarchical interval covers it; the questions-only interval, far too narrow, mostly does not."""
    def make(rng):
        return [0.05 + rng.normal(0, 0.05) + rng.normal(0, 0.01, size=(3, 1)) + rng.normal(0, 0.3, size=(3, 150))
                for _ in range(5)]

    cov_h, cov_q, w_h, w_q = _coverage(make, 0.05)
    assert cov_h >= 0.8 and cov_q <= 0.6 and w_h > 1.8 * w_q, (cov_h, cov_q, w_h, w_q)


def test_hierarchical_bootstrap_carries_a_seed_effect():
    """One world, 6 seeds whose effects scatter (sd 0.06) around the world's 0.03: the hierarchical interval
    covers 0.03, the questions-only one over seed-averaged questions much less often."""
    def make(rng):
        return [0.03 + rng.normal(0, 0.06, size=(6, 1)) + rng.normal(0, 0.3, size=(6, 300))]

    cov_h, cov_q, w_h, w_q = _coverage(make, 0.03)
    assert cov_h >= 0.8 and cov_q <= 0.6 and w_h > 1.5 * w_q, (cov_h, cov_q, w_h, w_q)


def test_hierarchical_bootstrap_with_only_question_noise_matches_the_paired_interval():
    """No world or seed effect: both intervals cover the truth about 95% of the time with about the same width,
    and with one world and one seed the two are the same interval."""
    from igsearch.stats import hierarchical_bootstrap, paired_bootstrap

    def make(rng):
        return [0.02 + rng.normal(0, 0.3, size=(1, 400))]

    cov_h, cov_q, w_h, w_q = _coverage(make, 0.02)
    assert cov_h >= 0.88 and cov_q >= 0.88 and 0.85 < w_h / w_q < 1.15, (cov_h, cov_q, w_h, w_q)
    d = np.random.default_rng(3).normal(0.1, 1.0, size=(1, 50))
    est, lo, hi = hierarchical_bootstrap([d], n_boot=4000, seed=1)
    ref = paired_bootstrap(np.zeros(50), d[0], n_boot=4000, seed=1)
    assert est == pytest.approx(ref[0]) and lo == pytest.approx(ref[1], abs=0.03) and hi == pytest.approx(ref[2], abs=0.03)
    with pytest.raises(ValueError):
        hierarchical_bootstrap([])
