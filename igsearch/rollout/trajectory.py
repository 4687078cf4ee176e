"""The record of one multi-turn search rollout, with token spans for every search step."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StepSpans:
    """Token spans of one search step inside ``Trajectory.response_ids`` (end exclusive).

    ``query`` covers ``<search> ... </search>`` (written by the policy), ``documents`` covers the
    injected ``\\n<documents> ... </documents>\\n`` (loss mask 0), ``refine`` covers
    ``<refine> ... </refine>`` when the policy wrote one after these documents, else ``None``.
    """

    query: tuple[int, int]
    documents: tuple[int, int]
    refine: tuple[int, int] | None = None
    query_text: str = ""


@dataclass
class Trajectory:
    """One rollout: the prompt, the response tokens and what each token is.

    ``response_ids`` holds everything after the prompt: tokens the policy sampled and the document
    tokens the environment injected. ``loss_mask[k]`` is 1 when token k was written by the policy
    and 0 when it was injected. ``rollout_logprobs[k]`` is the sampling log-prob of token k under
    the policy that generated it (pi_old; 0.0 for injected tokens). All three have the same length.
    """

    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    rollout_logprobs: list[float] = field(default_factory=list)
    steps: list[StepSpans] = field(default_factory=list)
    prompt_text: str = ""
    response_text: str = ""
    answer: str | None = None
    #: "answer" | "max_turns" | "max_tokens" | "malformed: <why>"
    finish_reason: str = ""
    question_index: int = -1
    golds: list[str] = field(default_factory=list)
    data_source: str = ""

    @property
    def text(self) -> str:
        """The full text (prompt + response), as IG parses it."""
        return self.prompt_text + self.response_text

    @property
    def token_ids(self) -> list[int]:
        """The tokens the policy read and wrote: ``prompt_ids + response_ids`` (IG's trunk)."""
        return list(self.prompt_ids) + list(self.response_ids)

    @property
    def n_steps(self) -> int:
        return len(self.steps)

    def turn_spans(self) -> list[tuple[int, int]]:
        """(start, end) of each turn in ``response_ids``: the stretches between injected documents.

        Turn k < S (S = number of steps) runs from the end of step k-1's documents (0 for k = 0) to
        the start of step k's documents, so it holds step k-1's refine and step k's query. A last
        turn, after the last documents, exists when the response goes on past them (the answer).
        """
        spans, start = [], 0
        for s in self.steps:
            spans.append((start, s.documents[0]))
            start = s.documents[1]
        if start < len(self.response_ids) or not self.steps:
            spans.append((start, len(self.response_ids)))
        return spans

    @property
    def malformed(self) -> bool:
        return self.finish_reason.startswith("malformed")

    def check(self) -> None:
        """Raise ValueError when the per-token lists disagree in length or a span is out of range."""
        n = len(self.response_ids)
        if len(self.loss_mask) != n or len(self.rollout_logprobs) != n:
            raise ValueError(
                f"trajectory lists disagree: {n} response ids, {len(self.loss_mask)} mask entries, "
                f"{len(self.rollout_logprobs)} log-probs"
            )
        for t, step in enumerate(self.steps):
            for name in ("query", "documents", "refine"):
                span = getattr(step, name)
                if span is not None and not (0 <= span[0] <= span[1] <= n):
                    raise ValueError(f"step {t} {name} span {span} is outside [0, {n}]")
