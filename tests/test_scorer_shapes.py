"""Every request shape real rollouts produce: the trunk and tree scorers equal the naive scorer on
random agent rollouts (successful ones included), for IG-Search's step IG and IGPO's turn gains, in
both answer-token modes, and no shape raises.

The rollouts come from the real agent loop (``SearchAgent``) on a scripted engine: random numbers of
searches, with and without refines, ending in the gold answer, a wrong answer, or at the turn limit.
A successful rollout's last turn writes ``<answer> gold </answer>``, so its last turn context plus
the gold as written is a prefix of its own trunk. A barely trained policy also writes an unclosed
``<answer> gold`` before a search (the agent takes the turn as a search): then a later context runs
through an earlier request's scored tokens, the shape that made the trunk scorer raise "a cached
token is also a position whose logits are needed" in ``bench/step_overhead.py --quick``.
"""

from __future__ import annotations

import pytest
import torch

from igsearch.algo.step_scores import ScoringBatch
from igsearch.ig import information_gain_of_trajectories
from igsearch.methods.igpo import turn_gain
from igsearch.scoring import ScoreRequest, Scorer, score
from igsearch.scoring.trunk import compute_trunk_kv
from igsearch.train.config import load_config
from rollout_fixtures import GOLD, agent_rollouts

@pytest.fixture(scope="module")
def tok(small_tok):
    return small_tok


@pytest.fixture(scope="module")
def model(small_qwen):
    return small_qwen


def _close(a, b, what):
    assert len(a) == len(b), what
    for x, y in zip(a, b):
        if x is None or y is None:
            assert x is None and y is None, what
        else:
            assert abs(float(x) - float(y)) < 1e-4, f"{what}: {x} vs {y}"


@pytest.mark.parametrize("answer_tokens", ["as_written", "separate"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_step_ig_trunk_equals_tree_equals_naive(tok, model, answer_tokens, seed):
    trajs = agent_rollouts(tok, seed)
    kv = compute_trunk_kv(model, [t.token_ids for t in trajs])
    results = {}
    for name, extra in (("naive", {}), ("tree", {}), ("trunk", {}), ("trunk-kv", {"trunks": kv})):
        results[name] = information_gain_of_trajectories(
            trajs, model, tok, scorer=name.split("-")[0], answer_tokens=answer_tokens, seed=7, n_random=2, **extra)
    ref = results["naive"]
    assert any(v is not None for row in ref.step_ig for v in row)
    for name, res in results.items():
        for i in range(len(trajs)):
            _close(res.step_ig[i], ref.step_ig[i], f"{name} rollout {i}")


@pytest.mark.parametrize("answer_tokens", ["as_written", "separate"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_igpo_turn_gains_trunk_equals_tree_equals_naive(tok, model, answer_tokens, seed):
    trajs = agent_rollouts(tok, seed)
    kv = compute_trunk_kv(model, [t.token_ids for t in trajs])
    gains = {}
    for scorer, trunk_kv in (("naive", None), ("tree", None), ("trunk", None), ("trunk", kv)):
        cfg = load_config(None, [f"scoring.scorer={scorer}", f"scoring.answer_tokens={answer_tokens}"], validate=False)
        bound = Scorer(scorer, model, trunks=trunk_kv) if trunk_kv is not None else None  # None: the batch's default
        out = turn_gain(ScoringBatch(trajs, model, tok, cfg, scorer=bound))
        gains[(scorer, trunk_kv is not None)] = out.values
    ref = gains[("naive", False)]
    assert sum(len(row) for row in ref) > 0
    for key, values in gains.items():
        for i in range(len(trajs)):
            _close(values[i], ref[i], f"{key} rollout {i}")


def test_trunk_scorer_when_one_context_runs_through_anothers_scored_tokens(tok, model):
    """Request b's context runs through request a's scored tokens, and both lie on the trunk: the
    tokens whose logits a needs must be forwarded, not taken from the trunk."""
    trunk = list(range(5, 25))
    reqs = [ScoreRequest(trunk[:4], trunk[4:9]), ScoreRequest(trunk[:12], trunk[12:14]),
            ScoreRequest(trunk[:6], [40, 41])]
    ref = score(reqs, model, "naive")
    out = score(reqs, model, "trunk", trunks=[trunk], trunk_of=[0, 0, 0])
    for a, b in zip(ref.results, out.results):
        torch.testing.assert_close(b.token_logprobs, a.token_logprobs, atol=1e-5, rtol=0)
