"""Parsing rules, context skeletons and the pool of docs/DESIGN.md section 3 (no model needed)."""

from __future__ import annotations

import pytest

from igsearch.ig import (
    ASSISTANT_MARKER, build_context, build_pool, check_draws, draw_counterfactuals, parse_rollout,
)

PROMPT = "<|im_start|>user\nWho founded Varo?<|im_end|>\n" + ASSISTANT_MARKER
DOCS1 = "<documents>\nDoc 1(Title: Varo) Varo was founded by Ilan Mertz.\n</documents>"
DOCS2 = "<documents>\nDoc 1(Title: Ilan Mertz) Ilan Mertz was born in Osk.\n</documents>"


def test_two_steps_with_think_between_blocks():
    resp = (
        "<think> I need the founder. </think>\n<search> founder of Varo </search>\n" + DOCS1 + "\n"
        "<think> found it </think>\n<refine> Varo: founded by Ilan Mertz. </refine>\n"
        "<search> Ilan Mertz birthplace </search>\n" + DOCS2 + "\n"
        "<refine> Mertz born in Osk. </refine>\n<think> done </think>\n<answer> Osk </answer><|im_end|>"
    )
    r = parse_rollout(PROMPT + resp)
    assert r.prefix == PROMPT + "<think> I need the founder. </think>"
    assert [s.query for s in r.steps] == ["founder of Varo", "Ilan Mertz birthplace"]
    assert [s.documents for s in r.steps] == [DOCS1, DOCS2]
    assert r.steps[0].refine == "<refine> Varo: founded by Ilan Mertz. </refine>"
    assert all(s.has_ig and s.refine_was_closed for s in r.steps)
    c0 = build_context(r, 0)
    assert c0 == "\n".join([r.prefix, "<search> founder of Varo </search>", DOCS1,
                            "<refine> Varo: founded by Ilan Mertz. </refine>"]) + "\n<answer>"
    c1 = build_context(r, 1)
    assert "found it" not in c1 and "done" not in c1 and c1.startswith(c0[: -len("\n<answer>")])
    assert c1.endswith("<refine> Mertz born in Osk. </refine>\n<answer>")
    # counterfactual: step 1's documents and refine replaced jointly
    x = ("<documents>\nsomething else entirely\n</documents>", "<refine> other </refine>")
    c1x = build_context(r, 1, x)
    assert c1x.endswith("<search> Ilan Mertz birthplace </search>\n" + x[0] + "\n" + x[1] + "\n<answer>")
    assert DOCS2 not in c1x and DOCS1 in c1x
    # a pair without refine drops the refine block
    assert build_context(r, 0, (DOCS2, "")).endswith(DOCS2 + "\n<answer>")
    # the published pipeline's cue ends with a space (the gold is then tokenized on its own)
    assert build_context(r, 0, (DOCS2, ""), answer_tokens="separate").endswith(DOCS2 + "\n<answer> ")


def test_no_search():
    r = parse_rollout(PROMPT + "<think> easy </think>\n<answer> Osk </answer>")
    assert r.steps == [] and r.prefix == PROMPT + "<think> easy </think>\n<answer> Osk </answer>"


def test_empty_and_short_documents_get_no_ig():
    resp = ("<search> a </search>\n<documents>\n</documents>\n<refine> none </refine>\n"
            "<search> b </search>\n<documents> short </documents>\n"
            "<search> c </search>\n" + DOCS1 + "\n<answer> x </answer>")
    r = parse_rollout(PROMPT + resp)
    assert [s.has_ig for s in r.steps] == [False, False, True]
    assert build_pool([r]) == [(0, 2)]
    assert r.steps[1].refine is None and r.steps[2].refine is None


def test_unclosed_refine_ends_at_next_search_or_answer():
    resp = ("<search> a </search>\n" + DOCS1 + "\n<refine> founded by Mertz\n<search> b </search>\n"
            + DOCS2 + "\n<refine> born in Osk \n<answer> Osk </answer>")
    r = parse_rollout(PROMPT + resp)
    assert r.steps[0].refine == "<refine> founded by Mertz</refine>"
    assert r.steps[1].refine == "<refine> born in Osk</refine>"
    assert not r.steps[0].refine_was_closed and not r.steps[1].refine_was_closed
    assert build_context(r, 0).endswith(DOCS1 + "\n<refine> founded by Mertz</refine>\n<answer>")
    # truncated text: the refine runs to the end
    r2 = parse_rollout(PROMPT + "<search> a </search>\n" + DOCS1 + "\n<refine> cut off here  ")
    assert r2.steps[0].refine == "<refine> cut off here</refine>"


