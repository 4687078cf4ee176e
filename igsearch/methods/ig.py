"""IG-Search: GRPO plus each search step's information gain on its query tokens.

Advantage, for rollout i of a group and its search steps t (docs/DESIGN.md section 4):

    A_i            = (R_i - mean_g R) / (std_g R + eps)          as GRPO (``igsearch.methods.grpo``)
    IGn[i, t]      = step IG z-scored over all scored steps of the group (``norm="group"``), of the
                     batch (``"batch"``) or raw (``"none"``), then clipped to [-clip, clip]
    A[i, k]        = A_i + beta * IGn[i, t]      for the tokens k of step t's ``<search> ... </search>``
                     (``span_weight="inverse_length"``: IGn[i, t] / |span|); steps whose IG is None get none

The step IG comes from the ``step_ig`` scorer here, under the rollout weights
(``igsearch.ig.information_gain_of_trajectories``). IG-Search's knobs are the run config's ``ig``
section (``igsearch.ig.config.IGConfig``), registered here with the estimator like any method's section
and read as ``cfg.options`` (by the estimator) or ``method_options("ig")`` (by the scorer); the
continuation scorer and the gold's tokenization are the run-level ``scoring`` section.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from igsearch.algo.advantages import (
    AdvantageConfig,
    AdvantageInput,
    AdvantageOutput,
    empty_spans,
    group_index,
    group_normalized_rewards,
    mean_std,
    register_advantage_estimator,
)
from igsearch.algo.step_scores import ScoringBatch, StepScores, continuation_scorer_problem, register_step_scorer
from igsearch.ig.config import IG_NORMS, SPAN_WEIGHTS, IGConfig


def _check_step_ig(config) -> str | None:
    if config.template != "refine":
        return (f"step IG scores <documents>/<refine> steps, which template={config.template!r} does not write; "
                "use template=refine")
    return continuation_scorer_problem(config)


@register_step_scorer("step_ig", per="step", check=_check_step_ig)
def step_information_gain(batch: ScoringBatch) -> StepScores:
    """IG-Search's step IG (docs/DESIGN.md section 3) of every search step, under the rollout weights.

    Contexts are built from the rollout's step record (``Trajectory.steps``), so step k of the IG is
    step k of the record by construction.
    """
    from igsearch.ig import information_gain_of_trajectories
    from igsearch.ig.config import ig_draw_seed

    res = information_gain_of_trajectories(
        batch.trajectories, batch.model, batch.tokenizer,
        **batch.config.method_options("ig").scoring_options(batch.config.scoring),
        seed=ig_draw_seed(batch.config.seed, batch.step), scorer=batch.continuation_scorer())
    stats = {k: float(v) for k, v in res.stats.items()
             if k in ("real_mean", "baseline_mean", "tokens_forwarded") and v is not None}
    return StepScores([list(row) for row in res.step_ig], stats)


def normalize_step_ig(
    step_ig: Sequence[Sequence[float | None]],
    group_ids: Sequence[int],
    *,
    norm: str = "group",
    clip: float | None = 2.0,
    eps: float = 1e-6,
) -> tuple[list[list[float | None]], dict[str, float]]:
    """IGn with the same layout as ``step_ig`` (None stays None), plus statistics.

    ``norm="group"``: (IG - mean) / (std + eps) over all scored steps of the rollouts of a group;
    ``"batch"``: the same over every scored step of the batch; ``"none"``: raw IG. Then clipped to
    [-clip, clip] unless ``clip`` is None.
    """
    if norm not in IG_NORMS:
        raise ValueError(f"unknown IG normalisation {norm!r}; expected one of {list(IG_NORMS)}")
    for row in step_ig:
        for v in row:
            if v is not None and not math.isfinite(float(v)):
                raise ValueError(f"step IG must be finite or None, got {v}")
    if norm == "group":
        pools = list(group_index(group_ids).values())
    elif norm == "batch":
        pools = [list(range(len(step_ig)))]
    else:
        pools = []
    out: list[list[float | None]] = [[None if v is None else float(v) for v in row] for row in step_ig]
    for members in pools:
        scored = [float(v) for i in members for v in step_ig[i] if v is not None]
        if not scored:
            continue
        mean, std = mean_std(scored)
        for i in members:
            out[i] = [None if v is None else (v - mean) / (std + eps) for v in out[i]]
    raw = [float(v) for row in step_ig for v in row if v is not None]
    n_clipped = 0
    if clip is not None:
        for row in out:
            for t, v in enumerate(row):
                if v is not None and abs(v) > clip:
                    row[t] = max(-clip, min(clip, v))
                    n_clipped += 1
    normed = [v for row in out for v in row if v is not None]
    n_steps = sum(len(row) for row in step_ig)
    stats = {
        "ig/mean": sum(raw) / len(raw) if raw else 0.0,
        "ig/std": mean_std(raw)[1] if raw else 0.0,
        "ig/min": min(raw) if raw else 0.0,
        "ig/max": max(raw) if raw else 0.0,
        "ig/scored_steps": float(len(raw)),
        "ig/scored_frac": len(raw) / n_steps if n_steps else 0.0,
        "ig/positive_frac": sum(v > 0 for v in raw) / len(raw) if raw else 0.0,
        "ig/norm_abs_mean": sum(abs(v) for v in normed) / len(normed) if normed else 0.0,
        "ig/clip_frac": n_clipped / len(normed) if normed else 0.0,
    }
    return out, stats


@register_advantage_estimator("ig", needs={"step_ig"}, config=IGConfig)
def ig_advantages(inp: AdvantageInput, cfg: AdvantageConfig) -> AdvantageOutput:
    """GRPO's ``seq_adv`` [B] plus one span per scored step over its query tokens, valued IGn (``span_scale``
    = ``ig.beta``)."""
    ig: IGConfig = cfg.options
    step_ig = inp.per_step("step_ig", "ig")
    if ig.span_weight not in SPAN_WEIGHTS:
        raise ValueError(f"unknown span weighting {ig.span_weight!r}; expected one of {list(SPAN_WEIGHTS)}")
    seq_adv, stats = group_normalized_rewards(inp.rewards, inp.group_ids, scale=cfg.adv_scale, eps=cfg.adv_eps)
    ign, ig_stats = normalize_step_ig(step_ig, inp.group_ids, norm=ig.norm, clip=ig.clip, eps=cfg.adv_eps)
    stats.update(ig_stats)
    rows: list[tuple[int, int, int]] = []
    values: list[float] = []
    for i, (row, spans) in enumerate(zip(ign, inp.query_spans)):
        for v, (start, end) in zip(row, spans):
            if v is None or end <= start:
                continue
            rows.append((i, int(start), int(end)))
            values.append(v / (end - start) if ig.span_weight == "inverse_length" else v)
    if rows:
        span_t = torch.tensor(rows, dtype=torch.long)
        value_t = torch.tensor(values, dtype=torch.float32)
    else:
        span_t, value_t = empty_spans()
    stats["ig/span_tokens"] = float(sum(e - s for _, s, e in rows))
    return AdvantageOutput(seq_adv, span_t, value_t, span_scale=float(ig.beta), stats=stats)
