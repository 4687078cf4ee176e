"""compute_information_gain on a random tiny Qwen2 with a small BPE tokenizer."""

from __future__ import annotations

import pytest
import torch

from igsearch.data.prompts import ALL_TAGS
from igsearch.ig import ASSISTANT_MARKER, answer_weights, build_context, compute_information_gain, parse_rollout
from igsearch.scoring import ScoreRequest, score
from policy_fixtures import random_qwen

PROMPT = "<|im_start|>user\nWho founded {q}?<|im_end|>\n" + ASSISTANT_MARKER


def _text(q, steps, answer="Osk"):
    resp = "<think> let me search </think>\n"
    for k, (query, docs, refine) in enumerate(steps):
        resp += f"<search> {query} </search>\n<documents>\n{docs}\n</documents>\n"
        if refine is not None:
            resp += f"<think> ok </think>\n<refine> {refine} </refine>\n"
    return PROMPT.format(q=q) + resp + f"<answer> {answer} </answer><|im_end|>"


TEXTS = [
    _text("Varo", [("founder of Varo", "Doc 1(Title: Varo) Varo was founded by Ilan Mertz in Osk.", "Varo: Ilan Mertz."),
                   ("Ilan Mertz birthplace", "Doc 1(Title: Ilan Mertz) Ilan Mertz was born in Osk.", "born in Osk")]),
    _text("Varo", [("Varo", "Doc 1(Title: Telm) Telm is a river that flows past Brask.", None)]),
    _text("Brask", [("Brask founder", "Doc 1(Title: Brask) Brask was founded by Ama Sol.", "Ama Sol"),
                    ("Ama Sol", "tiny", "nothing"),
                    ("Ama Sol origin", "Doc 1(Title: Ama Sol) Ama Sol came from Varo and Telm.", "from Varo")]),
    _text("Telm", []),
]
GOLDS = [["Osk", "the city of Osk"], ["Osk"], ["Ama Sol", "Sol"], ["Telm"]]


@pytest.fixture(scope="module")
def tok():
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    core.train_from_iterator(TEXTS * 3 + ["the city of Osk", "Ama Sol", "Sol"], trainer=trainer)
    core.add_tokens([AddedToken(t, normalized=False) for t in ALL_TAGS])
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>")


@pytest.fixture(scope="module")
def model(tok):
    return random_qwen(len(tok), max_positions=2048)


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_shapes_and_tree_equals_naive(tok, model):
    kw = dict(max_gold_variants=2, seed=3)
    tree = compute_information_gain(TEXTS, GOLDS, model, tok, scorer="tree", **kw)
    naive = compute_information_gain(TEXTS, GOLDS, model, tok, scorer="naive", **kw)
    assert [len(r) for r in tree.step_ig] == [2, 1, 3, 0]
    assert tree.step_ig[2][1] is None and tree.step_ig[3] == [] and tree.rollout_ig[3] is None
    assert tree.draws_used == naive.draws_used
    for a, b in zip(tree.step_ig, naive.step_ig):
        for x, y in zip(a, b):
            assert (x is None) == (y is None)
            if x is not None:
                assert x == pytest.approx(y, abs=1e-5)
    st = tree.stats
    assert st["n_steps_scored"] == 5 and st["n_steps_total"] == 6
    assert st["tokens_forwarded"] < naive.stats["tokens_forwarded"]
    assert st["n_sequences"] == naive.stats["n_sequences"] == (2 * 2 + 1 * 1 + 2 * 2) * 4  # steps x variants x (1 real + 3 random)
    igs = [x for r in tree.step_ig for x in r if x is not None]
    assert st["ig_mean"] == pytest.approx(sum(igs) / 5)
    assert st["ig_pos_frac"] == pytest.approx(sum(x > 0 for x in igs) / 5)
    assert tree.rollout_ig[2] == pytest.approx((tree.step_ig[2][0] + tree.step_ig[2][2]) / 2)
    # The trunk scorer (the rollout texts as trunks) gives the same IG and forwards fewer tokens.
    trunk = compute_information_gain(TEXTS, GOLDS, model, tok, scorer="trunk", **kw)
    for a, b in zip(trunk.step_ig, naive.step_ig):
        assert [x is None for x in a] == [y is None for y in b]
        assert all(x == pytest.approx(y, abs=1e-5) for x, y in zip(a, b) if x is not None)
    assert trunk.stats["tokens_forwarded"] < st["tokens_forwarded"]


