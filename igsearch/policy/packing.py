"""Padding-free policy forward of many sequences, log-probs of their response tokens.

- With ``attn_implementation="flash_attention_2"`` (GPU + flash-attn), sequences are concatenated into
  rows of at most ``max_tokens_per_row`` tokens (a longer sequence gets a row of its own); the segment
  boundaries go to transformers' padding-free path (``cu_seq_lens_*``) and flash-attn runs varlen
  attention. Position ids restart at 0 for every sequence, so each is encoded exactly as on its own.
- Otherwise (``sdpa``, the CPU) sequences are sorted by length into right-padded micro-batches of at
  most ``max_tokens_per_row`` padded tokens (rows x longest), with plain causal attention: right padding
  is exact for the real tokens (they never attend to the padding after them), and SDPA keeps its causal
  kernel. Packing several sequences into one row would need a block-diagonal mask, whose attention costs
  O(row length^2) (every pair of the row's tokens, most of them masked) and loses that kernel: on the tiny
  policy on a CPU the update took 2.97 s per step packed into rows of 2,048 tokens, 2.10 s at 1,024 and
  1.71 s with one sequence per row (bench/peer_trl.py's replay arm, 10k tokens a step, Intel Xeon with
  AVX-512, 1 thread). Length-sorted micro-batches of 2,048 padded tokens cut the forward + backward of
  64 demo rollouts from 2.0-2.4 s (one sequence a forward) to 1.45-1.7 s (same Xeon, 2 threads): fewer,
  larger matrix products.

Only the hidden states at the positions that predict response tokens go through the LM head, via
``igsearch_kernels.gather_logprobs`` (fused LM head + log-softmax + gather, no [tokens x vocab] tensor).
"""

from __future__ import annotations

from typing import Sequence

import torch

from igsearch.precision import compute_dtype, padded_rows

__all__ = ["bucket_batches", "pack_rows", "packed_forward", "packed_token_logprobs", "pad_to_batch"]


def pack_rows(lengths: Sequence[int], max_tokens_per_row: int | None) -> list[list[int]]:
    """Greedy in-order packing: lists of sequence indices whose lengths sum to <= the budget."""
    rows: list[list[int]] = []
    used = 0
    for i, n in enumerate(lengths):
        if rows and (max_tokens_per_row is None or used + n <= max_tokens_per_row):
            rows[-1].append(i)
            used += n
        else:
            rows.append([i])
            used = n
    return rows


def bucket_batches(lengths: Sequence[int], max_tokens: int | None) -> list[list[int]]:
    """Group indices into length-sorted micro-batches whose padded size (rows x longest) fits
    ``max_tokens`` (a sequence longer than the budget gets a micro-batch of its own; None = one)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and (max_tokens is None or (len(groups[-1]) + 1) * lengths[i] <= max_tokens):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _uses_varlen_positions(model) -> bool:
    impl = getattr(model.config, "_attn_implementation", None) or getattr(model.config, "attn_implementation", None)
    return isinstance(impl, str) and impl.startswith("flash_attention")


def _gather_logprobs(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float
) -> torch.Tensor:
    import igsearch_kernels

    return igsearch_kernels.gather_logprobs(hidden, weight, targets, temperature=temperature)


def packed_forward(model, sequences: Sequence[Sequence[int]], max_tokens_per_row: int | None = None,
                   kv_out: list | None = None):
    """Forward ``sequences`` through the decoder (``model.model``) in packed rows (flash-attn) or
    length-sorted right-padded micro-batches (SDPA; see the module docstring).

    Yields (sequence indices of the row, row token ids long [L], last hidden state [L, d]) per row; on
    SDPA every row is one sequence (in micro-batch order, not input order).
    ``kv_out``: when a list, every row's keys/values are appended to it as (sequence indices of the
    row, [(keys, values) per layer, each [1, Hkv, L, D] after RoPE]), for
    ``igsearch.scoring.trunk.TrunkKV.from_rows`` (branch-only IG scoring reuses them).
    """
    if not _uses_varlen_positions(model):
        yield from _padded_forward(model, sequences, max_tokens_per_row, kv_out)
        return
    device = next(model.parameters()).device
    lengths = [len(s) for s in sequences]
    for row in pack_rows(lengths, max_tokens_per_row):
        row_lengths = [lengths[i] for i in row]
        ids = torch.tensor([t for i in row for t in sequences[i]], dtype=torch.long, device=device)
        positions = torch.cat([torch.arange(n, device=device) for n in row_lengths])
        # Give the segment boundaries explicitly (transformers' padding-free flash path) rather than
        # have every layer infer them from the position ids.
        cu = torch.tensor([0] + row_lengths, device=device).cumsum(0).to(torch.int32)
        longest = max(row_lengths)
        varlen = dict(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=longest, max_length_k=longest)
        cache = None
        if kv_out is not None:
            from transformers import DynamicCache

            cache = DynamicCache(config=model.config)
        hidden = model.model(
            input_ids=ids[None], attention_mask=None, position_ids=positions[None], use_cache=cache is not None,
            past_key_values=cache, **varlen
        ).last_hidden_state[0]
        if cache is not None:
            kv_out.append((list(row), [(layer.keys.detach(), layer.values.detach()) for layer in cache.layers]))
        yield row, ids, hidden


def _padded_forward(model, sequences: Sequence[Sequence[int]], max_tokens: int | None, kv_out: list | None):
    """SDPA path of :func:`packed_forward`: one forward per length-sorted micro-batch [b, T_max] of
    right-padded sequences (no mask: causal attention never lets a real token see the padding after it;
    positions default to 0..T-1), yielding each sequence's own rows of the result."""
    param = next(model.parameters())
    device, dtype = param.device, compute_dtype(param)
    lengths = [len(s) for s in sequences]
    for group in bucket_batches(lengths, max_tokens):
        # bf16 on a CPU: the width rounded up to a multiple of 16 (igsearch.precision.padded_rows), fewer GEMM
        # shapes for oneDNN to compile at 1-2% more right padding (64 cost the SFT's ~360-token rows about 9%)
        T = padded_rows(max(lengths[i] for i in group), dtype, device, multiple=16)
        ids = torch.zeros((len(group), T), dtype=torch.long)  # the padding id is never attended to
        for r, i in enumerate(group):
            ids[r, : lengths[i]] = torch.as_tensor(sequences[i], dtype=torch.long)
        ids = ids.to(device)
        cache = None
        if kv_out is not None:
            from transformers import DynamicCache

            cache = DynamicCache(config=model.config)
        hidden = model.model(input_ids=ids, use_cache=cache is not None, past_key_values=cache).last_hidden_state
        for r, i in enumerate(group):
            n = lengths[i]
            if cache is not None:
                kv_out.append(([i], [(layer.keys[r : r + 1, :, :n].detach(), layer.values[r : r + 1, :, :n].detach())
                                     for layer in cache.layers]))
            yield [i], ids[r, :n], hidden[r, :n]


