"""The vLLM peer: IG requests scored by the rollout engine, with its prefix cache holding the rollouts.

Right after generation, vLLM's prefix cache holds the keys/values of every rollout, so the IG
contexts (token prefixes of their rollouts) can be scored there with prompt log-probs and cache
reads on (``VLLMEngine.continuation_logprobs``): vLLM then computes only the tokens past the cached
blocks. This is what a user who knows vLLM would try first; ``bench/ig_scoring.py`` measures it
against our scorers. Its log-probs come from another engine (kernels, reduction order), so its IG
differs from the trainer-side scorers by rounding (measured there).

Registered as ``"vllm"``; the ``model`` argument is not used (the engine holds the weights, which
must be the ones to score under: score before the update's weight sync).
"""

from __future__ import annotations

import torch

from .base import ScoreOutput, ScoreRequest, finish_result, register_scorer


@register_scorer("vllm", reads=("engine",))
def score_vllm(requests: list[ScoreRequest], model=None, *, engine) -> ScoreOutput:
    """Score ``requests`` on ``engine`` (an ``igsearch.rollout.engine.VLLMEngine``).

    ``tokens_forwarded``: prompt tokens vLLM computed (not read from its prefix cache)."""
    out = ScoreOutput(results=[None] * len(requests), n_sequences=len(requests))
    if not requests:
        return out
    if not hasattr(engine, "continuation_logprobs"):
        raise ValueError(f"scorer 'vllm' needs a vLLM rollout engine, got {type(engine).__name__}")
    seqs = [[int(t) for t in r.context_ids] + [int(t) for t in r.continuation_ids] for r in requests]
    lps, computed = engine.continuation_logprobs(seqs, [len(r.context_ids) for r in requests])
    for i, (req, lp) in enumerate(zip(requests, lps)):
        out.results[i] = finish_result(req, torch.tensor(lp, dtype=torch.float32))
    out.tokens_forwarded = out.padded_tokens = computed
    out.n_forwards = 1
    return out
