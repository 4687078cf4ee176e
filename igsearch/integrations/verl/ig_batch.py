"""Step IG of verl rollouts, scored through the actor workers.

After verl computed the old log-probs, igsearch's verl trainer (``trainer.py``) calls
:func:`step_ig_of_trajectories` (a legacy ``DataProto`` batch: :func:`step_ig_for_verl_batch`):

1. Each row becomes an igsearch ``Trajectory`` (:func:`trajectory_from_row`: prompt ids without
   padding, response ids, and the step spans the agent loop recorded in ``igsearch_steps``).
2. ``information_gain_of_trajectories`` builds the IG requests exactly as our trainer does (one
   batch-wide pool of (documents, refine) pairs, counterfactual draws from ``random.Random(seed)``).
3. The requests are scored by the ``verl_actor`` scorer: a ``DataProto`` of prompts (the contexts,
   left-padded) and responses (the gold answers, right-padded), padded with copies of its first row to
   a multiple of the data-parallel size so every rank runs the same number of forwards, handed to a
   ``compute_log_prob`` function (in the v1 trainer: the actor worker group's, through TransferQueue,
   ``tq_batch.tq_log_prob_fn``) and cut back.

The step IGs and query spans come back as the columns ``ig_step_ig`` and ``ig_query_spans`` the
``ig_search`` estimator reads.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from verl import DataProto

from igsearch.ig.compute import IGResult, information_gain_of_trajectories
from igsearch.rollout.trajectory import StepSpans, Trajectory
from igsearch.scoring.base import ScoreOutput, ScoreRequest, finish_result, register_scorer

from .config import VerlIGConfig
from .estimator import IG_KEY, SPANS_KEY

STEPS_KEY, GOLDS_KEY = "igsearch_steps", "igsearch_golds"
MISSING_RECORD = (f"IG needs {STEPS_KEY} and {GOLDS_KEY} from the rollout: roll out with the igsearch_agent "
                  "agent loop")


def steps_to_record(steps: Sequence[StepSpans]) -> list[list[int]]:
    """Step spans as plain lists for ``extra_fields`` ([q0, q1, d0, d1, r0, r1], r = -1 without refine)."""
    return [[*s.query, *s.documents, *(s.refine if s.refine is not None else (-1, -1))] for s in steps]


def steps_from_record(record: Sequence[Sequence[int]]) -> list[StepSpans]:
    """Inverse of :func:`steps_to_record`."""
    out = []
    for k, r in enumerate(record):
        if len(r) != 6:
            raise ValueError(f"{STEPS_KEY}: step {k} has {len(r)} numbers, expected 6 (query, documents, refine)")
        q0, q1, d0, d1, r0, r1 = (int(x) for x in r)
        out.append(StepSpans(query=(q0, q1), documents=(d0, d1), refine=None if r0 < 0 else (r0, r1)))
    return out


def trajectory_from_row(prompt_ids: Sequence[int], response_ids: Sequence[int], response_mask: Sequence[int] | None,
                        steps_record: Sequence[Sequence[int]] | None, golds: Sequence[str], index: int,
                        tokenizer) -> Trajectory:
    """One rollout (unpadded prompt and response ids, the agent loop's step record and golds) as an
    igsearch ``Trajectory``. IG's contexts start with the prompt text, decoded here from the ids."""
    p_ids, r_ids = [int(x) for x in prompt_ids], [int(x) for x in response_ids]
    mask = [int(m) for m in response_mask] if response_mask is not None else [1] * len(r_ids)
    return Trajectory(prompt_ids=p_ids, response_ids=r_ids, loss_mask=mask, rollout_logprobs=[0.0] * len(r_ids),
                      steps=steps_from_record(steps_record or []), golds=[str(g) for g in golds],
                      question_index=index, prompt_text=tokenizer.decode(p_ids, skip_special_tokens=False))


def trajectories_from_batch(batch: DataProto, tokenizer) -> list[Trajectory]:
    """One ``Trajectory`` per row of a verl rollout ``DataProto`` (prompts left-padded, responses
    right-padded; the step record and golds in ``non_tensor_batch``)."""
    prompts, responses = batch.batch["prompts"], batch.batch["responses"]
    attention = batch.batch["attention_mask"]
    n_prompt = prompts.shape[1]
    steps = batch.non_tensor_batch.get(STEPS_KEY)
    golds = batch.non_tensor_batch.get(GOLDS_KEY)
    if steps is None or golds is None:
        raise ValueError(MISSING_RECORD)
    trajs = []
    for i in range(prompts.shape[0]):
        r_len = int(attention[i, n_prompt:].sum())
        mask = batch.batch["response_mask"][i, :r_len].tolist() if "response_mask" in batch.batch else None
        trajs.append(trajectory_from_row(prompts[i][attention[i, :n_prompt].bool()].tolist(),
                                         responses[i, :r_len].tolist(), mask, steps[i], golds[i], i, tokenizer))
    return trajs


def step_ig_of_trajectories(trajs: Sequence[Trajectory], tokenizer, compute_log_prob: Callable[[DataProto], DataProto],
                            *, config: VerlIGConfig | None = None, dp_size: int = 1,
                            meta_info: dict | None = None) -> tuple[IGResult, np.ndarray, np.ndarray]:
    """IG of the rollouts, scored through ``compute_log_prob`` (the ``verl_actor`` scorer).

    Returns (result, query spans, step IGs); the last two are object arrays with one entry per
    rollout, the columns ``ig_query_spans`` and ``ig_step_ig`` the estimator reads."""
    cfg = config or VerlIGConfig()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    result = information_gain_of_trajectories(
        list(trajs), None, tokenizer, scorer="verl_actor",
        scorer_options={"compute_log_prob": compute_log_prob, "pad_token_id": pad, "dp_size": dp_size,
                        "meta_info": meta_info or {}},
        **cfg.ig_options())
    spans = np.empty(len(trajs), dtype=object)
    spans[:] = [[tuple(s.query) for s in t.steps] for t in trajs]
    igs = np.empty(len(trajs), dtype=object)
    igs[:] = [list(row) for row in result.step_ig]
    return result, spans, igs


def step_ig_for_verl_batch(batch: DataProto, tokenizer, compute_log_prob: Callable[[DataProto], DataProto], *,
                           config: VerlIGConfig | None = None, dp_size: int = 1,
                           meta_info: dict | None = None) -> IGResult:
    """Score the step IG of a rollout ``DataProto`` through ``compute_log_prob`` and store it in its
    ``non_tensor_batch`` for the estimator.

    ``compute_log_prob``: a function with the contract of verl's actor ``compute_log_prob``: a
    DataProto with prompts/responses/input_ids/attention_mask/position_ids in, one with
    ``old_log_probs`` [n, response_length] out (verl's v1 trainer wraps its worker group into one:
    ``tq_batch.tq_log_prob_fn``). ``dp_size``: the data-parallel world size (request count is
    padded to a multiple of it). ``meta_info`` is passed on (micro-batch size, temperature).
    """
    result, spans, igs = step_ig_of_trajectories(trajectories_from_batch(batch, tokenizer), tokenizer,
                                                 compute_log_prob, config=config, dp_size=dp_size,
                                                 meta_info=meta_info)
    batch.non_tensor_batch[SPANS_KEY] = spans
    batch.non_tensor_batch[IG_KEY] = igs
    return result


def requests_to_dataproto(requests: Sequence[ScoreRequest], pad_token_id: int, dp_size: int = 1,
                          meta_info: dict | None = None) -> tuple[DataProto, int]:
    """The scoring requests as an actor batch: prompts = contexts (left-padded), responses = the
    continuations (right-padded); rows padded with copies of row 0 to a multiple of ``dp_size``.
    Returns (batch, number of real rows)."""
    n = len(requests)
    rows = n + (-n) % max(1, dp_size)
    p_len = max(len(r.context_ids) for r in requests)
    r_len = max(len(r.continuation_ids) for r in requests)
    prompts = torch.full((rows, p_len), pad_token_id, dtype=torch.long)
    responses = torch.full((rows, r_len), pad_token_id, dtype=torch.long)
    attention = torch.zeros(rows, p_len + r_len, dtype=torch.long)
    for j in range(rows):
        r = requests[j if j < n else 0]
        c, a = list(r.context_ids), list(r.continuation_ids)
        prompts[j, p_len - len(c):] = torch.tensor(c)
        responses[j, :len(a)] = torch.tensor(a)
        attention[j, p_len - len(c):p_len + len(a)] = 1
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    data = DataProto.from_dict(tensors={
        "prompts": prompts, "responses": responses, "input_ids": torch.cat([prompts, responses], 1),
        "attention_mask": attention, "position_ids": position_ids,
        "response_mask": attention[:, p_len:].clone()}, meta_info=dict(meta_info or {}))
    return data, n


@register_scorer("verl_actor")
def score_verl_actor(requests: list[ScoreRequest], model: Any = None, *, compute_log_prob, pad_token_id: int,
                     dp_size: int = 1, meta_info: dict | None = None) -> ScoreOutput:
    """Score requests with ``compute_log_prob`` (see :func:`requests_to_dataproto`); one call."""
    out = ScoreOutput(results=[None] * len(requests), n_sequences=len(requests))
    if not requests:
        return out
    for i, r in enumerate(requests):
        r.validate(i)
    data, n = requests_to_dataproto(requests, pad_token_id, dp_size, meta_info)
    logp = compute_log_prob(data).batch["old_log_probs"]
    for i, r in enumerate(requests):
        out.results[i] = finish_result(r, logp[i, :len(r.continuation_ids)].detach().float().cpu())
    out.tokens_forwarded = int(data.batch["attention_mask"][:n].sum())
    out.padded_tokens = int(data.batch["attention_mask"].numel())
    out.n_forwards = 1
    out.extra["rows"] = data.batch["prompts"].shape[0]
    return out
