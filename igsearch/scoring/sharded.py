"""A continuation scorer split over the processes of a ``torch.distributed`` group.

Every process holds the same requests (built from the same rollouts with the same seeded draws); each
scores those of the rollouts it owns (rollout r belongs to process ``r % world``; a request continues
rollout ``trunk_of[i]``, or is its own when it continues none) with the scorer of its kind, and the
results are gathered, so every process returns the whole ``ScoreOutput`` in request order. The cost
(``tokens_forwarded`` ...) is summed over processes; ``extra["max_process_tokens"]`` is the largest share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch.distributed as dist

from .base import ScoreOutput, ScoreRequest, Scorer


@dataclass
class ShardedScorer(Scorer):
    """``Scorer`` of ``kind`` whose ``score`` splits the requests over the processes of ``group`` (None = the
    default group) and gathers the results."""

    group: Any = None

    def score(self, requests: Sequence[ScoreRequest], *, trunk_of: Sequence[int] | None = None) -> ScoreOutput:
        world, rank = dist.get_world_size(self.group), dist.get_rank(self.group)
        owner = [t if trunk_of is not None and t >= 0 else i for i, t in enumerate(trunk_of or range(len(requests)))]
        mine = [i for i, o in enumerate(owner) if o % world == rank]
        if mine:
            local = super().score([requests[i] for i in mine],
                                  trunk_of=[trunk_of[i] for i in mine] if trunk_of is not None else None)
        else:
            local = ScoreOutput([])
        shares: list = [None] * world
        dist.all_gather_object(shares, (mine, local.results, local.stats()), group=self.group)
        results: list = [None] * len(requests)
        for indices, res, _ in shares:
            for i, r in zip(indices, res):
                results[i] = r
        totals = {k: sum(s[2].get(k, 0) for s in shares) for k in ("tokens_forwarded", "padded_tokens", "n_forwards")}
        return ScoreOutput(results, totals["tokens_forwarded"], totals["padded_tokens"], len(requests),
                           totals["n_forwards"], {"processes": world,
                                                  "max_process_tokens": max(s[2].get("tokens_forwarded", 0)
                                                                            for s in shares)})
