"""GiGPO: group-in-group policy optimisation (Feng et al. 2025, verl-agent), for search rollouts.

Two levels of relative advantage inside the G rollouts of one question:

- episode level, as GRPO: ``A_E[i] = (R_i - mean_g R) / (std_g R + eps)`` (``scale="none"``: centred
  only), on every policy token of rollout i;
- step level: the turns of all rollouts of the question are grouped by their *anchor state*, the
  exact history before the turn (prompt + response tokens so far; with search, rollouts share a
  state while they have written and read the same things, always at turn 0). Turn k of a rollout
  with K turns has the discounted return ``R_i^k = gamma^(K - 1 - k) * R_i``, and
  ``A_S[i, k] = (R_i^k - mean) / (std + eps)`` over the turns in its anchor group (centred only with
  ``scale="none"``; a group of one turn gets 0).

The advantage of a token of turn k of rollout i is ``A_E[i] + omega * A_S[i, k]``: ``seq_adv`` holds
A_E, one span per turn holds A_S, and ``span_scale`` is omega. Group statistics use the sample std, like
every estimator here. The anchor states come from the ``anchor_state`` step scorer (a hash of the
history; no forward pass).
"""

from __future__ import annotations

import hashlib
from array import array
from dataclasses import dataclass

import torch

from igsearch.algo.advantages import (
    AdvantageConfig,
    AdvantageInput,
    AdvantageOutput,
    empty_spans,
    group_normalized_rewards,
    mean_std,
    register_advantage_estimator,
)
from igsearch.algo.step_scores import ScoringBatch, StepScores, register_step_scorer
from igsearch.config_fields import check_range, config_field


@dataclass
class GiGPOConfig:
    """The ``gigpo`` section of the run config."""

    omega: float = config_field(1.0, "Weight omega of the step-level (anchor-state group) advantage.")
    gamma: float = config_field(0.95, "Discount gamma of the episode reward back to earlier turns.")

    def validate(self, where: str = "gigpo") -> "GiGPOConfig":
        check_range(where, "gamma", self.gamma, low=0, low_open=True, high=1)
        return self


def history_key(token_ids) -> str:
    """A digest of a token sequence: equal histories, equal keys."""
    return hashlib.blake2b(array("q", token_ids).tobytes(), digest_size=16).hexdigest()


@register_step_scorer("anchor_state", per="turn")
def anchor_states(batch: ScoringBatch) -> StepScores:
    """For turn k of every rollout, the key of its history: prompt ids + response ids before the turn."""
    values = []
    for t in batch.trajectories:
        values.append([history_key(list(t.prompt_ids) + list(t.response_ids[:start])) for start, _ in t.turn_spans()])
    return StepScores(values)


@register_advantage_estimator("gigpo", needs={"anchor_state"}, config=GiGPOConfig)
def gigpo_advantages(inp: AdvantageInput, cfg: AdvantageConfig) -> AdvantageOutput:
    """Episode advantage in ``seq_adv`` [B], step-level anchor-group advantages as one span per turn."""
    knobs: GiGPOConfig = cfg.options
    states = inp.per_turn("anchor_state", "gigpo")
    turns = inp.turns("gigpo")
    seq_adv, stats = group_normalized_rewards(inp.rewards, inp.group_ids, scale=cfg.adv_scale, eps=cfg.adv_eps)
    returns: dict[tuple, list[tuple[int, int, float]]] = {}
    for i, (row, spans) in enumerate(zip(states, turns)):
        n = len(spans)
        for k, key in enumerate(row):
            ret = knobs.gamma ** (n - 1 - k) * float(inp.rewards[i])
            returns.setdefault((inp.group_ids[i], key), []).append((i, k, ret))
    rows, values = [], []
    sizes = []
    for members in returns.values():
        mean, std = mean_std([r for _, _, r in members])
        sizes.extend([len(members)] * len(members))
        for i, k, r in members:
            start, end = turns[i][k]
            if end <= start:
                continue
            rows.append((i, int(start), int(end)))
            values.append((r - mean) / (std + cfg.adv_eps) if cfg.adv_scale == "std" else r - mean)
    if rows:
        span_t, value_t = torch.tensor(rows, dtype=torch.long), torch.tensor(values, dtype=torch.float32)
    else:
        span_t, value_t = empty_spans()
    stats["gigpo/step_group_size_mean"] = sum(sizes) / len(sizes) if sizes else 0.0
    stats["gigpo/shared_state_frac"] = sum(s > 1 for s in sizes) / len(sizes) if sizes else 0.0
    stats["gigpo/step_adv_abs_mean"] = sum(abs(v) for v in values) / len(values) if values else 0.0
    return AdvantageOutput(seq_adv, span_t, value_t, span_scale=float(knobs.omega), stats=stats)
