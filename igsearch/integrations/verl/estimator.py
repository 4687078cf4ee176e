"""The ``ig_search`` advantage estimator, registered with verl (``algorithm.adv_estimator=ig_search``).

verl's estimators map per-token outcome rewards [B, T] to per-token advantages [B, T]. This one is
igsearch's ``ig`` estimator (docs/DESIGN.md section 4) on verl's tensors:

    A[i, k] = (R_i - mean_g R) / (std_g R + eps)  +  beta * clip(z_g(IG[i, t]), -c, c) for k in query span t

with R_i = sum_k token_level_rewards[i, k], groups g from verl's ``uid`` (the prompt), the sample std
(a group of one rollout gets advantage 0, unlike verl's GRPO, which leaves R_i), and the step IGs
z-scored over the group's scored steps. All-fail groups (every R_i = 0) get no outcome advantage but
do get the IG term on their query spans. The result is masked by ``response_mask`` and returned as
(advantages, returns), both [B, T], as verl expects.

The step IGs and query spans (one object per row) come either in ``non_tensor_batch``
(``ig_step_ig``, ``ig_query_spans``; see :func:`igsearch.integrations.verl.ig_batch.step_ig_for_verl_batch`)
or, inside :func:`supplied_step_ig`, from the caller: verl 0.9.1's stock ``compute_advantage`` hands
``non_tensor_batch`` to GDPO only, so igsearch's verl trainer (``trainer.py``) scores IG and then runs
verl's own ``_compute_advantage`` inside that block. Without either the estimator refuses to run,
with that explanation.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from verl.trainer.ppo.core_algos import register_adv_est

from igsearch.algo.advantages import AdvantageInput, compute_advantages, per_token_advantages

from .config import VerlIGConfig

IG_KEY, SPANS_KEY = "ig_step_ig", "ig_query_spans"
_SUPPLIED: ContextVar[tuple[Sequence, Sequence] | None] = ContextVar("igsearch_supplied_step_ig", default=None)


@contextmanager
def supplied_step_ig(query_spans: Sequence, step_ig: Sequence) -> Iterator[None]:
    """Within the block, ``ig_search`` takes the query spans and step IGs from here when verl does
    not pass ``non_tensor_batch``. Rows in the order of the batch verl's ``compute_advantage`` sees."""
    token = _SUPPLIED.set((query_spans, step_ig))
    try:
        yield
    finally:
        _SUPPLIED.reset(token)


def group_ids(index: Sequence[Any]) -> list[int]:
    """verl's per-row ``uid`` values -> dense group numbers in order of first appearance."""
    seen: dict[Any, int] = {}
    return [seen.setdefault(u, len(seen)) for u in list(index)]


def ig_search_advantages(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Sequence[Any],
    query_spans: Sequence[Sequence[tuple[int, int]]],
    step_ig: Sequence[Sequence[float | None]],
    config: VerlIGConfig | None = None,
    *,
    norm_adv_by_std: bool = True,
    epsilon: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token IG-Search advantages (see module docstring).

    token_level_rewards, response_mask: [B, T]; index: B group keys; query_spans[i]: (start, end) of
    each step's query in response coordinates (end exclusive); step_ig[i]: one IG (or None) per step.
    Returns (advantages, returns), float32 [B, T], zero where response_mask is 0.
    """
    cfg = config or VerlIGConfig()
    b, t = response_mask.shape
    if token_level_rewards.shape != (b, t):
        raise ValueError(f"token_level_rewards {tuple(token_level_rewards.shape)} and response_mask {(b, t)} differ")
    adv_cfg = cfg.advantage_config("std" if norm_adv_by_std else "none")
    adv_cfg.adv_eps = epsilon
    inp = AdvantageInput(
        rewards=token_level_rewards.sum(-1).tolist(),
        group_ids=group_ids(index),
        query_spans=[[tuple(map(int, s)) for s in row] for row in query_spans],
        response_lengths=[t] * b,
        scores={"step_ig": [list(row) for row in step_ig]},
    )
    out = compute_advantages(inp, adv_cfg)
    adv = per_token_advantages(out, None, t).to(response_mask.device) * response_mask.to(torch.float32)
    return adv, adv


@register_adv_est("ig_search")
def compute_ig_search_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray | None = None,
    epsilon: float = 1e-6,
    norm_adv_by_std_in_grpo: bool = True,
    config: Any = None,
    non_tensor_batch: dict | None = None,
    **_: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """verl's estimator signature; the IG data come in ``non_tensor_batch`` (see module docstring)."""
    if non_tensor_batch is not None and IG_KEY in non_tensor_batch and SPANS_KEY in non_tensor_batch:
        spans, step_ig = non_tensor_batch[SPANS_KEY], non_tensor_batch[IG_KEY]
    elif _SUPPLIED.get() is not None:
        spans, step_ig = _SUPPLIED.get()
    else:
        raise ValueError(
            f"adv_estimator=ig_search needs the step IGs ({IG_KEY}) and query spans ({SPANS_KEY}): run it with "
            "igsearch's verl trainer (trainer.v1.trainer_mode=igsearch_sync, see docs/verl.md), which scores IG "
            "after the old log-probs and hands them to this estimator")
    if len(spans) != token_level_rewards.shape[0] or len(step_ig) != token_level_rewards.shape[0]:
        raise ValueError(f"ig_search: {len(spans)} rows of query spans and {len(step_ig)} of step IGs for a batch "
                         f"of {token_level_rewards.shape[0]} rows")
    if index is None:
        raise ValueError("adv_estimator=ig_search needs the group index (verl's uid)")
    norm = norm_adv_by_std_in_grpo
    if config is not None and hasattr(config, "get") and config.get("norm_adv_by_std_in_grpo") is not None:
        norm = bool(config.get("norm_adv_by_std_in_grpo"))
    return ig_search_advantages(token_level_rewards, response_mask, index, spans, step_ig,
                                VerlIGConfig.from_algorithm(config),
                                norm_adv_by_std=norm, epsilon=epsilon)
