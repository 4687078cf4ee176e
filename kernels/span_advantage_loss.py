"""GRPO/PPO clipped loss with span-weighted per-token advantages, loss and d loss/d logp in one pass.

Shapes: logp, old_logp, ref_logp, mask [B, T]; seq_adv [B]; spans int64 [S, 3] rows of
(sequence, start, end) with end exclusive; span_values [S].

Per token (b, t):

    A      = seq_adv[b] + beta * value of the span of sequence b holding t (0 outside spans)
    ratio  = exp(logp - old_logp)
    surr   = -min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A)
    k3     = exp(ref - logp) - (ref - logp) - 1                       (0 without ref_logp)
    loss   = surr + kl_coef * k3

Aggregation with mask weights m (bool or float; 0 = not trained on, e.g. injected documents):

- ``token-mean``: sum(loss * m) / sum(m) over the whole batch (0 when sum(m) == 0);
- ``seq-mean-token-mean``: mean over sequences with sum(m_b) > 0 of sum_t(loss * m) / sum(m_b);
- ``seq-mean-token-sum``: mean over all B sequences of sum_t(loss * m).

Spans of one sequence must not overlap (ValueError otherwise). Gradients flow to logp only
(old_logp, ref_logp, advantages are constants of the step). The Triton kernel runs one program
per (sequence, token block): it reads each input once, writes the per-token gradient already
scaled by the aggregation weight, and a partial loss sum per program.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._backend import resolve_backend

AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")

# --------------------------------------------------------------------------------------------
# Span table
# --------------------------------------------------------------------------------------------


def sort_and_check_spans(spans: torch.Tensor, span_values: torch.Tensor, batch: int, length: int):
    """Validate a span table and sort it by (sequence, start).

    Returns (spans_sorted [S, 3] int64, values_sorted [S], row_ptr int64 [B + 1]) where the spans
    of sequence b are rows row_ptr[b]:row_ptr[b + 1]. Raises ValueError on out-of-range rows or
    on spans of one sequence that overlap.
    """
    if spans.dim() != 2 or spans.shape[1] != 3:
        raise ValueError(f"spans must be [S, 3] (sequence, start, end), got {tuple(spans.shape)}")
    if span_values.shape != (spans.shape[0],):
        raise ValueError(f"span_values must be [S={spans.shape[0]}], got {tuple(span_values.shape)}")
    spans = spans.to(torch.long)
    device = spans.device
    if spans.shape[0] == 0:
        return spans, span_values, torch.zeros(batch + 1, dtype=torch.long, device=device)
    seq, start, end = spans.unbind(1)
    bad = (seq < 0) | (seq >= batch) | (start < 0) | (end < start) | (end > length)
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise ValueError(f"span {spans[row].tolist()} is out of range for B={batch}, T={length} "
                         "(need 0 <= sequence < B and 0 <= start <= end <= T)")
    order = torch.argsort(seq * (length + 1) + start, stable=True)
    spans, span_values = spans[order], span_values[order]
    seq, start, end = spans.unbind(1)
    overlap = (seq[1:] == seq[:-1]) & (start[1:] < end[:-1]) & (start[1:] < end[1:])
    if bool(overlap.any()):
        i = int(overlap.nonzero()[0, 0])
        raise ValueError(f"spans {spans[i].tolist()} and {spans[i + 1].tolist()} of sequence "
                         f"{int(seq[i])} overlap; spans of one sequence must be disjoint")
    row_ptr = torch.zeros(batch + 1, dtype=torch.long, device=device)
    row_ptr[1:] = torch.cumsum(torch.bincount(seq, minlength=batch), 0)
    return spans, span_values, row_ptr


def token_advantages(seq_adv: torch.Tensor, spans: torch.Tensor, span_values: torch.Tensor,
                     length: int, beta: float = 1.0) -> torch.Tensor:
    """Per-token advantages [B, T] = seq_adv[b] + beta * value of the span holding the token."""
    batch = seq_adv.shape[0]
    spans, span_values, _ = sort_and_check_spans(spans, span_values, batch, length)
    work = torch.promote_types(seq_adv.dtype, span_values.dtype)
    span_tok = torch.zeros(batch, length, dtype=work, device=seq_adv.device)
    if spans.shape[0]:
        seq, start, end = spans.unbind(1)
        sizes = end - start
        rows = torch.repeat_interleave(seq, sizes)
        first = torch.repeat_interleave(start - (torch.cumsum(sizes, 0) - sizes), sizes)
        cols = first + torch.arange(rows.numel(), device=rows.device)
        span_tok[rows, cols] = torch.repeat_interleave(span_values.to(work), sizes)
    return seq_adv.to(work)[:, None] + beta * span_tok


# --------------------------------------------------------------------------------------------
# Torch reference
# --------------------------------------------------------------------------------------------


def _aggregate(loss_tok, mask, agg):
    if agg == "token-mean":
        den = mask.sum()
        return (loss_tok * mask).sum() / torch.where(den > 0, den, torch.ones_like(den))
    per_seq = (loss_tok * mask).sum(-1)
    if agg == "seq-mean-token-sum":
        return per_seq.mean()
    counts = mask.sum(-1)
    has = counts > 0
    per_seq = torch.where(has, per_seq / torch.where(has, counts, torch.ones_like(counts)), 0.0)
    return per_seq.sum() / has.sum().clamp(min=1)


def span_advantage_loss_reference(
    logp, old_logp, mask, seq_adv, spans, span_values, *, ref_logp=None, beta=1.0,
    clip_low=0.2, clip_high=0.2, kl_coef=0.0, agg="token-mean", return_stats=False,
):
    """The eager torch formula of the module docstring (differentiable through autograd).

    Computes in float64 for float64 logp, else float32. Same arguments and returns as
    `span_advantage_loss`.
    """
    if agg not in AGGREGATIONS:
        raise ValueError(f"agg={agg!r}: expected one of {AGGREGATIONS}")
    work = torch.float64 if logp.dtype == torch.float64 else torch.float32
    lp, old = logp.to(work), old_logp.to(work)
    m = mask.to(work)
    adv = token_advantages(seq_adv.to(work), spans, span_values.to(work), logp.shape[1], beta)
    ratio = torch.exp(lp - old)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    loss_tok = -torch.minimum(unclipped, clipped)
    k3 = None
    if ref_logp is not None:
        d = ref_logp.to(work) - lp
        k3 = torch.exp(d) - d - 1.0
        loss_tok = loss_tok + kl_coef * k3
    loss = _aggregate(loss_tok, m, agg)
    if not return_stats:
        return loss
    with torch.no_grad():
        n = m.sum().clamp(min=torch.finfo(work).tiny)
        stats = {
            "token_adv": adv.float(),
            "clip_frac": (((clipped < unclipped).to(work) * m).sum() / n).float(),
            "mask_tokens": m.sum().float(),
        }
        if k3 is not None:
            stats["kl"] = ((k3 * m).sum() / n).float()
    return loss, stats


# --------------------------------------------------------------------------------------------
# Triton kernel
# --------------------------------------------------------------------------------------------


@triton.jit
def _span_loss_kernel(
    LOGP, OLD, REF, MASK, SEQ_ADV, ROW_W, SPAN_START, SPAN_END, SPAN_VAL, ROW_PTR,
    GRAD, ADV_OUT, PART,
    T, n_parts, beta, clip_lo, clip_hi, kl_coef,
    stride_lp, stride_old, stride_ref, stride_mask, stride_grad,
    HAS_REF: tl.constexpr,
    STORE_ADV: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    b = tl.program_id(0)
    blk = tl.program_id(1)
    offs = blk * BLOCK_T + tl.arange(0, BLOCK_T)
    ok = offs < T

    lp = tl.load(LOGP + b * stride_lp + offs, mask=ok, other=0.0).to(tl.float32)
    old = tl.load(OLD + b * stride_old + offs, mask=ok, other=0.0).to(tl.float32)
    m = tl.load(MASK + b * stride_mask + offs, mask=ok, other=0).to(tl.float32)
    row_w = tl.load(ROW_W + b)

    span_v = tl.zeros([BLOCK_T], tl.float32)
    lo = tl.load(ROW_PTR + b)
    hi = tl.load(ROW_PTR + b + 1)
    for s in range(lo, hi):  # spans of this sequence only; a handful per rollout
        start = tl.load(SPAN_START + s)
        end = tl.load(SPAN_END + s)
        val = tl.load(SPAN_VAL + s)
        span_v = tl.where((offs >= start) & (offs < end), val, span_v)
    adv = tl.load(SEQ_ADV + b) + beta * span_v

    ratio = tl.exp(lp - old)
    unclipped = ratio * adv
    clipped = tl.minimum(tl.maximum(ratio, clip_lo), clip_hi) * adv
    is_clipped = clipped < unclipped
    loss = -tl.minimum(unclipped, clipped)
    # the clipped branch is only selected where ratio lies outside the clip range: no gradient
    grad = tl.where(is_clipped, 0.0, -unclipped)
    k3 = tl.zeros([BLOCK_T], tl.float32)
    if HAS_REF:
        ref = tl.load(REF + b * stride_ref + offs, mask=ok, other=0.0).to(tl.float32)
        d = ref - lp
        ed = tl.exp(d)
        k3 = ed - d - 1.0
        loss += kl_coef * k3
        grad += kl_coef * (1.0 - ed)

    live = ok & (m != 0.0)
    tl.store(GRAD + b * stride_grad + offs, tl.where(live, grad * m * row_w, 0.0).to(GRAD.dtype.element_ty), mask=ok)
    if STORE_ADV:
        tl.store(ADV_OUT + b * T + offs, adv, mask=ok)
    part = b * tl.num_programs(1) + blk
    tl.store(PART + part, tl.sum(tl.where(live, loss * m, 0.0), 0) * row_w)
    tl.store(PART + n_parts + part, tl.sum(tl.where(live, is_clipped.to(tl.float32) * m, 0.0), 0))
    tl.store(PART + 2 * n_parts + part, tl.sum(tl.where(live, k3 * m, 0.0), 0))


def _row_weights(mask: torch.Tensor, agg: str) -> torch.Tensor:
    """Weight of every sequence's sum(loss * m) in the aggregated loss, float32 [B]."""
    counts = mask.sum(-1, dtype=torch.float32)
    batch = counts.numel()
    if agg == "token-mean":
        total = counts.sum()
        return (1.0 / torch.where(total > 0, total, torch.ones_like(total))).expand(batch).contiguous()
    if agg == "seq-mean-token-sum":
        return torch.full((batch,), 1.0 / max(batch, 1), device=mask.device)
    has = counts > 0
    n_has = has.sum().clamp(min=1).to(torch.float32)
    return torch.where(has, 1.0 / (torch.where(has, counts, torch.ones_like(counts)) * n_has), 0.0)


