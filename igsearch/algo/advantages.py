"""Advantage estimators (docs/DESIGN.md section 4) behind a registry, so other step-reward methods plug in by name.

An estimator maps an ``AdvantageInput`` (rewards, GRPO groups, optional step IG and the token span
of each step's query) and an ``AdvantageConfig`` to an ``AdvantageOutput``: one advantage per
sequence plus a span table of per-token additions. The per-token advantage it stands for is

    A[i, k] = seq_adv[i] + beta * sum over spans (i, start, end, v) with start <= k < end of v

which the loss kernel (``igsearch_kernels.span_advantage_loss``) applies without materialising
[B, T]; ``per_token_advantages`` materialises it for tests and logging.

Group statistics use the sample standard deviation (Bessel-corrected, ``ddof=1``), as the GRPO of
verl / Search-R1 and TRL do (``torch.std``); a group with a single member has std 0 and therefore
advantage 0 (no relative signal), and so has a group whose step IGs are all equal.

Built-in estimators:

- ``grpo``: trajectory-level GRPO, ``A_i = (R_i - mean_g R) / (std_g R + eps)`` (``scale="none"``:
  ``R_i - mean_g R``); the span table is empty.
- ``ig``: the same ``A_i`` plus, for every step t of rollout i with an IG value, a span over the
  step's query tokens (``<search> ... </search>``) with value ``IGn[i, t]`` (or
  ``IGn[i, t] / |span|`` with ``span_weight="inverse_length"``). ``IGn`` is the step IG z-scored over
  all scored steps of the group (``ig_norm="group"``) or of the batch (``"batch"``) or left raw
  (``"none"``), then clipped to ``[-ig_clip, ig_clip]``. Steps whose IG is None get no span.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from igsearch.config_fields import check_choice, check_range, config_field
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

#: the choices of AdvantageConfig.scale, .ig_norm and .span_weight
ADV_SCALES = ("std", "none")
IG_NORMS = ("group", "batch", "none")
SPAN_WEIGHTS = ("uniform", "inverse_length")

AdvantageEstimator = Callable[["AdvantageInput", "AdvantageConfig"], "AdvantageOutput"]

_ESTIMATORS: dict[str, AdvantageEstimator] = {}
_NEEDS: dict[str, frozenset[str]] = {}


def register_advantage_estimator(
    name: str, *, needs: Iterable[str] = ()
) -> Callable[[AdvantageEstimator], AdvantageEstimator]:
    """Decorator registering ``fn(inp: AdvantageInput, cfg: AdvantageConfig) -> AdvantageOutput`` as ``name``.

    ``needs``: names of the step scorers (``igsearch.algo.step_scores``) whose values the estimator
    reads from ``inp.scores``; the trainer runs exactly those scorers before calling it.
    Registering a name twice with a different function is an error (guards against silent
    shadowing); re-registering the same function is allowed (module reloads).
    """

    def decorator(fn: AdvantageEstimator) -> AdvantageEstimator:
        old = _ESTIMATORS.get(name)
        if old is not None and _origin(old) != _origin(fn):
            raise ValueError(f"advantage estimator {name!r} is already registered ({_origin(old)})")
        _ESTIMATORS[name] = fn
        _NEEDS[name] = frozenset(needs)
        return fn

    return decorator


def _origin(fn) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def get_advantage_estimator(name: str) -> AdvantageEstimator:
    """The estimator registered as ``name``; the error lists the registered names."""
    try:
        return _ESTIMATORS[name]
    except KeyError:
        raise ValueError(
            f"unknown advantage estimator {name!r}; registered: {sorted(_ESTIMATORS)} "
            "(the built-in methods register when igsearch.methods is imported)"
        ) from None


def estimator_needs(name: str) -> frozenset[str]:
    """The step scorers the estimator ``name`` declared in ``register_advantage_estimator(needs=...)``."""
    get_advantage_estimator(name)
    return _NEEDS[name]


def list_advantage_estimators() -> list[str]:
    return sorted(_ESTIMATORS)


@dataclass
class AdvantageConfig:
    """The ``advantage`` section of the run config: which estimator, and the knobs estimators read."""

    method: str = config_field(
        "ig", "Advantage estimator by registry name: ig (GRPO + step information gain) | grpo (trajectory-level "
              "baseline) | rloo (leave-one-out baseline) | gigpo (GiGPO anchor-state step groups) | igpo (IGPO "
              "turn-level gain) | any name registered with register_advantage_estimator.")
    adv_scale: str = config_field("std", "GRPO group advantage: std ((R - mean) / (std + eps)) | none (R - mean).")
    adv_eps: float = config_field(1e-6, "Epsilon added to the group standard deviations.")
    ig_beta: float = config_field(0.5, "beta: weight of the normalised step IG added to the query-span tokens' "
                                       "advantage (default measured by bench/ig_coefficients.py).")
    ig_norm: str = config_field("group", "Step-IG normalisation: group (z-score per group) | batch (z-score per "
                                         "batch) | none.")
    ig_clip: float | None = config_field(2.0, "c: normalised step IG is clipped to [-c, c]; none disables clipping "
                                              "(default measured by bench/ig_coefficients.py).")
    span_weight: str = config_field("uniform", "Weight of a query-span token: uniform (1) | inverse_length (1 / |span|).")
    gigpo_omega: float = config_field(1.0, "GiGPO: weight omega of the step-level (anchor-state group) advantage.")
    gigpo_gamma: float = config_field(0.95, "GiGPO: discount gamma of the episode reward back to earlier turns.")
    igpo_gamma: float = config_field(1.0, "IGPO: discount gamma of the cumulative normalised turn rewards.")

    def validate(self, where: str = "advantage") -> "AdvantageConfig":
        """ConfigError naming ``where`` and the field for a value out of range; returns self. (Whether
        ``method`` is registered is checked where the registry is complete: the trainer.)"""
        check_choice(where, "adv_scale", self.adv_scale, ADV_SCALES)
        check_choice(where, "ig_norm", self.ig_norm, IG_NORMS)
        check_choice(where, "span_weight", self.span_weight, SPAN_WEIGHTS)
        check_range(where, "adv_eps", self.adv_eps, low=0)
        if self.ig_clip is not None:
            check_range(where, "ig_clip", self.ig_clip, low=0, low_open=True)
        for name in ("gigpo_gamma", "igpo_gamma"):
            check_range(where, name, getattr(self, name), low=0, low_open=True, high=1)
        return self


@dataclass
class AdvantageInput:
    """What the estimators see of a batch of B rollouts (built from the rollout's step record).

    ``rewards[i]``: trajectory reward R_i. ``group_ids[i]``: the GRPO group (question) of rollout i.
    ``query_spans[i][t]``: (start, end) of step t's ``<search>...</search>`` tokens in the response,
    end exclusive. ``turn_spans[i][k]``: (start, end) of turn k, the k-th stretch of response tokens
    between injected document blocks (turn k < S ends where step k's documents start; a last turn
    after the last documents exists when the policy wrote something there); None when unknown.
    ``response_lengths[i]``: number of response tokens (spans must lie inside).
    ``scores[name][i]``: the values of step scorer ``name`` for rollout i, one per step (per-step
    scorers such as ``step_ig``) or one per turn (per-turn scorers such as ``anchor_state``); None
    marks a step without a value. Estimators read what they declared in ``needs``.
    """

    rewards: Sequence[float]
    group_ids: Sequence[int]
    query_spans: Sequence[Sequence[tuple[int, int]]]
    response_lengths: Sequence[int]
    turn_spans: Sequence[Sequence[tuple[int, int]]] | None = None
    scores: Mapping[str, Sequence[Sequence[Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        b = len(self.rewards)
        for name in ("group_ids", "query_spans", "response_lengths"):
            if len(getattr(self, name)) != b:
                raise ValueError(f"AdvantageInput: {b} rewards but {len(getattr(self, name))} {name}")
        if self.turn_spans is not None and len(self.turn_spans) != b:
            raise ValueError(f"AdvantageInput: {b} rewards but {len(self.turn_spans)} turn_spans rows")
        for name, rows in self.scores.items():
            if len(rows) != b:
                raise ValueError(f"AdvantageInput: {b} rewards but {len(rows)} rows of scores[{name!r}]")
        for kind, table in (("query", self.query_spans), ("turn", self.turn_spans or [])):
            for i, (spans, n) in enumerate(zip(table, self.response_lengths)):
                for start, end in spans:
                    if not 0 <= start <= end <= n:
                        raise ValueError(f"AdvantageInput: rollout {i} {kind} span {(start, end)} outside [0, {n}]")

    @property
    def step_ig(self) -> Sequence[Sequence[float | None]] | None:
        """``scores["step_ig"]``, or None when IG was not scored."""
        return self.scores.get("step_ig")

    def per_step(self, name: str, estimator: str) -> Sequence[Sequence[Any]]:
        """``scores[name]``, checked to hold one value per search step of every rollout."""
        rows = self._require(name, estimator)
        for i, (row, spans) in enumerate(zip(rows, self.query_spans)):
            if len(row) != len(spans):
                raise ValueError(f"AdvantageInput: rollout {i} has {len(row)} {name} values but {len(spans)} "
                                 "search steps")
        return rows

    def per_turn(self, name: str, estimator: str) -> Sequence[Sequence[Any]]:
        """``scores[name]``, checked to hold one value per turn of every rollout."""
        rows = self._require(name, estimator)
        turns = self.turns(estimator)
        for i, (row, spans) in enumerate(zip(rows, turns)):
            if len(row) != len(spans):
                raise ValueError(f"AdvantageInput: rollout {i} has {len(row)} {name} values but {len(spans)} turns")
        return rows

    def turns(self, estimator: str) -> Sequence[Sequence[tuple[int, int]]]:
        """``turn_spans``; ValueError naming ``estimator`` when the batch has none."""
        if self.turn_spans is None:
            raise ValueError(f"the {estimator!r} advantage estimator needs turn_spans (build the input with "
                             "AdvantageInput.from_trajectories)")
        return self.turn_spans

    def _require(self, name: str, estimator: str) -> Sequence[Sequence[Any]]:
        if name not in self.scores:
            raise ValueError(f"the {estimator!r} advantage estimator needs {name} (scores[{name!r}], one list of "
                             "values per rollout)")
        return self.scores[name]

    @classmethod
    def from_trajectories(cls, trajectories, rewards, scores: Mapping[str, Sequence] | None = None) -> "AdvantageInput":
        """Build from ``igsearch.rollout.trajectory.Trajectory`` objects (group = question_index)."""
        return cls(
            rewards=list(rewards),
            group_ids=[t.question_index for t in trajectories],
            query_spans=[[tuple(s.query) for s in t.steps] for t in trajectories],
            response_lengths=[len(t.response_ids) for t in trajectories],
            turn_spans=[t.turn_spans() for t in trajectories],
            scores={k: [list(row) for row in v] for k, v in (scores or {}).items()},
        )


@dataclass
class AdvantageOutput:
    """Advantages in the form the loss consumes.

    ``seq_adv``: float32 [B], A_i. ``spans``: int64 [S, 3] rows (sequence, start, end), end exclusive,
    in response-token coordinates. ``span_values``: float32 [S], the per-token addition of each span
    before ``beta``. ``beta``: the multiplier of the span values. ``stats``: scalars for logging.
    """

    seq_adv: torch.Tensor
    spans: torch.Tensor
    span_values: torch.Tensor
    beta: float = 0.0
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.seq_adv.shape[0])

    def select(self, indices: Sequence[int]) -> "AdvantageOutput":
        """The advantages of the sequences ``indices`` (in that order), spans renumbered to match."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        new_pos = torch.full((self.batch_size,), -1, dtype=torch.long)
        new_pos[idx] = torch.arange(len(idx))
        keep = new_pos[self.spans[:, 0]] >= 0 if self.spans.numel() else torch.zeros(0, dtype=torch.bool)
        spans = self.spans[keep].clone()
        if spans.numel():
            spans[:, 0] = new_pos[spans[:, 0]]
        return AdvantageOutput(self.seq_adv[idx], spans, self.span_values[keep], self.beta, dict(self.stats))


def compute_advantages(inp: AdvantageInput, cfg: AdvantageConfig) -> AdvantageOutput:
    """Run the estimator named by ``cfg.method``."""
    return get_advantage_estimator(cfg.method)(inp, cfg)


def per_token_advantages(out: AdvantageOutput, beta: float | None, T: int) -> torch.Tensor:
    """Materialise A[i, k] = seq_adv[i] + beta * sum of the span values covering k, as float32 [B, T].

    ``beta`` None uses ``out.beta``. Overlapping spans add up. The loss mask is not applied.
    """
    beta = out.beta if beta is None else beta
    b = out.batch_size
    device = out.seq_adv.device
    adv = out.seq_adv.detach().to(torch.float32).reshape(b, 1).expand(b, T).clone()
    if out.spans.numel() == 0:
        return adv
    spans = out.spans.to(device=device, dtype=torch.long)
    if int(spans[:, 2].max()) > T:
        raise ValueError(f"a span ends at {int(spans[:, 2].max())}, beyond T={T}")
    # Difference array: +v at start, -v at end, then a running sum along the tokens.
    delta = torch.zeros(b, T + 1, dtype=torch.float32, device=device)
    values = out.span_values.detach().to(device=device, dtype=torch.float32) * beta
    delta.index_put_((spans[:, 0], spans[:, 1]), values, accumulate=True)
    delta.index_put_((spans[:, 0], spans[:, 2]), -values, accumulate=True)
    return adv + delta.cumsum(dim=1)[:, :T]


# ------------------------------------------------------------------------------------------------
# Group statistics


def group_index(group_ids: Sequence[int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(group_ids):
        groups.setdefault(int(g), []).append(i)
    return groups


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1; 0 for fewer than two values)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var)


def group_normalized_rewards(
    rewards: Sequence[float], group_ids: Sequence[int], *, scale: str = "std", eps: float = 1e-6
) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO advantages float32 [B]: (R_i - mean_g) / (std_g + eps), or R_i - mean_g with scale "none".

    Also returns batch statistics: the share of groups with zero reward spread (no
    trajectory-level signal) and the mean |advantage|. (Reward means and the share of all-fail
    groups are the trainer's batch metrics: one owner per metric key.)
    """
    if scale not in ADV_SCALES:
        raise ValueError(f"unknown advantage scale {scale!r}; expected one of {list(ADV_SCALES)}")
    adv = torch.zeros(len(rewards), dtype=torch.float32)
    groups = group_index(group_ids)
    n_flat = 0
    for members in groups.values():
        rs = [float(rewards[i]) for i in members]
        mean, std = mean_std(rs)
        n_flat += max(rs) == min(rs)
        for i, r in zip(members, rs):
            adv[i] = (r - mean) / (std + eps) if scale == "std" else r - mean
    n_groups = max(len(groups), 1)
    stats = {
        "groups/zero_spread_frac": n_flat / n_groups,
        "adv/seq_abs_mean": float(adv.abs().mean()) if len(rewards) else 0.0,
    }
    return adv, stats


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


# ------------------------------------------------------------------------------------------------
# Built-in estimators


def empty_spans() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, dtype=torch.float32)


@register_advantage_estimator("grpo")
def grpo_advantages(inp: AdvantageInput, cfg: AdvantageConfig) -> AdvantageOutput:
    """Trajectory-level GRPO: one advantage per rollout, no spans."""
    seq_adv, stats = group_normalized_rewards(inp.rewards, inp.group_ids, scale=cfg.adv_scale, eps=cfg.adv_eps)
    spans, values = empty_spans()
    return AdvantageOutput(seq_adv, spans, values, beta=0.0, stats=stats)


@register_advantage_estimator("ig", needs={"step_ig"})
def ig_advantages(inp: AdvantageInput, cfg: AdvantageConfig) -> AdvantageOutput:
    """GRPO plus normalised step IG on the query tokens of each scored step."""
    step_ig = inp.per_step("step_ig", "ig")
    if cfg.span_weight not in SPAN_WEIGHTS:
        raise ValueError(f"unknown span weighting {cfg.span_weight!r}; expected one of {list(SPAN_WEIGHTS)}")
    seq_adv, stats = group_normalized_rewards(inp.rewards, inp.group_ids, scale=cfg.adv_scale, eps=cfg.adv_eps)
    ign, ig_stats = normalize_step_ig(
        step_ig, inp.group_ids, norm=cfg.ig_norm, clip=cfg.ig_clip, eps=cfg.adv_eps
    )
    stats.update(ig_stats)
    rows: list[tuple[int, int, int]] = []
    values: list[float] = []
    for i, (row, spans) in enumerate(zip(ign, inp.query_spans)):
        for v, (start, end) in zip(row, spans):
            if v is None or end <= start:
                continue
            rows.append((i, int(start), int(end)))
            values.append(v / (end - start) if cfg.span_weight == "inverse_length" else v)
    if rows:
        span_t = torch.tensor(rows, dtype=torch.long)
        value_t = torch.tensor(values, dtype=torch.float32)
    else:
        span_t, value_t = empty_spans()
    stats["ig/span_tokens"] = float(sum(e - s for _, s, e in rows))
    return AdvantageOutput(seq_adv, span_t, value_t, beta=float(cfg.ig_beta), stats=stats)
