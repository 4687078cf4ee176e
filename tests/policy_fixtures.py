"""Tiny policies with known behaviour, for tests of the rollout loop and weight sync.

``bigram_policy`` builds a real Qwen2 checkpoint whose transformer blocks are switched off
(attention and MLP output projections are zero), so the next-token distribution depends only on
the current token: logits = lm_head(norm(embed[token])). Choosing the embeddings and the LM head
makes it follow a script of bigram transitions with near certainty, which lets a test drive real
vLLM through searches deterministically.
"""

from __future__ import annotations

from pathlib import Path

import torch

from igsearch.policy.tiny import build_tiny_model, build_tokenizer

WORLD_TEXTS = [
    "Velmora Quist is a film directed by Arno Tesk. Arno Tesk was born in Dulmar.",
    "Dulmar is a city in Oskaria. Brenna Fell founded Quorrin Works.",
    "The book Sarn of Ilde was written by Teodor Vail, who is married to Mira Ost.",
] * 40


def small_tokenizer():
    return build_tokenizer(WORLD_TEXTS, vocab_size=400)


def random_qwen(vocab_size: int, *, seed: int = 0, max_positions: int = 4096):
    """A random 2-layer Qwen2 (hidden 64, GQA 4/2 heads, untied, SDPA) in eval mode: a real model whose
    predictions depend on the whole context, for scorer and IG tests."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                      tie_word_embeddings=False)
    cfg._attn_implementation = "sdpa"
    return Qwen2ForCausalLM(cfg).eval()


def bigram_policy(tokenizer, transitions: dict[str, str | list[str]], *, tied: bool = False,
                  margin: float = 40.0, seed: int = 0, leak: float = 0.0):
    """A Qwen2ForCausalLM that, after token ``a``, emits token ``transitions[a]`` with prob ~1
    (or, for a list, one of its tokens with equal probability).

    Keys and values are single tokens of ``tokenizer`` (raise if not). Tokens without a
    transition get a near-uniform distribution over the vocabulary. ``leak`` > 0 keeps the blocks'
    output projections at that (small) scale instead of zero, so that predictions also depend a
    little on the context (needed for non-zero information gain) while the script still dominates.
    """
    model = build_tiny_model(tokenizer, seed=seed, num_hidden_layers=1, hidden_size=128, intermediate_size=256,
                             num_attention_heads=2, num_key_value_heads=1, head_dim=64,
                             tie_word_embeddings=tied)
    vocab, hidden = model.config.vocab_size, model.config.hidden_size
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.mul_(leak)
            layer.mlp.down_proj.weight.mul_(leak)
        # one-hot-ish embedding per token (random unit directions), LM head maps direction -> next token
        g = torch.Generator().manual_seed(seed)
        emb = torch.randn(vocab, hidden, generator=g)
        emb = emb / emb.norm(dim=-1, keepdim=True)
        model.model.embed_tokens.weight.copy_(emb * hidden ** 0.5)
        model.model.norm.weight.fill_(1.0)
        for layer in model.model.layers:
            layer.input_layernorm.weight.fill_(1.0)
            layer.post_attention_layernorm.weight.fill_(1.0)
        if not tied:
            head = torch.randn(vocab, hidden, generator=g) * 0.01
            for a, targets in transitions.items():
                ia = _one(tokenizer, a)
                for b in [targets] if isinstance(targets, str) else targets:
                    head[_one(tokenizer, b)] += emb[ia] * margin / hidden ** 0.5
            model.lm_head.weight.copy_(head)
    return model


def _one(tokenizer, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"{text!r} is {len(ids)} tokens, expected one: {tokenizer.convert_ids_to_tokens(ids)}")
    return ids[0]


def single_token_titles(tok, corpus, n):
    """``n`` words of passage titles that are single tokens: queries that retrieve different passages."""
    import json

    words = []
    for line in Path(corpus).read_text().splitlines():
        title = json.loads(line)["contents"].split("\n")[0].strip('"')
        for w in title.split():
            if len(w) >= 4 and len(tok(w, add_special_tokens=False)["input_ids"]) == 1 and w not in words:
                words.append(w)
        if len(words) == n:
            return words
    raise AssertionError(f"found only {words}")


def scripted_search_setup(root) -> list[str]:
    """A small world in ``root/world`` and, in ``root/policy``, a bigram policy that searches one of three
    single-token title words after a newline (real vLLM and transformers follow it); returns the words."""
    from igsearch.policy.tiny import save_policy
    from igsearch.world import build_world, world_texts

    root = Path(root)
    build_world(root / "world", seed=3, n_entities=120)
    tok = build_tokenizer(world_texts(root / "world"), vocab_size=1200)
    words = single_token_titles(tok, root / "world" / "corpus.jsonl", 3)
    trans = {"\n": "<search>", "<search>": words, **{w: "</search>" for w in words}}
    save_policy(bigram_policy(tok, trans, margin=30.0, leak=0.5), tok, root / "policy")
    return words
