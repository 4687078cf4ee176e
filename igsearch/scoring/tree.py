"""The tree scorer: forward every distinct prefix once, in a tree-masked packed batch.

All sequences ``context + continuation[:-1]`` of a batch go into one token trie (``trie.py``).
Each trie node's tokens are forwarded once; a token attends to its own node causally and to every
ancestor node, at position ids equal to its depth, so every sequence sees exactly what it would
see on its own. Logits are computed only at the positions that predict continuation tokens.

Two paths behind :func:`score_tree`:

- generic (any HF causal LM): one ``model(...)`` call per chunk with a 4-D boolean mask
  [1, 1, T, T] and explicit ``position_ids`` (needs ``attn_implementation="sdpa"``). Chunks are
  groups of sequences (in trie order) whose union of trie nodes fits ``max_tokens_per_forward``;
  an ancestor shared by two chunks is forwarded in both (counted in ``tokens_forwarded``).
- fast (Qwen2 / Llama families): runs the decoder layers itself. The trie is cut into runs of
  nodes in preorder of at most ``max_tokens_per_forward`` tokens; each run attends to the cached
  keys/values of its ancestors from earlier runs, so every trie token is forwarded exactly once.
  Inside a run, attention is computed per block of ``query_block`` query tokens against only the
  keys that block may see (torch SDPA), so it costs about T x (path depth + block) rather than the
  T x T of a dense tree mask. With ``use_kernels`` (default: Triton on CUDA, the native ops on a
  CPU that built them) the run's attention is one ``igsearch_kernels.tree_attention`` call per
  layer, the earlier runs' (or cached) keys/values passed as past keys, and the LM head +
  log-softmax + gather is ``igsearch_kernels.gather_logprobs``; otherwise the gather is a
  row-chunked torch version that never holds more than ``_LOGIT_ROWS x vocab`` logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from igsearch.precision import compute_dtype, padded_rows, weight_as

from .base import ScoreOutput, ScoreRequest, finish_result, register_scorer
from .trie import PackedTrie, build_trie

_LOGIT_ROWS = 512
_FAST_MODEL_TYPES = ("qwen2", "llama")


def fast_path_budgets(model, max_tokens_per_forward: int | None, query_block: int | None) -> tuple[int, int]:
    """The fast path's run budget and query block, None = the device's default. On the CPU, runs of
    1,024 tokens and 64-query blocks were 18-22% faster than 4,096 / 256 for both the tree and the
    trunk scorer (demo rollouts, tiny policy, 1 thread; 32-128 within noise of each other); CUDA keeps
    4,096 / 256 until a GPU measures it."""
    cuda = next(model.parameters()).is_cuda
    return (max_tokens_per_forward or (4096 if cuda else 1024), query_block or (256 if cuda else 64))


# ----------------------------------------------------------------------------- shared helpers


def _scored_positions(requests: list[ScoreRequest], trie: PackedTrie, which: list[int]):
    """For requests ``which`` (sequence k of ``trie`` is request which[k]): packed index and target
    of every continuation token. Returns (index long [P], target long [P], owner list of
    (request, offset, length))."""
    idx, tgt, owner = [], [], []
    offset = 0
    for k, r in enumerate(which):
        req = requests[r]
        c, n = len(req.context_ids), len(req.continuation_ids)
        idx.append(trie.seq_index[k][c - 1 : c - 1 + n])
        tgt.append(torch.as_tensor([int(t) for t in req.continuation_ids], dtype=torch.long))
        owner.append((r, offset, n))
        offset += n
    return torch.cat(idx), torch.cat(tgt), owner


def _unique_pairs(index: torch.Tensor, target: torch.Tensor):
    """Distinct (index, target) pairs: returns (uniq_index [U], uniq_target [U], inverse [P])."""
    key = index * (int(target.max()) + 1) + target
    uniq, inverse = torch.unique(key, return_inverse=True)
    base = int(target.max()) + 1
    return uniq // base, uniq % base, inverse


def _torch_gather_logprobs(hidden, weight, bias, targets):
    """log softmax(hidden @ weight.T + bias)[targets], row-chunked; float32 [M]."""
    out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    for lo in range(0, hidden.shape[0], _LOGIT_ROWS):
        logits = F.linear(hidden[lo : lo + _LOGIT_ROWS], weight, bias).float()
        lp = torch.log_softmax(logits, dim=-1)
        out[lo : lo + _LOGIT_ROWS] = lp.gather(-1, targets[lo : lo + _LOGIT_ROWS, None])[:, 0]
    return out


def _kernels():
    try:
        import igsearch_kernels as K
    except Exception:  # pragma: no cover - the kernels package is optional here
        return None
    return K if hasattr(K, "tree_attention") and hasattr(K, "gather_logprobs") else None


def kernels_by_default(model) -> bool:
    """``use_kernels="auto"``: the Triton kernels on CUDA, the native ops on the CPU when built."""
    if next(model.parameters()).is_cuda:
        return _kernels() is not None
    try:
        from igsearch_kernels._backend import native_reason, requested_backend
    except ImportError:  # pragma: no cover
        return False
    return requested_backend() in ("auto", "native") and native_reason("tree_attention") is None


def _scatter_results(requests, owner, logp_per_pair, out: list):
    for r, off, n in owner:
        out[r] = finish_result(requests[r], logp_per_pair[off : off + n])


# ----------------------------------------------------------------------------- generic path


def _group_sequences(trie: PackedTrie, budget: int) -> list[list[int]]:
    """Sequences (in trie order) grouped so each group's union of trie tokens is <= budget."""
    order = sorted(range(len(trie.seq_index)), key=lambda s: int(trie.seq_index[s][-1]))
    lengths = (trie.node_start[1:] - trie.node_start[:-1]).tolist()
    groups, cur, seen, size = [], [], set(), 0
    for s in order:
        nodes = torch.unique_consecutive(trie.node_of_token[trie.seq_index[s]]).tolist()
        new = sum(lengths[n] for n in nodes if n not in seen)
        if cur and size + new > budget:
            groups.append(cur)
            cur, seen, size = [], set(), 0
            new = sum(lengths[n] for n in nodes)
        cur.append(s)
        seen.update(nodes)
        size += new
    if cur:
        groups.append(cur)
    return groups


