"""IGPO: information-gain-based policy optimisation (Wang et al. 2025, arXiv 2510.14967).

Turn-level rewards from the policy's own belief in the gold answer a (tokens a_1..a_n):

    p_k  = exp( (1/n) * sum_j log pi(a_j | context_k, cue, a_<j) )     (teacher-forced, pi_old)
    cue, a: "<answer>" and the gold as the policy writes it after it (the run's
            ``scoring.answer_tokens``: ``igsearch.ig.context.gold_token_ids``)
    context_{-1} = the prompt;  context_k = prompt + response up to the end of step k's documents
    g_k  = p_k - p_{k-1}                                               (step k = 0..S-1)

The turns of a rollout (``Trajectory.turn_spans``) get rewards r: turn k < S gets g_k (turn k holds
step k's query, so its gain is what that search brought); the last turn (the answer) gets the
outcome reward R; when the rollout has no turn after its last documents, R is added to its last
turn. Within the G rollouts of a question, all turn rewards are z-scored together (sample std;
``scale="none"``: centred only), and the advantage of turn k is the discounted sum of the normalised
rewards from k on: ``A[i, k] = sum_{j >= k} gamma^(j - k) * r~[i, j]``, on every policy token of the
turn (one span per turn, ``span_scale`` 1, ``seq_adv`` 0). ``gamma`` is the run config's ``igpo.gamma``
(:class:`IGPOConfig`); how the gold is scored is the run-level ``scoring`` section, shared with every
method that scores continuations.

The scorer ``turn_gain`` scores all S + 1 contexts of every rollout in one packed tree forward: the
contexts are prefixes of one another, so the trie shares them and each context only adds its cue
and answer as a leaf. Its stats report the tokens forwarded against the tokens of scoring each
context on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from igsearch.algo.advantages import (
    AdvantageConfig,
    AdvantageInput,
    AdvantageOutput,
    empty_spans,
    group_index,
    mean_std,
    register_advantage_estimator,
)
from igsearch.algo.step_scores import ScoringBatch, StepScores, continuation_scorer_problem, register_step_scorer
from igsearch.config_fields import check_range, config_field
from igsearch.ig.context import answer_cue, encode_text, gold_token_ids


@dataclass
class IGPOConfig:
    """The ``igpo`` section of the run config."""

    gamma: float = config_field(1.0, "Discount gamma of the cumulative normalised turn rewards.")

    def validate(self, where: str = "igpo") -> "IGPOConfig":
        check_range(where, "gamma", self.gamma, low=0, low_open=True, high=1)
        return self


@register_step_scorer("turn_gain", per="step", check=continuation_scorer_problem)
def turn_gain(batch: ScoringBatch) -> StepScores:
    """g_k = p_k - p_{k-1} for every step k of every rollout (module docstring), from one scorer call."""
    from igsearch.scoring import ScoreRequest

    scoring, tok = batch.config.scoring, batch.tokenizer  # how the gold is scored: the run's ``scoring`` section
    # what follows each turn's context, then the gold as the policy writes it (scoring.answer_tokens)
    cue = encode_text(tok, answer_cue(scoring.answer_tokens).lstrip("\n"))
    max_ctx = scoring.max_context_tokens
    requests, owners = [], []
    for i, t in enumerate(batch.trajectories):
        if not t.golds:
            raise ValueError(f"turn_gain: rollout {i} has no gold answer")
        gold = gold_token_ids(tok, str(t.golds[0]), scoring.answer_tokens)
        if not gold:
            raise ValueError(f"turn_gain: rollout {i}: gold {t.golds[0]!r} tokenizes to no tokens")
        ends = [0] + [s.documents[1] for s in t.steps]
        for end in ends:
            ctx = (list(t.prompt_ids) + list(t.response_ids[:end]) + cue)[-max_ctx:]
            requests.append(ScoreRequest(ctx, gold))
            owners.append(i)
    values: list[list[float]] = [[] for _ in batch.trajectories]
    stats: dict[str, float] = {}
    if requests:  # every turn context is a token prefix of its rollout: its trunk
        out = batch.continuation_scorer().score(requests, trunk_of=owners)
        probs: list[list[float]] = [[] for _ in batch.trajectories]
        for i, res in zip(owners, out.results):
            probs[i].append(math.exp(res.weighted_mean))
        for i, p in enumerate(probs):
            values[i] = [p[k + 1] - p[k] for k in range(len(p) - 1)]
        flat = [p for row in probs for p in row]
        gains = [g for row in values for g in row]
        stats = {
            "p_mean": sum(flat) / len(flat),
            "gain_mean": sum(gains) / len(gains) if gains else 0.0,
            "gain_pos_frac": sum(g > 0 for g in gains) / len(gains) if gains else 0.0,
            "tokens_forwarded": float(out.tokens_forwarded),
            "tokens_each_context_alone": float(sum(len(r.input_ids) for r in requests)),
        }
    return StepScores(values, stats)


def turn_rewards(gains: list[float], n_turns: int, outcome: float) -> list[float]:
    """r for each turn of one rollout: the step gains, then the outcome on the last turn."""
    r = list(gains[:n_turns]) + [0.0] * max(0, n_turns - len(gains))
    if n_turns > len(gains):
        r[len(gains)] = outcome  # the answer turn after the last documents
    else:
        r[-1] += outcome
    return r


@register_advantage_estimator("igpo", needs={"turn_gain"}, config=IGPOConfig)
def igpo_advantages(inp: AdvantageInput, cfg: AdvantageConfig) -> AdvantageOutput:
    """Per-turn advantages as one span per turn (``seq_adv`` is 0, ``span_scale`` 1)."""
    gamma = cfg.options.gamma
    gains = inp.per_step("turn_gain", "igpo")
    turns = inp.turns("igpo")
    rewards = [turn_rewards([float(g) for g in gains[i]], len(turns[i]), float(inp.rewards[i]))
               for i in range(len(inp.rewards))]
    normed: list[list[float]] = [[0.0] * len(r) for r in rewards]
    for members in group_index(inp.group_ids).values():
        pool = [v for i in members for v in rewards[i]]
        mean, std = mean_std(pool)
        for i in members:
            normed[i] = [(v - mean) / (std + cfg.adv_eps) if cfg.adv_scale == "std" else v - mean for v in rewards[i]]
    rows, values = [], []
    for i, row in enumerate(normed):
        acc = 0.0
        adv = [0.0] * len(row)
        for k in range(len(row) - 1, -1, -1):
            acc = row[k] + gamma * acc
            adv[k] = acc
        for k, (start, end) in enumerate(turns[i]):
            if end > start:
                rows.append((i, int(start), int(end)))
                values.append(adv[k])
    if rows:
        span_t, value_t = torch.tensor(rows, dtype=torch.long), torch.tensor(values, dtype=torch.float32)
    else:
        span_t, value_t = empty_spans()
    seq_adv = torch.zeros(len(inp.rewards), dtype=torch.float32)
    stats = {"igpo/turn_adv_abs_mean": sum(abs(v) for v in values) / len(values) if values else 0.0,
             "igpo/turns_mean": sum(len(t) for t in turns) / max(1, len(turns))}
    return AdvantageOutput(seq_adv, span_t, value_t, span_scale=1.0, stats=stats)
