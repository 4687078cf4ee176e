"""Tree scorer == naive scorer (fp32, 1e-5) on random tiny models and random tries."""

from __future__ import annotations

import random

import pytest
import torch

from igsearch.scoring import ScoreRequest, build_trie, get_scorer, score
from igsearch.scoring.tree import fast_path_supported

VOCAB = 331


def _qwen2(seed=0, vocab=VOCAB):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        tie_word_embeddings=False,
    )
    cfg._attn_implementation = "sdpa"
    return Qwen2ForCausalLM(cfg).eval()


def _llama(seed=0, vocab=VOCAB):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
    )
    cfg._attn_implementation = "sdpa"
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def qwen():
    return _qwen2()


def _tok(rng, n):
    return [rng.randrange(VOCAB) for _ in range(n)]


def _batch(kind: str, seed: int) -> list[ScoreRequest]:
    """Random requests shaped like a kind of trie."""
    rng = random.Random(seed)
    reqs = []
    if kind == "deep":  # a chain: every context extends the previous one
        ctx = _tok(rng, 5)
        for _ in range(8):
            ctx = ctx + _tok(rng, rng.randrange(1, 9))
            reqs.append(ScoreRequest(list(ctx), _tok(rng, rng.randrange(1, 5))))
    elif kind == "wide":  # one trunk, many short branches, repeated continuations
        trunk = _tok(rng, 40)
        cont = _tok(rng, 3)
        for _ in range(12):
            reqs.append(ScoreRequest(trunk + _tok(rng, rng.randrange(0, 6)), list(cont)))
    elif kind == "unshared":
        for _ in range(6):
            reqs.append(ScoreRequest(_tok(rng, rng.randrange(1, 30)), _tok(rng, rng.randrange(1, 6))))
    elif kind == "single_token":  # single-token continuations, contexts of 1 token included
        trunk = _tok(rng, 10)
        for n in range(1, 11):
            reqs.append(ScoreRequest(trunk[:n], _tok(rng, 1)))
    elif kind == "mixed":  # duplicates, prefixes of each other, divergent continuations
        trunk = _tok(rng, 25)
        for _ in range(10):
            ctx = trunk[: rng.randrange(1, 26)] + _tok(rng, rng.randrange(0, 4))
            reqs.append(ScoreRequest(ctx, _tok(rng, rng.randrange(1, 6)), [rng.random() + 0.5 for _ in range(5)]))
            reqs[-1].weights = reqs[-1].weights[: len(reqs[-1].continuation_ids)]
        reqs.append(reqs[0])
        reqs.append(ScoreRequest(reqs[1].context_ids, reqs[1].continuation_ids[:1]))
        reqs.append(ScoreRequest(reqs[1].context_ids + list(reqs[1].continuation_ids), _tok(rng, 2)))
    return reqs


TREE_OPTIONS = [
    dict(fast_path=False),
    dict(fast_path=False, max_tokens_per_forward=24),
    dict(fast_path=True),  # native ops when built (use_kernels="auto")
    dict(fast_path=True, max_tokens_per_forward=16),
    dict(fast_path=True, use_kernels=False),  # per-block torch SDPA
    dict(fast_path=True, max_tokens_per_forward=16, use_kernels=False),
]


@pytest.mark.parametrize("kind", ["deep", "wide", "unshared", "single_token", "mixed"])
@pytest.mark.parametrize("seed", [0, 1])
def test_tree_equals_naive(qwen, kind, seed):
    reqs = _batch(kind, seed)
    ref = score(reqs, qwen, "naive", max_batch_size=4)
    for opts in TREE_OPTIONS:
        out = score(reqs, qwen, "tree", **opts)
        assert len(out.results) == len(reqs)
        for r, a, b in zip(reqs, ref.results, out.results):
            assert a.token_logprobs.shape == (len(r.continuation_ids),)
            torch.testing.assert_close(b.token_logprobs, a.token_logprobs, atol=1e-5, rtol=0)
            assert abs(a.weighted_mean - b.weighted_mean) < 1e-5
        if opts.get("max_tokens_per_forward") is None:
            assert out.tokens_forwarded <= ref.tokens_forwarded


def test_tree_equals_naive_llama():
    model = _llama(seed=3)
    assert fast_path_supported(model)
    reqs = _batch("mixed", 5)
    ref = score(reqs, model, "naive")
    for opts in TREE_OPTIONS:
        out = score(reqs, model, "tree", **opts)
        for a, b in zip(ref.results, out.results):
            torch.testing.assert_close(b.token_logprobs, a.token_logprobs, atol=1e-5, rtol=0)


