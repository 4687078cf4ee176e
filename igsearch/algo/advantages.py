"""Advantage estimators (docs/DESIGN.md section 4) behind a registry, so step-reward methods plug in by name.

An estimator maps an ``AdvantageInput`` (rewards, GRPO groups, the step scores it declared it needs
and the token span of each step's query) and an ``AdvantageConfig`` to an ``AdvantageOutput``: one
advantage per sequence plus a span table of per-token additions. The per-token advantage it stands for is

    A[i, k] = seq_adv[i] + span_scale * sum over spans (i, start, end, v) with start <= k < end of v

which the loss kernel (``igsearch_kernels.span_advantage_loss``) applies without materialising
[B, T]; ``per_token_advantages`` materialises it for tests and logging.

This module is the core every method shares: the registry, the input and output, and the group
statistics. Group statistics use the sample standard deviation (Bessel-corrected, ``ddof=1``), as the
GRPO of verl / Search-R1 and TRL do (``torch.std``); a group with a single member has std 0 and
therefore advantage 0 (no relative signal).

The methods themselves, built-in ones included, are one file each in ``igsearch.methods``: an
estimator registered with the step scorers it ``needs`` and, when it has knobs, the dataclass of its
own config section (``config=``), which the run config names after the method (``gigpo.omega``) and
the estimator reads as ``cfg.options``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from igsearch.config_fields import check_choice, check_range, config_field
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

#: the choices of AdvantageConfig.adv_scale
ADV_SCALES = ("std", "none")

AdvantageEstimator = Callable[["AdvantageInput", "AdvantageConfig"], "AdvantageOutput"]

_ESTIMATORS: dict[str, AdvantageEstimator] = {}
_NEEDS: dict[str, frozenset[str]] = {}
_CONFIGS: dict[str, type] = {}


def register_advantage_estimator(
    name: str, *, needs: Iterable[str] = (), config: type | None = None
) -> Callable[[AdvantageEstimator], AdvantageEstimator]:
    """Decorator registering ``fn(inp: AdvantageInput, cfg: AdvantageConfig) -> AdvantageOutput`` as ``name``.

    ``needs``: names of the step scorers (``igsearch.algo.step_scores``) whose values the estimator
    reads from ``inp.scores``; the trainer runs exactly those scorers before calling it.
    ``config``: the dataclass of the method's own knobs (fields made with
    ``igsearch.config_fields.config_field``, an optional ``validate(where)``). The run config holds
    one section of it named after the method (YAML ``name: {field: value}``, override
    ``name.field=value``), and the estimator reads the run's values as ``cfg.options``.
    Registering a name twice with a different function is an error (guards against silent
    shadowing); re-registering the same function is allowed (module reloads).
    """

    def decorator(fn: AdvantageEstimator) -> AdvantageEstimator:
        old = _ESTIMATORS.get(name)
        if old is not None and _origin(old) != _origin(fn):
            raise ValueError(f"advantage estimator {name!r} is already registered ({_origin(old)})")
        _ESTIMATORS[name] = fn
        _NEEDS[name] = frozenset(needs)
        if config is not None:
            _CONFIGS[name] = config
        else:
            _CONFIGS.pop(name, None)
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


def estimator_config_classes() -> dict[str, type]:
    """Method name -> the dataclass of its own config section, for the methods registered with one."""
    return dict(_CONFIGS)


@dataclass
class AdvantageConfig:
    """The ``advantage`` section of the run config: which estimator, and the group normalisation every
    estimator shares. A method's own knobs live in its own section (``register_advantage_estimator(config=)``),
    carried here as ``options`` (not a field of the file: the run config fills it from the method's section)."""

    method: str = config_field(
        "ig", "Advantage estimator by registry name: ig (GRPO + step information gain) | grpo (trajectory-level "
              "baseline) | rloo (leave-one-out baseline) | gigpo (GiGPO anchor-state step groups) | igpo (IGPO "
              "turn-level gain) | any name registered with register_advantage_estimator.")
    adv_scale: str = config_field("std", "GRPO group advantage: std ((R - mean) / (std + eps)) | none (R - mean).")
    adv_eps: float = config_field(1e-6, "Epsilon added to the group standard deviations.")
    options: Any = field(default=None, repr=False, compare=False, metadata={
        "help": "The method's own config section (an instance of the class it registered), as the run set it; "
                "None = that class's defaults.", "settable": False})

    def validate(self, where: str = "advantage") -> "AdvantageConfig":
        """ConfigError naming ``where`` and the field for a value out of range; returns self. (Whether
        ``method`` is registered is checked where the registry is complete: the trainer.)"""
        check_choice(where, "adv_scale", self.adv_scale, ADV_SCALES)
        check_range(where, "adv_eps", self.adv_eps, low=0)
        return self

    def with_options(self, options: Any) -> "AdvantageConfig":
        """A copy that carries ``options``, the method's own config section (an instance of the class it
        registered with ``config=``), as the run config set it."""
        return dataclasses.replace(self, options=options)

    def with_default_options(self) -> "AdvantageConfig":
        """Self when it carries options or the method has none, else a copy with its class's defaults."""
        cls = _CONFIGS.get(self.method)
        return self if self.options is not None or cls is None else self.with_options(cls())


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
    before scaling. ``span_scale``: the multiplier of every span value (IG-Search's ``ig.beta``, GiGPO's
    ``gigpo.omega``, 1 for IGPO, 0 for a trajectory-level method). ``stats``: scalars for logging.
    """

    seq_adv: torch.Tensor
    spans: torch.Tensor
    span_values: torch.Tensor
    span_scale: float = 0.0
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
        return AdvantageOutput(self.seq_adv[idx], spans, self.span_values[keep], self.span_scale, dict(self.stats))


def compute_advantages(inp: AdvantageInput, cfg: AdvantageConfig) -> AdvantageOutput:
    """Run the estimator named by ``cfg.method`` (with its section's defaults when ``cfg`` carries no options)."""
    return get_advantage_estimator(cfg.method)(inp, cfg.with_default_options())


def per_token_advantages(out: AdvantageOutput, span_scale: float | None, T: int) -> torch.Tensor:
    """Materialise A[i, k] = seq_adv[i] + span_scale * sum of the span values covering k, as float32 [B, T].

    ``span_scale`` None uses ``out.span_scale``. Overlapping spans add up. The loss mask is not applied.
    """
    span_scale = out.span_scale if span_scale is None else span_scale
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
    values = out.span_values.detach().to(device=device, dtype=torch.float32) * span_scale
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


# ------------------------------------------------------------------------------------------------
# Helpers for estimators


def empty_spans() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, dtype=torch.float32)
