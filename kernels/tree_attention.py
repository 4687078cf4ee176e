"""Tree attention over packed trie nodes: Triton forward, torch reference, block-mask builder.

Layout (the tree scorer's packing):

- Tokens of a trie node are contiguous; nodes are numbered in packing order, which is topological
  (a parent comes before its children), so `node_of_token` is non-decreasing.
- ``q``: [T, Hq, D]; ``k``, ``v``: [T, Hkv, D] with Hq a multiple of Hkv (grouped-query heads).
- ``node_of_token``: int [T], the node id of every packed token, in [0, N).
- ``ancestry``: bool [N, N]; ``ancestry[i, j]`` is True iff node j is node i or an ancestor of i.

Mask: token i (node a) may attend to token j (node b) iff ``ancestry[a, b]`` and, when a == b,
``j <= i`` (causal inside a node; ancestors are seen in full). Every token sees itself, so no row
is empty.

Past keys (cached ancestor KV): ``past_k``, ``past_v`` [P, Hkv, D] with ``past_node`` int [P] are keys
and values of tokens outside the packed run: cached ones (a trunk whose KV the trainer computed) or
ones forwarded by an earlier run. A past token of node b is seen by token i of node a iff
``ancestry[a, b]``: it must come before every run token of its own node in that node's path (a
cached prefix of a node, never a suffix). The scorer uses this to forward only the tokens it has no
KV for, with one call per run. Output: [T, Hq, D] in the dtype of q, softmax(q k^T * scale) v with scale 1/sqrt(D) by
default. Used per transformer layer with position ids = depth of the token in its path (see
`tree_position_ids`).

Backends (see ``_backend.py``): the Triton kernel on CUDA; the native op ``igsearch::tree_attention``
(``csrc/tree_attention.cpp``) on the CPU when it is built; else the torch path (SDPA with the tree
mask over query chunks). The Triton kernel visits, for each block of queries, only the key blocks
that hold at least one allowed pair (`build_tree_block_mask`): tiles of nodes that are not ancestors
are skipped, never loaded. Blocks where every pair is allowed skip the element mask too. The native
op gathers, per block of queries, only the keys that block may see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ._backend import fp32_dot_precision, interpreter_on, resolve_backend
from ._tl import dot_upcast, tile_dot

# --------------------------------------------------------------------------------------------
# Tree structure helpers
# --------------------------------------------------------------------------------------------


def build_tree_ancestry(parent: torch.Tensor) -> torch.Tensor:
    """Ancestry matrix of a forest given as a parent array.

    parent: int [N], ``parent[i]`` the parent node of i or -1 for a root; parents must come first
    (``parent[i] < i``). Returns bool [N, N] on parent's device with ``out[i, j]`` True iff j is i
    or an ancestor of i.
    """
    parent = parent.to(torch.long)
    n = parent.numel()
    idx = torch.arange(n, device=parent.device)
    if n and ((parent >= idx) | (parent < -1)).any():
        raise ValueError("parent[i] must be -1 (root) or an earlier node (< i)")
    anc = torch.zeros(n, n, dtype=torch.bool, device=parent.device)
    anc[idx, idx] = True
    cur = parent.clone()
    while n and bool((cur >= 0).any()):  # one step up the tree per iteration (depth iterations)
        live = cur >= 0
        anc[idx[live], cur[live]] = True
        cur = torch.where(live, parent[cur.clamp(min=0)], cur)
    return anc


def tree_token_mask(node_of_token: torch.Tensor, ancestry: torch.Tensor) -> torch.Tensor:
    """Dense token mask bool [T, T] (True = query row may attend to key column) of the tree layout."""
    nt = node_of_token.to(torch.long)
    pos = torch.arange(nt.numel(), device=nt.device)
    same = nt[:, None] == nt[None, :]
    return ancestry.to(torch.bool)[nt[:, None], nt[None, :]] & (~same | (pos[None, :] <= pos[:, None]))


def tree_position_ids(node_of_token: torch.Tensor, ancestry: torch.Tensor) -> torch.Tensor:
    """Position id of every packed token = its depth in its root-to-leaf path (long [T]).

    That is the number of tokens in the node's strict ancestors plus the index inside the node.
    """
    nt = node_of_token.to(torch.long)
    n = ancestry.shape[0]
    lengths = torch.bincount(nt, minlength=n).to(torch.float64)
    strict = ancestry.to(torch.float64) - torch.eye(n, dtype=torch.float64, device=ancestry.device)
    node_depth = (strict @ lengths).round().to(torch.long)
    first = torch.cumsum(torch.bincount(nt, minlength=n), 0) - torch.bincount(nt, minlength=n)
    return node_depth[nt] + torch.arange(nt.numel(), device=nt.device) - first[nt]


def check_tree_layout(node_of_token: torch.Tensor, ancestry: torch.Tensor) -> None:
    """Raise ValueError when the packing breaks the layout rules of this module."""
    if ancestry.dim() != 2 or ancestry.shape[0] != ancestry.shape[1]:
        raise ValueError(f"ancestry must be [N, N], got {tuple(ancestry.shape)}")
    n = ancestry.shape[0]
    nt = node_of_token
    if nt.dim() != 1:
        raise ValueError("node_of_token must be 1-D [T]")
    if nt.numel() == 0:
        return
    if int(nt.min()) < 0 or int(nt.max()) >= n:
        raise ValueError(f"node_of_token values must lie in [0, {n})")
    if nt.numel() > 1 and bool((nt[1:] < nt[:-1]).any()):
        raise ValueError("node_of_token must be non-decreasing (node tokens contiguous, nodes in order)")
    if not bool(ancestry.to(torch.bool).diagonal().all()):
        raise ValueError("ancestry[i, i] must be True (a node sees itself)")
    if bool(torch.triu(ancestry.to(torch.bool), diagonal=1).any()):
        raise ValueError("ancestry[i, j] with j > i: ancestors must come before their descendants")


@dataclass
class TreeBlockMask:
    """Which key blocks each query block visits (compressed rows, like FlexAttention's BlockMask).

    kv_indices: int32 [QB, max_visits], key block ids in ascending order (padding after count).
    kv_full: int32 [QB, max_visits], 1 where every (query, key) pair of the block is allowed.
    kv_count: int32 [QB], visited key blocks per query block.
    """

    kv_indices: torch.Tensor
    kv_full: torch.Tensor
    kv_count: torch.Tensor
    block_m: int
    block_n: int
    num_tokens: int

    @property
    def visited_blocks(self) -> int:
        return int(self.kv_count.sum())

    @property
    def causal_blocks(self) -> int:
        """Key blocks a plain causal kernel would visit (for the skip ratio)."""
        qb = self.kv_count.numel()
        q_last = torch.clamp(torch.arange(1, qb + 1) * self.block_m, max=self.num_tokens) - 1
        return int((q_last // self.block_n + 1).sum())


def build_tree_block_mask(
    node_of_token: torch.Tensor,
    ancestry: torch.Tensor,
    block_m: int = 64,
    block_n: int = 64,
    check: bool = True,
    past_node: torch.Tensor | None = None,
) -> TreeBlockMask:
    """Block-sparse visit lists for `tree_attention`'s Triton kernel.

    A key block is visited iff it holds at least one allowed pair for the query block. Because
    nodes are contiguous and topologically ordered, that is: some node of the query block has some
    node of the key block as ancestor-or-self (a rectangle sum over a prefix-summed ancestry) and
    the key block starts no later than the query block ends. Reuse the result across layers.

    With ``past_node`` [P] the keys are the P past tokens followed by the T run tokens (key index
    ``P + j`` for run token j), and visits are found at node level through matrix products, which
    holds for any order of the past tokens (see `_past_block_mask`).
    """
    if check:
        check_tree_layout(node_of_token, ancestry)
    if past_node is not None and past_node.numel():
        return _past_block_mask(node_of_token, ancestry, past_node, block_m, block_n)
    device = node_of_token.device
    nt = node_of_token.to(torch.long)
    t = nt.numel()
    n = ancestry.shape[0]
    qb, kb = triton.cdiv(t, block_m), triton.cdiv(t, block_n)
    if t == 0:
        empty = torch.zeros(0, 1, dtype=torch.int32, device=device)
        return TreeBlockMask(empty, empty, torch.zeros(0, dtype=torch.int32, device=device), block_m, block_n, 0)
    q_first = torch.arange(qb, device=device) * block_m
    q_last = torch.clamp(q_first + block_m, max=t) - 1
    k_first = torch.arange(kb, device=device) * block_n
    k_last = torch.clamp(k_first + block_n, max=t) - 1
    aq, bq, ak, bk = nt[q_first], nt[q_last], nt[k_first], nt[k_last]

    psum = torch.zeros(n + 1, n + 1, dtype=torch.int32, device=device)
    psum[1:, 1:] = ancestry.to(torch.int32).cumsum(0, dtype=torch.int32).cumsum(1, dtype=torch.int32)
    r0, r1 = aq[:, None], bq[:, None] + 1
    c0, c1 = ak[None, :], bk[None, :] + 1
    allowed_nodes = psum[r1, c1] - psum[r0, c1] - psum[r1, c0] + psum[r0, c0]
    area = (bq - aq + 1)[:, None] * (bk - ak + 1)[None, :]
    visit = (allowed_nodes > 0) & (k_first[None, :] <= q_last[:, None])
    full = (allowed_nodes == area) & (k_last[None, :] < q_first[:, None])

    count = visit.sum(1)
    width = max(int(count.max()), 1)
    cols = torch.arange(kb, device=device)
    order = torch.argsort(torch.where(visit, cols, cols + kb), dim=1)[:, :width]
    indices = torch.where(torch.arange(width, device=device)[None, :] < count[:, None], order, 0)
    full_sel = torch.gather(full, 1, order) & (torch.arange(width, device=device)[None, :] < count[:, None])
    return TreeBlockMask(
        indices.to(torch.int32).contiguous(),
        full_sel.to(torch.int32).contiguous(),
        count.to(torch.int32).contiguous(),
        block_m,
        block_n,
        t,
    )


def _past_block_mask(node_of_token, ancestry, past_node, block_m, block_n) -> TreeBlockMask:
    """Visit lists when past keys come first: Q [QB, N] / K [KB, N] mark the nodes present in each
    query / key block; a key block is visited iff some query node sees some key node (Q @ A @ K^T >
    0) and it holds a key that is not after the block's last query; it is full iff every node pair
    is allowed and every key precedes the block's first query (so no element mask is needed)."""
    device = node_of_token.device
    nq, n = node_of_token.to(torch.long), ancestry.shape[0]
    keys = torch.cat([past_node.to(device=device, dtype=torch.long), nq])
    t, p = nq.numel(), past_node.numel()
    qb, kb = triton.cdiv(t, block_m), triton.cdiv(t + p, block_n)

    def present(nodes, block, blocks):
        out = torch.zeros(blocks, n, dtype=torch.float32, device=device)
        out[torch.arange(nodes.numel(), device=device) // block, nodes] = 1.0
        return out

    qp, kp = present(nq, block_m, qb), present(keys, block_n, kb)
    anc = ancestry.to(device=device, dtype=torch.float32)
    allowed_pairs = qp @ anc @ kp.T  # [QB, KB] node pairs (a in block q, b in block k) with anc[a, b]
    q_first = torch.arange(qb, device=device) * block_m
    q_last = torch.clamp(q_first + block_m, max=t) - 1
    k_first = torch.arange(kb, device=device) * block_n - p  # run index of each key block's first key
    k_last = torch.clamp(k_first + p + block_n, max=t + p) - 1 - p
    visit = (allowed_pairs > 0) & (k_first[None, :] <= q_last[:, None])
    area = qp.sum(1)[:, None] * kp.sum(1)[None, :]
    full = (allowed_pairs == area) & (k_last[None, :] < q_first[:, None])
    count = visit.sum(1)
    width = max(int(count.max()), 1)
    cols = torch.arange(kb, device=device)
    order = torch.argsort(torch.where(visit, cols, cols + kb), dim=1)[:, :width]
    live = torch.arange(width, device=device)[None, :] < count[:, None]
    return TreeBlockMask(
        torch.where(live, order, 0).to(torch.int32).contiguous(),
        (torch.gather(full, 1, order) & live).to(torch.int32).contiguous(),
        count.to(torch.int32).contiguous(),
        block_m,
        block_n,
        t,
    )


# --------------------------------------------------------------------------------------------
# Triton kernel
# --------------------------------------------------------------------------------------------


@triton.jit
def _tree_attn_fwd_kernel(
    Q, K, V, O, NODE, KNODE, ANC, KV_IDX, KV_FULL, KV_CNT,
    T, P, N, qk_scale,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
    stride_idx,
    GROUP: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    pid_m = tl.program_id(0)
    head = tl.program_id(1)
    kv_head = head // GROUP

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < T
    d_ok = offs_d < HEAD_DIM

    q = tl.load(Q + offs_m[:, None] * stride_qt + head * stride_qh + offs_d[None, :],
                mask=m_ok[:, None] & d_ok[None, :], other=0.0)
    node_q = tl.load(NODE + offs_m, mask=m_ok, other=0)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)

    n_visits = tl.load(KV_CNT + pid_m)
    for i in range(0, n_visits):
        kb = tl.load(KV_IDX + pid_m * stride_idx + i)
        is_full = tl.load(KV_FULL + pid_m * stride_idx + i)
        offs_n = kb * BLOCK_N + tl.arange(0, BLOCK_N)  # key index: P past keys, then the run's T
        n_ok = offs_n < T + P

        k = tl.load(K + offs_n[None, :] * stride_kt + kv_head * stride_kh + offs_d[:, None],
                    mask=n_ok[None, :] & d_ok[:, None], other=0.0)
        s = tile_dot(q, k, PRECISION, UPCAST) * qk_scale  # log2 domain
        if is_full == 0:
            node_k = tl.load(KNODE + offs_n, mask=n_ok, other=0)
            anc = tl.load(ANC + node_q[:, None] * N + node_k[None, :],
                          mask=m_ok[:, None] & n_ok[None, :], other=0)
            # past keys (offs_n < P) precede every query of their node, so the causal test passes
            causal = (node_q[:, None] != node_k[None, :]) | ((offs_n[None, :] - P) <= offs_m[:, None])
            s = tl.where((anc != 0) & causal & n_ok[None, :], s, float("-inf"))

        m_new = tl.maximum(m_i, tl.max(s, 1))
        # rows with nothing allowed yet keep m = -inf; subtract 0 so exp2 gives 0, not NaN
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s - m_sub[:, None])
        alpha = tl.math.exp2(m_i - m_sub)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(V + offs_n[:, None] * stride_vt + kv_head * stride_vh + offs_d[None, :],
                    mask=n_ok[:, None] & d_ok[None, :], other=0.0)
        acc = acc * alpha[:, None] + tile_dot(p.to(v.dtype), v, PRECISION, UPCAST)
        m_i = m_new

    l_i = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_i[:, None]
    tl.store(O + offs_m[:, None] * stride_ot + head * stride_oh + offs_d[None, :],
             out.to(O.dtype.element_ty), mask=m_ok[:, None] & d_ok[None, :])


def default_blocks(device: torch.device) -> tuple[int, int]:
    """(block_m, block_n) used when no block mask is given."""
    if device.type == "cuda":
        return 64, 64
    return (32, 32) if interpreter_on() else (64, 64)


def _tree_attention_triton(q, k, v, node_of_token, ancestry, scale, block_mask, past):
    t, hq, d = q.shape
    hkv = k.shape[1]
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    out = torch.empty_like(q)
    if t == 0:
        return out
    node = node_of_token.to(torch.int32).contiguous()
    knode, p = node, 0
    if past is not None:
        past_k, past_v, past_node = past
        p = past_node.numel()
        k, v = torch.cat([past_k, k]).contiguous(), torch.cat([past_v, v]).contiguous()
        knode = torch.cat([past_node.to(torch.int32), node]).contiguous()
    anc = ancestry.to(torch.bool).contiguous().view(torch.uint8)
    bm = block_mask
    grid = (bm.kv_count.numel(), hq)
    num_warps = 4 if d <= 64 else 8
    _tree_attn_fwd_kernel[grid](
        q, k, v, out, node, knode, anc, bm.kv_indices, bm.kv_full, bm.kv_count,
        t, p, ancestry.shape[0], scale * 1.4426950408889634,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        out.stride(0), out.stride(1), bm.kv_indices.stride(0),
        GROUP=hq // hkv, HEAD_DIM=d, BLOCK_D=triton.next_power_of_2(d),
        BLOCK_M=bm.block_m, BLOCK_N=bm.block_n,
        PRECISION=fp32_dot_precision() if q.dtype == torch.float32 else "ieee",
        UPCAST=dot_upcast(),
        num_warps=num_warps, num_stages=2,
    )
    return out


# --------------------------------------------------------------------------------------------
# Torch reference
# --------------------------------------------------------------------------------------------


def tree_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    node_of_token: torch.Tensor,
    ancestry: torch.Tensor,
    scale: float | None = None,
    chunk: int = 1024,
    *,
    past_k: torch.Tensor | None = None,
    past_v: torch.Tensor | None = None,
    past_node: torch.Tensor | None = None,
) -> torch.Tensor:
    """Plain torch tree attention (same shapes, mask and past keys as `tree_attention`).

    Computes in float64 for float64 inputs and float32 otherwise, `chunk` query rows at a time
    (memory Hq * chunk * (P + T)). Returns q's dtype.
    """
    t, hq, d = q.shape
    hkv = k.shape[1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    keys, values, key_node, n_past = _with_past(k, v, node_of_token, past_k, past_v, past_node)
    kk = keys.to(work).repeat_interleave(hq // hkv, dim=1)
    vv = values.to(work).repeat_interleave(hq // hkv, dim=1)
    nt = node_of_token.to(torch.long)
    out = torch.empty(t, hq, d, dtype=work, device=q.device)
    for lo in range(0, t, chunk):
        hi = min(lo + chunk, t)
        mask = _chunk_mask(nt, key_node, ancestry.to(torch.bool), n_past, lo, hi, hi)
        scores = torch.einsum("thd,shd->hts", q[lo:hi].to(work), kk[: n_past + hi]) * scale
        scores = scores.masked_fill(~mask, float("-inf"))
        out[lo:hi] = torch.einsum("hts,shd->thd", torch.softmax(scores, dim=-1), vv[: n_past + hi])
    return out.to(q.dtype)


def _with_past(k, v, node_of_token, past_k, past_v, past_node):
    """Keys, values and key node ids with the past tokens first: ([P + T, Hkv, D] x 2, long [P + T], P)."""
    nt = node_of_token.to(torch.long)
    if past_k is None or past_k.shape[0] == 0:
        return k, v, nt, 0
    return torch.cat([past_k, k]), torch.cat([past_v, v]), torch.cat([past_node.to(nt.device, torch.long), nt]), past_k.shape[0]


def _chunk_mask(nt, key_node, anc, n_past, lo, hi, k_hi):
    """bool [hi - lo, n_past + k_hi]: query rows lo:hi against the past keys and run keys :k_hi.
    Ancestors precede their descendants and past tokens precede their node's run tokens, so
    "causal inside a node" is just run key index <= query index."""
    pos = torch.arange(k_hi, device=nt.device)
    run_ok = pos[None, :] <= torch.arange(lo, hi, device=nt.device)[:, None]
    causal = torch.cat([torch.ones(hi - lo, n_past, dtype=torch.bool, device=nt.device), run_ok], 1)
    return anc.index_select(0, nt[lo:hi]).index_select(1, key_node[: n_past + k_hi]) & causal


def _tree_attention_torch(q, k, v, node_of_token, ancestry, scale, past=(None, None, None), chunk=512):
    """The torch path: SDPA with the tree mask, `chunk` query rows at a time, run keys cut at the
    chunk's last row (nothing later is visible). Memory Hq * chunk * (P + T)."""
    t, hq, _ = q.shape
    keys, values, key_node, n_past = _with_past(k, v, node_of_token, *past)
    nt = node_of_token.to(torch.long)
    anc = ancestry.to(torch.bool)
    out = torch.empty_like(q)
    qh, kh, vh = (x.transpose(0, 1) for x in (q, keys, values))
    for lo in range(0, t, chunk):
        hi = min(lo + chunk, t)
        mask = _chunk_mask(nt, key_node, anc, n_past, lo, hi, hi)
        res = torch.nn.functional.scaled_dot_product_attention(
            qh[:, lo:hi], kh[:, : n_past + hi], vh[:, : n_past + hi], attn_mask=mask, scale=scale,
            enable_gqa=hq != k.shape[1])
        out[lo:hi] = res.transpose(0, 1)
    return out


# --------------------------------------------------------------------------------------------
# Public function
# --------------------------------------------------------------------------------------------


def tree_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    node_of_token: torch.Tensor,
    ancestry: torch.Tensor,
    *,
    past_k: torch.Tensor | None = None,
    past_v: torch.Tensor | None = None,
    past_node: torch.Tensor | None = None,
    scale: float | None = None,
    block_mask: TreeBlockMask | None = None,
    block_m: int = 64,
    backend: str | None = None,
) -> torch.Tensor:
    """Attention of packed trie tokens over their own node (causal), all ancestor nodes, and past keys.

    q: [T, Hq, D]; k, v: [T, Hkv, D] (Hq % Hkv == 0); fp32, bf16 or fp16 (the torch path also takes
    fp64; the native op fp32 and bf16). node_of_token: int [T], non-decreasing. ancestry: bool [N, N]
    (see module docstring). past_k, past_v: [P, Hkv, D] and past_node int [P]: keys/values of
    ancestor tokens outside this run (see module docstring), all three or none.
    scale: softmax scale, 1/sqrt(D) by default. block_mask: from `build_tree_block_mask` (with the
    same ``past_node``), reuse it across layers of one forward (built here when None; Triton path
    only). block_m: query block of the native op. backend: overrides `IGSEARCH_KERNEL_BACKEND`.
    Returns [T, Hq, D] in q's dtype. Forward only on the Triton and native paths; the torch path is
    differentiable.
    """
    if q.dim() != 3 or k.dim() != 3 or v.shape != k.shape or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
        raise ValueError(f"expected q [T, Hq, D], k/v [T, Hkv, D]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"Hq={q.shape[1]} is not a multiple of Hkv={k.shape[1]}")
    if node_of_token.shape != (q.shape[0],):
        raise ValueError(f"node_of_token must be [T={q.shape[0]}], got {tuple(node_of_token.shape)}")
    past = (past_k, past_v, past_node)
    if any(x is None for x in past) and any(x is not None for x in past):
        raise ValueError("past_k, past_v and past_node go together")
    if past_k is not None:
        n_past = past_node.shape[0] if past_node.dim() == 1 else -1
        if past_k.shape != (n_past,) + tuple(k.shape[1:]) or past_v.shape != past_k.shape:
            raise ValueError(f"expected past_k/past_v [P, Hkv, D] and past_node [P]; got {tuple(past_k.shape)}, "
                             f"{tuple(past_v.shape)}, {tuple(past_node.shape)}")
    scale = 1.0 / math.sqrt(q.shape[2]) if scale is None else float(scale)
    path = resolve_backend(q, k, v, backend=backend, op="tree_attention")
    if path == "native" and q.dtype not in (torch.float32, torch.bfloat16):
        if backend == "native":
            raise TypeError(f"native tree_attention takes fp32 or bf16, got {q.dtype}")
        path = "torch"
    if path == "torch":
        return _tree_attention_torch(q, k, v, node_of_token, ancestry, scale, past)
    if path == "native":  # one dtype for q, k, v and the past (checked by the op)
        q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
        if past_k is not None:
            past_k, past_v = (x if x.stride(-1) == 1 else x.contiguous() for x in (past_k, past_v))
            past_node = past_node.to(torch.long)
        return torch.ops.igsearch.tree_attention(
            q, k, v, node_of_token.to(torch.long), ancestry.to(torch.bool), past_k, past_v, past_node, scale, int(block_m))
    if q.dtype not in (torch.float32, torch.float16, torch.bfloat16) or k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"Triton tree_attention takes fp32/bf16/fp16 q, k, v of one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    has_past = past_k is not None and past_k.shape[0] > 0
    if block_mask is None:
        bm, bn = default_blocks(q.device)
        block_mask = build_tree_block_mask(node_of_token, ancestry, bm, bn, past_node=past_node if has_past else None)
    elif block_mask.num_tokens != q.shape[0]:
        raise ValueError("block_mask was built for another packing")
    return _tree_attention_triton(q, k, v, node_of_token, ancestry, scale, block_mask, past if has_past else None)