def score_grouped_tries(requests, model, seqs, budget, out: ScoreOutput):
    """The path for models the fast path does not support: the sequences' trie split into groups of at
    most ``budget`` tokens, each forwarded with a dense tree mask through the model's own forward;
    fills ``out`` (results in request order, token counts)."""
    device = next(model.parameters()).device
    full = build_trie(seqs)
    for group in _group_sequences(full, budget):
        trie = build_trie([seqs[s] for s in group])
        index, target, owner = _scored_positions(requests, trie, group)
        u_idx, u_tgt, inverse = _unique_pairs(index, target)
        rows, row_of_pair = torch.unique(u_idx, return_inverse=True)
        mask = trie.attention_mask()[None, None].to(device)
        logits = model(
            input_ids=trie.tokens[None].to(device),
            attention_mask=mask,
            position_ids=trie.positions[None].to(device),
            logits_to_keep=rows.to(device),
            use_cache=False,
        ).logits[0]  # [R, V]
        logp = torch.log_softmax(logits.float(), dim=-1)
        pair_lp = logp[row_of_pair.to(device), u_tgt.to(device)]
        _scatter_results(requests, owner, pair_lp[inverse.to(device)], out.results)
        out.tokens_forwarded += trie.n_tokens
        out.padded_tokens += trie.n_tokens
        out.n_forwards += 1


# ----------------------------------------------------------------------------- fast path


