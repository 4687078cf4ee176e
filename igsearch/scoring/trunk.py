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
  always forwarded: its hidden state predicts the first answer token; and no token whose logits
  any request needs is cached, see :func:`cached_sources`), fills their keys/values from
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
from .tree import score_packed_trie, score_grouped_tries, fast_path_budgets, fast_path_supported, kernels_by_default

__all__ = ["TrunkKV", "compute_trunk_kv", "kv_bytes", "score_trunk"]


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


def kv_bytes(model, n_tokens: int) -> int:
    """Bytes of the keys/values of ``n_tokens`` tokens under ``model`` (all layers)."""
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    elem = next(model.parameters()).element_size()
    return n_tokens * cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * head_dim * elem


def compute_trunk_kv(model, sequences: Sequence[Sequence[int]], *, max_tokens_per_row: int = 1024) -> TrunkKV:
    """One no-grad forward of ``sequences`` through the decoder (no LM head, ``packed_forward``'s rows or
    micro-batches of ``max_tokens_per_row`` tokens), keeping every layer's keys/values."""
    from igsearch.policy.packing import packed_forward

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


def cached_sources(requests: list[ScoreRequest], trie, trunks: TrunkKV, trunk_of: Sequence[int]
                   ) -> tuple[torch.Tensor, int]:
    """(src long [T], floor): for every packed trie token, the trunk row holding its keys/values, or
    -1 (forward it); and the branch-token floor, the trie tokens on no request's common prefix with
    its trunk (what any exact scorer must forward, given the trunks' keys/values).

    Request r's cached tokens are the first ``n_r`` of its path, where ``n_r`` is the smallest of: its
    common prefix with its trunk, its context length - 1 (the last context token predicts the first
    answer token) and the first token of its path whose logits any request needs (a request whose
    context runs through another request's scored tokens: a successful rollout's last turn whose
    trunk holds the answer as written is one). A prefix of every path, so the cached set is closed
    under ancestry. All requests through a trie token share its prefix, so any of their trunks holds
    the same keys/values (up to rounding)."""
    needed = torch.zeros(trie.n_tokens, dtype=torch.bool)
    for r, req in enumerate(requests):
        needed[trie.seq_index[r][len(req.context_ids) - 1:]] = True
    src = torch.full((trie.n_tokens,), -1, dtype=torch.long)
    on_trunk = torch.zeros(trie.n_tokens, dtype=torch.bool)
    for r, req in enumerate(requests):
        s = int(trunk_of[r])
        if s < 0:
            continue
        common = _common_prefix_len(req.input_ids, trunks.tokens[s])
        path = trie.seq_index[r]
        on_trunk[path[:common]] = True
        n = min(common, len(req.context_ids) - 1)
        hit = needed[path[:n]].nonzero()
        if hit.numel():
            n = int(hit[0, 0])
        if n > 0:
            src[path[:n]] = int(trunks.offset[s]) + torch.arange(n)
    return src, int((~on_trunk).sum())


