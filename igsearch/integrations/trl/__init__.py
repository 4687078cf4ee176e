"""IG-Search on TRL: a plug-in for TRL's ``GRPOTrainer`` (tested with trl 1.16.0, ``SUPPORTED_TRL``).

Install with ``pip install 'igsearch[trl]'`` (``make install`` does). What it provides:

- :class:`IGSearchGRPOTrainer` (``trainer.py``): a ``trl.GRPOTrainer`` whose rollouts come from our
  token-level :class:`igsearch.rollout.agent.SearchAgent` through TRL's ``rollout_func``, with the
  injected documents kept out of the loss through ``env_mask``, and whose advantages are replaced by
  our estimator registry's (B, T) per-token advantages (method ``ig``: GRPO + step IG on the query
  spans; ``grpo``; any registered method).
- :class:`SearchRollout` (``rollout.py``): that ``rollout_func`` on its own.
- :class:`ExactMatchReward` (``reward.py``): the EM reward as a TRL reward function.
- :func:`build_ig_search_trainer` / :func:`grpo_config` (``build.py``): the trainer from a model folder and
  a world (or question file), with TRL settings equivalent to our own trainer's (fp32, no gradient
  checkpointing, our optimizer and learning-rate schedule, the matching ``loss_type``).

Data flow and what is and is not supported: docs/trl.md.
"""

from __future__ import annotations

try:
    import trl as _trl
except ImportError:  # trl missing (or blocked): one clear line, no chain of internals
    _trl = None
if _trl is None:
    raise ImportError("igsearch.integrations.trl needs TRL (tested with 1.16.0): pip install 'igsearch[trl]'") from None

import warnings as _warnings

SUPPORTED_TRL = ("1.16.0",)
if getattr(_trl, "__version__", None) not in SUPPORTED_TRL:  # pragma: no cover - depends on the install
    _warnings.warn(f"igsearch.integrations.trl is tested with trl {', '.join(SUPPORTED_TRL)}; found "
                   f"{getattr(_trl, '__version__', '?')}", stacklevel=2)

from .advantages import token_advantages  # noqa: E402
from .build import build_ig_search_trainer, grpo_config, qa_dataset, trl_loss_type  # noqa: E402
from .reward import ExactMatchReward  # noqa: E402
from .rollout import RolloutRecord, SearchRollout  # noqa: E402
from .steps import score_steps  # noqa: E402
from .trainer import IGSearchBatch, IGSearchGRPOTrainer  # noqa: E402

__all__ = ["ExactMatchReward", "IGSearchBatch", "IGSearchGRPOTrainer", "RolloutRecord", "SUPPORTED_TRL",
           "SearchRollout", "build_ig_search_trainer", "grpo_config", "qa_dataset", "score_steps",
           "token_advantages", "trl_loss_type"]
