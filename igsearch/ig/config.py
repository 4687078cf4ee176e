"""The ``ig`` section of the run config: IG-Search's own settings. How step information gain is scored
(docs/DESIGN.md section 3; IGPO's turn gains share these) and how the ``ig`` estimator
(``igsearch.methods.ig``) adds it to the advantage (section 4)."""

from __future__ import annotations

from dataclasses import dataclass

from igsearch.config_fields import check_choice, check_range, config_field

#: the choices of IGConfig.ig_norm and .span_weight
IG_NORMS = ("group", "batch", "none")
SPAN_WEIGHTS = ("uniform", "inverse_length")


@dataclass
class IGConfig:
    """IG-Search's settings: the step term of the advantage (``ig_beta`` ... ``span_weight``), then how the
    ``step_ig`` scorer runs ``information_gain_of_trajectories``."""

    ig_beta: float = config_field(0.5, "beta: weight of the normalised step IG added to the query-span tokens' "
                                       "advantage (default measured by studies/ig_coefficients.py).")
    ig_norm: str = config_field("group", "Step-IG normalisation: group (z-score per group) | batch (z-score per "
                                         "batch) | none.")
    ig_clip: float | None = config_field(2.0, "c: normalised step IG is clipped to [-c, c]; none disables clipping "
                                              "(default measured by studies/ig_coefficients.py).")
    span_weight: str = config_field("uniform", "Weight of a query-span token: uniform (1) | inverse_length (1 / |span|).")

    ig_n_random: int = config_field(3, "Counterfactual (documents, refine) pairs drawn per step.")
    ig_head_tokens: int = config_field(3, "Number of leading gold-answer tokens weighted by ig_head_weight.")
    ig_head_weight: float = config_field(3.0, "Weight of the leading gold-answer tokens before normalising the "
                                              "weights to mean 1.")
    ig_max_gold_variants: int = config_field(1, "Gold answer variants scored per question (the best real score "
                                                "is kept).")
    ig_max_context_tokens: int = config_field(4096, "Scoring contexts are truncated from the left to this many "
                                                    "tokens.")
    ig_answer_tokens: str = config_field(
        "as_written", "How the gold answer is scored after each context: as_written (after '<answer>', tokenized as "
                      "the policy writes its answer) | separate (the published pipeline: after '<answer> ', the gold "
                      "tokenized on its own, a split the policy never writes).")
    ig_scorer: str = config_field(
        "trunk", "Continuation scorer for IG: trunk (reuses the keys/values of the update's forward of the rollouts "
                 "and forwards only the branches; the fastest measured on the CPU) | tree (shared-prefix packing) | "
                 "vllm (the rollout engine, reading its prefix cache) | naive (one sequence each).")

    def validate(self, where: str = "ig") -> "IGConfig":
        from igsearch.ig.context import ANSWER_TOKENIZATIONS
        from igsearch.scoring import list_scorers

        check_choice(where, "ig_norm", self.ig_norm, IG_NORMS)
        check_choice(where, "span_weight", self.span_weight, SPAN_WEIGHTS)
        if self.ig_clip is not None:
            check_range(where, "ig_clip", self.ig_clip, low=0, low_open=True)
        for name in ("ig_n_random", "ig_max_gold_variants", "ig_max_context_tokens"):
            check_range(where, name, getattr(self, name), low=1)
        check_range(where, "ig_head_tokens", self.ig_head_tokens, low=0)
        check_range(where, "ig_head_weight", self.ig_head_weight, low=0, low_open=True)
        check_choice(where, "ig_scorer", self.ig_scorer, list_scorers())
        check_choice(where, "ig_answer_tokens", self.ig_answer_tokens, ANSWER_TOKENIZATIONS)
        return self

    def scoring_options(self) -> dict:
        """These settings as the keyword options of ``igsearch.ig.information_gain_of_trajectories`` (and
        ``compute_information_gain``): the one place their field names map to the function's."""
        return dict(n_random=self.ig_n_random, head_tokens=self.ig_head_tokens, head_weight=self.ig_head_weight,
                    max_gold_variants=self.ig_max_gold_variants, max_context_tokens=self.ig_max_context_tokens,
                    answer_tokens=self.ig_answer_tokens)


def ig_draw_seed(run_seed: int, step: int) -> int:
    """Seed of the counterfactual draws of training step ``step`` in a run seeded ``run_seed``: a pure
    function of the two, so a resumed run draws the same documents (our trainer and verl's alike)."""
    return run_seed * 7919 + step
