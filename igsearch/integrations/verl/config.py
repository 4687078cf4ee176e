"""IG-Search settings inside a verl run: the ``algorithm.ig`` group (``+algorithm.ig.beta=0.5`` ...).

Every field defaults to igsearch's own default (``IGConfig``, one source of truth); the group only
renames them without the ``ig_`` prefix. Unknown keys are refused with the
key named, so a typo does not silently train with a default.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import igsearch.methods  # noqa: F401  (registers the ig estimator read by advantage_config)
from igsearch.algo.advantages import AdvantageConfig
from igsearch.config_fields import check_choice
from igsearch.ig.config import IGConfig
from igsearch.ig.context import ANSWER_TOKENIZATIONS

_IG = IGConfig()


@dataclass(frozen=True)
class VerlIGConfig:
    """``algorithm.ig.*``: the step term (beta, clip, norm, span_weight) and how IG is scored."""

    beta: float = _IG.ig_beta
    clip: float | None = _IG.ig_clip
    norm: str = _IG.ig_norm
    span_weight: str = _IG.span_weight
    n_random: int = _IG.ig_n_random
    head_tokens: int = _IG.ig_head_tokens
    head_weight: float = _IG.ig_head_weight
    max_gold_variants: int = _IG.ig_max_gold_variants
    max_context_tokens: int = _IG.ig_max_context_tokens
    answer_tokens: str = _IG.ig_answer_tokens
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
        check_choice("algorithm.ig", "answer_tokens", cfg.answer_tokens, ANSWER_TOKENIZATIONS)
        return cfg

    def advantage_config(self, scale: str) -> AdvantageConfig:
        """igsearch's ``AdvantageConfig`` for the ``ig`` estimator with these settings."""
        return AdvantageConfig(method="ig", adv_scale=scale).with_options(self.ig_config())

    def ig_config(self) -> IGConfig:
        """These settings as igsearch's ``ig`` section."""
        return IGConfig(ig_beta=self.beta, ig_clip=self.clip, ig_norm=self.norm, span_weight=self.span_weight,
                        ig_n_random=self.n_random, ig_head_tokens=self.head_tokens, ig_head_weight=self.head_weight,
                        ig_max_gold_variants=self.max_gold_variants, ig_max_context_tokens=self.max_context_tokens,
                        ig_answer_tokens=self.answer_tokens)

    def ig_options(self) -> dict:
        """Keyword options of ``information_gain_of_rollouts``."""
        return {**self.ig_config().scoring_options(), "seed": self.seed}


def _get(obj: Any, key: str) -> Any:
    if obj is None:
        return None
    if hasattr(obj, "get"):
        try:
            return obj.get(key)
        except TypeError:
            pass
    return getattr(obj, key, None)
