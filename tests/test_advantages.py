"""Advantage estimators: GRPO group normalisation, IG span modulation, registry plug-ins."""

import math

import pytest
import torch

from igsearch.algo.advantages import (
    AdvantageConfig,
    AdvantageInput,
    AdvantageOutput,
    compute_advantages,
    get_advantage_estimator,
    group_normalized_rewards,
    list_advantage_estimators,
    per_token_advantages,
    register_advantage_estimator,
)
from igsearch.algo.rewards import trajectory_reward
from igsearch.ig.config import IGConfig
from igsearch.methods.grpo import grpo_advantages
from igsearch.methods.ig import normalize_step_ig


def ig_config(**knobs) -> AdvantageConfig:
    """The ``ig`` estimator with IG-Search's knobs (the run config's ``ig`` section) set to ``knobs``."""
    return AdvantageConfig(method="ig").with_options(IGConfig(**knobs))


def _sample_std(xs):
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _batch(step_ig=None, rewards=(1.0, 0.0, 0.0, 1.0, 0.0, 0.0)):
    """Two groups of three rollouts; every rollout has two search steps."""
    spans = [[(2, 5), (10, 14)], [(0, 3), (8, 9)], [(1, 4), (6, 11)],
             [(2, 5), (7, 8)], [(3, 6), (9, 12)], [(0, 2), (5, 7)]]
    return AdvantageInput(
        rewards=list(rewards), group_ids=[7, 7, 7, 9, 9, 9], query_spans=spans, response_lengths=[16] * 6,
        scores={} if step_ig is None else {"step_ig": step_ig},
    )


def test_grpo_group_zscore_uses_sample_std():
    inp = _batch()
    out = compute_advantages(inp, AdvantageConfig(method="grpo"))
    rs = [1.0, 0.0, 0.0]
    m, s = sum(rs) / 3, _sample_std(rs)
    expected = [(r - m) / (s + 1e-6) for r in rs] * 2
    torch.testing.assert_close(out.seq_adv, torch.tensor(expected), rtol=0, atol=1e-6)
    assert out.spans.shape == (0, 3) and out.span_values.shape == (0,)
    assert out.stats["groups/zero_spread_frac"] == 0.0


def test_grpo_scale_none_only_centres():
    out = compute_advantages(_batch(rewards=(1, 0, 0, 0.5, 0.5, 1)), AdvantageConfig(method="grpo", adv_scale="none"))
    torch.testing.assert_close(out.seq_adv, torch.tensor([2 / 3, -1 / 3, -1 / 3, -1 / 6, -1 / 6, 1 / 3]))


def test_singleton_group_has_zero_advantage():
    adv, _ = group_normalized_rewards([1.0, 0.0, 1.0], [0, 1, 1])
    assert adv[0] == 0.0 and adv[1] < 0 < adv[2]


def test_all_fail_group_ig_nonzero_on_query_tokens_grpo_exactly_zero():
    """The headline property: a group whose rollouts all fail still gets signal from IG."""
    step_ig = [[0.8, -0.1], [0.2, None], [-0.5, 0.4], [0.3, 0.1], [0.0, -0.2], [0.6, 0.5]]
    inp = _batch(step_ig, rewards=(0.0,) * 6)
    T = 16
    ig = compute_advantages(inp, ig_config(beta=0.5))
    grpo = compute_advantages(inp, AdvantageConfig(method="grpo"))
    a_ig = per_token_advantages(ig, None, T)
    a_grpo = per_token_advantages(grpo, 0.5, T)
    assert ig.stats["groups/zero_spread_frac"] == 1.0
    assert torch.count_nonzero(a_grpo) == 0  # exactly zero everywhere
    for i, (row, spans) in enumerate(zip(step_ig, inp.query_spans)):
        on_query = torch.zeros(T, dtype=torch.bool)
        for v, (s, e) in zip(row, spans):
            if v is not None:
                on_query[s:e] = True
                assert torch.all(a_ig[i, s:e] != 0), (i, s, e)
        assert torch.all(a_ig[i, ~on_query] == 0)  # tokens outside scored query spans carry A_i = 0
    # rollout 1's second step has no IG: no span, zero advantage on its query tokens
    assert torch.all(a_ig[1, 8:9] == 0)


def test_ig_group_normalisation_and_clip():
    step_ig = [[0.8, -0.1], [0.2, None], [-0.5, 0.4], [3.0, 0.1], [0.0, -0.2], [0.6, 0.5]]
    inp = _batch(step_ig)
    cfg = ig_config(beta=1.0, clip=1.5)
    out = compute_advantages(inp, cfg)
    # group 7: scored values 0.8, -0.1, 0.2, -0.5, 0.4
    g = [0.8, -0.1, 0.2, -0.5, 0.4]
    m, s = sum(g) / len(g), _sample_std(g)
    z = lambda v: max(-1.5, min(1.5, (v - m) / (s + 1e-6)))  # noqa: E731
    rows = {(int(a), int(b), int(c)): float(v) for (a, b, c), v in zip(out.spans.tolist(), out.span_values)}
    assert rows[(0, 2, 5)] == pytest.approx(z(0.8), abs=1e-6)
    assert rows[(2, 1, 4)] == pytest.approx(z(-0.5), abs=1e-6)
    assert (1, 8, 9) not in rows
    # group 9 has an outlier 3.0 that is clipped to 1.5
    assert rows[(3, 2, 5)] == pytest.approx(1.5)
    assert out.stats["ig/clip_frac"] > 0
    # per-token: A_i + beta * IGn on the span
    a = per_token_advantages(out, None, 16)
    assert a[0, 3].item() == pytest.approx(out.seq_adv[0].item() + z(0.8), abs=1e-5)
    assert a[0, 6].item() == pytest.approx(out.seq_adv[0].item(), abs=1e-6)