def test_fast_path_forwards_each_trie_token_once(qwen):
    reqs = _batch("wide", 0)
    trie = build_trie([r.input_ids for r in reqs])
    out = score(reqs, qwen, "tree", fast_path=True, max_tokens_per_forward=16)
    assert out.tokens_forwarded == trie.n_tokens and out.n_forwards > 1
    assert out.stats()["path"] == "fast"


def test_weighted_mean_definition(qwen):
    req = ScoreRequest([1, 2, 3], [4, 5, 6, 7], [2.0, 1.0, 0.5, 0.5])
    res = score([req], qwen, "tree").results[0]
    expect = float((res.token_logprobs * torch.tensor(req.weights)).sum() / 4)
    assert res.weighted_mean == pytest.approx(expect, abs=1e-6)
    # The first log-prob is log p(4 | 1 2 3), straight from the model.
    with torch.no_grad():
        logits = qwen(torch.tensor([[1, 2, 3]])).logits[0, -1]
    assert float(res.token_logprobs[0]) == pytest.approx(float(torch.log_softmax(logits, -1)[4]), abs=1e-5)


def test_trie_structure():
    seqs = [[1, 2, 3, 4], [1, 2, 5], [1, 2], [7, 8], [1, 2, 3, 4]]
    trie = build_trie(seqs)
    assert trie.n_tokens == 7  # 1 2 | 3 4 | 5 | 7 8
    mask = trie.attention_mask()
    for s, seq in enumerate(seqs):
        idx = trie.seq_index[s]
        assert trie.tokens[idx].tolist() == seq
        assert trie.positions[idx].tolist() == list(range(len(seq)))
        last = int(idx[-1])
        # the last token sees exactly the tokens of its own path
        assert set(mask[last].nonzero()[:, 0].tolist()) == set(idx.tolist())
    parent = trie.node_parent.tolist()
    assert all(p < k for k, p in enumerate(parent))  # preorder: parents first


def test_bad_requests(qwen):
    with pytest.raises(ValueError, match="request 0: empty context"):
        score([ScoreRequest([], [1])], qwen)
    with pytest.raises(ValueError, match="request 1: empty continuation"):
        score([ScoreRequest([1], [1]), ScoreRequest([1], [])], qwen)
    with pytest.raises(ValueError, match="2 weights for 1"):
        score([ScoreRequest([1], [1], [1.0, 2.0])], qwen)
    with pytest.raises(ValueError, match="unknown scorer"):
        get_scorer("fancy")
    assert score([], qwen, "tree").results == []


