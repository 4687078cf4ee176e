"""Fused LM head + log-softmax + gather: log p(target) without the [M, V] logits.

For rows h_m of ``hidden`` [M, d], LM-head ``weight`` [V, d] (optional ``bias`` [V]) and
``temperature`` tau, the logits are z_m = (weight @ h_m + bias) / tau and

    logp[m]    = z_m[targets[m]] - logsumexp(z_m)
    entropy[m] = logsumexp(z_m) - sum_v softmax(z_m)_v * z_m[v]

Forward (Triton): a grid of (row block, vocab split); every program streams its vocab tiles,
computes the [BLOCK_M, BLOCK_N] logit tile with fp32 accumulation and keeps an online max, sum of
exponentials and sum of p*z per row; the few partials per row are merged afterwards. Splitting the
vocabulary keeps a GPU busy when only a few rows are scored (IG scoring gathers a handful of answer
tokens per context).

Backward (Triton): one program per (row block, vocab tile) recomputes its logit tile, forms
dz = g_logp * (onehot - p) - g_ent * p * (z - lse + H) and adds dz @ W into grad hidden and
dz^T @ h into grad weight (fp32 atomics), so memory is the gradients plus one tile per program.

Backends (`resolve_backend`, ``IGSEARCH_KERNEL_BACKEND`` / ``backend=``):

- CUDA tensors: the Triton kernels above.
- CPU tensors, native library built (``make native``; ``auto`` default): ``torch.ops.igsearch.gather_logprobs``
  (kernels/csrc/gather_logprobs.cpp) for fp32/bf16/fp16 without entropy: vocab tiles of 1024 rows through
  the BLAS, online log-sum-exp, logits recomputed per tile in backward; memory one
  [min(M, 1024), 1024] fp32 tile. ``return_entropy=True`` or fp64 fall back to the torch path under
  ``auto`` and are refused under ``native``.
- Otherwise `_ChunkedTorch`: the same formula in torch over row chunks that recomputes logits in
  backward (peak memory chunk x V, not M x V); it also handles fp64 and the entropy.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._backend import fp32_dot_precision, interpreter_on, num_sms, requested_backend, resolve_backend
from ._tl import dot_upcast, tile_dot

# --------------------------------------------------------------------------------------------
# Torch reference (plain eager formula, materialises [M, V])
# --------------------------------------------------------------------------------------------


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def gather_logprobs_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    return_entropy: bool = False,
    ignore_index: int = -100,
):
    """Eager torch: logits [M, V] -> log_softmax -> gather. Same arguments and outputs as
    `gather_logprobs`; differentiable through autograd; float64 in, float64 out."""
    work = _work_dtype(hidden)
    logits = hidden.to(work) @ weight.to(work).t()
    if bias is not None:
        logits = logits + bias.to(work)
    logits = logits / temperature
    logsm = torch.log_softmax(logits, dim=-1)
    valid = targets != ignore_index
    picked = logsm.gather(1, torch.where(valid, targets, 0).long()[:, None]).squeeze(1)
    logp = torch.where(valid, picked, torch.zeros_like(picked))
    if not return_entropy:
        return logp
    entropy = -(logsm.exp() * logsm).sum(-1)
    return logp, entropy


# --------------------------------------------------------------------------------------------
# Chunked torch path (CPU dispatch)
# --------------------------------------------------------------------------------------------


def _rows_per_chunk(v: int) -> int:
    return max(1, (1 << 24) // max(v, 1))  # ~64 MiB of fp32 logits per chunk


def _chunk_logits(h, weight, bias, temperature, work):
    z = h.to(work) @ weight.to(work).t()
    if bias is not None:
        z += bias.to(work)
    if temperature != 1.0:
        z /= temperature
    return z


class _ChunkedTorch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, ignore_index, want_entropy):
        work = _work_dtype(hidden)
        m = hidden.shape[0]
        logp = torch.zeros(m, dtype=work, device=hidden.device)
        lse = torch.empty(m, dtype=work, device=hidden.device)
        ent = torch.zeros(m, dtype=work, device=hidden.device)
        valid = targets != ignore_index
        safe_t = torch.where(valid, targets, 0).long()
        step = _rows_per_chunk(weight.shape[0])
        for lo in range(0, m, step):
            sl = slice(lo, lo + step)
            z = _chunk_logits(hidden[sl], weight, bias, temperature, work)
            z_t = z.gather(1, safe_t[sl, None]).squeeze(1)
            logsm = torch.log_softmax(z, -1)  # one fused pass; lse = z_t - log p(t)
            picked = logsm.gather(1, safe_t[sl, None]).squeeze(1)
            lse[sl] = z_t - picked
            logp[sl] = torch.where(valid[sl], picked, torch.zeros_like(picked))
            if want_entropy:
                ent[sl] = -(logsm.exp() * logsm).sum(-1)
            del logsm
        ctx.save_for_backward(hidden, weight, bias, safe_t, valid, lse, ent)
        ctx.set_materialize_grads(False)
        ctx.temperature = temperature
        if not want_entropy:
            ctx.mark_non_differentiable(ent)
        return logp, ent

    @staticmethod
    def backward(ctx, g_logp, g_ent):
        hidden, weight, bias, safe_t, valid, lse, ent = ctx.saved_tensors
        work = lse.dtype
        tau = ctx.temperature
        need_h, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[2]
        g_logp = torch.zeros_like(lse) if g_logp is None else torch.where(valid, g_logp.to(work), 0.0)
        dh = torch.zeros(hidden.shape, dtype=work, device=hidden.device) if need_h else None
        dw = torch.zeros(weight.shape, dtype=work, device=weight.device) if need_w else None
        db = torch.zeros(weight.shape[0], dtype=work, device=weight.device) if need_b else None
        step = _rows_per_chunk(weight.shape[0])
        for lo in range(0, hidden.shape[0], step):
            sl = slice(lo, lo + step)
            z = _chunk_logits(hidden[sl], weight, bias, tau, work)
            p = torch.exp(z - lse[sl, None])
            if g_ent is not None:
                z.sub_(lse[sl, None] - ent[sl, None]).mul_(p).mul_(g_ent[sl, None].to(work))
                dz = torch.addcmul(z, g_logp[sl, None], p).neg_()
            else:
                dz = p.mul_(-g_logp[sl, None])
            dz.scatter_add_(1, safe_t[sl, None], g_logp[sl, None])
            dz /= tau
            if need_h:
                dh[sl] = dz @ weight.to(work)
            if need_w:
                dw += dz.t() @ hidden[sl].to(work)
            if need_b:
                db += dz.sum(0)
        return (
            dh.to(hidden.dtype) if need_h else None,
            dw.to(weight.dtype) if need_w else None,
            db.to(bias.dtype) if need_b else None,
            None, None, None, None,
        )


# --------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------


@triton.jit
def _logit_tile(H, W, offs_m, offs_n, m_ok, n_ok, D, stride_h, stride_w,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, D, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < D
        h = tl.load(H + offs_m[:, None] * stride_h + offs_k[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(W + offs_n[None, :] * stride_w + offs_k[:, None], mask=n_ok[None, :] & k_ok[:, None], other=0.0)
        acc += tile_dot(h, w, PRECISION, UPCAST)
    return acc


@triton.jit
def _gather_logprobs_fwd_kernel(
    H, W, BIAS, TGT, PART_MAX, PART_SUM, PART_ZSUM, PART_TGT,
    M, V, D, inv_temp, tiles_per_split,
    stride_h, stride_w,
    HAS_BIAS: tl.constexpr,
    WANT_ENTROPY: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    pid_m = tl.program_id(0)
    split = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < M
    tgt = tl.load(TGT + offs_m, mask=m_ok, other=-1)

    run_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
    run_sum = tl.zeros([BLOCK_M], tl.float32)
    run_zsum = tl.zeros([BLOCK_M], tl.float32)
    z_tgt = tl.zeros([BLOCK_M], tl.float32)

    n_tiles = tl.cdiv(V, BLOCK_N)
    first = split * tiles_per_split
    last = tl.minimum(first + tiles_per_split, n_tiles)
    for tile in range(first, last):
        offs_n = tile * BLOCK_N + tl.arange(0, BLOCK_N)
        n_ok = offs_n < V
        z = _logit_tile(H, W, offs_m, offs_n, m_ok, n_ok, D, stride_h, stride_w,
                        BLOCK_M, BLOCK_N, BLOCK_K, PRECISION, UPCAST)
        if HAS_BIAS:
            z += tl.load(BIAS + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        z = tl.where(n_ok[None, :], z * inv_temp, float("-inf"))
        new_max = tl.maximum(run_max, tl.max(z, 1))
        p = tl.exp(z - new_max[:, None])
        alpha = tl.exp(run_max - new_max)
        run_sum = run_sum * alpha + tl.sum(p, 1)
        if WANT_ENTROPY:
            run_zsum = run_zsum * alpha + tl.sum(p * tl.where(n_ok[None, :], z, 0.0), 1)
        z_tgt += tl.sum(tl.where(offs_n[None, :] == tgt[:, None], z, 0.0), 1)
        run_max = new_max

    out = split * M + offs_m
    tl.store(PART_MAX + out, run_max, mask=m_ok)
    tl.store(PART_SUM + out, run_sum, mask=m_ok)
    tl.store(PART_TGT + out, z_tgt, mask=m_ok)
    if WANT_ENTROPY:
        tl.store(PART_ZSUM + out, run_zsum, mask=m_ok)


@triton.jit
def _gather_logprobs_bwd_kernel(
    H, W, BIAS, TGT, LSE, ENT, G_LOGP, G_ENT, DH, DW, DB,
    M, V, D, inv_temp,
    stride_h, stride_w,
    HAS_BIAS: tl.constexpr,
    HAS_G_ENT: tl.constexpr,
    NEED_DH: tl.constexpr,
    NEED_DW: tl.constexpr,
    NEED_DB: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    n_ok = offs_n < V

    z = _logit_tile(H, W, offs_m, offs_n, m_ok, n_ok, D, stride_h, stride_w,
                    BLOCK_M, BLOCK_N, BLOCK_K, PRECISION, UPCAST)
    if HAS_BIAS:
        z += tl.load(BIAS + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    z = z * inv_temp
    lse = tl.load(LSE + offs_m, mask=m_ok, other=0.0)
    g = tl.load(G_LOGP + offs_m, mask=m_ok, other=0.0)
    tgt = tl.load(TGT + offs_m, mask=m_ok, other=-1)
    g = tl.where(tgt >= 0, g, 0.0)  # ignored rows: no gradient through logp
    live = m_ok[:, None] & n_ok[None, :]
    p = tl.where(live, tl.exp(z - lse[:, None]), 0.0)
    dz = tl.where(offs_n[None, :] == tgt[:, None], g[:, None], 0.0) - g[:, None] * p
    if HAS_G_ENT:
        ge = tl.load(G_ENT + offs_m, mask=m_ok, other=0.0)
        ent = tl.load(ENT + offs_m, mask=m_ok, other=0.0)
        dz -= ge[:, None] * p * tl.where(live, z - lse[:, None] + ent[:, None], 0.0)
    dz = dz * inv_temp

    if NEED_DB:
        tl.atomic_add(DB + offs_n, tl.sum(dz, 0), mask=n_ok)
    for k0 in range(0, D, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < D
        if NEED_DH:
            w = tl.load(W + offs_n[:, None] * stride_w + offs_k[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0)
            dh = tile_dot(dz.to(w.dtype), w, PRECISION, UPCAST)
            tl.atomic_add(DH + offs_m[:, None] * D + offs_k[None, :], dh, mask=m_ok[:, None] & k_ok[None, :])
        if NEED_DW:
            h = tl.load(H + offs_m[:, None] * stride_h + offs_k[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
            dw = tile_dot(tl.trans(dz).to(h.dtype), h, PRECISION, UPCAST)
            tl.atomic_add(DW + offs_n[:, None] * D + offs_k[None, :], dw, mask=n_ok[:, None] & k_ok[None, :])


def _blocks(m: int, device: torch.device) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K) for M rows."""
    if device.type != "cuda" and interpreter_on():
        return 16, 64, 32
    return min(64, max(16, triton.next_power_of_2(m))), 128, 64