def test_ig_batch_and_none_norm_and_inverse_length():
    step_ig = [[0.8, -0.1], [0.2, None], [-0.5, 0.4], [0.3, 0.1], [0.0, -0.2], [0.6, 0.5]]
    inp = _batch(step_ig)
    none = compute_advantages(inp, ig_config(norm="none", clip=None))
    assert float(none.span_values[0]) == pytest.approx(0.8)
    inv = compute_advantages(inp, ig_config(norm="none", clip=None, span_weight="inverse_length"))
    assert float(inv.span_values[0]) == pytest.approx(0.8 / 3)  # span (2, 5)
    batch = normalize_step_ig(step_ig, inp.group_ids, norm="batch", clip=None)[0]
    flat = [v for row in batch for v in row if v is not None]
    assert sum(flat) == pytest.approx(0.0, abs=1e-9)
    assert _sample_std(flat) == pytest.approx(1.0, abs=1e-4)


def test_overlapping_spans_add_and_span_scale_override():
    out = AdvantageOutput(
        seq_adv=torch.tensor([1.0, -1.0]),
        spans=torch.tensor([[0, 1, 4], [0, 3, 6], [1, 0, 2]]),
        span_values=torch.tensor([1.0, 2.0, -0.5]),
        span_scale=0.5,
    )
    a = per_token_advantages(out, None, 7)
    torch.testing.assert_close(a[0], torch.tensor([1.0, 1.5, 1.5, 2.5, 2.0, 2.0, 1.0]))
    torch.testing.assert_close(a[1], torch.tensor([-1.25, -1.25, -1, -1, -1, -1, -1]))
    assert torch.equal(per_token_advantages(out, 0.0, 7)[0], torch.ones(7))
    with pytest.raises(ValueError, match="beyond T"):
        per_token_advantages(out, None, 5)


def test_registry_plugin_by_name():
    @register_advantage_estimator("test_const_turn_bonus")
    def turn_bonus(inp, cfg):
        base = grpo_advantages(inp, cfg)
        rows = [(i, s, e) for i, spans in enumerate(inp.query_spans) for s, e in spans]
        return AdvantageOutput(base.seq_adv, torch.tensor(rows, dtype=torch.long),
                               torch.full((len(rows),), 0.25), span_scale=1.0, stats=base.stats)

    assert get_advantage_estimator("test_const_turn_bonus") is turn_bonus
    assert "test_const_turn_bonus" in list_advantage_estimators()
    out = compute_advantages(_batch(rewards=(0.0,) * 6), AdvantageConfig(method="test_const_turn_bonus"))
    assert per_token_advantages(out, None, 16)[0, 2].item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="already registered"):
        register_advantage_estimator("grpo")(turn_bonus)
    with pytest.raises(ValueError, match="registered: .*grpo.*ig|registered: .*ig.*grpo"):
        get_advantage_estimator("nope")


def test_input_validation():
    with pytest.raises(ValueError, match="step_ig values but 2 search steps"):
        compute_advantages(_batch(step_ig=[[0.1]] * 6), AdvantageConfig(method="ig"))
    with pytest.raises(ValueError, match="outside"):
        AdvantageInput([1.0], [0], [[(3, 20)]], [10])
    with pytest.raises(ValueError, match="turn span"):
        AdvantageInput([1.0], [0], [[]], [10], turn_spans=[[(0, 11)]])
    with pytest.raises(ValueError, match="needs step_ig"):
        compute_advantages(_batch(), AdvantageConfig(method="ig"))
    with pytest.raises(ValueError, match="finite"):
        compute_advantages(_batch([[float("nan"), 0.0]] * 6), AdvantageConfig())


def test_from_trajectories():
    from igsearch.rollout.trajectory import StepSpans, Trajectory

    trajs = [
        Trajectory(prompt_ids=[1], response_ids=list(range(10)), loss_mask=[1] * 10,
                   rollout_logprobs=[0.0] * 10, steps=[StepSpans(query=(0, 3), documents=(3, 6))],
                   question_index=4),
        Trajectory(prompt_ids=[1], response_ids=list(range(5)), loss_mask=[1] * 5,
                   rollout_logprobs=[0.0] * 5, question_index=4),
    ]
    inp = AdvantageInput.from_trajectories(trajs, [1.0, 0.0], {"step_ig": [[0.3], []]})
    assert inp.group_ids == [4, 4] and inp.query_spans == [[(0, 3)], []] and inp.response_lengths == [10, 5]
    assert inp.step_ig == [[0.3], []]
    # turns: before the documents, and after them to the end; a rollout without steps is one turn
    assert inp.turn_spans == [[(0, 3), (6, 10)], [(0, 5)]]


def test_trajectory_reward():
    assert trajectory_reward("The  Paris!", ["paris", "Paris, France"]) == 1.0
    assert trajectory_reward("Lyon", ["paris"]) == 0.0
    assert trajectory_reward(None, ["paris"], format_penalty=0.2) == pytest.approx(-0.2)
    assert trajectory_reward("paris", ["paris"], malformed=True, format_penalty=0.2) == pytest.approx(0.8)
    assert trajectory_reward("paris", "paris") == 1.0