def _written(tok, gold):
    """The gold's tokens as the policy writes its answer: "<answer> gold" tokenized as one text."""
    tag, joint = _ids(tok, "<answer>"), _ids(tok, f"<answer> {gold}")
    assert joint[:len(tag)] == tag
    return joint[len(tag):]


@pytest.mark.parametrize("answer_tokens", ["as_written", "separate"])
def test_ig_matches_definition_by_hand(tok, model, answer_tokens):
    """Several gold variants: the variant with the best real score and its own random scores. The
    published pipeline's contexts end with "<answer> " and score the gold tokenized alone; as
    written, they end with "<answer>" and score the gold's tokens in "<answer> gold"."""
    res = compute_information_gain(TEXTS, GOLDS, model, tok, max_gold_variants=2, seed=1, scorer="naive",
                                   answer_tokens=answer_tokens)
    rolls = [parse_rollout(t) for t in TEXTS]
    i, k = 0, 1
    written = answer_tokens == "as_written"
    variants = [_written(tok, g) if written else _ids(tok, g) for g in GOLDS[i]]

    def s(ctx_text, ans):
        assert ctx_text.endswith("\n<answer> ")  # the published cue
        ctx_text = ctx_text[:-1] if written else ctx_text
        w = answer_weights(len(ans), 3, 3.0)
        return score([ScoreRequest(_ids(tok, ctx_text), ans, w)], model, "naive").results[0].weighted_mean

    def ctx(pair=None):
        return build_context(rolls[i], k, pair, answer_tokens="separate")

    real = [s(ctx(), a) for a in variants]
    v = max(range(2), key=lambda j: real[j])
    rand = [s(ctx(rolls[a].steps[b].pair), variants[v]) for a, b in res.draws_used[i][k]]
    assert res.best_variant[i][k] == v
    assert res.real_scores[i][k] == pytest.approx(real[v], abs=1e-6)
    assert res.step_ig[i][k] == pytest.approx(real[v] - sum(rand) / len(rand), abs=1e-6)
    # weights: head_weight on the first head_tokens, 1 after, normalised to mean 1
    assert answer_weights(5, 3, 3.0) == pytest.approx([15 / 11] * 3 + [5 / 11] * 2)
    assert answer_weights(2, 3, 3.0) == pytest.approx([1.0, 1.0])


def test_as_written_context_and_gold_tokenize_like_the_policys_answer(tok):
    """Context ids + gold ids (as written) are exactly the ids of the text with the answer written
    out, which the published split (" ", "Osk") is not."""
    from igsearch.ig import gold_token_ids

    for text, golds in zip(TEXTS, GOLDS):
        roll = parse_rollout(text)
        for k in range(len(roll.steps)):
            ctx = build_context(roll, k)
            assert ctx.endswith("\n<answer>")
            for g in golds:
                assert _ids(tok, ctx) + gold_token_ids(tok, g) == _ids(tok, f"{ctx} {g}")
    sep = build_context(parse_rollout(TEXTS[0]), 0, answer_tokens="separate")
    assert _ids(tok, sep) + gold_token_ids(tok, "Osk", "separate") != _ids(tok, sep + "Osk")
    with pytest.raises(ValueError, match="answer_tokens"):
        gold_token_ids(tok, "Osk", "joined")
    assert gold_token_ids(tok, " ", "as_written") == [] == gold_token_ids(tok, "", "separate")


def test_context_over_the_limit_is_cut_from_the_left(tok, model):
    limit = 20
    res = compute_information_gain(TEXTS[:2], GOLDS[:2], model, tok, max_context_tokens=limit, seed=0)
    roll = parse_rollout(TEXTS[0])
    ctx = _ids(tok, build_context(roll, 0))
    assert len(ctx) > limit
    ans = _written(tok, "Osk")
    real = score([ScoreRequest(ctx[-limit:], ans, answer_weights(len(ans), 3, 3.0))], model).results[0]
    assert res.real_scores[0][0] == pytest.approx(real.weighted_mean, abs=1e-6)
    full = compute_information_gain(TEXTS[:2], GOLDS[:2], model, tok, seed=0)
    assert full.real_scores[0][0] != pytest.approx(res.real_scores[0][0], abs=1e-6)


