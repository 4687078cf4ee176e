"""The ``scoring`` section of the run config: how any method's step scorers score a continuation (the
gold answer after a context) under the policy. IG-Search's ``step_ig`` and IGPO's ``turn_gain`` read it;
a method of your own that scores continuations reads it too (``ScoringBatch.continuation_scorer()``)."""

from __future__ import annotations

from dataclasses import dataclass

from igsearch.config_fields import check_choice, check_range, config_field

#: How the gold answer meets the context. ``as_written``: the context ends at ``<answer>`` and the
#: gold is tokenized as the policy writes it there, leading space included (" Paris", one token in a
#: byte-level BPE). ``separate``: the published pipeline's ``"<answer> "`` + ``tokenize("Paris")``,
#: a split (" ", "Paris") that the policy never writes, so its log-prob is far lower: on the tiny
#: policy the final step's IG measured 0.5 +- 1.3 nats that way against 10.0 +- 2.6 as written
#: (studies/results/rl_recipe.md).
ANSWER_TOKENIZATIONS = ("as_written", "separate")


@dataclass
class ScoringConfig:
    """The continuation scorer and how a gold answer is put after a context."""

    scorer: str = config_field(
        "trunk", "Continuation scorer: trunk (reuses the keys/values of the update's forward of the rollouts and "
                 "forwards only the branches; the fastest measured on the CPU) | tree (shared-prefix packing) | "
                 "vllm (the rollout engine, reading its prefix cache) | naive (one sequence each).")
    answer_tokens: str = config_field(
        "as_written", "How the gold answer is scored after each context: as_written (after '<answer>', tokenized as "
                      "the policy writes its answer) | separate (the published pipeline: after '<answer> ', the gold "
                      "tokenized on its own, a split the policy never writes).")
    max_context_tokens: int = config_field(4096, "Scoring contexts are truncated from the left to this many tokens.")

    def validate(self, where: str = "scoring") -> "ScoringConfig":
        from igsearch.scoring.base import list_scorers

        check_choice(where, "scorer", self.scorer, list_scorers())
        check_choice(where, "answer_tokens", self.answer_tokens, ANSWER_TOKENIZATIONS)
        check_range(where, "max_context_tokens", self.max_context_tokens, low=1)
        return self