def packed_token_logprobs(
    model,
    sequences: Sequence[Sequence[int]],
    *,
    temperature: float = 1.0,
    compute_from: Sequence[int] | None = None,
    max_tokens_per_row: int | None = None,
    kv_out: list | None = None,
) -> list[torch.Tensor]:
    """log p(token k | tokens < k) for k = compute_from[i] .. len_i - 1 of every sequence.

    ``model``: a causal LM with ``model.model`` (the decoder returning hidden states) and
    ``model.lm_head`` (no bias), e.g. Qwen2ForCausalLM. ``sequences``: token-id lists (prompt +
    response). ``compute_from[i]``: index of the first scored token (the prompt length; default 1),
    in [1, len_i]. Logits are divided by ``temperature`` (the sampling temperature of the rollouts).
    ``kv_out``: as for :func:`packed_forward` (the keys/values of the same forward).
    Returns one float32 1-D tensor per sequence, of length len_i - compute_from[i], differentiable
    w.r.t. the model parameters.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    lengths = [len(s) for s in sequences]
    starts = [1] * len(sequences) if compute_from is None else [int(c) for c in compute_from]
    if len(starts) != len(sequences):
        raise ValueError(f"{len(sequences)} sequences but {len(starts)} compute_from entries")
    for i, (n, c) in enumerate(zip(lengths, starts)):
        if not 1 <= c <= n:
            raise ValueError(f"sequence {i}: compute_from={c} outside [1, {n}] (length {n})")
    # the LM head in the products' dtype (bf16 under the run's autocast; its log-softmax stays fp32), converted
    # once per call rather than once per row: Qwen2.5's [151936, 896] head takes ~0.1 s to convert on a CPU core
    weight = model.lm_head.weight
    weight = weight.to(compute_dtype(weight))
    results: list[torch.Tensor | None] = [None] * len(sequences)
    for row, ids, hidden in packed_forward(model, sequences, max_tokens_per_row, kv_out):
        device = hidden.device
        # Position p predicts token p + 1; the scored tokens of sequence i are offset+c .. offset+n-1.
        pred_index = []
        offset = 0
        for i in row:
            pred_index.append(torch.arange(offset + starts[i] - 1, offset + lengths[i] - 1, device=device))
            offset += lengths[i]
        pred_index_t = torch.cat(pred_index)
        h = hidden.index_select(0, pred_index_t)
        targets = ids.index_select(0, pred_index_t + 1)
        logp = _gather_logprobs(h.to(weight.dtype), weight, targets, float(temperature)).to(torch.float32)
        for i, part in zip(row, logp.split([lengths[i] - starts[i] for i in row])):
            results[i] = part
    return results  # type: ignore[return-value]


def pad_to_batch(tensors: Sequence[torch.Tensor], value: float = 0.0, length: int | None = None) -> torch.Tensor:
    """Right-pad 1-D tensors into [B, T] (T = ``length`` or the longest); keeps autograd."""
    T = max((t.numel() for t in tensors), default=0) if length is None else length
    if not tensors:
        return torch.zeros(0, T)
    out = []
    for t in tensors:
        if t.numel() > T:
            raise ValueError(f"a tensor of length {t.numel()} does not fit T={T}")
        out.append(torch.nn.functional.pad(t, (0, T - t.numel()), value=value))
    return torch.stack(out)