def _precision(x: torch.Tensor) -> str:
    return fp32_dot_precision() if x.dtype == torch.float32 else "ieee"


class _GatherLogprobsTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, ignore_index, want_entropy):
        m, d = hidden.shape
        v = weight.shape[0]
        dev = hidden.device
        bm, bn, bk = _blocks(m, dev)
        tgt = torch.where(targets == ignore_index, -1, targets).to(torch.int32).contiguous()
        row_blocks = max(1, triton.cdiv(m, bm))
        n_tiles = triton.cdiv(v, bn)
        wanted = max(1, triton.cdiv(4 * num_sms(dev), row_blocks))
        tiles_per_split = triton.cdiv(n_tiles, min(n_tiles, wanted))
        splits = triton.cdiv(n_tiles, tiles_per_split)
        part = torch.empty(4, splits, m, dtype=torch.float32, device=dev)
        if m:
            _gather_logprobs_fwd_kernel[(row_blocks, splits)](
                hidden, weight, bias if bias is not None else hidden, tgt,
                part[0], part[1], part[2], part[3],
                m, v, d, 1.0 / temperature, tiles_per_split,
                hidden.stride(0), weight.stride(0),
                HAS_BIAS=bias is not None, WANT_ENTROPY=want_entropy,
                BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
                PRECISION=_precision(hidden), UPCAST=dot_upcast(),
                num_warps=8 if bm >= 64 else 4, num_stages=3,
            )
        run_max = part[0].max(0).values
        scale = torch.exp(part[0] - run_max)
        total = (part[1] * scale).sum(0)
        lse = run_max + torch.log(total)
        logp = torch.where(tgt >= 0, part[3].sum(0) - lse, 0.0)
        ent = lse - (part[2] * scale).sum(0) / total if want_entropy else torch.zeros_like(lse)
        ctx.save_for_backward(hidden, weight, bias, tgt, lse, ent)
        ctx.set_materialize_grads(False)
        ctx.cfg = (temperature, want_entropy, bm, bn, bk)
        if not want_entropy:
            ctx.mark_non_differentiable(ent)
        return logp, ent

    @staticmethod
    def backward(ctx, g_logp, g_ent):
        hidden, weight, bias, tgt, lse, ent = ctx.saved_tensors
        temperature, want_entropy, bm, bn, bk = ctx.cfg
        m, d = hidden.shape
        v = weight.shape[0]
        need_dh, need_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_db = bias is not None and ctx.needs_input_grad[2]
        has_g_ent = want_entropy and g_ent is not None
        g_logp = torch.zeros_like(lse) if g_logp is None else g_logp.float().contiguous()
        dh = torch.zeros(m, d, dtype=torch.float32, device=hidden.device) if need_dh else None
        dw = torch.zeros(v, d, dtype=torch.float32, device=weight.device) if need_dw else None
        db = torch.zeros(v, dtype=torch.float32, device=weight.device) if need_db else None
        if m and (need_dh or need_dw or need_db):
            dummy = lse
            _gather_logprobs_bwd_kernel[(triton.cdiv(m, bm), triton.cdiv(v, bn))](
                hidden, weight, bias if bias is not None else dummy, tgt, lse, ent,
                g_logp, g_ent.float().contiguous() if has_g_ent else dummy,
                dh if need_dh else dummy, dw if need_dw else dummy, db if need_db else dummy,
                m, v, d, 1.0 / temperature,
                hidden.stride(0), weight.stride(0),
                HAS_BIAS=bias is not None, HAS_G_ENT=has_g_ent,
                NEED_DH=need_dh, NEED_DW=need_dw, NEED_DB=need_db,
                BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
                PRECISION=_precision(hidden), UPCAST=dot_upcast(),
                num_warps=8 if bm >= 64 else 4, num_stages=2,
            )
        return (
            dh.to(hidden.dtype) if need_dh else None,
            dw.to(weight.dtype) if need_dw else None,
            db.to(bias.dtype) if need_db else None,
            None, None, None, None,
        )


