"""Exact match as verl's custom reward function (``reward.custom_reward_function``).

verl calls ``compute_score(data_source, solution_str, ground_truth, extra_info)`` once per rollout
with the decoded response. The answer is :func:`igsearch.data.metrics.extract_answer` (the last
``<answer>``, which must be closed) and the score :func:`igsearch.data.metrics.exact_match` against the
gold variants, which may come as a string, a list, or Search-R1's ``{"target": [...]}``; the same
functions our own trainer and evaluation use.
"""

from __future__ import annotations

from typing import Any

from igsearch.data.metrics import exact_match, extract_answer


def gold_variants(ground_truth: Any) -> list[str]:
    """Gold answers from verl's ``ground_truth`` field (str, list/array of str, or {"target": ...})."""
    if isinstance(ground_truth, dict):
        if "target" not in ground_truth:
            raise ValueError(f"reward: ground_truth dict has no 'target' key (keys: {sorted(ground_truth)})")
        ground_truth = ground_truth["target"]
    if isinstance(ground_truth, str):
        return [ground_truth]
    golds = [str(g) for g in list(ground_truth)]
    if not golds:
        raise ValueError("reward: ground_truth holds no gold answer")
    return golds


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None,
                  **_: Any) -> float:
    """1.0 when the last answer exactly matches a gold variant (SQuAD normalisation), else 0.0."""
    return exact_match(extract_answer(solution_str), gold_variants(ground_truth))
