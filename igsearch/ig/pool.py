"""The batch-wide pool of (documents, refine) pairs and the counterfactual draws.

A pool entry is a (rollout, step) index whose step has IG (documents of at least MIN_DOC_CHARS).
For a step, the candidates are the pool entries whose pair differs (as text) from the step's own
pair; ``n_random`` are drawn without replacement, with replacement when there are fewer candidates.
When no other pair exists in the batch the step has no counterfactual and gets no draw (None, so no
IG): drawing its own pair would give IG = 0 exactly, a made-up value. Draws are made rollout by rollout, step by step,
from one ``random.Random(seed)``.
"""

from __future__ import annotations

import random
from typing import Sequence

from .parse import ParsedRollout

Entry = tuple[int, int]


def build_pool(rollouts: Sequence[ParsedRollout]) -> list[Entry]:
    """Every (rollout, step) with IG, in rollout then step order."""
    return [(i, s.index) for i, r in enumerate(rollouts) for s in r.steps if s.has_ig]


def draw_counterfactuals(
    rollouts: Sequence[ParsedRollout], pool: list[Entry], n_random: int, seed: int | None
) -> list[list[list[Entry] | None]]:
    """Seeded draws: ``out[i][k]`` is the list of pool entries for step k of rollout i (None for a
    step without IG)."""
    if n_random < 1:
        raise ValueError(f"n_random must be >= 1, got {n_random}")
    rng = random.Random(seed)
    pairs = {e: rollouts[e[0]].steps[e[1]].pair for e in pool}
    out: list[list[list[Entry] | None]] = []
    for i, r in enumerate(rollouts):
        row: list[list[Entry] | None] = []
        for step in r.steps:
            if not step.has_ig:
                row.append(None)
                continue
            cands = [e for e in pool if pairs[e] != step.pair]
            if not cands:
                row.append(None)
            elif len(cands) >= n_random:
                row.append(rng.sample(cands, n_random))
            else:
                row.append([rng.choice(cands) for _ in range(n_random)])
        out.append(row)
    return out


def check_draws(draws, rollouts: Sequence[ParsedRollout], pool: list[Entry]) -> list[list[list[Entry] | None]]:
    """Validate explicit draws (one entry per step; non-empty lists of pool entries for steps with
    IG) and return them normalised to tuples, None for steps without IG."""
    if len(draws) != len(rollouts):
        raise ValueError(f"draws has {len(draws)} rollouts, texts has {len(rollouts)}")
    in_pool = set(pool)
    out = []
    for i, (row, r) in enumerate(zip(draws, rollouts)):
        if len(row) != len(r.steps):
            raise ValueError(f"draws[{i}] has {len(row)} entries, rollout {i} has {len(r.steps)} steps")
        norm = []
        for k, (entry, step) in enumerate(zip(row, r.steps)):
            if not step.has_ig:
                norm.append(None)
                continue
            if not entry:
                raise ValueError(f"draws[{i}][{k}] is empty but step {k} of rollout {i} has IG")
            picked = []
            for e in entry:
                e = (int(e[0]), int(e[1]))
                if e not in in_pool:
                    raise ValueError(f"draws[{i}][{k}] names {e}, which is not in the pool")
                picked.append(e)
            norm.append(picked)
        out.append(norm)
    return out
