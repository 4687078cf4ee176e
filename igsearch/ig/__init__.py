"""Information gain of search steps (docs/DESIGN.md section 3) on top of igsearch.scoring.

Public API::

    from igsearch.ig import compute_information_gain
    res = compute_information_gain(texts, golds, model, tokenizer, seed=0)   # any rollout text
    res = information_gain_of_trajectories(trajectories, model, tokenizer, seed=0)  # our agent's record
    res.step_ig[i][k], res.rollout_ig[i], res.draws_used, res.stats
"""

from .compute import (
    IGResult, answer_weights, compute_information_gain, information_gain_of_rollouts,
    information_gain_of_trajectories,
)
from .context import ANSWER_CUE, ANSWER_TOKENIZATIONS, answer_cue, build_context, build_context_ids, gold_token_ids
from .parse import ASSISTANT_MARKER, MIN_DOC_CHARS, ParsedRollout, Step, parse_rollout, response_start
from .pool import build_pool, check_draws, draw_counterfactuals
from .record import RolloutIds, StepIds, rollout_from_trajectory

__all__ = [
    "IGResult", "answer_weights", "compute_information_gain", "information_gain_of_rollouts",
    "information_gain_of_trajectories", "rollout_from_trajectory", "RolloutIds", "StepIds", "ANSWER_CUE", "ANSWER_TOKENIZATIONS",
    "answer_cue", "build_context", "build_context_ids", "gold_token_ids",
    "ASSISTANT_MARKER", "MIN_DOC_CHARS", "ParsedRollout", "Step", "parse_rollout", "response_start",
    "build_pool", "check_draws", "draw_counterfactuals",
]
