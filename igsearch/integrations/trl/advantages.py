"""Our estimator registry's advantages in the (B, T) form TRL's loss takes.

TRL's ``GRPOTrainer._compute_loss`` multiplies ``inputs["advantages"]`` into the per-token loss and
unsqueezes it only when it is 1-D, so a (B, T) tensor (T = the padded completion width) is used as
per-token advantages as is. This is the arithmetic of our own trainer and of the verl integration,
unchanged: an :class:`igsearch.algo.advantages.AdvantageInput` from the trajectories (groups =
``question_index``, query spans and turn spans from the step record), the registered estimator
(:func:`compute_advantages`) and :func:`per_token_advantages`:

    A[i, k] = seq_adv[i] + beta * (sum of the span values covering k)      (response-token coordinates)

For ``ig``: seq_adv = the group-normalised reward, spans = each scored step's query tokens with the
normalised, clipped step IG, span scale = ``ig.beta``. TRL's response coordinates are ours (completion token
k = response token k), so no shift is needed; TRL applies its mask (completion mask x env_mask) itself.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from igsearch.algo.advantages import (AdvantageConfig, AdvantageInput, AdvantageOutput, compute_advantages,
                                      per_token_advantages)
from igsearch.rollout.trajectory import Trajectory


def token_advantages(trajectories: Sequence[Trajectory], rewards: Sequence[float],
                     scores: Mapping[str, Sequence] | None, config: AdvantageConfig,
                     width: int) -> tuple[AdvantageOutput, torch.Tensor]:
    """The estimator ``config.method``'s output and its per-token advantages, float32 [B, width].

    ``rewards[i]``: R of trajectory i; ``scores``: the step scorers' values (``scores["step_ig"]`` ...);
    ``config``: the ``advantage`` section carrying the method's options (``with_options``); ``width``:
    TRL's completion width T (>= every response length). Not masked.
    """
    longest = max((len(t.response_ids) for t in trajectories), default=0)
    if width < longest:
        raise ValueError(f"token_advantages: width {width} is shorter than the longest response ({longest} tokens)")
    inp = AdvantageInput.from_trajectories(list(trajectories), list(rewards), scores)
    out = compute_advantages(inp, config)
    return out, per_token_advantages(out, None, width)
