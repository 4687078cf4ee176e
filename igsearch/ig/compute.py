"""compute_information_gain: per-step IG of docs/DESIGN.md section 3 over a batch of rollouts.

For step t of rollout i with gold variant a:
    s(a | C) = sum_k lp_k * w_k / n,  w = [head_weight] * head_tokens + [1] * (n - head_tokens),
               divided by its mean; lp_k = log p(a_k | C, a_<k) under the model
    IG_t     = s(a* | C_t) - mean_j s(a* | C_t(x_j)),  a* = the variant with the best real score
Context ids come from the rollout's token record when it has one (our agent's:
``information_gain_of_trajectories``, ``igsearch.ig.context.build_context_ids``), else from tokenising
the text context (``compute_information_gain``, no special tokens); the answer ids are the gold as the
policy writes it after ``<answer>`` (``answer_tokens="as_written"``, the default) or, as in the published
pipeline, the gold alone after ``"<answer> "`` (``"separate"``). The context is cut from the left to
``max_context_tokens``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Sequence

from igsearch.scoring import ScoreRequest, Scorer, scorer_reads

from .context import answer_cue, build_context, build_context_ids, encode_text, gold_token_ids
from .parse import ASSISTANT_MARKER, ParsedRollout, Step, parse_rollout
from .record import rollout_from_trajectory
from .pool import Entry, build_pool, check_draws, draw_counterfactuals


@dataclass
class IGResult:
    """IG of a batch. Per rollout i and step k (k-th ``<documents>`` block, = Trajectory.steps[k]):

    - ``step_ig[i][k]``: IG, or None for a step without IG (documents < 10 characters).
    - ``rollout_ig[i]``: mean of the rollout's non-None step IGs; None if there are none.
    - ``real_scores[i][k]``: s(a* | real context); ``random_scores[i][k]``: s(a* | C(x_j)) per draw.
    - ``best_variant[i][k]``: index of a* among the gold variants used.
    - ``draws_used[i][k]``: the (rollout, step) pool entries used; pass as ``draws`` to reproduce.
    - ``steps[i]``: the parsed steps; ``stats``: batch summary and scorer cost.
    """

    step_ig: list[list[float | None]]
    rollout_ig: list[float | None]
    real_scores: list[list[float | None]]
    random_scores: list[list[list[float] | None]]
    best_variant: list[list[int | None]]
    draws_used: list[list[list[Entry] | None]]
    steps: list[list[Step]]
    stats: dict = field(default_factory=dict)


def answer_weights(n: int, head_tokens: int, head_weight: float) -> list[float]:
    """Per-token weights of an n-token answer: head_weight on the first head_tokens, 1 after, / mean."""
    w = [head_weight if k < head_tokens else 1.0 for k in range(n)]
    mean = sum(w) / n
    return [x / mean for x in w]


def _load(model, tokenizer):
    if isinstance(model, (str, os.PathLike)):
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model, attn_implementation="sdpa")
    if isinstance(tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    return model, tokenizer


#: gold answers longer than this many tokens are not scored (their steps get no IG): scoring cost
#: and memory grow with the answer length, and no short-answer QA gold is anywhere near it
MAX_ANSWER_TOKENS = 64


def _gold_ids(golds, tokenizer, max_variants: int, n_texts: int, max_tokens: int,
              answer_tokens: str = "as_written") -> list[list[list[int]]]:
    """Token ids of the first ``max_variants`` gold variants of each rollout (as they follow the
    answer cue of ``answer_tokens``), those longer than ``max_tokens`` left out (a rollout may end
    up with none)."""
    if len(golds) != n_texts:
        raise ValueError(f"golds has {len(golds)} entries, texts has {n_texts}")
    if max_variants < 1:
        raise ValueError(f"max_gold_variants must be >= 1, got {max_variants}")
    out = []
    for i, g in enumerate(golds):
        variants = [g] if isinstance(g, str) else list(g)
        if not variants:
            raise ValueError(f"rollout {i}: no gold answer variants")
        ids = []
        for v in variants[:max_variants]:
            toks = gold_token_ids(tokenizer, str(v), answer_tokens)
            if not toks:
                raise ValueError(f"rollout {i}: gold variant {v!r} tokenizes to no tokens")
            if len(toks) <= max_tokens:
                ids.append(toks)
        out.append(ids)
    return out


def _stats(step_ig, real, rand_means, cost: dict, scorer: str, seconds: float) -> dict:
    igs = [x for row in step_ig for x in row if x is not None]
    n = len(igs)
    mean = sum(igs) / n if n else None
    std = math.sqrt(sum((x - mean) ** 2 for x in igs) / n) if n else None
    return {
        "ig_mean": mean,
        "ig_std": std,
        "ig_pos_frac": sum(x > 0 for x in igs) / n if n else None,
        "real_mean": sum(real) / len(real) if real else None,
        "baseline_mean": sum(rand_means) / len(rand_means) if rand_means else None,
        "n_steps_scored": n,
        "n_steps_total": sum(len(row) for row in step_ig),
        "scorer": scorer,
        "seconds": seconds,
        "tokens_forwarded": cost.get("tokens_forwarded", 0),
        "padded_tokens": cost.get("padded_tokens", 0),
        "n_sequences": cost.get("n_sequences", 0),
        "n_forwards": cost.get("n_forwards", 0),
        **{k: cost[k] for k in ("branch_floor_tokens", "cached_tokens", "trunk_tokens", "trunk_seconds") if k in cost},
    }


def compute_information_gain(
    texts: Sequence[str],
    golds: Sequence[Sequence[str] | str],
    model,
    tokenizer,
    *,
    prompt_texts: Sequence[str] | None = None,
    assistant_marker: str = ASSISTANT_MARKER,
    **options,
) -> IGResult:
    """Per-step IG of every rollout in ``texts`` (prompt + response). See the module docstring.

    The text adapter: steps are found by ``parse_rollout`` (the rules of docs/DESIGN.md section 3).
    Rollouts from our own agent carry their steps as token spans; ``information_gain_of_trajectories``
    uses that record instead, and agrees with this function on the same rollouts.

    ``golds[i]``: the gold variants of rollout i (a string counts as one). ``prompt_texts``: the
    prompt of each rollout, for chat templates without ``assistant_marker``. ``model`` and
    ``tokenizer`` may be paths. ``options`` are those of ``information_gain_of_rollouts`` (n_random,
    head_tokens, head_weight, max_gold_variants, max_context_tokens, draws, seed, scorer,
    scorer_options). Raises ValueError for a text without an assistant turn or a gold that
    tokenizes to nothing.
    """
    t0 = time.perf_counter()
    if prompt_texts is not None and len(prompt_texts) != len(texts):
        raise ValueError(f"prompt_texts has {len(prompt_texts)} entries, texts has {len(texts)}")
    model, tokenizer = _load(model, tokenizer)
    rollouts: list[ParsedRollout] = [
        parse_rollout(t, None if prompt_texts is None else prompt_texts[i], assistant_marker, f"rollout {i}: ")
        for i, t in enumerate(texts)
    ]
    if _reads_trunks(options.get("scorer")) and options.get("trunks") is None:
        options["trunks"] = [encode_text(tokenizer, t) for t in texts]  # the rollout as the policy reads it
    return information_gain_of_rollouts(rollouts, golds, model, tokenizer, started=t0, **options)


def _reads_trunks(scorer) -> bool:
    """Whether ``scorer`` (a name) reads trunks that the caller left to default; a ``Scorer`` brings its own."""
    return isinstance(scorer, str) and "trunks" in scorer_reads(scorer)


def information_gain_of_trajectories(trajectories, model, tokenizer, **options) -> IGResult:
    """Per-step IG of our agent's rollouts (``igsearch.rollout.trajectory.Trajectory``), with the steps
    taken from their token-span record: step k of the result is ``trajectories[i].steps[k]``.
    ``options`` as for ``compute_information_gain`` (golds are the trajectories' own; with
    ``scorer="trunk"`` the trunks default to the trajectories' own token ids)."""
    t0 = time.perf_counter()
    rollouts = [rollout_from_trajectory(t, tokenizer) for t in trajectories]
    if _reads_trunks(options.get("scorer")) and options.get("trunks") is None:
        options["trunks"] = [t.token_ids for t in trajectories]
    return information_gain_of_rollouts(rollouts, [t.golds for t in trajectories], model, tokenizer,
                                        started=t0, **options)


def information_gain_of_rollouts(
    rollouts: Sequence[ParsedRollout],
    golds: Sequence[Sequence[str] | str],
    model,
    tokenizer,
    *,
    n_random: int = 3,
    head_tokens: int = 3,
    head_weight: float = 3.0,
    max_gold_variants: int = 1,
    max_context_tokens: int = 4096,
    draws=None,
    seed: int | None = None,
    scorer: "str | Scorer" = "tree",
    scorer_options: dict | None = None,
    max_answer_tokens: int = MAX_ANSWER_TOKENS,
    trunks=None,
    answer_tokens: str = "as_written",
    started: float | None = None,
) -> IGResult:
    """Per-step IG of rollouts already split into prefix and steps (the core of both front-ends).

    ``draws[i][k]``: pool entries (rollout, step) for step k of rollout i; None draws them from
    ``random.Random(seed)``. ``scorer``: an ``igsearch.scoring.Scorer`` (bound to its model, trunks and
    engine; ``model``, ``scorer_options`` and ``trunks`` are then unused) or a registered scorer's name,
    "tree", "trunk", "naive", ... (``scorer_options`` go to it).
    ``trunks`` (a named scorer that reads trunks, "trunk": required there): rollout i's token ids as the
    policy read them, or a ``igsearch.scoring.TrunkKV`` of them under ``model``; each request's prefix
    in common with its rollout is not forwarded again.
    ``max_context_tokens``: contexts are cut from the left to this length (0 = no cut).
    ``max_answer_tokens``: longer gold variants are not scored; a rollout without a shorter one gets
    no IG on any step (counted in ``stats["rollouts_gold_too_long"]``).
    ``answer_tokens``: how the gold meets the context (``igsearch.ig.context.ANSWER_TOKENIZATIONS``):
    ``as_written`` (default) as the policy writes its answer, ``separate`` as the published pipeline.
    """
    t0 = time.perf_counter() if started is None else started
    if max_context_tokens < 0:
        raise ValueError(f"max_context_tokens must be >= 0 (0 = no cut), got {max_context_tokens}")
    if max_answer_tokens < 1:
        raise ValueError(f"max_answer_tokens must be >= 1, got {max_answer_tokens}")
    gold_ids = _gold_ids(golds, tokenizer, max_gold_variants, len(rollouts), max_answer_tokens, answer_tokens)
    pool = build_pool(rollouts)
    used = check_draws(draws, rollouts, pool) if draws is not None else draw_counterfactuals(rollouts, pool, n_random, seed)

    # Contexts: concatenated from the rollouts' token records when every rollout has one (our agent's),
    # else the text contexts tokenised, once each.
    from_ids = bool(rollouts) and all(r.ids is not None for r in rollouts)
    join, cue = encode_text(tokenizer, "\n"), encode_text(tokenizer, answer_cue(answer_tokens))
    ctx_cache: dict[str, list[int]] = {}

    def cut(ids: list[int]) -> list[int]:
        return ids[-max_context_tokens:] if max_context_tokens else ids

    def context(i: int, k: int, source: tuple[int, int] | None = None) -> list[int]:
        """C_k of rollout i, step k's (documents, refine) taken from step ``source`` = (a, b) when given."""
        r = rollouts[i]
        if from_ids:
            pair = None if source is None else rollouts[source[0]].ids.steps[source[1]].pair
            return cut(build_context_ids(r.ids, k, pair, join, cue))
        pair = None if source is None else rollouts[source[0]].steps[source[1]].pair
        text = build_context(r, k, pair, answer_tokens)
        if text not in ctx_cache:
            ctx_cache[text] = cut(encode_text(tokenizer, text))
        return ctx_cache[text]

    requests: list[ScoreRequest] = []
    request_rollout: list[int] = []  # rollout of every request (the trunk scorer's trunk_of)
    plan = []  # (i, k, [per variant: (real request index, [random request indices])])
    for i, r in enumerate(rollouts):
        for k, step in enumerate(r.steps):
            if used[i][k] is None or not gold_ids[i]:
                continue
            real_ctx = context(i, k)
            rand_ctx = [context(i, k, (a, b)) for a, b in used[i][k]]
            per_variant = []
            for ans in gold_ids[i]:
                w = answer_weights(len(ans), head_tokens, head_weight)
                real_idx = len(requests)
                requests.append(ScoreRequest(real_ctx, ans, w))
                rand_idx = list(range(len(requests), len(requests) + len(rand_ctx)))
                requests.extend(ScoreRequest(c, ans, w) for c in rand_ctx)
                per_variant.append((real_idx, rand_idx))
            plan.append((i, k, per_variant))
            request_rollout.extend([i] * (len(requests) - len(request_rollout)))

    if isinstance(scorer, str):
        if "trunks" in scorer_reads(scorer) and trunks is None:
            raise ValueError(f"scorer {scorer!r} needs the rollouts' token ids (trunks=...)")
        scorer = Scorer(scorer, model, trunks=trunks, options=dict(scorer_options or {}))
    if scorer.trunks is not None:
        n_trunks = len(scorer.trunks.tokens) if hasattr(scorer.trunks, "tokens") else len(scorer.trunks)
        if n_trunks != len(rollouts):
            raise ValueError(f"trunks has {n_trunks} entries for {len(rollouts)} rollouts")
    cost: dict = {}
    results = []
    if requests:
        scoring_model = scorer.model
        was_training = getattr(scoring_model, "training", False)
        if was_training:  # a scorer's model may also be a remote one (e.g. verl's actor workers)
            scoring_model.eval()
        try:
            out = scorer.score(requests, trunk_of=request_rollout)
        finally:
            if was_training:
                scoring_model.train()
        results, cost = out.results, out.stats()

    step_ig = [[None] * len(r.steps) for r in rollouts]
    real = [[None] * len(r.steps) for r in rollouts]
    rand = [[None] * len(r.steps) for r in rollouts]
    best = [[None] * len(r.steps) for r in rollouts]
    real_all, rand_all = [], []
    for i, k, per_variant in plan:
        v = max(range(len(per_variant)), key=lambda j: results[per_variant[j][0]].weighted_mean)
        real_idx, rand_idx = per_variant[v]
        s_real = results[real_idx].weighted_mean
        s_rand = [results[j].weighted_mean for j in rand_idx]
        base = sum(s_rand) / len(s_rand)
        step_ig[i][k], real[i][k], rand[i][k], best[i][k] = s_real - base, s_real, s_rand, v
        real_all.append(s_real)
        rand_all.append(base)
    rollout_ig = []
    for row in step_ig:
        vals = [x for x in row if x is not None]
        rollout_ig.append(sum(vals) / len(vals) if vals else None)
    return IGResult(
        step_ig=step_ig,
        rollout_ig=rollout_ig,
        real_scores=real,
        random_scores=rand,
        best_variant=best,
        draws_used=used,
        steps=[r.steps for r in rollouts],
        stats={**_stats(step_ig, real_all, rand_all, cost, scorer.kind, time.perf_counter() - t0),
               "rollouts_gold_too_long": sum(not ids for ids in gold_ids),
               "contexts_from": "token ids" if from_ids else "text",
               "retokenized_blocks": sum(r.ids.retokenized for r in rollouts) if from_ids else 0},
    )
