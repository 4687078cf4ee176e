"""The scoring interface: score continuations under contexts with a causal LM.

A :class:`ScoreRequest` is one (context ids, continuation ids, per-token weights) triple. A scorer
returns, for every request, the log-probability of each continuation token given the context and
the continuation tokens before it, and their weighted mean ``sum(lp * w) / len(continuation)``
(weights as given; no normalisation happens here). Every scorer forwards the sequence
``context + continuation[:-1]``: the last continuation token is a target, never an input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch


@dataclass
class ScoreRequest:
    """One sequence to score: ``continuation_ids`` after ``context_ids``.

    ``weights`` has one float per continuation token; ``None`` means all ones.
    """

    context_ids: Sequence[int]
    continuation_ids: Sequence[int]
    weights: Sequence[float] | None = None

    def validate(self, index: int) -> None:
        """Raise ValueError (naming request ``index``) if the request cannot be scored."""
        if len(self.context_ids) == 0:
            raise ValueError(f"score request {index}: empty context (nothing predicts the first token)")
        if len(self.continuation_ids) == 0:
            raise ValueError(f"score request {index}: empty continuation (nothing to score)")
        if self.weights is not None and len(self.weights) != len(self.continuation_ids):
            raise ValueError(
                f"score request {index}: {len(self.weights)} weights for "
                f"{len(self.continuation_ids)} continuation tokens"
            )

    @property
    def input_ids(self) -> list[int]:
        """The tokens a scorer forwards: ``context + continuation[:-1]``."""
        return [int(t) for t in self.context_ids] + [int(t) for t in self.continuation_ids[:-1]]


@dataclass
class ScoreResult:
    """Scores of one request: ``token_logprobs`` float32 [len(continuation)], and the weighted mean."""

    token_logprobs: torch.Tensor
    weighted_mean: float


@dataclass
class ScoreOutput:
    """Results in request order plus what the scorer cost.

    ``tokens_forwarded``: real (non-pad) tokens that went through the transformer, shared tokens
    counted once per forward they appear in; ``padded_tokens``: slots including padding (naive);
    ``n_sequences``: requests; ``n_forwards``: model forward calls.
    """

    results: list[ScoreResult]
    tokens_forwarded: int = 0
    padded_tokens: int = 0
    n_sequences: int = 0
    n_forwards: int = 0
    extra: dict = field(default_factory=dict)

    def stats(self) -> dict:
        return {
            "tokens_forwarded": self.tokens_forwarded,
            "padded_tokens": self.padded_tokens,
            "n_sequences": self.n_sequences,
            "n_forwards": self.n_forwards,
            **self.extra,
        }


def finish_result(request: ScoreRequest, token_logprobs: torch.Tensor) -> ScoreResult:
    """Wrap per-token log-probs [n] (any float dtype) into a ScoreResult with the weighted mean."""
    lp = token_logprobs.detach().to(torch.float32).cpu()
    if request.weights is None:
        w = torch.ones_like(lp)
    else:
        w = torch.as_tensor(list(request.weights), dtype=torch.float32)
    return ScoreResult(token_logprobs=lp, weighted_mean=float((lp * w).sum() / lp.numel()))


ScorerFn = Callable[..., ScoreOutput]

_SCORERS: dict[str, ScorerFn] = {}
_READS: dict[str, frozenset[str]] = {}

#: what a scorer may declare it reads besides the requests and the model (see :class:`Scorer`)
SCORER_INPUTS = frozenset({"trunks", "trunk_of", "engine"})


def register_scorer(name: str, *, reads: Sequence[str] = ()) -> Callable[[ScorerFn], ScorerFn]:
    """Decorator: make ``fn(requests, model, **options) -> ScoreOutput`` available as ``name``.

    ``reads``: the keyword inputs of :data:`SCORER_INPUTS` the scorer needs beyond the requests and the
    model (the trunk scorer: ``trunks`` and ``trunk_of``; the vLLM scorer: ``engine``); a
    :class:`Scorer` hands it exactly those. The scorer modules register themselves;
    ``igsearch.scoring`` imports them (this module imports none of them, so there is no import cycle)."""
    unknown = set(reads) - SCORER_INPUTS
    if unknown:
        raise ValueError(f"scorer {name!r}: unknown inputs {sorted(unknown)}; known: {sorted(SCORER_INPUTS)}")

    def decorator(fn: ScorerFn) -> ScorerFn:
        _SCORERS[name] = fn
        _READS[name] = frozenset(reads)
        return fn

    return decorator


def list_scorers() -> list[str]:
    return sorted(_SCORERS)


def get_scorer(name: str) -> ScorerFn:
    """The scorer function called ``name`` (``"naive"``, ``"tree"``, ``"trunk"``, ``"vllm"``, or a plug-in's)."""
    try:
        return _SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown scorer {name!r}; known: {sorted(_SCORERS)}") from None


def scorer_reads(name: str) -> frozenset[str]:
    """The inputs the scorer ``name`` declared in ``register_scorer(reads=...)``."""
    get_scorer(name)
    return _READS[name]


@dataclass
class Scorer:
    """One continuation scorer bound to what it reads, built once per batch and handed to whoever
    scores (IG-Search's ``step_ig``, IGPO's ``turn_gain``, a plug-in's scorer): ``scorer.score(requests)``.

    ``kind``: a registered scorer name. ``model``: the causal LM under which it scores (a remote one for
    verl's actor scorer; unused by ``vllm``). ``trunks``: trunk i = rollout i, as token ids or an
    ``igsearch.scoring.TrunkKV`` computed under ``model`` (read by scorers that declare ``trunks``).
    ``engine``: the rollout engine (read by ``vllm``). ``options``: further keyword options of the
    scorer (``max_tokens_per_forward``, ...).
    """

    kind: str
    model: Any = None
    trunks: Any = None
    engine: Any = None
    options: dict = field(default_factory=dict)

    @property
    def reads(self) -> frozenset[str]:
        return scorer_reads(self.kind)

    def score(self, requests: Sequence[ScoreRequest], *, trunk_of: Sequence[int] | None = None) -> ScoreOutput:
        """Score ``requests`` (see :func:`score`). ``trunk_of[r]``: the trunk (rollout) request r continues,
        -1 for none; read only by scorers that declared ``trunk_of``."""
        given = {"trunks": self.trunks, "trunk_of": trunk_of, "engine": self.engine}
        missing = sorted(k for k in self.reads if given[k] is None)
        if missing:
            raise ValueError(f"scorer {self.kind!r} needs {', '.join(missing)}; the Scorer was built without")
        return score(requests, self.model, scorer=self.kind, **{k: given[k] for k in self.reads}, **self.options)


def score(requests: Sequence[ScoreRequest], model, scorer: str = "tree", **options) -> ScoreOutput:
    """Score ``requests`` under ``model`` (an HF causal LM) with the named scorer.

    ``options`` go to the scorer (naive: ``max_batch_tokens``, ``max_batch_size``; tree:
    ``max_tokens_per_forward``, ``fast_path``). Runs under ``torch.inference_mode``.
    """
    for i, r in enumerate(requests):
        r.validate(i)
    fn = get_scorer(scorer)
    with torch.inference_mode():
        return fn(list(requests), model, **options)
