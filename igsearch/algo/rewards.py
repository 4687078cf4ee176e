"""Trajectory rewards (docs/DESIGN.md section 4): exact match of the last answer, optional format penalty."""

from __future__ import annotations

from typing import Iterable

from igsearch.data.metrics import exact_match


def trajectory_reward(
    answer: str | None,
    golds: str | Iterable[str],
    *,
    malformed: bool = False,
    format_penalty: float = 0.0,
) -> float:
    """R = EM(answer, golds) (SQuAD normalisation), minus ``format_penalty`` when the rollout is
    malformed or gave no answer (``answer`` None).

    ``answer`` is the content of the last ``<answer>...</answer>`` (``igsearch.data.metrics.extract_answer``).
    """
    reward = exact_match(answer, golds)
    if malformed or answer is None:
        reward -= format_penalty
    return float(reward)


def trajectory_rewards(trajectories, *, format_penalty: float = 0.0) -> list[float]:
    """``trajectory_reward`` of each ``Trajectory`` (its ``answer``, ``golds`` and ``malformed``)."""
    return [
        trajectory_reward(t.answer, t.golds, malformed=t.malformed, format_penalty=format_penalty)
        for t in trajectories
    ]
