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
