"""Step scorers: per-step or per-turn signals that advantage estimators declare they need.

A step scorer computes, for every rollout of a batch, one value per search step (``per="step"``,
e.g. IG-Search's step information gain) or one value per turn (``per="turn"``, see
``Trajectory.turn_spans``), possibly with extra forward passes of the policy. It is registered
under the name estimators put in ``needs``::

    @register_step_scorer("turn_gain", per="step")
    def turn_gain(batch: ScoringBatch) -> StepScores: ...

    @register_advantage_estimator("igpo", needs={"turn_gain"})
    def igpo_advantages(inp, cfg): ... inp.per_step("turn_gain", "igpo") ...

The trainer runs exactly the scorers the chosen estimator needs, under the rollout weights (pi_old,
before the update), and passes their values as ``AdvantageInput.scores[name]``. The scorer owns the
metric keys it returns (they are logged as ``<name>/<key>``).

Built in, beside the methods that need them in ``igsearch.methods``: ``step_ig`` (``ig``), ``turn_gain``
(``igpo``) and ``anchor_state`` (``gigpo``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from igsearch.rollout.trajectory import Trajectory


@dataclass
class ScoringBatch:
    """What a step scorer sees: the rollouts, the policy that generated them and the run's settings.

    ``config`` is the run's ``TrainConfig`` (scorers read their own fields from it); ``step`` is
    the training step, for seeding random draws. ``scorer``: the run's continuation scorer
    (an ``igsearch.scoring.Scorer`` of kind ``scoring.scorer``, bound to the policy under the rollout
    weights, to the rollouts as its trunks (trajectory i = trunk i; their keys/values when the trainer
    holds them) and to the rollout engine before the weight sync): step scorers that score
    continuations call ``batch.scorer.score(requests, trunk_of=...)``. None when the trainer has not
    built one (:meth:`continuation_scorer` builds one then).
    """

    trajectories: list[Trajectory]
    model: Any
    tokenizer: Any
    config: Any
    step: int = 0
    scorer: Any = None

    def continuation_scorer(self):
        """``scorer``, or one of kind ``config.scoring.scorer`` on ``model`` with the rollouts' token ids as trunks."""
        if self.scorer is None:
            from igsearch.scoring import Scorer

            self.scorer = Scorer(self.config.scoring.scorer, self.model,
                                 trunks=[t.token_ids for t in self.trajectories])
        return self.scorer


@dataclass
class StepScores:
    """``values[i]``: one value per step (or turn) of rollout i, None where there is none;
    ``stats``: scalars to log (without the scorer's name prefix)."""

    values: list[list[Any]]
    stats: dict[str, float] = field(default_factory=dict)


StepScorer = Callable[[ScoringBatch], StepScores]
#: ``check(config) -> None or why the scorer cannot run with this config`` (called before training)
ConfigCheck = Callable[[Any], "str | None"]

_SCORERS: dict[str, tuple[StepScorer, str, ConfigCheck | None]] = {}


def register_step_scorer(name: str, *, per: str = "step",
                         check: ConfigCheck | None = None) -> Callable[[StepScorer], StepScorer]:
    """Decorator registering ``fn(batch: ScoringBatch) -> StepScores`` as ``name``.

    ``per``: ``"step"`` (one value per search step) or ``"turn"`` (one per ``Trajectory.turn_spans``
    entry). ``check``: refuses a run configuration the scorer cannot work with, before anything
    runs. A name registered twice with a different function is an error.
    """
    if per not in ("step", "turn"):
        raise ValueError(f"step scorer {name!r}: per must be 'step' or 'turn', got {per!r}")

    def decorator(fn: StepScorer) -> StepScorer:
        old = _SCORERS.get(name)
        if old is not None and (old[0].__module__, old[0].__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"step scorer {name!r} is already registered ({old[0].__module__}.{old[0].__qualname__})")
        _SCORERS[name] = (fn, per, check)
        return fn

    return decorator


def check_step_scorer(name: str, config) -> str | None:
    """Why scorer ``name`` cannot run with ``config``, or None."""
    get_step_scorer(name)
    check = _SCORERS[name][2]
    return None if check is None else check(config)


def get_step_scorer(name: str) -> StepScorer:
    """The scorer registered as ``name``; the error lists the registered names."""
    try:
        return _SCORERS[name][0]
    except KeyError:
        raise ValueError(f"unknown step scorer {name!r}; registered: {sorted(_SCORERS)}") from None


def list_step_scorers() -> list[str]:
    return sorted(_SCORERS)


def run_step_scorer(name: str, batch: ScoringBatch) -> StepScores:
    """Run scorer ``name`` under ``torch.no_grad`` with the model in eval mode; checks the shape of
    what it returns (one row per rollout, one value per step or turn)."""
    fn = get_step_scorer(name)
    per = _SCORERS[name][1]
    model = batch.model
    was_training = getattr(model, "training", False)
    if model is not None:
        model.eval()
    try:
        with torch.no_grad():
            out = fn(batch)
    finally:
        if was_training:
            model.train()
    if len(out.values) != len(batch.trajectories):
        raise ValueError(f"step scorer {name!r} returned {len(out.values)} rows for {len(batch.trajectories)} rollouts")
    for i, (row, t) in enumerate(zip(out.values, batch.trajectories)):
        n = len(t.steps) if per == "step" else len(t.turn_spans())
        if len(row) != n:
            raise ValueError(f"step scorer {name!r}: rollout {i} got {len(row)} values for {n} {per}s")
    return out


def run_step_scorers(names, trajectories: list[Trajectory], model, tokenizer, config, step: int,
                     scorer) -> tuple[dict[str, list[list[Any]]], dict[str, float]]:
    """Run every step scorer in ``names`` (sorted) on one batch: the phase between rewards and
    advantages, shared by our trainer and the TRL integration.

    ``config``: the run's ``TrainConfig``; ``step``: the training step (seeds draws); ``scorer``: the
    batch's continuation scorer (``ScoringBatch.scorer``). Returns ``scores[name][i]`` (one value per
    step or turn of rollout i) and the metrics ``<name>/<key>`` (each scorer's stats) and
    ``time/score/<name>``.
    """
    scores: dict[str, list[list[Any]]] = {}
    metrics: dict[str, float] = {}
    for name in sorted(names):
        t0 = time.perf_counter()
        out = run_step_scorer(name, ScoringBatch(trajectories, model, tokenizer, config, step, scorer))
        scores[name] = out.values
        metrics.update({f"{name}/{k}": float(v) for k, v in out.stats.items()})
        metrics[f"time/score/{name}"] = time.perf_counter() - t0
    return scores, metrics


def continuation_scorer_problem(config) -> str | None:
    """Why the run's continuation scorer (``config.scoring.scorer``) cannot run with this config, or None:
    a scorer that reads the rollout engine (its registration says so) needs the vLLM one."""
    from igsearch.scoring import scorer_reads

    kind = config.scoring.scorer
    if "engine" in scorer_reads(kind) and config.generation.engine != "vllm":
        return f"scoring.scorer={kind} scores on the vLLM rollout engine, but generation.engine={config.generation.engine!r}"
    return None