def fast_path_supported(model) -> bool:
    """True for Qwen2/Llama-family HF models whose layers this module can run itself."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) not in _FAST_MODEL_TYPES:
        return False
    base = getattr(model, "model", None)
    if base is None or not hasattr(base, "layers") or not hasattr(base, "rotary_emb"):
        return False
    if any(t != "full_attention" for t in (getattr(cfg, "layer_types", None) or [])):
        return False
    attn = base.layers[0].self_attn
    return not hasattr(attn, "q_norm") and hasattr(attn, "q_proj")


def _node_runs(trie: PackedTrie, budget: int, forwarded: torch.Tensor | None = None) -> list[tuple[int, int]]:
    """Contiguous preorder node ranges [lo, hi) of at most ``budget`` forwarded tokens (or one node).

    ``forwarded`` bool [T]: the tokens to forward (default all); nodes with none are skipped, and a
    range holds at least one forwarded token."""
    if forwarded is None:
        counts = trie.node_start.tolist()
    else:
        counts = [0] + torch.cumsum(forwarded.long(), 0)[trie.node_start[1:] - 1].tolist()
    runs, lo = [], 0
    for n in range(1, trie.n_nodes + 1):
        if n == trie.n_nodes or (counts[n + 1] - counts[lo] > budget):
            if counts[n] > counts[lo]:
                runs.append((lo, n))
            lo = n
    return runs


def _apply_rope(q, k, cos, sin):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    return apply_rotary_pos_emb(q, k, cos, sin)


def _sdpa_tree(q, k, v, mask, scale):
    """q [1,Hq,Tq,D], k/v [1,Hkv,Tk,D], mask [Tq,Tk] (bool, or additive float) -> [1,Hq,Tq,D]."""
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask[None, None], scale=scale, enable_gqa=k.shape[1] != q.shape[1]
    )


def _query_blocks(trie: PackedTrie, prev: torch.Tensor, run: torch.Tensor, q_block: int, device, dtype):
    """Key selection for the query blocks of a run (``run``: packed indices of its forwarded tokens,
    ascending).

    The run's key universe is ``prev`` (ancestor tokens whose keys/values are already in the store:
    forwarded by earlier runs or cached) followed by the run's own tokens. For a block
    ``run[a:b]`` the keys are the universe tokens before its end whose node is an ancestor of (or is)
    a node in the block. Returns [(a, b, key_index into the universe, additive mask [b - a, n_keys]
    in ``dtype``: 0 where allowed, -inf elsewhere)]. The masks are built once per run and shared by
    all layers.
    """
    uni = torch.cat([prev, run])
    uni_node = trie.node_of_token.to(device)[uni]
    uni_pos = trie.positions.to(device)[uni]
    ancestry = trie.ancestry.to(device)
    n_prev = prev.numel()
    blocks = []
    for a in range(0, run.numel(), q_block):
        b = min(a + q_block, run.numel())
        q_node = uni_node[n_prev + a : n_prev + b]
        q_pos = uni_pos[n_prev + a : n_prev + b]
        anc = ancestry[torch.unique(q_node)].any(0)  # [N]: nodes some block token may see
        limit = n_prev + b
        keys = anc[uni_node[:limit]].nonzero()[:, 0]
        allowed = ancestry[q_node][:, uni_node[keys]] & (uni_pos[keys][None, :] <= q_pos[:, None])
        mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, float("-inf"))
        blocks.append((a, b, keys, mask))
    return blocks


def score_packed_trie(requests, model, seqs, budget, q_block, use_kernels, out: ScoreOutput, *, trie=None, cached=None):
    """Layer-by-layer forward of the packed trie, one run of nodes (<= budget tokens) at a time.

    Inside a run, all tokens go through each layer together (big matmuls); attention is computed
    per query block of ``q_block`` tokens against only the keys that block may see, so the cost is
    about T x (ancestor depth + q_block) instead of T x T for a dense tree mask.

    ``cached`` = (src long [T], keys, values): tokens with ``src >= 0`` are not forwarded; their
    keys/values are rows ``src`` of ``keys[l]``/``values[l]`` ([rows, Hkv, D] per layer). Cached
    tokens must be closed under ancestry (a cached token's ancestors are cached) and must not be
    rows whose logits are needed.
    """
    device = next(model.parameters()).device
    dtype = compute_dtype(next(model.parameters()))  # bf16 under the run's autocast (igsearch.precision)
    base = model.model
    layers = base.layers
    cfg = model.config
    D = layers[0].self_attn.head_dim
    n_kv, n_q = cfg.num_key_value_heads, cfg.num_attention_heads
    kernels = _kernels() if use_kernels else None

    trie = build_trie(seqs) if trie is None else trie
    index, target, owner = _scored_positions(requests, trie, list(range(len(requests))))
    u_idx, u_tgt, inverse = _unique_pairs(index, target)
    rows, row_of_pair = torch.unique(u_idx, return_inverse=True)  # packed indices needing logits
    hidden_rows = None

    forwarded = None if cached is None else cached[0] < 0
    if forwarded is not None and not bool(forwarded[rows].all()):
        raise ValueError("tree scorer: a cached token is also a position whose logits are needed")
    runs = _node_runs(trie, budget, forwarded)
    starts = trie.node_start
    keep_kv = len(runs) > 1 or cached is not None
    if keep_kv:
        k_store = [torch.empty(trie.n_tokens, n_kv, D, dtype=dtype, device=device) for _ in layers]
        v_store = [torch.empty_like(k_store[0]) for _ in layers]
    if cached is not None:
        src, c_keys, c_values = cached
        hit = (src >= 0).nonzero()[:, 0]
        rows_src = src[hit].to(device)
        hit = hit.to(device)
        for li in range(len(layers)):
            k_store[li][hit] = c_keys[li].index_select(0, rows_src).to(dtype)
            v_store[li][hit] = c_values[li].index_select(0, rows_src).to(dtype)
    tokens, positions = trie.tokens.to(device), trie.positions.to(device)
    node_of_token, ancestry = trie.node_of_token.to(device), trie.ancestry.to(device)
    local = torch.full((trie.n_tokens,), -1, dtype=torch.long, device=device)  # packed -> row in run

    for n_lo, n_hi in runs:
        t_lo, t_hi = int(starts[n_lo]), int(starts[n_hi])
        run = torch.arange(t_lo, t_hi)
        in_run_cached = torch.empty(0, dtype=torch.long)
        if forwarded is not None:
            in_run_cached = run[~forwarded[t_lo:t_hi]]
            run = run[forwarded[t_lo:t_hi]]
        tc = run.numel()
        # Ancestor nodes forwarded by earlier runs (or cached): their stored k/v join this run's keys.
        outer = trie.ancestry[n_lo:n_hi, :n_lo].any(0).nonzero()[:, 0].tolist()
        prev = [torch.arange(int(starts[a]), int(starts[a + 1])) for a in outer]
        prev = torch.cat(prev + [in_run_cached]).to(device) if prev or in_run_cached.numel() else \
            torch.empty(0, dtype=torch.long, device=device)
        run = run.to(device)
        if kernels is not None:  # one tree_attention call per run and layer; earlier KV as past keys
            run_node = node_of_token[run]
            past_node = node_of_token[prev] if prev.numel() else None
            block_mask = None
            if run.is_cuda:  # the Triton kernel's visit lists, shared by all layers of the run
                block_mask = kernels.build_tree_block_mask(run_node, ancestry, *kernels.default_blocks(run.device),
                                                           check=False, past_node=past_node)
        else:
            blocks = _query_blocks(trie, prev, run, q_block, device, dtype)

        # rows padded to a few shapes where bf16 GEMMs compile per shape (igsearch.precision.padded_rows); the
        # padding rows (token 0 at position 0) go through the linears only, never into attention or the results
        tp = padded_rows(tc, dtype, device)
        x = base.embed_tokens(F.pad(tokens[run], (0, tp - tc)))[None]  # [1, Tp, d]
        cos, sin = base.rotary_emb(x, F.pad(positions[run], (0, tp - tc))[None])
        for li, layer in enumerate(layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(1, tp, n_q, D).transpose(1, 2)
            k = attn.k_proj(h).view(1, tp, n_kv, D).transpose(1, 2)
            v = attn.v_proj(h).view(1, tp, n_kv, D).transpose(1, 2)
            q, k = _apply_rope(q, k, cos, sin)  # fp32 under autocast (cos/sin are): back to the product dtype
            q = q[:, :, :tc].to(dtype)
            k, v = k[0, :, :tc].transpose(0, 1).to(dtype), v[0, :, :tc].transpose(0, 1).to(dtype)  # [Tc, Hkv, D]
            if keep_kv:
                k_store[li][run] = k
                v_store[li][run] = v
            if kernels is not None:
                past = (k_store[li].index_select(0, prev), v_store[li].index_select(0, prev), past_node) \
                    if past_node is not None else (None, None, None)
                o = kernels.tree_attention(q[0].transpose(0, 1), k, v, run_node, ancestry, past_k=past[0],
                                           past_v=past[1], past_node=past[2], scale=attn.scaling,
                                           block_mask=block_mask, block_m=q_block)
            else:
                kk = torch.cat([k_store[li].index_select(0, prev), k]) if prev.numel() else k  # [Tprev + Tc, Hkv, D]
                vv = torch.cat([v_store[li].index_select(0, prev), v]) if prev.numel() else v
                kk, vv = kk.transpose(0, 1).contiguous(), vv.transpose(0, 1).contiguous()  # [Hkv, Tk, D]
                o = torch.empty(1, n_q, tc, D, dtype=q.dtype, device=device)
                for a, b, keys, mask in blocks:
                    o[:, :, a:b] = _sdpa_tree(
                        q[:, :, a:b], kk.index_select(1, keys)[None], vv.index_select(1, keys)[None],
                        mask, attn.scaling,
                    )
                o = o.transpose(1, 2)
            x = x + attn.o_proj(F.pad(o.reshape(1, tc, n_q * D), (0, 0, 0, tp - tc)))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        x = base.norm(x)[0, :tc]
        sel = (rows >= t_lo) & (rows < t_hi)
        if sel.any():
            if hidden_rows is None:
                hidden_rows = torch.empty(rows.numel(), x.shape[-1], dtype=x.dtype, device=device)
            local[run] = torch.arange(tc, device=device)
            hidden_rows[sel.to(device)] = x[local[rows[sel].to(device)]]
        out.tokens_forwarded += tc
        out.padded_tokens += tc
        out.n_forwards += 1

    head = model.get_output_embeddings()
    hidden_pairs = hidden_rows[row_of_pair.to(device)]
    tgt = u_tgt.to(device)
    if kernels is not None:
        pair_lp = kernels.gather_logprobs(hidden_pairs.to(dtype), weight_as(head.weight, dtype), tgt,
                                          bias=head.bias).float()
    else:
        pair_lp = _torch_gather_logprobs(hidden_pairs, head.weight, head.bias, tgt)
    _scatter_results(requests, owner, pair_lp[inverse.to(device)], out.results)


# ----------------------------------------------------------------------------- entry point


@register_scorer("tree")
def score_tree(
    requests: list[ScoreRequest],
    model,
    *,
    max_tokens_per_forward: int | None = None,
    query_block: int | None = None,
    fast_path: bool | str = "auto",
    use_kernels: bool | str = "auto",
) -> ScoreOutput:
    """Score ``requests`` with prefix sharing. See the module docstring.

    ``max_tokens_per_forward``: tokens per forward (generic) or per run of nodes (fast path).
    ``query_block``: fast path query-block size for the sparse tree attention. None: the device's
    default (:func:`fast_path_budgets`).
    ``fast_path``: "auto" (use it when :func:`fast_path_supported`), True (require it), False.
    ``use_kernels``: "auto" (:func:`kernels_by_default`: Triton on CUDA, the native CPU ops when
    built), True (``igsearch_kernels`` on whatever backend it dispatches to), False (per-block torch
    SDPA + chunked torch log-softmax).
    """
    out = ScoreOutput(results=[None] * len(requests), n_sequences=len(requests))
    if not requests:
        return out
    seqs = [r.input_ids for r in requests]
    max_tokens_per_forward, query_block = fast_path_budgets(model, max_tokens_per_forward, query_block)
    supported = fast_path_supported(model)
    if fast_path is True and not supported:
        raise ValueError(
            f"tree scorer: fast path requested but model type "
            f"{getattr(model.config, 'model_type', '?')!r} is not one of {_FAST_MODEL_TYPES}"
        )
    if fast_path and supported:
        if use_kernels == "auto":
            use_kernels = kernels_by_default(model)
        score_packed_trie(requests, model, seqs, max_tokens_per_forward, query_block, bool(use_kernels), out)
        out.extra["path"] = "fast"
        out.extra["kernels"] = bool(use_kernels and _kernels() is not None)
    else:
        score_grouped_tries(requests, model, seqs, max_tokens_per_forward, out)
        out.extra["path"] = "generic"
    return out