# --------------------------------------------------------------------------------------------
# Native CPU op (kernels/csrc/gather_logprobs.cpp)
# --------------------------------------------------------------------------------------------

_NATIVE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _native_refusal(hidden, weight, bias, return_entropy) -> tuple[type[Exception], str] | None:
    """None when the native op takes these arguments, else (exception type, why)."""
    if return_entropy:
        return ValueError, "the native op does not compute the entropy (return_entropy=True)"
    if hidden.dtype not in _NATIVE_DTYPES or weight.dtype != hidden.dtype:
        return TypeError, f"the native op takes fp32/bf16/fp16 hidden and weight of one dtype, got {hidden.dtype}, {weight.dtype}"
    if bias is not None and bias.dtype not in _NATIVE_DTYPES:
        return TypeError, f"the native op takes an fp32/bf16/fp16 bias, got {bias.dtype}"
    return None


def _native_gather_logprobs(hidden, weight, bias, targets, temperature, ignore_index) -> torch.Tensor:
    """logp float32 [M] from the native op (its autograd formula is registered in _native.py)."""
    logp, _lse = torch.ops.igsearch.gather_logprobs(hidden, weight, bias, targets, float(temperature), int(ignore_index), 0)
    return logp


# --------------------------------------------------------------------------------------------
# Public function
# --------------------------------------------------------------------------------------------


