"""The ``ig`` section of the run config: IG-Search's own knobs, registered with its estimator by
``igsearch.methods.ig`` like any method's section. How the step term enters the advantage
(docs/DESIGN.md section 4: ``beta``, ``norm``, ``clip``, ``span_weight``) and how step IG is drawn
(section 3: ``n_random`` counterfactuals, the gold tokens' weights). Which continuation scorer runs and
how the gold meets a context is the run-level ``scoring`` section (``igsearch.scoring.config``), shared
with every method that scores continuations."""

from __future__ import annotations

from dataclasses import dataclass

from igsearch.config_fields import check_choice, check_range, config_field

#: the choices of IGConfig.norm and .span_weight
IG_NORMS = ("group", "batch", "none")
SPAN_WEIGHTS = ("uniform", "inverse_length")


@dataclass
class IGConfig:
    """IG-Search's settings: the step term of the advantage (``beta`` ... ``span_weight``), then how the
    ``step_ig`` scorer draws and weights (``n_random`` ... ``max_gold_variants``)."""

    beta: float = config_field(0.5, "Weight of the normalised step IG added to the query-span tokens' advantage "
                                    "(default measured by studies/ig_coefficients.py).")
    norm: str = config_field("group", "Step-IG normalisation: group (z-score per group) | batch (z-score per batch) "
                                      "| none.")
    clip: float | None = config_field(2.0, "c: normalised step IG is clipped to [-c, c]; none disables clipping "
                                           "(default measured by studies/ig_coefficients.py).")
    span_weight: str = config_field("uniform", "Weight of a query-span token: uniform (1) | inverse_length (1 / |span|).")

    n_random: int = config_field(3, "Counterfactual (documents, refine) pairs drawn per step.")
    head_tokens: int = config_field(3, "Number of leading gold-answer tokens weighted by head_weight.")
    head_weight: float = config_field(3.0, "Weight of the leading gold-answer tokens before normalising the "
                                           "weights to mean 1.")
    max_gold_variants: int = config_field(1, "Gold answer variants scored per question (the best real score is kept).")

    def validate(self, where: str = "ig") -> "IGConfig":
        check_choice(where, "norm", self.norm, IG_NORMS)
        check_choice(where, "span_weight", self.span_weight, SPAN_WEIGHTS)
        if self.clip is not None:
            check_range(where, "clip", self.clip, low=0, low_open=True)
        for name in ("n_random", "max_gold_variants"):
            check_range(where, name, getattr(self, name), low=1)
        check_range(where, "head_tokens", self.head_tokens, low=0)
        check_range(where, "head_weight", self.head_weight, low=0, low_open=True)
        return self

    def scoring_options(self, scoring) -> dict:
        """These settings and the run's ``scoring`` section (``igsearch.scoring.config.ScoringConfig``) as the
        keyword options of ``igsearch.ig.information_gain_of_trajectories`` (and ``compute_information_gain``):
        the one place their field names map to the function's."""
        return dict(n_random=self.n_random, head_tokens=self.head_tokens, head_weight=self.head_weight,
                    max_gold_variants=self.max_gold_variants, max_context_tokens=scoring.max_context_tokens,
                    answer_tokens=scoring.answer_tokens)


def ig_draw_seed(run_seed: int, step: int) -> int:
    """Seed of the counterfactual draws of training step ``step`` in a run seeded ``run_seed``: a pure
    function of the two, so a resumed run draws the same documents (our trainer and verl's alike)."""
    return run_seed * 7919 + step
