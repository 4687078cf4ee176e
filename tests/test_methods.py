"""RLOO, GiGPO and IGPO estimators on hand-computed batches, against the formulas of their papers,
and the registries' declared needs."""

import math

import pytest
import torch

import igsearch.methods  # noqa: F401  (registers rloo, gigpo, igpo)
from igsearch.algo.advantages import (
    AdvantageConfig,
    AdvantageInput,
    compute_advantages,
    estimator_needs,
    per_token_advantages,
)
from igsearch.algo.step_scores import list_step_scorers
from igsearch.methods.gigpo import GiGPOConfig
from igsearch.methods.igpo import IGPOConfig, turn_rewards


def _sd(xs):  # sample std, as every estimator uses
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _z(x, xs, eps=1e-6):
    return (x - sum(xs) / len(xs)) / (_sd(xs) + eps)


def test_every_needed_scorer_is_registered():
    assert estimator_needs("grpo") == frozenset() and estimator_needs("rloo") == frozenset()
    assert estimator_needs("ig") == {"step_ig"}
    assert estimator_needs("gigpo") == {"anchor_state"}
    assert estimator_needs("igpo") == {"turn_gain"}
    for name in ("ig", "gigpo", "igpo"):
        assert estimator_needs(name) <= set(list_step_scorers())
    with pytest.raises(ValueError, match="unknown advantage estimator"):
        estimator_needs("nope")


def test_rloo_leave_one_out():
    inp = AdvantageInput(rewards=[1.0, 0.0, 0.0, 0.5, 1.0, 7.0], group_ids=[0, 0, 0, 1, 1, 2],
                         query_spans=[[]] * 6, response_lengths=[4] * 6)
    out = compute_advantages(inp, AdvantageConfig(method="rloo"))
    # group 0: 1 - (0+0)/2, 0 - (1+0)/2, 0 - (1+0)/2; group 1: 0.5 - 1, 1 - 0.5; group 2 alone: 0
    torch.testing.assert_close(out.seq_adv, torch.tensor([1.0, -0.5, -0.5, -0.5, 0.5, 0.0]))
    assert out.spans.shape == (0, 3)


def _gigpo_batch():
    """One question, three rollouts: a and b share turn 0 and turn 1's history, c answers at once."""
    return AdvantageInput(
        rewards=[1.0, 0.0, 1.0], group_ids=[0, 0, 0],
        query_spans=[[(1, 4)], [(1, 4)], []], response_lengths=[10, 9, 6],
        turn_spans=[[(0, 4), (7, 10)], [(0, 4), (7, 9)], [(0, 6)]],
        scores={"anchor_state": [["s0", "x"], ["s0", "x"], ["s0"]]},
    )


def test_gigpo_episode_plus_anchor_group_advantages():
    gamma, omega = 0.5, 0.7
    out = compute_advantages(_gigpo_batch(), AdvantageConfig(method="gigpo").with_options(GiGPOConfig(gamma=gamma, omega=omega)))
    R = [1.0, 0.0, 1.0]
    a_e = [_z(r, R) for r in R]
    # discounted returns of each turn: gamma^(K - 1 - k) * R
    s0 = [gamma * 1.0, gamma * 0.0, 1.0]  # turn 0 of a (K=2), b (K=2), c (K=1)
    x = [1.0, 0.0]  # turn 1 of a and b
    a_s = {("a", 0): _z(s0[0], s0), ("b", 0): _z(s0[1], s0), ("c", 0): _z(s0[2], s0),
           ("a", 1): _z(x[0], x), ("b", 1): _z(x[1], x)}
    tok = per_token_advantages(out, None, 10)
    expected = torch.tensor([
        [a_e[0] + omega * a_s[("a", 0)]] * 4 + [a_e[0]] * 3 + [a_e[0] + omega * a_s[("a", 1)]] * 3,
        [a_e[1] + omega * a_s[("b", 0)]] * 4 + [a_e[1]] * 3 + [a_e[1] + omega * a_s[("b", 1)]] * 2 + [a_e[1]],
        [a_e[2] + omega * a_s[("c", 0)]] * 6 + [a_e[2]] * 4,
    ])
    torch.testing.assert_close(tok, expected, rtol=0, atol=1e-5)
    assert out.stats["gigpo/shared_state_frac"] == 1.0


def test_gigpo_unshared_states_give_no_step_signal():
    inp = _gigpo_batch()
    inp.scores["anchor_state"] = [["p", "q"], ["r", "s"], ["t"]]
    out = compute_advantages(inp, AdvantageConfig(method="gigpo"))
    grpo = compute_advantages(inp, AdvantageConfig(method="grpo"))
    torch.testing.assert_close(per_token_advantages(out, None, 10), per_token_advantages(grpo, None, 10))