class _SpanLossTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logp, old_logp, ref_logp, mask, seq_adv, spans, span_values,
                beta, clip_low, clip_high, kl_coef, agg, stats_out):
        want_stats = stats_out is not None
        batch, length = logp.shape
        dev = logp.device
        spans, span_values, row_ptr = sort_and_check_spans(spans, span_values, batch, length)
        if mask.dtype == torch.bool:
            mask = mask.view(torch.uint8)
        logp, old_logp, mask = (x if x.stride(-1) == 1 else x.contiguous() for x in (logp, old_logp, mask))
        if ref_logp is not None and ref_logp.stride(-1) != 1:
            ref_logp = ref_logp.contiguous()
        row_w = _row_weights(mask, agg)
        block_t = min(1024, max(16, triton.next_power_of_2(length)))
        n_blk = triton.cdiv(length, block_t)
        n_parts = batch * n_blk
        grad = torch.empty_like(logp)
        part = torch.empty(3, max(n_parts, 1), dtype=torch.float32, device=dev)
        adv = torch.empty(batch, length, dtype=torch.float32, device=dev) if want_stats else grad
        starts = spans[:, 1].contiguous()
        ends = spans[:, 2].contiguous()
        vals = span_values.to(device=dev, dtype=torch.float32).contiguous()
        if n_parts:
            _span_loss_kernel[(batch, n_blk)](
                logp, old_logp, ref_logp if ref_logp is not None else logp, mask,
                seq_adv.to(torch.float32).contiguous(), row_w,
                starts if starts.numel() else row_ptr, ends if ends.numel() else row_ptr,
                vals if vals.numel() else row_w, row_ptr,
                grad, adv, part,
                length, part.shape[1], float(beta), 1.0 - clip_low, 1.0 + clip_high, float(kl_coef),
                logp.stride(0), old_logp.stride(0),
                ref_logp.stride(0) if ref_logp is not None else 0, mask.stride(0), grad.stride(0),
                HAS_REF=ref_logp is not None, STORE_ADV=want_stats, BLOCK_T=block_t,
                num_warps=4 if block_t <= 512 else 8,
            )
        else:
            part.zero_()
        ctx.save_for_backward(grad)
        loss = part[0].sum().to(logp.dtype if logp.dtype == torch.float64 else torch.float32)
        if want_stats:
            n = mask.sum(dtype=torch.float32)
            safe = n.clamp(min=torch.finfo(torch.float32).tiny)
            stats_out.update(token_adv=adv, clip_frac=part[1].sum() / safe, mask_tokens=n)
            if ref_logp is not None:
                stats_out["kl"] = part[2].sum() / safe
        return loss

    @staticmethod
    def backward(ctx, g):
        (grad,) = ctx.saved_tensors
        return (grad * g.to(grad.dtype),) + (None,) * 12


