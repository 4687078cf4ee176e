"""IG's contexts from token ids (the trainer's path) equal the text adapter on the agent's rollouts.

``information_gain_of_trajectories`` concatenates each context from the rollout's own token ids
(``igsearch.ig.record``, ``igsearch.ig.context.build_context_ids``); ``compute_information_gain``
rebuilds it as text and tokenises it. On the tiny policy's tokenizer (every tag one token) both
must give the same ids for every context, real and counterfactual, and so the same step IG. A block
whose ids cannot be cut at its tags is tokenised from its text instead, and counted.
"""

from __future__ import annotations

import pytest

from igsearch.ig import build_context, compute_information_gain, information_gain_of_trajectories, rollout_from_trajectory
from igsearch.ig import record
from igsearch.ig.context import answer_cue, build_context_ids, encode_text
from rollout_fixtures import agent_rollouts


@pytest.mark.parametrize("answer_tokens", ["as_written", "separate"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_context_from_ids_equals_the_tokenised_text_context(small_tok, answer_tokens, seed):
    tok = small_tok
    trajs = agent_rollouts(tok, seed)
    join, cue = encode_text(tok, "\n"), encode_text(tok, answer_cue(answer_tokens))
    parsed = [rollout_from_trajectory(t, tok) for t in trajs]
    checked = 0
    for r in parsed:
        assert r.ids.retokenized == 0 and len(r.ids.steps) == len(r.steps)
        for k in range(len(r.steps)):
            for other in parsed:  # step k with every step of every rollout as its counterfactual pair
                for b in range(len(other.steps)):
                    ids = build_context_ids(r.ids, k, other.ids.steps[b].pair, join, cue)
                    text = build_context(r, k, other.steps[b].pair, answer_tokens)
                    assert ids == encode_text(tok, text), (k, b)
                    checked += 1
            assert build_context_ids(r.ids, k, None, join, cue) == encode_text(tok, build_context(r, k, None, answer_tokens))
    assert checked > 50


@pytest.mark.parametrize("answer_tokens", ["as_written", "separate"])
@pytest.mark.parametrize("seed", [0, 1])
def test_step_ig_from_ids_equals_the_text_adapter(small_tok, small_qwen, answer_tokens, seed):
    tok, model = small_tok, small_qwen
    trajs = agent_rollouts(tok, seed)
    from_ids = information_gain_of_trajectories(trajs, model, tok, scorer="tree", seed=7, n_random=2,
                                                answer_tokens=answer_tokens)
    assert from_ids.stats["contexts_from"] == "token ids" and from_ids.stats["retokenized_blocks"] == 0
    from_text = compute_information_gain([t.text for t in trajs], [t.golds for t in trajs], model, tok,
                                         prompt_texts=[t.prompt_text for t in trajs], draws=from_ids.draws_used,
                                         scorer="tree", answer_tokens=answer_tokens)
    assert from_text.stats["contexts_from"] == "text"
    assert any(v is not None for row in from_ids.step_ig for v in row)
    assert from_ids.step_ig == from_text.step_ig  # the same token ids in the same forwards: bit for bit


def test_a_block_not_cut_at_its_tags_is_tokenised_from_its_text_and_counted(small_tok, small_qwen, monkeypatch):
    tok, model = small_tok, small_qwen
    trajs = agent_rollouts(tok, 0)
    reference = information_gain_of_trajectories(trajs, model, tok, scorer="naive", seed=3, n_random=2)
    real_init = record._Cutter.__init__

    def tags_never_found(self, tokenizer):  # as a tokenizer whose tags merge with their neighbours
        real_init(self, tokenizer)
        self.tags = {tag: [-1] for tag in self.tags}

    monkeypatch.setattr(record._Cutter, "__init__", tags_never_found)
    fallback = information_gain_of_trajectories(trajs, model, tok, scorer="naive", seed=3, n_random=2)
    blocks = sum(1 + (s.search is not None) + (s.refine is not None) for t in trajs
                 for s in rollout_from_trajectory(t, tok).steps)
    assert fallback.stats["retokenized_blocks"] == blocks > 0
    for a, b in zip(fallback.step_ig, reference.step_ig):
        assert a == pytest.approx(b, abs=1e-6)
