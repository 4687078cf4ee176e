"""Continuation scoring under a causal LM: the naive scorer (baseline) and the tree scorer.

Public API::

    from igsearch.scoring import ScoreRequest, score
    out = score([ScoreRequest(ctx_ids, cont_ids, weights)], model, scorer="tree")
    out.results[0].token_logprobs, out.results[0].weighted_mean, out.stats()
"""

from .base import ScoreOutput, ScoreRequest, ScoreResult, get_scorer, list_scorers, register_scorer, score
from .naive import score_naive
from .tree import score_tree
from .trie import PackedTrie, build_trie

__all__ = [
    "ScoreOutput", "ScoreRequest", "ScoreResult", "get_scorer", "list_scorers", "register_scorer", "score", "score_naive",
    "score_tree", "PackedTrie", "build_trie",
]
