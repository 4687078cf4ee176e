"""Exact match as a TRL reward function.

TRL calls every reward function as ``fn(prompts=..., completions=..., completion_ids=..., **kwargs)``
where ``kwargs`` holds the dataset columns (here ``golden_answers``) and the extra fields of the
``rollout_func`` (here ``igsearch_answer``, ``igsearch_malformed``, ``igsearch_golds`` from
:class:`igsearch.integrations.trl.rollout.SearchRollout`), one entry per completion. The score is
:func:`igsearch.algo.rewards.trajectory_reward`, the reward of our own trainer: EM of the answer against
the gold variants, minus ``format_penalty`` for a malformed rollout or one without an answer.

Without our rollout function (plain TRL generation) the answer is taken from the completion text with
:func:`igsearch.data.metrics.extract_answer` (the last closed ``<answer>``) and the golds from the
``golden_answers`` column.
"""

from __future__ import annotations

from typing import Any, Sequence

from igsearch.algo.rewards import trajectory_reward
from igsearch.data.metrics import extract_answer


class ExactMatchReward:
    """``reward_funcs`` entry for ``trl.GRPOTrainer``; logged by TRL as ``rewards/exact_match/...``."""

    __name__ = "exact_match"

    def __init__(self, format_penalty: float = 0.0):
        self.format_penalty = float(format_penalty)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], *, igsearch_answer=None,
                 igsearch_malformed=None, igsearch_golds=None, golden_answers=None, **_: Any) -> list[float]:
        n = len(completions)
        golds = igsearch_golds if igsearch_golds is not None else golden_answers
        if golds is None:
            raise ValueError("exact_match reward: no gold answers (a 'golden_answers' dataset column, or the "
                             "igsearch_golds field of igsearch's rollout function)")
        rewards = []
        for i in range(n):
            if igsearch_answer is not None:
                answer, malformed = igsearch_answer[i], bool(igsearch_malformed[i]) if igsearch_malformed else False
            else:
                answer, malformed = extract_answer(completion_text(completions[i])), False
            gold = golds[i]
            rewards.append(trajectory_reward(answer, [gold] if isinstance(gold, str) else list(gold),
                                             malformed=malformed, format_penalty=self.format_penalty))
        return rewards


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a string, or (conversational) a list of messages."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content") or "" for m in completion if isinstance(m, dict))
