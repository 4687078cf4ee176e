"""tree_attention: Triton (interpreter on CPU) and torch paths against a float64 reference."""

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


@pytest.mark.parametrize("backend", ["triton", "torch"])
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
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_half_precision(dtype, backend):
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
