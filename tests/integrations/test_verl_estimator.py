"""The ig_search estimator on hand-computed batches, and through verl's registry."""

import math

import numpy as np
import pytest
import torch

pytest.importorskip("verl")

from verl.trainer.ppo.core_algos import get_adv_estimator_fn  # noqa: E402

import igsearch.integrations.verl  # noqa: E402,F401  (registers ig_search)
from igsearch.integrations.verl.config import VerlIGConfig  # noqa: E402
from igsearch.integrations.verl.estimator import IG_KEY, SPANS_KEY  # noqa: E402

T = 12


def rewards_at_end(rewards, lengths):
    r = torch.zeros(len(rewards), T)
    for i, (x, n) in enumerate(zip(rewards, lengths)):
        r[i, n - 1] = x
    return r


def mask_of(lengths):
    return (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).float()


def z(values):
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
    return [(v - m) / (s + 1e-6) for v in values]


def test_hand_computed_batch():
    """Group a: rewards 1,0,0 (GRPO terms) and IG on query spans; group b: all fail (only the IG term);
    group c: a single rollout (advantage 0 everywhere, its single step z-scores to 0)."""
    lengths = [10, 12, 9, 11, 8, 12]
    uid = np.array(["a", "a", "a", "b", "b", "c"], dtype=object)
    rewards = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    spans = [[(1, 3), (5, 7)], [(2, 4)], [], [(0, 2), (4, 6)], [(3, 5)], [(1, 4)]]
    igs = [[0.9, 0.1], [0.3], [], [2.0, -1.0], [0.2], [0.7]]
    ntb = {SPANS_KEY: np.array(spans, dtype=object), IG_KEY: np.array(igs, dtype=object)}
    fn = get_adv_estimator_fn("ig_search")
    adv, ret = fn(token_level_rewards=rewards_at_end(rewards, lengths), response_mask=mask_of(lengths),
                  index=uid, config={"ig": {"beta": 0.5, "clip": 2.0}}, non_tensor_batch=ntb)
    assert adv.shape == (6, T) and torch.equal(adv, ret)

    expected = torch.zeros(6, T)
    outcome = z([1.0, 0.0, 0.0]) + [0.0, 0.0, 0.0]  # groups b (all fail) and c (one rollout): 0
    ig_a = z([0.9, 0.1, 0.3])
    ig_b = z([2.0, -1.0, 0.2])
    step_values = {0: ig_a[:2], 1: ig_a[2:], 2: [], 3: ig_b[:2], 4: ig_b[2:], 5: [0.0]}
    for i in range(6):
        expected[i, :lengths[i]] = outcome[i]
        for (s, e), v in zip(spans[i], step_values[i]):
            expected[i, s:e] += 0.5 * max(-2.0, min(2.0, v))
    expected *= mask_of(lengths)
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=0)
    # all-fail group: non-zero exactly on its query spans
    for i in (3, 4):
        on_span = torch.zeros(T, dtype=torch.bool)
        for s, e in spans[i]:
            on_span[s:e] = True
        assert bool((adv[i][on_span] != 0).all()) and bool((adv[i][~on_span] == 0).all())
    assert bool((adv[5] == 0).all())


def test_without_std_scaling_and_clip():
    lengths, uid = [6, 6], np.array(["g", "g"], dtype=object)
    ntb = {SPANS_KEY: np.array([[(0, 2)], [(1, 3)]], dtype=object), IG_KEY: np.array([[5.0], [-5.0]], dtype=object)}
    adv, _ = get_adv_estimator_fn("ig_search")(
        token_level_rewards=rewards_at_end([1.0, 0.0], lengths), response_mask=mask_of(lengths), index=uid,
        config={"norm_adv_by_std_in_grpo": False, "ig": {"beta": 1.0, "clip": 0.5}}, non_tensor_batch=ntb)
    assert adv[0, 5].item() == pytest.approx(0.5) and adv[1, 5].item() == pytest.approx(-0.5)
    assert adv[0, 0].item() == pytest.approx(0.5 + 0.5) and adv[1, 1].item() == pytest.approx(-0.5 - 0.5)


def test_refusals_name_what_is_missing():
    fn = get_adv_estimator_fn("ig_search")
    with pytest.raises(ValueError, match="ig_step_ig"):
        fn(token_level_rewards=torch.zeros(2, T), response_mask=torch.ones(2, T), index=np.array(["a", "a"]))
    with pytest.raises(ValueError, match="algorithm.ig.betta"):
        VerlIGConfig.from_algorithm({"ig": {"betta": 0.5}})
    with pytest.raises(Exception, match="algorithm.ig"):
        VerlIGConfig.from_algorithm({"ig": {"norm": "sometimes"}})


def test_stock_compute_advantage_refuses_with_the_reason():
    """verl 0.9.1's compute_advantage does not pass non_tensor_batch to registered estimators."""
    from verl import DataProto
    from verl.trainer.ppo.ray_trainer import compute_advantage

    data = DataProto.from_dict(tensors={"token_level_rewards": torch.zeros(2, T), "response_mask": torch.ones(2, T)},
                               non_tensors={"uid": np.array(["a", "a"], dtype=object)})
    with pytest.raises(ValueError, match="igsearch's verl trainer"):
        compute_advantage(data, adv_estimator="ig_search", config={})
