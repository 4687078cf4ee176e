"""The step scorers an estimator needs, run on a TRL batch of our rollouts.

The same phase as our trainer's ``Trainer.score_steps`` (both call
:func:`igsearch.algo.step_scores.run_step_scorers`), without its reuse of the update's keys/values: one
:class:`igsearch.scoring.Scorer` of kind ``cfg.scoring.scorer`` per batch (trunks = the rollouts' token ids
when the scorer reads trunks, the rollout engine for ``vllm``), every scorer named in ``needs`` run in
eval mode without grad. In several processes every process passes the whole batch's trajectories and
the continuations are scored split over the processes (:class:`igsearch.scoring.ShardedScorer`). IG-Search's ``step_ig`` scores each search step of ``Trajectory.steps`` (the agent's step
record) under ``model`` as it is when called: the rollout weights (pi_old), since TRL generates, and
the integration scores, before any update on the batch.
"""

from __future__ import annotations

from typing import Any, Iterable

from igsearch.algo.step_scores import run_step_scorers
from igsearch.rollout.trajectory import Trajectory
from igsearch.scoring import Scorer, ShardedScorer


def score_steps(needs: Iterable[str], trajectories: list[Trajectory], model, tokenizer, config: Any, step: int,
                *, engine=None, distributed: bool = False) -> tuple[dict[str, list[list]], dict[str, float]]:
    """Run the step scorers ``needs`` on ``trajectories``.

    ``config``: the run's ``TrainConfig`` (scorers read their own sections: ``config.scoring`` ...);
    ``step``: the 1-based training step (seeds the counterfactual draws: ``ig_draw_seed(config.seed, step)``).
    ``distributed``: the processes of the default ``torch.distributed`` group call this together with the same
    ``trajectories`` and split the scoring. Returns ``scores[name][i]`` (one value per step or turn of rollout
    i, None where there is none) and the metrics ``<name>/<key>`` plus ``time/score/<name>``.
    """
    names = sorted(needs)
    if not names:
        return {}, {}
    kind = ShardedScorer if distributed else Scorer
    scorer = kind(config.scoring.scorer, model, engine=engine)
    if "trunks" in scorer.reads:
        scorer.trunks = [t.token_ids for t in trajectories]
    return run_step_scorers(names, trajectories, model, tokenizer, config, step, scorer)
