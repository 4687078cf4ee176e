"""IG-Search settings inside a verl run: the ``algorithm.ig`` group (``+algorithm.ig.beta=0.5`` ...).

The group holds the fields of igsearch's ``ig`` section (``IGConfig``: beta, clip, norm, span_weight,
n_random, head_tokens, head_weight, max_gold_variants) and the gold's side of the ``scoring`` section
(``ScoringConfig``: answer_tokens, max_context_tokens), under the same names and with the same
defaults (one source of truth), plus verl's own ``seed`` and ``dump_dir``. Unknown keys are refused with
the key named, so a typo does not silently train with a default.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import igsearch.methods  # noqa: F401  (registers the ig estimator read by advantage_config)
from igsearch.algo.advantages import AdvantageConfig
from igsearch.ig.config import IGConfig
from igsearch.scoring.config import ScoringConfig

_IG = IGConfig()
_SCORING = ScoringConfig()
#: the ``scoring`` fields the group carries (verl scores through its actor workers: no scorer choice)
_SCORING_FIELDS = ("answer_tokens", "max_context_tokens")


@dataclass(frozen=True)
class VerlIGConfig:
    """``algorithm.ig.*``: the step term (beta, clip, norm, span_weight) and how IG is scored."""

    beta: float = _IG.beta
    clip: float | None = _IG.clip
    norm: str = _IG.norm
    span_weight: str = _IG.span_weight
    n_random: int = _IG.n_random
    head_tokens: int = _IG.head_tokens
    head_weight: float = _IG.head_weight
    max_gold_variants: int = _IG.max_gold_variants
    max_context_tokens: int = _SCORING.max_context_tokens
    answer_tokens: str = _SCORING.answer_tokens
    seed: int = 0
    dump_dir: str | None = None  # write each step's rollouts and step IGs here (trainer.dump_step_ig)

    @classmethod
    def from_algorithm(cls, algorithm: Any) -> "VerlIGConfig":
        """Read ``algorithm.ig`` from verl's algorithm config (DictConfig, dict, dataclass or None)."""
        group = _get(algorithm, "ig")
        if group is None:
            return cls()
        given = dict(group.items()) if hasattr(group, "items") else dict(vars(group))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ValueError(f"algorithm.ig.{unknown[0]}: unknown IG setting (known: {', '.join(sorted(known))})")
        cfg = cls(**given)
        adv = cfg.advantage_config("std")
        adv.validate("algorithm.ig")
        adv.options.validate("algorithm.ig")
        cfg.scoring_config().validate("algorithm.ig")
        return cfg

    def advantage_config(self, scale: str) -> AdvantageConfig:
        """igsearch's ``AdvantageConfig`` for the ``ig`` estimator with these settings."""
        return AdvantageConfig(method="ig", adv_scale=scale).with_options(self.ig_config())

    def ig_config(self) -> IGConfig:
        """These settings as igsearch's ``ig`` section."""
        return IGConfig(**{f.name: getattr(self, f.name) for f in fields(IGConfig)})

    def scoring_config(self) -> ScoringConfig:
        """These settings as igsearch's ``scoring`` section (its default scorer: verl scores through its actors)."""
        return ScoringConfig(**{name: getattr(self, name) for name in _SCORING_FIELDS})

    def ig_options(self) -> dict:
        """Keyword options of ``information_gain_of_rollouts``."""
        return {**self.ig_config().scoring_options(self.scoring_config()), "seed": self.seed}


def _get(obj: Any, key: str) -> Any:
    if obj is None:
        return None
    if hasattr(obj, "get"):
        try:
            return obj.get(key)
        except TypeError:
            pass
    return getattr(obj, key, None)