def test_fast_path_with_kernels_matches_naive(qwen):
    """The igsearch_kernels dispatch (native ops on the CPU when built, else torch) in the fast path."""
    pytest.importorskip("igsearch_kernels")
    from igsearch.scoring.tree import _kernels

    if _kernels() is None:
        pytest.skip("igsearch_kernels has no tree_attention / gather_logprobs yet")
    reqs = _batch("mixed", 2)
    ref = score(reqs, qwen, "naive")
    for budget in (4096, 16):  # one run (tree_attention kernel) and many runs (cached ancestors)
        out = score(reqs, qwen, "tree", fast_path=True, use_kernels=True, max_tokens_per_forward=budget)
        assert out.stats()["kernels"]
        for a, b in zip(ref.results, out.results):
            torch.testing.assert_close(b.token_logprobs, a.token_logprobs, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- trunk scorer


def _rollout_batch(seed: int):
    """Rollout-shaped requests: per trunk (a rollout), real contexts that are prefixes of it up to a
    step boundary plus a cue, and counterfactual contexts that leave it at a step's start; trunks of
    one group share a prompt. Returns (requests, trunks, trunk_of)."""
    rng = random.Random(seed)
    prompt = _tok(rng, 9)
    trunks, reqs, trunk_of = [], [], []
    for s in range(4):
        steps = [_tok(rng, rng.randrange(3, 12)) for _ in range(rng.randrange(1, 4))]
        rollout = list(prompt) + [t for st in steps for t in st] + _tok(rng, 4)
        trunks.append(rollout)
        gold = _tok(rng, rng.randrange(1, 4))
        cue = _tok(rng, 2)
        end = len(prompt)
        for st in steps:
            start, end = end, end + len(st)
            reqs.append(ScoreRequest(rollout[:end] + cue, gold))  # real: prefix of the trunk + cue
            trunk_of.append(s)
            for _ in range(2):  # counterfactual: leaves the trunk where the step starts
                reqs.append(ScoreRequest(rollout[:start] + _tok(rng, rng.randrange(1, 9)) + cue, gold))
                trunk_of.append(s)
        reqs.append(ScoreRequest(rollout[:-2], rollout[-2:]))  # the whole context lies on the trunk
        trunk_of.append(s)
    reqs.append(ScoreRequest(_tok(rng, 6), _tok(rng, 2)))  # no trunk
    trunk_of.append(-1)
    return reqs, trunks, trunk_of


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("budget", [4096, 13])
def test_trunk_equals_naive_and_forwards_only_branches(qwen, seed, budget):
    from igsearch.scoring.trunk import compute_trunk_kv

    reqs, trunks, trunk_of = _rollout_batch(seed)
    ref = score(reqs, qwen, "naive")
    kv = compute_trunk_kv(qwen, trunks, max_tokens_per_row=budget)
    for given, chunk, kernels in ((trunks, 65536, "auto"), (trunks, 20, "auto"), (kv, 65536, "auto"), (kv, 65536, False)):
        # 20: one trunk's keys/values at a time; kernels "auto": native ops when built
        out = score(reqs, qwen, "trunk", trunks=given, trunk_of=trunk_of, max_tokens_per_forward=budget,
                    max_trunk_tokens=chunk, use_kernels=kernels)
        for a, b in zip(ref.results, out.results):
            torch.testing.assert_close(b.token_logprobs, a.token_logprobs, atol=1e-5, rtol=0)
            assert abs(a.weighted_mean - b.weighted_mean) < 1e-5
        st = out.stats()
        assert st["trunk_reuse"] and ("trunk_tokens" in st) == (given is trunks)
        if given is trunks:
            assert st["trunk_tokens"] == sum(map(len, trunks))
    # Tokens forwarded: exactly the trie tokens off the trunks, plus each context's last token.
    # The floor: trie tokens on no request's common prefix with its trunk.
    trie = build_trie([r.input_ids for r in reqs])
    on_trunk, on_common = set(), set()
    for r, s in zip(reqs, trunk_of):
        if s < 0:
            continue
        n = 0
        while n < min(len(r.input_ids), len(trunks[s])) and r.input_ids[n] == trunks[s][n]:
            n += 1
        on_trunk.update(trie.seq_index[reqs.index(r)][: min(n, len(r.context_ids) - 1)].tolist())
        on_common.update(trie.seq_index[reqs.index(r)][:n].tolist())
    assert out.tokens_forwarded == trie.n_tokens - len(on_trunk)
    assert st["branch_floor_tokens"] == trie.n_tokens - len(on_common) <= out.tokens_forwarded
    assert out.tokens_forwarded < score(reqs, qwen, "tree").tokens_forwarded


def test_trunk_kv_from_packed_forward_matches_per_sequence(qwen):
    """The trunk keys/values of a packed row equal those of each sequence forwarded alone."""
    from transformers import DynamicCache

    from igsearch.scoring.trunk import compute_trunk_kv

    _, trunks, _ = _rollout_batch(3)
    kv = compute_trunk_kv(qwen, trunks, max_tokens_per_row=60)
    for s, seq in enumerate(trunks):
        cache = DynamicCache(config=qwen.config)
        with torch.no_grad():
            qwen.model(input_ids=torch.tensor([seq]), use_cache=True, past_key_values=cache)
        o = int(kv.offset[s])
        for li, layer in enumerate(cache.layers):
            torch.testing.assert_close(kv.keys[li][o:o + len(seq)], layer.keys[0].transpose(0, 1), atol=1e-5, rtol=0)
            torch.testing.assert_close(kv.values[li][o:o + len(seq)], layer.values[0].transpose(0, 1), atol=1e-5,
                                       rtol=0)


def test_trunk_scorer_refuses_bad_trunk_index(qwen):
    reqs, trunks, trunk_of = _rollout_batch(0)
    with pytest.raises(ValueError, match="out of range"):
        score(reqs, qwen, "trunk", trunks=trunks, trunk_of=[len(trunks)] * len(reqs))
    with pytest.raises(ValueError, match="trunk_of has"):
        score(reqs, qwen, "trunk", trunks=trunks, trunk_of=trunk_of[:-1])


def test_trunk_scorer_without_fast_path_scores_like_naive():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=256)
    cfg._attn_implementation = "sdpa"
    model = GPT2LMHeadModel(cfg).eval()
    reqs, trunks, trunk_of = _rollout_batch(1)
    ref = score(reqs, model, "naive")
    out = score(reqs, model, "trunk", trunks=trunks, trunk_of=trunk_of)
    assert out.stats()["trunk_reuse"] is False
    for a, b in zip(ref.results, out.results):
        torch.testing.assert_close(b.token_logprobs, a.token_logprobs, atol=1e-5, rtol=0)