# --------------------------------------------------------------------------------------------
# Public function
# --------------------------------------------------------------------------------------------


def span_advantage_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    mask: torch.Tensor,
    seq_adv: torch.Tensor,
    spans: torch.Tensor,
    span_values: torch.Tensor,
    *,
    ref_logp: torch.Tensor | None = None,
    beta: float = 1.0,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    kl_coef: float = 0.0,
    agg: str = "token-mean",
    return_stats: bool = False,
    backend: str | None = None,
):
    """Span-weighted GRPO loss (see the module docstring for the formula).

    logp (requires grad), old_logp, ref_logp: float [B, T]; mask: bool or float [B, T];
    seq_adv: float [B]; spans: int64 [S, 3] (sequence, start, end), end exclusive, S may be 0;
    span_values: float [S]. Returns the scalar loss (float32; float64 for float64 logp on the
    torch path), differentiable w.r.t. logp; on the Triton path the gradient is computed in the
    forward pass and only scaled in backward. With `return_stats` returns (loss, stats) with
    detached ``token_adv`` [B, T], ``clip_frac``, ``mask_tokens`` and (with ref_logp) ``kl``.
    backend: overrides `IGSEARCH_KERNEL_BACKEND`.
    """
    if agg not in AGGREGATIONS:
        raise ValueError(f"agg={agg!r}: expected one of {AGGREGATIONS}")
    if logp.dim() != 2:
        raise ValueError(f"logp must be [B, T], got {tuple(logp.shape)}")
    for name, x in (("old_logp", old_logp), ("mask", mask), ("ref_logp", ref_logp)):
        if x is not None and x.shape != logp.shape:
            raise ValueError(f"{name} must have logp's shape {tuple(logp.shape)}, got {tuple(x.shape)}")
    if seq_adv.shape != (logp.shape[0],):
        raise ValueError(f"seq_adv must be [B={logp.shape[0]}], got {tuple(seq_adv.shape)}")
    kwargs = dict(ref_logp=ref_logp, beta=beta, clip_low=clip_low, clip_high=clip_high,
                  kl_coef=kl_coef, agg=agg, return_stats=return_stats)
    if resolve_backend(logp, backend=backend) == "torch":
        return span_advantage_loss_reference(logp, old_logp, mask, seq_adv, spans, span_values, **kwargs)
    if logp.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"Triton span_advantage_loss takes fp32/bf16/fp16 logp, got {logp.dtype}")
    stats = {} if return_stats else None
    loss = _SpanLossTriton.apply(
        logp, old_logp.detach(), None if ref_logp is None else ref_logp.detach(), mask,
        seq_adv.detach(), spans, span_values.detach(),
        float(beta), float(clip_low), float(clip_high), float(kl_coef), agg, stats,
    )
    return (loss, stats) if return_stats else loss
