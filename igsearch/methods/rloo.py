"""RLOO: REINFORCE with a leave-one-out baseline (Ahmadian et al. 2024, "Back to Basics").

For rollout i of a group of G rollouts of one question, with trajectory rewards R:

    A_i = R_i - (1 / (G - 1)) * sum_{j != i} R_j  =  G / (G - 1) * (R_i - mean_g R)

the same advantage on every policy token of the rollout (no division by the group's std). A group
with a single rollout has no baseline and gets advantage 0.
"""

from __future__ import annotations

import torch

from igsearch.algo.advantages import (
    AdvantageConfig,
    AdvantageInput,
    AdvantageOutput,
    empty_spans,
    group_index,
    register_advantage_estimator,
)


@register_advantage_estimator("rloo")
def rloo_advantages(inp: AdvantageInput, cfg: AdvantageConfig) -> AdvantageOutput:
    """Leave-one-out advantages, float32 [B]; no spans."""
    adv = torch.zeros(len(inp.rewards), dtype=torch.float32)
    for members in group_index(inp.group_ids).values():
        g = len(members)
        if g < 2:
            continue
        total = sum(float(inp.rewards[i]) for i in members)
        for i in members:
            r = float(inp.rewards[i])
            adv[i] = r - (total - r) / (g - 1)
    spans, values = empty_spans()
    return AdvantageOutput(adv, spans, values, span_scale=0.0,
                           stats={"adv/seq_abs_mean": float(adv.abs().mean()) if len(adv) else 0.0})