@register_scorer("trunk", reads=("trunks", "trunk_of"))
def score_trunk(
    requests: list[ScoreRequest],
    model,
    *,
    trunks: TrunkKV | Sequence[Sequence[int]],
    trunk_of: Sequence[int],
    max_tokens_per_forward: int | None = None,
    query_block: int | None = None,
    use_kernels: bool | str = "auto",
    max_trunk_tokens: int = 65536,
) -> ScoreOutput:
    """Score ``requests``, reusing the keys/values of ``trunks`` for each request's prefix.

    ``trunks``: a :class:`TrunkKV` computed under ``model`` (the caller vouches for that), or token
    sequences whose keys/values are computed here by a packed no-grad forward, in groups of trunks of
    at most ``max_trunk_tokens`` tokens (the keys/values held at once; the forward's cost is in
    ``stats()["trunk_tokens"]`` and ``["trunk_seconds"]``, apart from ``tokens_forwarded``).
    ``trunk_of[r]``: the trunk of request r (-1: none). Other options as for the tree scorer.
    ``stats()`` adds ``cached_tokens`` (trie tokens taken from the trunks) and ``branch_floor_tokens``
    (see :func:`cached_sources`).
    """
    from .trie import build_trie

    out = ScoreOutput(results=[None] * len(requests), n_sequences=len(requests))
    if len(trunk_of) != len(requests):
        raise ValueError(f"trunk scorer: trunk_of has {len(trunk_of)} entries for {len(requests)} requests")
    if not requests:
        return out
    seqs = [r.input_ids for r in requests]
    max_tokens_per_forward, query_block = fast_path_budgets(model, max_tokens_per_forward, query_block)
    if not fast_path_supported(model):
        score_grouped_tries(requests, model, seqs, max_tokens_per_forward, out)
        out.extra.update(path="generic", trunk_reuse=False)
        return out
    n_trunks = len(trunks.tokens) if isinstance(trunks, TrunkKV) else len(trunks)
    bad = [s for s in trunk_of if not -1 <= int(s) < n_trunks]
    if bad:
        raise ValueError(f"trunk scorer: trunk index {bad[0]} out of range for {n_trunks} trunks")
    if use_kernels == "auto":
        use_kernels = kernels_by_default(model)
    if isinstance(trunks, TrunkKV):
        chunks = [(list(range(len(requests))), trunks, list(trunk_of))]
    else:
        chunks = _chunks(requests, trunks, trunk_of, max_trunk_tokens)
    cached = floor = 0
    for members, kv, local_of in chunks:
        part = [requests[r] for r in members]
        if not isinstance(kv, TrunkKV):  # token lists: this chunk's trunks, forwarded here
            t0 = time.perf_counter()
            kv = compute_trunk_kv(model, kv)
            out.extra["trunk_tokens"] = out.extra.get("trunk_tokens", 0) + kv.n_tokens
            out.extra["trunk_seconds"] = out.extra.get("trunk_seconds", 0.0) + time.perf_counter() - t0
        trie = build_trie([r.input_ids for r in part])
        src, chunk_floor = cached_sources(part, trie, kv, local_of)
        sub = ScoreOutput(results=[None] * len(part))
        score_packed_trie(part, model, [r.input_ids for r in part], max_tokens_per_forward, query_block,
                    bool(use_kernels), sub, trie=trie, cached=(src, kv.keys, kv.values))
        for r, res in zip(members, sub.results):
            out.results[r] = res
        out.tokens_forwarded += sub.tokens_forwarded
        out.padded_tokens += sub.padded_tokens
        out.n_forwards += sub.n_forwards
        cached += int((src >= 0).sum())
        floor += chunk_floor
    out.extra.update(path="fast", trunk_reuse=True, cached_tokens=cached, branch_floor_tokens=floor)
    return out


def _chunks(requests, trunks, trunk_of, budget: int):
    """Requests grouped by trunk so that each group's trunks hold at most ``budget`` tokens (a trunk
    larger than that gets a group of its own): [(request indices, trunk token lists, local trunk_of)].
    Requests without a trunk go with the first group. Bounds the keys/values held at once."""
    by_trunk: dict[int, list[int]] = {}
    for r, s in enumerate(trunk_of):
        by_trunk.setdefault(int(s), []).append(r)
    groups, cur, size = [], [], 0
    for s in sorted(k for k in by_trunk if k >= 0):
        n = len(trunks[s])
        if cur and size + n > budget:
            groups.append(cur)
            cur, size = [], 0
        cur.append(s)
        size += n
    if cur or not groups:
        groups.append(cur)
    out = []
    for g, group in enumerate(groups):
        local = {s: k for k, s in enumerate(group)}
        members = [r for s in group for r in by_trunk[s]] + (by_trunk.get(-1, []) if g == 0 else [])
        out.append((members, [trunks[s] for s in group], [local.get(int(trunk_of[r]), -1) for r in members]))
    return out