def test_igpo_turn_rewards_normalised_in_group_then_accumulated():
    gamma = 0.9
    inp = AdvantageInput(
        rewards=[1.0, 0.0], group_ids=[3, 3], query_spans=[[(0, 2), (5, 7)], [(0, 2)]], response_lengths=[12, 8],
        # a: two searches then an answer turn; b: one search, cut after its documents (no answer turn)
        turn_spans=[[(0, 3), (5, 8), (10, 12)], [(0, 3)]],
        scores={"turn_gain": [[0.2, 0.3], [-0.1]]},
    )
    out = compute_advantages(inp, AdvantageConfig(method="igpo").with_options(IGPOConfig(gamma=gamma)))
    r_a, r_b = [0.2, 0.3, 1.0], [-0.1 + 0.0]
    pool = r_a + r_b
    n_a, n_b = [_z(v, pool) for v in r_a], [_z(v, pool) for v in r_b]
    adv_a = [n_a[0] + gamma * n_a[1] + gamma ** 2 * n_a[2], n_a[1] + gamma * n_a[2], n_a[2]]
    tok = per_token_advantages(out, None, 12)
    expected = torch.tensor([
        [adv_a[0]] * 3 + [0.0] * 2 + [adv_a[1]] * 3 + [0.0] * 2 + [adv_a[2]] * 2,
        [n_b[0]] * 3 + [0.0] * 9,
    ])
    torch.testing.assert_close(tok, expected, rtol=0, atol=1e-5)
    assert turn_rewards([0.5], 2, 1.0) == [0.5, 1.0] and turn_rewards([0.5], 1, 1.0) == [1.5]


def test_estimators_name_what_is_missing():
    inp = AdvantageInput(rewards=[1.0, 0.0], group_ids=[0, 0], query_spans=[[], []], response_lengths=[3, 3])
    with pytest.raises(ValueError, match="'gigpo' advantage estimator needs anchor_state"):
        compute_advantages(inp, AdvantageConfig(method="gigpo"))
    with pytest.raises(ValueError, match="'igpo' advantage estimator needs turn_gain"):
        compute_advantages(inp, AdvantageConfig(method="igpo"))
    inp = AdvantageInput(rewards=[1.0, 0.0], group_ids=[0, 0], query_spans=[[], []], response_lengths=[3, 3],
                         scores={"anchor_state": [["a"], ["b"]]})
    with pytest.raises(ValueError, match="needs turn_spans"):
        compute_advantages(inp, AdvantageConfig(method="gigpo"))


def test_the_documented_example_method_runs():
    """docs/adding_a_method.md's one-file method registers, scores and produces advantages."""
    import re
    from pathlib import Path

    from igsearch.algo.step_scores import ScoringBatch, run_step_scorer
    from igsearch.rollout.trajectory import StepSpans, Trajectory

    doc = (Path(__file__).parents[1] / "docs" / "adding_a_method.md").read_text()
    exec(re.findall(r"```python\n(.*?)```", doc, re.S)[0], {})
    ids = [5, 6, 7] + list(range(8)) + list(range(9))  # step 2's documents repeat step 1's tokens
    a = Trajectory(prompt_ids=[1], response_ids=ids, loss_mask=[1] * 20, rollout_logprobs=[0.0] * 20,
                   steps=[StepSpans((0, 3), (3, 8)), StepSpans((9, 11), (11, 16))], question_index=0)
    b = Trajectory(prompt_ids=[1], response_ids=list(range(20)), loss_mask=[1] * 20, rollout_logprobs=[0.0] * 20,
                   steps=[StepSpans((0, 3), (3, 8))], question_index=0)
    scores = run_step_scorer("doc_novelty", ScoringBatch([a, b], None, None, None))
    assert scores.values == [[1.0, 0.0], [1.0]]
    out = compute_advantages(AdvantageInput.from_trajectories([a, b], [1.0, 0.0], {"doc_novelty": scores.values}),
                             AdvantageConfig(method="novelty"))
    assert out.spans.tolist() == [[0, 0, 3], [0, 9, 11], [1, 0, 3]] and out.span_values[1] < 0 < out.span_values[0]


def test_a_scorer_refuses_a_config_it_cannot_work_with():
    from igsearch.algo.step_scores import check_step_scorer
    from igsearch.train.config import load_config

    assert check_step_scorer("step_ig", load_config(None, ["model_path=/m"])) is None
    why = check_step_scorer("step_ig", load_config(None, ["model_path=/m", "template=search-r1"]))
    assert "template=refine" in why
    assert check_step_scorer("turn_gain", load_config(None, ["model_path=/m", "template=search-r1"])) is None
