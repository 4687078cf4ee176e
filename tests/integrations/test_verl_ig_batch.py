"""IG of a verl batch through an actor-style compute_log_prob equals igsearch's own IG."""

import pytest
import torch

pytest.importorskip("verl")

from verl import DataProto  # noqa: E402

from igsearch.ig import compute_information_gain, information_gain_of_trajectories  # noqa: E402
from igsearch.integrations.verl.config import VerlIGConfig  # noqa: E402
from igsearch.integrations.verl.ig_batch import (  # noqa: E402
    GOLDS_KEY,
    STEPS_KEY,
    step_ig_for_verl_batch,
    steps_to_record,
    trajectories_from_batch,
)
from igsearch.integrations.verl.estimator import IG_KEY, SPANS_KEY  # noqa: E402
from igsearch.rollout.agent import RolloutConfig, SearchAgent  # noqa: E402
from policy_fixtures import small_tokenizer  # noqa: E402
from test_rollout_agent import EchoRetriever, ScriptedEngine  # noqa: E402

PROMPT = "<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
SCRIPTS = [
    ["<search> Velmora director </search>", "<refine> directed by Arno Tesk </refine>\n<search> Arno Tesk born </search>",
     "<refine> born in Dulmar </refine>\n<answer> Dulmar </answer>"],
    ["<search> Velmora Quist </search>", "<refine> a film </refine>\n<answer> Oskaria </answer>"],
    ["<search> Arno Tesk </search>", "<refine> born in Dulmar </refine>\n<answer> Dulmar </answer>"],
]


@pytest.fixture(scope="module")
def setup():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = small_tokenizer()
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
    cfg._attn_implementation = "sdpa"
    model = Qwen2ForCausalLM(cfg).eval()
    trajs = []
    for q, gold in (("Where was the director of Velmora Quist born?", "Dulmar"), ("Who directed Velmora Quist?", "Arno Tesk")):
        agent = SearchAgent(ScriptedEngine(tok, SCRIPTS), EchoRetriever(), tok,
                            RolloutConfig(rollouts_per_question=3, max_turns=3, topk=2))
        got, _ = agent.run([PROMPT.format(q=q)], [[gold]])
        trajs += got
    return tok, model, trajs


def verl_batch(trajs, pad_id):
    """The rollouts as verl's agent loop hands them to the trainer."""
    p_len = max(len(t.prompt_ids) for t in trajs)
    r_len = max(len(t.response_ids) for t in trajs) + 3
    n = len(trajs)
    prompts = torch.full((n, p_len), pad_id)
    responses = torch.full((n, r_len), pad_id)
    attention = torch.zeros(n, p_len + r_len, dtype=torch.long)
    response_mask = torch.zeros(n, r_len, dtype=torch.long)
    for i, t in enumerate(trajs):
        prompts[i, p_len - len(t.prompt_ids):] = torch.tensor(t.prompt_ids)
        responses[i, :len(t.response_ids)] = torch.tensor(t.response_ids)
        attention[i, p_len - len(t.prompt_ids):p_len + len(t.response_ids)] = 1
        response_mask[i, :len(t.response_ids)] = torch.tensor(t.loss_mask)
    steps = [steps_to_record(t.steps) for t in trajs]
    import numpy as np

    steps_col = np.empty(n, dtype=object)
    steps_col[:] = steps
    golds_col = np.empty(n, dtype=object)
    golds_col[:] = [list(t.golds) for t in trajs]
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "attention_mask": attention,
                 "input_ids": torch.cat([prompts, responses], 1), "response_mask": response_mask},
        non_tensors={STEPS_KEY: steps_col, GOLDS_KEY: golds_col})


def actor_log_prob(model, calls):
    """What verl's actor computes: log p(responses | prompts) from input_ids, attention and positions."""

    def compute_log_prob(data: DataProto) -> DataProto:
        calls.append(data.batch["input_ids"].shape[0])
        b = data.batch
        r_len = b["responses"].shape[1]
        with torch.no_grad():
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                           position_ids=b["position_ids"]).logits.float()
        logp = torch.log_softmax(logits[:, -r_len - 1:-1], -1).gather(-1, b["responses"][..., None])[..., 0]
        return DataProto.from_dict(tensors={"old_log_probs": logp})

    return compute_log_prob


def test_round_trip_of_the_step_record(setup):
    tok, _, trajs = setup
    back = trajectories_from_batch(verl_batch(trajs, tok.pad_token_id or 0), tok)
    for a, b in zip(trajs, back):
        assert a.prompt_ids == b.prompt_ids and a.response_ids == b.response_ids and a.loss_mask == b.loss_mask
        assert [(s.query, s.documents, s.refine) for s in a.steps] == [(s.query, s.documents, s.refine) for s in b.steps]


@pytest.mark.parametrize("dp_size", [1, 4])
def test_ig_through_the_actor_equals_igsearch(setup, dp_size):
    tok, model, trajs = setup
    batch = verl_batch(trajs, tok.pad_token_id or 0)
    cfg = VerlIGConfig(seed=3, n_random=2)
    calls = []
    res = step_ig_for_verl_batch(batch, tok, actor_log_prob(model, calls), config=cfg, dp_size=dp_size)
    assert len(calls) == 1 and calls[0] % dp_size == 0  # one batch, equal rows per rank
    ref = information_gain_of_trajectories(trajs, model, tok, scorer="tree", **cfg.ig_options())
    texts = compute_information_gain([t.text for t in trajs], [t.golds for t in trajs], model, tok, scorer="naive",
                                     **cfg.ig_options())
    n_scored = 0
    for got, want, want_text in zip(res.step_ig, ref.step_ig, texts.step_ig):
        assert len(got) == len(want) == len(want_text)
        for a, b, c in zip(got, want, want_text):
            assert (a is None) == (b is None) == (c is None)
            if a is not None:
                n_scored += 1
                assert abs(a - b) < 1e-4 and abs(a - c) < 1e-4
    assert n_scored >= 6
    assert list(batch.non_tensor_batch[IG_KEY][0]) == list(res.step_ig[0])
    assert list(batch.non_tensor_batch[SPANS_KEY][0]) == [tuple(s.query) for s in trajs[0].steps]


def test_missing_step_record_is_refused(setup):
    tok, model, trajs = setup
    batch = verl_batch(trajs, 0)
    del batch.non_tensor_batch[STEPS_KEY]
    with pytest.raises(ValueError, match="igsearch_agent"):
        step_ig_for_verl_batch(batch, tok, actor_log_prob(model, []))