def test_explicit_draws_reproduce_seeded_draws(tok, model):
    seeded = compute_information_gain(TEXTS, GOLDS, model, tok, seed=11)
    again = compute_information_gain(TEXTS, GOLDS, model, tok, draws=seeded.draws_used, seed=999)
    assert again.step_ig == seeded.step_ig and again.draws_used == seeded.draws_used
    # the same pairs under other indices (a duplicated rollout) give the same IG
    texts = TEXTS + [TEXTS[1]]
    golds = GOLDS + [GOLDS[1]]
    draws = [row + [] for row in seeded.draws_used] + [[None]]
    draws[-1] = [list(seeded.draws_used[1][0])]
    draws[0] = [[(4, 0) if e == (1, 0) else e for e in row] if row else row for row in draws[0]]
    moved = compute_information_gain(texts, golds, model, tok, draws=draws)
    for k in range(2):
        assert moved.step_ig[0][k] == pytest.approx(seeded.step_ig[0][k], abs=1e-6)
    assert moved.step_ig[4][0] == pytest.approx(seeded.step_ig[1][0], abs=1e-6)


def test_malformed_inputs_raise(tok, model):
    with pytest.raises(ValueError, match=r"rollout 1: gold variant '' tokenizes to no tokens"):
        compute_information_gain(TEXTS[:2], [["Osk"], [""]], model, tok)
    with pytest.raises(ValueError, match="rollout 0: no gold answer variants"):
        compute_information_gain(TEXTS[:1], [[]], model, tok)
    with pytest.raises(ValueError, match="rollout 1: no assistant turn"):
        compute_information_gain([TEXTS[0], "User: hi <search> a </search>"], [["Osk"]] * 2, model, tok)
    with pytest.raises(ValueError, match="golds has 1 entries"):
        compute_information_gain(TEXTS[:2], [["Osk"]], model, tok)


def test_prompt_texts_for_other_templates(tok, model):
    prompt = "User: Who founded Varo?\nAssistant:"
    body = TEXTS[0].split(ASSISTANT_MARKER, 1)[1]
    res = compute_information_gain([prompt + body, prompt + TEXTS[1].split(ASSISTANT_MARKER, 1)[1]],
                                   [["Osk"], ["Osk"]], model, tok, prompt_texts=[prompt, prompt], seed=0)
    assert [len(r) for r in res.step_ig] == [2, 1] and all(x is not None for r in res.step_ig for x in r)


def test_no_scorable_steps_gives_none_without_forward(tok, model):
    res = compute_information_gain([TEXTS[3]], [["Telm"]], model, tok)
    assert res.step_ig == [[]] and res.rollout_ig == [None]
    assert res.stats["ig_mean"] is None and res.stats["tokens_forwarded"] == 0


def test_hostile_rows_are_bounded_not_fatal(tok, model):
    """A huge gold answer is not scored (its steps get None, counted) instead of taking gigabytes; a
    lone surrogate does not crash the tokenizer; a negative context limit is refused."""
    huge = "Osk " * 5000
    res = compute_information_gain(TEXTS[:2], [[huge], ["Osk"]], model, tok, seed=0)
    assert all(x is None for x in res.step_ig[0]) and all(x is not None for x in res.step_ig[1])
    assert res.stats["rollouts_gold_too_long"] == 1
    # a long variant is skipped, a short one of the same rollout still scores
    res = compute_information_gain(TEXTS[:2], [["Osk"], [huge, "Osk"]], model, tok, seed=0, max_gold_variants=2)
    assert all(x is not None for x in res.step_ig[1]) and res.stats["rollouts_gold_too_long"] == 0
    text = TEXTS[0].replace("Varo", "Va\ud800ro")
    res = compute_information_gain([text, TEXTS[1]], [["Osk"], ["Osk"]], model, tok, seed=0)
    assert all(x is not None for r in res.step_ig for x in r)
    with pytest.raises(ValueError, match="max_context_tokens must be >= 0"):
        compute_information_gain(TEXTS[:2], [["Osk"], ["Osk"]], model, tok, max_context_tokens=-1)
