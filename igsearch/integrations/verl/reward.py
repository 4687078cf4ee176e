"""Exact match as verl's custom reward function (``reward.custom_reward_function``).

verl calls ``compute_score(data_source, solution_str, ground_truth, extra_info)`` once per rollout
with the decoded response. The answer is the text of the response's last ``<answer>...</answer>``;
the score is :func:`igsearch.data.metrics.exact_match` against the gold variants, which may come as a
string, a list, or Search-R1's ``{"target": [...]}``.
"""

from __future__ import annotations

from typing import Any

from igsearch.data.metrics import exact_match
from igsearch.data.prompts import ANSWER_CLOSE, ANSWER_OPEN


def extract_answer(solution_str: str) -> str | None:
    """The stripped text of the last closed ``<answer>`` block, or None."""
    end = solution_str.rfind(ANSWER_CLOSE)
    if end < 0:
        return None
    start = solution_str.rfind(ANSWER_OPEN, 0, end)
    if start < 0:
        return None
    return solution_str[start + len(ANSWER_OPEN):end].strip()


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
