"""GRPO (Shao et al. 2024), the trajectory-level baseline: one advantage per rollout, no step term.

For rollout i of a group of G rollouts of one question, with trajectory rewards R:

    A_i = (R_i - mean_g R) / (std_g R + eps)          (adv_scale "std"; "none": R_i - mean_g R)

on every policy token of the rollout (sample std, ``igsearch.algo.advantages.group_normalized_rewards``).
"""

from __future__ import annotations

from igsearch.algo.advantages import (
    AdvantageConfig,
    AdvantageInput,
    AdvantageOutput,
    empty_spans,
    group_normalized_rewards,
    register_advantage_estimator,
)


@register_advantage_estimator("grpo")
def grpo_advantages(inp: AdvantageInput, cfg: AdvantageConfig) -> AdvantageOutput:
    """Trajectory-level GRPO: ``seq_adv`` float32 [B], no spans."""
    seq_adv, stats = group_normalized_rewards(inp.rewards, inp.group_ids, scale=cfg.adv_scale, eps=cfg.adv_eps)
    spans, values = empty_spans()
    return AdvantageOutput(seq_adv, spans, values, span_scale=0.0, stats=stats)
