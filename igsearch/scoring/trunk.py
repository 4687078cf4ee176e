"""The trunk scorer: branch-only scoring on top of keys/values the rollouts already have.

IG's contexts are, token for token, prefixes of the rollout they come from (up to the answer cue:
measured 99.5% of context tokens on the demo's rollouts), and the counterfactual contexts share the
rollout's tokens up to the step's query. Once the policy's keys and values of the full rollouts
(the *trunks*) are known, only the tokens after each request's common prefix with its trunk need a
forward: the N random document blocks and the N + 1 gold answers of a step (the branch-token floor).

- :class:`TrunkKV` holds those keys/values, per layer, packed: trunk ``s`` position ``p`` is row
  ``offset[s] + p``. :func:`compute_trunk_kv` makes one with a no-grad packed forward (the
  "one forward otherwise" when no forward of the rollouts happens anyway); the trainer can instead
  keep the keys/values of the forward its update runs (``packed_token_logprobs(..., kv_out=...)``).
- :func:`score_trunk` (registered as ``"trunk"``) marks, for request r with trunk s, its first
  ``min(lcp(input_r, trunk_s), len(context_r) - 1)`` tokens as cached (the last context token is
  always forwarded: its hidden state predicts the first answer token), fills their keys/values from
  the trunk and runs the tree scorer's fast path over the remaining tokens only. The result equals
  the naive scorer's (same tokens at the same positions; the tests check 1e-4 in fp32).

Models the fast path does not support (see ``tree.fast_path_supported``) are scored by the tree
scorer's generic path with no reuse (``stats()["trunk_reuse"] = False``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import torch

from .base import ScoreOutput, ScoreRequest, register_scorer
from .tree import _score_fast, _score_generic, fast_path_supported

__all__ = ["TrunkKV", "compute_trunk_kv", "score_trunk"]


@dataclass
class TrunkKV:
    """Keys/values of S token sequences under one model, after RoPE.

    ``tokens[s]``: the ids of trunk s; ``offset`` long [S]: its first row; ``keys[l]`` and
    ``values[l]``: [L_total, Hkv, D] for layer l (L_total = sum of the trunk lengths).
    """

    tokens: list[list[int]]
    offset: torch.Tensor
    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def n_tokens(self) -> int:
        return int(self.keys[0].shape[0]) if self.keys else 0

    @classmethod
    def from_rows(cls, sequences: Sequence[Sequence[int]], rows: list[tuple[list[int], list]]) -> "TrunkKV":
        """From packed forward rows: ``rows`` = [(sequence indices in the row, per-layer (keys, values)
        each [1, Hkv, L_row, D] in row order)], as ``packed_token_logprobs(kv_out=...)`` collects them."""
        lengths = [len(s) for s in sequences]
        n_layers = len(rows[0][1]) if rows else 0
        keys: list[list[torch.Tensor]] = [[] for _ in range(n_layers)]
        values: list[list[torch.Tensor]] = [[] for _ in range(n_layers)]
        offset = torch.zeros(len(sequences), dtype=torch.long)
        total = 0
        for members, layers in rows:
            for i in members:
                offset[i] = total
                total += lengths[i]
            for li, (k, v) in enumerate(layers):
                keys[li].append(k[0].transpose(0, 1).detach())
                values[li].append(v[0].transpose(0, 1).detach())
        return cls([[int(t) for t in s] for s in sequences], offset,
                   [torch.cat(k) for k in keys], [torch.cat(v) for v in values])


def compute_trunk_kv(model, sequences: Sequence[Sequence[int]], *, max_tokens_per_row: int = 1024) -> TrunkKV:
    """One no-grad packed forward of ``sequences`` through the decoder (no LM head), keeping every
    layer's keys/values. Rows are short by default: on the CPU the block-causal mask costs O(row^2)."""
    from igsearch.algo.packing import packed_forward

    rows: list = []
    with torch.inference_mode():
        for _ in packed_forward(model, sequences, max_tokens_per_row, kv_out=rows):
            pass
    return TrunkKV.from_rows(sequences, rows)


def _common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def cached_sources(requests: list[ScoreRequest], trie, trunks: TrunkKV, trunk_of: Sequence[int]) -> torch.Tensor:
    """long [T]: for every packed trie token, the trunk row holding its keys/values, or -1 (forward it).

    A token is cached when it lies on the common prefix of some request with that request's trunk,
    before the request's last context token. All requests through a trie token share its prefix, so
    any of their trunks holds the same keys/values (up to rounding)."""
    src = torch.full((trie.n_tokens,), -1, dtype=torch.long)
    for r, req in enumerate(requests):
        s = int(trunk_of[r])
        if s < 0:
            continue
        n = min(_common_prefix_len(req.input_ids, trunks.tokens[s]), len(req.context_ids) - 1)
        if n > 0:
            src[trie.seq_index[r][:n]] = int(trunks.offset[s]) + torch.arange(n)
    return src


@register_scorer("trunk")
def score_trunk(
    requests: list[ScoreRequest],
    model,
    *,
    trunks: TrunkKV | Sequence[Sequence[int]],
    trunk_of: Sequence[int],
    max_tokens_per_forward: int = 4096,
    query_block: int = 256,
    use_kernels: bool | str = "auto",
) -> ScoreOutput:
    """Score ``requests``, reusing the keys/values of ``trunks`` for each request's prefix.

    ``trunks``: a :class:`TrunkKV` computed under ``model`` (the caller vouches for that), or token
    sequences whose keys/values are computed here by one packed no-grad forward (its cost is in
    ``stats()["trunk_tokens"]`` and ``["trunk_seconds"]``, apart from ``tokens_forwarded``).
    ``trunk_of[r]``: the trunk of request r (-1: none). Other options as for the tree scorer.
    """
    from .trie import build_trie

    out = ScoreOutput(results=[None] * len(requests), n_sequences=len(requests))
    if len(trunk_of) != len(requests):
        raise ValueError(f"trunk scorer: trunk_of has {len(trunk_of)} entries for {len(requests)} requests")
    if not requests:
        return out
    seqs = [r.input_ids for r in requests]
    if not fast_path_supported(model):
        _score_generic(requests, model, seqs, max_tokens_per_forward, out)
        out.extra.update(path="generic", trunk_reuse=False)
        return out
    if not isinstance(trunks, TrunkKV):
        t0 = time.perf_counter()
        trunks = compute_trunk_kv(model, trunks)
        out.extra.update(trunk_tokens=trunks.n_tokens, trunk_seconds=time.perf_counter() - t0)
    n_trunks = len(trunks.tokens)
    bad = [s for s in trunk_of if not -1 <= int(s) < n_trunks]
    if bad:
        raise ValueError(f"trunk scorer: trunk index {bad[0]} out of range for {n_trunks} trunks")
    trie = build_trie(seqs)
    src = cached_sources(requests, trie, trunks, trunk_of)
    if use_kernels == "auto":
        use_kernels = next(model.parameters()).is_cuda
    _score_fast(requests, model, seqs, max_tokens_per_forward, query_block, bool(use_kernels), out,
                trie=trie, cached=(src, trunks.keys, trunks.values))
    out.extra.update(path="fast", trunk_reuse=True, cached_tokens=int((src >= 0).sum()))
    return out