def test_missing_refine_and_refine_belongs_to_its_step():
    resp = ("<search> a </search>\n" + DOCS1 + "\n<search> b </search>\n" + DOCS2
            + "\n<refine> about step two </refine>\n<answer> Osk </answer>")
    r = parse_rollout(PROMPT + resp)
    assert r.steps[0].refine is None
    assert r.steps[1].refine == "<refine> about step two </refine>"
    assert build_context(r, 0) == "\n".join([PROMPT.rstrip(), "<search> a </search>", DOCS1]) + "\n<answer>"


def test_assistant_turn_rules():
    # the LAST assistant marker starts the turn; searches in earlier turns are prefix text
    earlier = "<|im_start|>assistant\n<search> old </search>\n" + DOCS2 + "<|im_end|>\n"
    r = parse_rollout(earlier + PROMPT + "<search> a </search>\n" + DOCS1)
    assert len(r.steps) == 1 and r.steps[0].query == "a"
    assert r.prefix == (earlier + PROMPT).rstrip()
    with pytest.raises(ValueError, match="rollout 3: no assistant turn"):
        parse_rollout("User: hi\nAssistant: <search> a </search>\n" + DOCS1, where="rollout 3: ")
    prompt = "User: who?\nAssistant:"
    r = parse_rollout(prompt + " <search> a </search>\n" + DOCS1, prompt_text=prompt)
    assert r.prefix == prompt and len(r.steps) == 1
    with pytest.raises(ValueError, match="does not start with its prompt"):
        parse_rollout("other text", prompt_text=prompt)


def _rollout(docs_list):
    resp = "".join(f"<search> q{k} </search>\n{d}\n<refine> r </refine>\n" for k, d in enumerate(docs_list))
    return parse_rollout(PROMPT + resp)


def test_pool_draws():
    a, b, c = (f"<documents> passage number {k} </documents>" for k in range(3))
    rolls = [_rollout([a, b]), _rollout([a, c])]
    pool = build_pool(rolls)
    assert pool == [(0, 0), (0, 1), (1, 0), (1, 1)]
    d1 = draw_counterfactuals(rolls, pool, 3, seed=7)
    assert d1 == draw_counterfactuals(rolls, pool, 3, seed=7)
    pairs = {e: rolls[e[0]].steps[e[1]].pair for e in pool}
    for i, row in enumerate(d1):
        for k, picked in enumerate(row):
            own = rolls[i].steps[k].pair
            assert len(picked) == 3 and all(pairs[e] != own for e in picked)
    # step (0,0) has candidates (0,1), (1,1) only: fewer than 3 -> with replacement
    assert set(d1[0][0]) <= {(0, 1), (1, 1)}
    # step (0,1) has 3 candidates -> without replacement
    assert len(set(d1[0][1])) == 3
    # a single pair in the whole batch: no counterfactual, so no draw (and no IG) rather than IG = 0
    solo = [_rollout([a])]
    assert draw_counterfactuals(solo, build_pool(solo), 2, seed=0) == [[None]]


def test_check_draws_errors():
    a = "<documents> passage number 1 </documents>"
    rolls = [_rollout([a, "<documents> x </documents>"])]
    pool = build_pool(rolls)
    assert check_draws([[[[0, 0]], None]], rolls, pool) == [[[(0, 0)], None]]
    with pytest.raises(ValueError, match="draws has 2 rollouts"):
        check_draws([[], []], rolls, pool)
    with pytest.raises(ValueError, match=r"draws\[0\] has 1 entries"):
        check_draws([[[(0, 0)]]], rolls, pool)
    with pytest.raises(ValueError, match="not in the pool"):
        check_draws([[[(0, 1)], None]], rolls, pool)
    with pytest.raises(ValueError, match="is empty"):
        check_draws([[[], None]], rolls, pool)
