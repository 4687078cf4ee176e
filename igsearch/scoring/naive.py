"""The naive scorer: every sequence encoded on its own, left-padded in micro-batches.

This is the cost model of the published pipeline and the baseline the benchmarks compare against.
Each sequence ``context + continuation[:-1]`` is forwarded in full (no sharing between sequences);
logits are taken at the last ``max continuation length`` positions of the micro-batch and a
full-vocabulary log-softmax is applied there. Sequences are sorted by length before batching so that
the baseline does not pay for padding it could avoid.
"""

from __future__ import annotations

import torch

from .base import ScoreOutput, ScoreRequest, finish_result, register_scorer


def _micro_batches(lengths: list[int], max_batch_tokens: int, max_batch_size: int) -> list[list[int]]:
    """Indices grouped so that (batch size x longest length) stays within ``max_batch_tokens``."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, cur, longest = [], [], 0
    for i in order:
        new_longest = max(longest, lengths[i])
        if cur and (len(cur) >= max_batch_size or new_longest * (len(cur) + 1) > max_batch_tokens):
            batches.append(cur)
            cur, new_longest = [], lengths[i]
        cur.append(i)
        longest = new_longest
    if cur:
        batches.append(cur)
    return batches


@register_scorer("naive")
def score_naive(
    requests: list[ScoreRequest],
    model,
    *,
    max_batch_tokens: int = 16384,
    max_batch_size: int = 16,
    pad_id: int = 0,
) -> ScoreOutput:
    """Score ``requests`` one padded micro-batch at a time. See the module docstring."""
    device = next(model.parameters()).device
    inputs = [r.input_ids for r in requests]
    lengths = [len(x) for x in inputs]
    results: list = [None] * len(requests)
    out = ScoreOutput(results=results, n_sequences=len(requests))
    for batch in _micro_batches(lengths, max_batch_tokens, max_batch_size):
        width = max(lengths[i] for i in batch)
        keep = max(len(requests[i].continuation_ids) for i in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, width - lengths[i]:] = torch.tensor(inputs[i], dtype=torch.long)
            mask[row, width - lengths[i]:] = 1
        position_ids = (mask.cumsum(1) - 1).clamp(min=0)
        logits = model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=position_ids.to(device),
            logits_to_keep=keep,
            use_cache=False,
        ).logits  # [B, keep, V]: positions width-keep .. width-1
        logp = torch.log_softmax(logits.float(), dim=-1)
        for row, i in enumerate(batch):
            cont = torch.as_tensor(list(requests[i].continuation_ids), dtype=torch.long, device=device)
            n = cont.numel()
            rows = logp[row, keep - n:]  # the last n positions predict the n continuation tokens
            results[i] = finish_result(requests[i], rows.gather(-1, cont[:, None])[:, 0])
        out.tokens_forwarded += sum(lengths[i] for i in batch)
        out.padded_tokens += width * len(batch)
        out.n_forwards += 1
    return out
