"""IG-Search on verl: importing this module registers everything verl needs, without a fork.

Supported: verl 0.9.1 (the version tested; see ``SUPPORTED_VERL``). verl >= 0.9 imports it on its own
through the ``verl.plugins`` entry point declared in igsearch's pyproject.toml; older verl needs
``VERL_USE_EXTERNAL_MODULES=igsearch.integrations.verl``. Nothing else in igsearch imports this
module, and it needs verl's own environment (``make verl-env``: verl pins transformers < 5.11).

Registered:
- the ``ig_search`` advantage estimator (``algorithm.adv_estimator=ig_search``; ``estimator.py``),
- the ``igsearch_agent`` agent loop (``agent_loop.py``),
- the ``verl_actor`` continuation scorer, which scores IG requests through the actor workers'
  ``compute_log_prob`` (``ig_batch.py``; through TransferQueue in verl's v1 trainers: ``tq_batch.py``),
- the ``igsearch_sync`` v1 trainer (``trainer.v1.trainer_mode=igsearch_sync``; ``trainer.py``): verl's
  synchronous trainer that scores IG after the old log-probs and hands it to ``ig_search``.
With ``IGSEARCH_VERL_CPU=1`` importing it first installs the CPU seams of ``cpu.py`` (a ``cpu`` platform,
gloo, the FSDP engines for cpu and the ``igsearch_hf`` rollout), so verl's ``main_ppo`` runs on the CPU.
The reward function is ``reward.compute_score`` (``reward.custom_reward_function.path`` points at
``reward.py``). The data flow through verl, step by step: docs/verl.md.
"""

from __future__ import annotations

try:
    import verl  # noqa: F401
except ImportError as exc:  # pragma: no cover - only outside the verl environment
    raise ImportError("igsearch.integrations.verl needs verl (tested with 0.9.1): build its environment "
                      "with `make verl-env`") from exc

from . import cpu as _cpu

if _cpu.enabled():  # IGSEARCH_VERL_CPU=1: the CPU seams (cpu.py), before anything resolves verl's platform
    _cpu.install()

from .agent_loop import IGSearchAgentLoop
from .config import VerlIGConfig
from .estimator import compute_ig_search_advantage, ig_search_advantages
from .ig_batch import step_ig_for_verl_batch
from .reward import compute_score
from .trainer import IGSearchTrainer

SUPPORTED_VERL = ("0.9.1",)

__all__ = ["IGSearchAgentLoop", "IGSearchTrainer", "SUPPORTED_VERL", "VerlIGConfig", "compute_ig_search_advantage", "compute_score",
           "ig_search_advantages", "step_ig_for_verl_batch"]
