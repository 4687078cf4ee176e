"""The agent loop on a scripted engine: spans, masks, refine rules and malformed output."""

from __future__ import annotations

import pytest

from igsearch.data.prompts import SEARCH_R1_TEMPLATE
from igsearch.rollout.agent import RolloutConfig, SearchAgent
from policy_fixtures import small_tokenizer
from rollout_fixtures import EchoRetriever, ScriptedEngine


@pytest.fixture(scope="module")
def tok():
    return small_tokenizer()


def run(tok, scripts, template=None, **cfg):
    engine = ScriptedEngine(tok, scripts)
    retriever = EchoRetriever()
    kwargs = {"template": template} if template else {}
    agent = SearchAgent(engine, retriever, tok, RolloutConfig(rollouts_per_question=len(scripts), **cfg), **kwargs)
    trajs, timings = agent.run(["<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n"], [["Arno Tesk"]])
    return trajs, retriever, timings


def decode(tok, traj, span):
    return tok.decode(traj.response_ids[span[0]:span[1]])


def test_two_searches_then_answer_spans_and_masks(tok):
    trajs, retriever, _ = run(tok, [[
        "<think> find the director </think>\n<search> Velmora director </search>",
        "<refine> Velmora Quist was directed by Arno Tesk </refine>\n<search> Arno Tesk birthplace </search>",
        "<refine> born in Dulmar </refine>\n<answer> Dulmar </answer>",
    ]])
    t = trajs[0]
    assert t.finish_reason == "answer" and t.answer == "Dulmar"
    assert len(t.steps) == 2
    assert decode(tok, t, t.steps[0].query) == "<search> Velmora director </search>"
    assert decode(tok, t, t.steps[1].query) == "<search> Arno Tesk birthplace </search>"
    assert decode(tok, t, t.steps[0].refine) == "<refine> Velmora Quist was directed by Arno Tesk </refine>"
    assert decode(tok, t, t.steps[1].refine) == "<refine> born in Dulmar </refine>"
    for step in t.steps:
        docs = decode(tok, t, step.documents)
        assert docs.startswith("\n<documents>\n") and docs.endswith("</documents>\n")
        a, b = step.documents
        assert t.loss_mask[a:b] == [0] * (b - a) and t.rollout_logprobs[a:b] == [0.0] * (b - a)
        qa, qb = step.query
        assert t.loss_mask[qa:qb] == [1] * (qb - qa)
    assert sum(t.loss_mask) == len(t.response_ids) - sum(s.documents[1] - s.documents[0] for s in t.steps)
    assert retriever.batches == [["Velmora director"], ["Arno Tesk birthplace"]]
    assert "<answer> Dulmar </answer>" in t.text and t.text.startswith(t.prompt_text)


def test_unclosed_refine_ends_at_next_search(tok):
    trajs, _, _ = run(tok, [[
        "<search> Velmora </search>",
        "<refine> directed by Arno Tesk\n<search> Arno Tesk </search>",
        "<answer> Dulmar </answer>",
    ]])
    t = trajs[0]
    assert decode(tok, t, t.steps[0].refine) == "<refine> directed by Arno Tesk"
    assert t.steps[1].refine is None


def test_queries_of_all_rollouts_retrieved_in_one_batch(tok):
    trajs, retriever, timings = run(tok, [
        ["<search> one </search>", "<answer> a </answer>"],
        ["<search> two </search>", "<answer> b </answer>"],
        ["<answer> c </answer>"],
    ])
    assert retriever.batches == [["one", "two"]]
    assert [t.answer for t in trajs] == ["a", "b", "c"]
    assert timings.turns == 2


@pytest.mark.parametrize("script, reason", [
    (["just some words without tags"], "malformed"),
    (["<search>   </search>"], "malformed: empty search query"),
    (["no open tag </search>"], "malformed: </search> without <search>"),
    (["the answer is<|im_end|>"], "malformed: ended without an answer"),
])
def test_malformed_output_ends_rollout_cleanly(tok, script, reason):
    trajs, _, _ = run(tok, [script, ["<answer> fine </answer>"]], max_new_tokens_per_turn=64)
    assert trajs[0].finish_reason.startswith(reason)
    assert trajs[0].answer is None
    assert trajs[1].finish_reason == "answer"  # the rest of the batch is unaffected
    trajs[0].check()


def test_max_turns_gives_a_last_turn_without_search(tok):
    trajs, retriever, _ = run(tok, [["<search> a </search>", "<search> b </search>", "<search> c </search>"]],
                              max_turns=2)
    t = trajs[0]
    assert len(t.steps) == 2 and t.finish_reason == "max_turns"
    assert retriever.batches == [["a"], ["b"]]
    assert decode(tok, t, (t.steps[1].documents[1], len(t.response_ids))) == "<search> c </search>"


def test_response_budget_is_respected(tok):
    trajs, _, _ = run(tok, [["<search> a </search>", "<refine> x </refine>\n<search> b </search>"]],
                      max_response_tokens=60)
    t = trajs[0]
    assert t.finish_reason == "max_tokens"
    assert len(t.response_ids) <= 60


def test_search_r1_template_has_information_blocks_and_no_refine(tok):
    trajs, _, _ = run(tok, [["<search> a </search>", "<think> ok </think>\n<answer> z </answer>"]],
                      template=SEARCH_R1_TEMPLATE)
    t = trajs[0]
    assert decode(tok, t, t.steps[0].documents).startswith("\n<information>")
    assert t.steps[0].refine is None and t.answer == "z"


def test_long_documents_are_cut_with_the_closing_tag_kept(tok):
    trajs, _, _ = run(tok, [["<search> a </search>", "<answer> z </answer>"]], max_doc_tokens=12)
    t = trajs[0]
    a, b = t.steps[0].documents
    assert b - a == 12
    assert decode(tok, t, (a, b)).endswith("\n</documents>\n")
