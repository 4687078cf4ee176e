"""Continuation scoring under a causal LM: the naive scorer (baseline), the tree scorer (shared
prefixes forwarded once) and the trunk scorer (prefixes taken from the rollouts' keys/values).

Public API::

    from igsearch.scoring import ScoreRequest, Scorer, score
    out = score([ScoreRequest(ctx_ids, cont_ids, weights)], model, scorer="tree")
    out.results[0].token_logprobs, out.results[0].weighted_mean, out.stats()
    # bound to what it reads, built once per batch (the trainer hands one to every step scorer):
    out = Scorer("trunk", model, trunks=rollout_ids).score(requests, trunk_of=rollout_of_each_request)
"""

from .base import (ScoreOutput, ScoreRequest, ScoreResult, Scorer, get_scorer, list_scorers, register_scorer, score,
                   scorer_reads)
from .naive import score_naive
from .tree import score_tree
from .trunk import TrunkKV, compute_trunk_kv, kv_bytes, score_trunk
from .vllm_peer import score_vllm
from .sharded import ShardedScorer
from .trie import PackedTrie, build_trie

__all__ = [
    "ScoreOutput", "ScoreRequest", "ScoreResult", "Scorer", "ShardedScorer", "scorer_reads", "kv_bytes", "get_scorer", "list_scorers", "register_scorer", "score", "score_naive",
    "score_tree", "score_trunk", "score_vllm", "TrunkKV", "compute_trunk_kv", "PackedTrie", "build_trie",
]