def gather_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    return_entropy: bool = False,
    *,
    ignore_index: int = -100,
    backend: str | None = None,
):
    """log p(targets) under the LM head, never materialising [M, V] logits.

    hidden: [M, d] (fp32, bf16 or fp16; fp64 on the torch path), rows contiguous in d.
    weight: [V, d] same dtype. bias: optional [V]. targets: int [M] in [0, V), or `ignore_index`
    for rows that must give log p = 0 and no gradient. temperature: divides the logits.
    Returns logp float32 [M] (float64 for float64 inputs), and entropy [M] of the tempered
    distribution when `return_entropy`. Differentiable w.r.t. hidden, weight and bias (through
    logp and entropy). backend: overrides `IGSEARCH_KERNEL_BACKEND`.

    Runs on: CUDA -> Triton; CPU -> the native op when built (fp32/bf16/fp16, no entropy), else
    (or for fp64 / entropy under ``auto``) the chunked torch path. ``backend="native"`` with
    entropy or an unsupported dtype raises ValueError / TypeError.
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"expected hidden [M, d] and weight [V, d], got {tuple(hidden.shape)} and {tuple(weight.shape)}")
    if targets.shape != (hidden.shape[0],):
        raise ValueError(f"targets must be [M={hidden.shape[0]}], got {tuple(targets.shape)}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must be [V={weight.shape[0]}], got {tuple(bias.shape)}")
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    choice = resolve_backend(hidden, weight, backend=backend, op="gather_logprobs")
    if choice == "native":
        refusal = _native_refusal(hidden, weight, bias, return_entropy)
        if refusal is None:
            return _native_gather_logprobs(hidden, weight, bias, targets, temperature, ignore_index)
        if (backend or requested_backend()).lower() == "native":
            exc, why = refusal
            raise exc(f"gather_logprobs with backend native: {why}; use backend='torch' or 'auto'")
        choice = "torch"
    if choice == "torch":
        logp, ent = _ChunkedTorch.apply(hidden, weight, bias, targets, float(temperature), ignore_index, bool(return_entropy))
    else:
        if hidden.dtype not in (torch.float32, torch.float16, torch.bfloat16) or weight.dtype != hidden.dtype:
            raise TypeError(f"Triton gather_logprobs takes fp32/bf16/fp16 hidden and weight of one dtype, got {hidden.dtype}, {weight.dtype}")
        hidden = hidden if hidden.stride(-1) == 1 else hidden.contiguous()
        weight = weight if weight.stride(-1) == 1 else weight.contiguous()
        logp, ent = _GatherLogprobsTriton.apply(
            hidden, weight, bias.contiguous() if bias is not None else None, targets,
            float(temperature), ignore_index, bool(return_entropy),
        )
    return (logp, ent) if return_entropy else logp
