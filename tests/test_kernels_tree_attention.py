"""tree_attention: Triton (interpreter on CPU), native CPU op and torch paths against a float64 reference."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from igsearch_kernels import (
    build_tree_ancestry,
    build_tree_block_mask,
    tree_attention,
    tree_attention_reference,
    tree_position_ids,
    tree_token_mask,
)

TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 5e-3}


def native_built() -> bool:
    from igsearch_kernels._backend import native_reason

    return native_reason("tree_attention") is None


NATIVE = pytest.param("native", marks=pytest.mark.skipif(not native_built(), reason="native ops not built (make native)"))
BACKENDS = ["triton", "torch", NATIVE]


def rel_err(actual, expected):
    return ((actual.double() - expected.double()).abs().max() / expected.double().abs().max().clamp(min=1e-30)).item()


def random_tree(n_nodes, kind, gen):
    """parent array and node lengths: 'random' forest, 'deep' chain, 'wide' star, 'single' node."""
    if kind == "deep":
        parent = torch.arange(n_nodes) - 1
    elif kind == "wide":
        parent = torch.zeros(n_nodes, dtype=torch.long)
        parent[0] = -1
    elif kind == "single":
        parent = torch.tensor([-1])
    else:
        parent = torch.tensor([-1] + [int(torch.randint(-1, i, (1,), generator=gen)) for i in range(1, n_nodes)])
    lengths = torch.randint(1, 9, (parent.numel(),), generator=gen)
    lengths[torch.rand(parent.numel(), generator=gen) < 0.3] = 1  # many single-token nodes
    return parent, lengths


def packed(parent, lengths):
    ancestry = build_tree_ancestry(parent)
    node_of_token = torch.repeat_interleave(torch.arange(parent.numel()), lengths)
    return node_of_token, ancestry


CASES = [
    # kind, nodes, Hq, Hkv, D, seed
    ("random", 11, 4, 2, 64, 0),
    ("deep", 9, 2, 1, 128, 1),
    ("wide", 13, 3, 3, 64, 2),
    ("single", 1, 2, 2, 64, 3),
    ("random", 7, 2, 1, 80, 4),  # head dim that is not a power of two
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-D{c[4]}" for c in CASES])
def test_fp32_matches_float64_reference(case, backend):
    kind, n_nodes, hq, hkv, d, seed = case
    gen = torch.Generator().manual_seed(seed)
    node_of_token, ancestry = packed(*random_tree(n_nodes, kind, gen))
    t = node_of_token.numel()
    q, k, v = (torch.randn(t, h, d, generator=gen) for h in (hq, hkv, hkv))
    block_mask = build_tree_block_mask(node_of_token, ancestry, 16, 16) if backend == "triton" else None
    out = tree_attention(q, k, v, node_of_token, ancestry, block_mask=block_mask, backend=backend)
    ref = tree_attention_reference(q.double(), k.double(), v.double(), node_of_token, ancestry)
    assert out.shape == (t, hq, d) and out.dtype == torch.float32
    assert rel_err(out, ref) <= TOL[torch.float32]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", BACKENDS)
def test_half_precision(dtype, backend):
    if backend == "native" and dtype == torch.float16:
        pytest.skip("the native op takes fp32 and bf16")
    gen = torch.Generator().manual_seed(7)
    node_of_token, ancestry = packed(*random_tree(10, "random", gen))
    t = node_of_token.numel()
    q, k, v = (torch.randn(t, h, 64, generator=gen).to(dtype) for h in (4, 2, 2))
    out = tree_attention(q, k, v, node_of_token, ancestry, scale=0.2, backend=backend)
    ref = tree_attention_reference(q.double(), k.double(), v.double(), node_of_token, ancestry, scale=0.2)
    assert out.dtype == dtype
    assert rel_err(out, ref) <= TOL[dtype]


def test_tree_equals_separate_sequences():
    """Every root-to-leaf path attended on its own, causally, gives the tree result on its tokens."""
    gen = torch.Generator().manual_seed(11)
    parent, lengths = random_tree(9, "random", gen)
    node_of_token, ancestry = packed(parent, lengths)
    t = node_of_token.numel()
    q, k, v = (torch.randn(t, 2, 32, generator=gen, dtype=torch.float64) for _ in range(3))
    out = tree_attention(q, k, v, node_of_token, ancestry, backend="torch")
    pos = tree_position_ids(node_of_token, ancestry)
    leaves = [i for i in range(parent.numel()) if not bool((parent == i).any())]
    for leaf in leaves:
        path_tokens = torch.nonzero(ancestry[leaf][node_of_token]).squeeze(1)
        assert torch.equal(pos[path_tokens], torch.arange(path_tokens.numel()))
        qs, ks, vs = (x[path_tokens].transpose(0, 1) for x in (q, k, v))
        alone = torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, is_causal=True).transpose(0, 1)
        torch.testing.assert_close(out[path_tokens], alone, rtol=1e-10, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 30), st.sampled_from([8, 16, 32]), st.sampled_from([8, 16]), st.integers(0, 10_000))
def test_block_mask_visits_exactly_the_blocks_with_allowed_pairs(n_nodes, block_m, block_n, seed):
    gen = torch.Generator().manual_seed(seed)
    node_of_token, ancestry = packed(*random_tree(n_nodes, "random", gen))
    t = node_of_token.numel()
    bm = build_tree_block_mask(node_of_token, ancestry, block_m, block_n)
    dense = tree_token_mask(node_of_token, ancestry)
    for qb in range(bm.kv_count.numel()):
        rows = dense[qb * block_m:(qb + 1) * block_m]
        needed = [kb for kb in range(-(-t // block_n)) if rows[:, kb * block_n:(kb + 1) * block_n].any()]
        visited = bm.kv_indices[qb, : bm.kv_count[qb]].tolist()
        assert visited == needed
        for kb, full in zip(visited, bm.kv_full[qb, : bm.kv_count[qb]].tolist()):
            tile = rows[:, kb * block_n:(kb + 1) * block_n]
            if full:
                assert tile.all() and tile.shape == (min(block_m, t - qb * block_m), block_n)


def test_wide_tree_skips_sibling_blocks():
    parent = torch.tensor([-1] + [0] * 8)
    lengths = torch.tensor([16] + [32] * 8)
    node_of_token, ancestry = packed(parent, lengths)
    bm = build_tree_block_mask(node_of_token, ancestry, 16, 16)
    assert bm.visited_blocks < 0.5 * bm.causal_blocks


def test_build_tree_ancestry_and_positions():
    parent = torch.tensor([-1, 0, 0, 1, 3, -1, 5, 2])
    anc = build_tree_ancestry(parent)
    for i in range(parent.numel()):
        chain, j = {i}, int(parent[i])
        while j >= 0:
            chain.add(j)
            j = int(parent[j])
        assert set(torch.nonzero(anc[i]).squeeze(1).tolist()) == chain
    node_of_token = torch.repeat_interleave(torch.arange(8), torch.tensor([2, 1, 3, 1, 2, 2, 1, 1]))
    assert tree_position_ids(node_of_token, anc).tolist() == [0, 1, 2, 2, 3, 4, 3, 4, 5, 0, 1, 2, 5]
    with pytest.raises(ValueError):
        build_tree_ancestry(torch.tensor([-1, 2, 0]))


def test_layout_errors_and_env_dispatch(monkeypatch):
    anc = build_tree_ancestry(torch.tensor([-1, 0]))
    q = torch.randn(3, 1, 64)
    with pytest.raises(ValueError, match="non-decreasing"):
        tree_attention(q, q, q, torch.tensor([1, 0, 1]), anc, backend="triton")
    node_of_token = torch.tensor([0, 1, 1])
    monkeypatch.setenv("IGSEARCH_KERNEL_BACKEND", "torch")
    torch.testing.assert_close(tree_attention(q, q, q, node_of_token, anc), tree_attention_reference(q, q, q, node_of_token, anc))
    monkeypatch.setenv("IGSEARCH_KERNEL_BACKEND", "triton")
    torch.testing.assert_close(tree_attention(q, q, q, node_of_token, anc), tree_attention_reference(q, q, q, node_of_token, anc))
    monkeypatch.setenv("IGSEARCH_KERNEL_BACKEND", "cuda-please")
    with pytest.raises(ValueError):
        tree_attention(q, q, q, node_of_token, anc)


def split_past(node_of_token, lengths, n_lo, cached_in_node):
    """Tokens of nodes < n_lo, plus the first ``cached_in_node`` tokens of node n_lo, are past."""
    starts = torch.cumsum(torch.cat([torch.zeros(1, dtype=torch.long), lengths]), 0)
    t_lo = int(starts[n_lo]) + min(cached_in_node, int(lengths[n_lo]) - 1)
    return torch.arange(t_lo), torch.arange(t_lo, node_of_token.numel())


PAST_CASES = [
    # kind, nodes, Hq, Hkv, D, seed, first run node, cached tokens of that node, block_m
    ("random", 23, 6, 2, 29, 0, 7, 2, 7),
    ("deep", 12, 4, 1, 64, 1, 5, 3, 16),
    ("wide", 17, 3, 3, 64, 2, 1, 0, 5),
    ("random", 40, 8, 2, 64, 3, 30, 1, 64),
    ("single", 1, 2, 1, 33, 4, 0, 4, 3),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", PAST_CASES, ids=[f"{c[0]}-{c[1]}-D{c[4]}" for c in PAST_CASES])
def test_past_keys_match_the_whole_tree(case, backend):
    """A run that attends to cached ancestor KV (earlier nodes and a cached prefix of its first node)
    gives exactly the rows of attention over the whole packed tree."""
    kind, n_nodes, hq, hkv, d, seed, n_lo, cached, block_m = case
    gen = torch.Generator().manual_seed(seed)
    parent, lengths = random_tree(n_nodes, kind, gen)
    if kind == "single":
        lengths[:] = 9
    node_of_token, ancestry = packed(parent, lengths)
    t = node_of_token.numel()
    q, k, v = (torch.randn(t, h, d, generator=gen, dtype=torch.float64) for h in (hq, hkv, hkv))
    ref = tree_attention_reference(q, k, v, node_of_token, ancestry, scale=0.3)
    past, run = split_past(node_of_token, lengths, n_lo, cached)
    f = lambda x: x.float()  # noqa: E731
    out = tree_attention(f(q[run]), f(k[run]), f(v[run]), node_of_token[run], ancestry, past_k=f(k[past]),
                         past_v=f(v[past]), past_node=node_of_token[past], scale=0.3, block_m=block_m, backend=backend)
    assert out.dtype == torch.float32 and out.shape == (run.numel(), hq, d)
    assert rel_err(out, ref[run]) <= TOL[torch.float32]
    # the float64 reference with past keys agrees with the whole-tree reference
    ref_past = tree_attention_reference(q[run], k[run], v[run], node_of_token[run], ancestry, scale=0.3,
                                        past_k=k[past], past_v=v[past], past_node=node_of_token[past])
    torch.testing.assert_close(ref_past, ref[run], rtol=1e-12, atol=1e-12)


def test_past_keys_bf16_native_and_torch_agree():
    if not native_built():
        pytest.skip("native ops not built (make native)")
    gen = torch.Generator().manual_seed(5)
    parent, lengths = random_tree(30, "random", gen)
    node_of_token, ancestry = packed(parent, lengths)
    past, run = split_past(node_of_token, lengths, 10, 2)
    t = node_of_token.numel()
    q, k, v = (torch.randn(t, h, 64, generator=gen).to(torch.bfloat16) for h in (4, 2, 2))
    args = (q[run], k[run], v[run], node_of_token[run], ancestry)
    kw = dict(past_k=k[past], past_v=v[past], past_node=node_of_token[past])
    out = tree_attention(*args, **kw, backend="native")
    ref = tree_attention_reference(*(x.double() for x in args[:3]), *args[3:], past_k=k[past].double(),
                                   past_v=v[past].double(), past_node=node_of_token[past])
    assert out.dtype == torch.bfloat16 and rel_err(out, ref) <= TOL[torch.bfloat16]


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 30), st.sampled_from([8, 16]), st.sampled_from([8, 16]), st.integers(0, 10_000))
def test_past_block_mask_covers_every_allowed_pair(n_nodes, block_m, block_n, seed):
    """With past keys the visit lists may over-visit, never miss a block; full blocks are all allowed."""
    gen = torch.Generator().manual_seed(seed)
    parent, lengths = random_tree(n_nodes, "random", gen)
    node_of_token, ancestry = packed(parent, lengths)
    n_lo = int(torch.randint(1, n_nodes, (1,), generator=gen))
    past, run = split_past(node_of_token, lengths, n_lo, 1)
    full_mask = tree_token_mask(node_of_token, ancestry)
    dense = torch.cat([full_mask[run][:, past], full_mask[run][:, run]], 1)  # keys: past, then run
    bm = build_tree_block_mask(node_of_token[run], ancestry, block_m, block_n, past_node=node_of_token[past])
    for qb in range(bm.kv_count.numel()):
        rows = dense[qb * block_m:(qb + 1) * block_m]
        needed = {kb for kb in range(-(-dense.shape[1] // block_n)) if rows[:, kb * block_n:(kb + 1) * block_n].any()}
        visited = bm.kv_indices[qb, : bm.kv_count[qb]].tolist()
        assert needed <= set(visited) and visited == sorted(visited)
        for kb, full in zip(visited, bm.kv_full[qb, : bm.kv_count[qb]].tolist()):
            if full:
                assert rows[:, kb * block_n:(kb + 1) * block_n].all()


def test_native_backend_refusals(monkeypatch):
    anc = build_tree_ancestry(torch.tensor([-1, 0]))
    q = torch.randn(3, 1, 64)
    node_of_token = torch.tensor([0, 1, 1])
    with pytest.raises(ValueError, match="go together"):
        tree_attention(q, q, q, node_of_token, anc, past_k=q)
    if not native_built():
        with pytest.raises(RuntimeError, match="native backend was requested"):
            tree_attention(q, q, q, node_of_token, anc, backend="native")
        return
    with pytest.raises(TypeError, match="fp32 or bf16"):
        tree_attention(q.double(), q.double(), q.double(), node_of_token, anc, backend="native")
    with pytest.raises(RuntimeError, match="node ids must lie"):
        tree_attention(q, q, q, torch.tensor([0, 1, 2]), anc, backend="native")
    monkeypatch.setenv("IGSEARCH_KERNEL_BACKEND", "native")
    torch.testing.assert_close(tree_attention(q, q, q, node_of_token, anc), tree_attention_reference(q, q, q, node_of_token, anc))
    ops = torch.ops.igsearch.tree_attention
    torch.library.opcheck(ops, (q, q, q, node_of_token, anc, None, None, None, 0.125, 2))


def test_native_op_traces_under_torch_compile():
    """The op's fake implementation lets torch.compile trace it (aot_eager: no C++ codegen needed)."""
    if not native_built():
        pytest.skip("native ops not built (make native)")
    gen = torch.Generator().manual_seed(9)
    node_of_token, ancestry = packed(*random_tree(8, "random", gen))
    t = node_of_token.numel()
    q, k, v = (torch.randn(t, h, 32, generator=gen) for h in (4, 2, 2))

    def layer(q, k, v):
        return tree_attention(q * 2, k, v, node_of_token, ancestry, backend="native").sum(-1)

    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v), layer(q, k, v))
