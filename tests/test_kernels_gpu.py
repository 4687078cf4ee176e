"""Kernels at real shapes on a CUDA device (marker `gpu`; skipped without CUDA)."""

import pytest
import torch

from igsearch_kernels import (
    build_tree_ancestry,
    gather_logprobs,
    gather_logprobs_reference,
    span_advantage_loss,
    span_advantage_loss_reference,
    tree_attention,
    tree_attention_reference,
)

pytestmark = pytest.mark.gpu


def rel_err(actual, expected):
    return ((actual.double() - expected.double()).abs().max() / expected.double().abs().max()).item()


def shared_prefix_tree(trunk, branches, branch_len, device):
    parent = torch.tensor([-1] + [0] * branches, device=device)
    lengths = torch.tensor([trunk] + [branch_len] * branches, device=device)
    return torch.repeat_interleave(torch.arange(branches + 1, device=device), lengths), build_tree_ancestry(parent)


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 2e-2), (torch.float16, 5e-3), (torch.float32, 1e-5)])
@pytest.mark.parametrize("head_dim", [64, 128])
def test_tree_attention_real_shape(dtype, tol, head_dim):
    node_of_token, ancestry = shared_prefix_tree(1500, 24, 97, "cuda")
    t = node_of_token.numel()
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(t, 28, head_dim, device="cuda", generator=gen).to(dtype)
    k = torch.randn(t, 4, head_dim, device="cuda", generator=gen).to(dtype)
    v = torch.randn(t, 4, head_dim, device="cuda", generator=gen).to(dtype)
    out = tree_attention(q, k, v, node_of_token, ancestry)
    ref = tree_attention_reference(q.double(), k.double(), v.double(), node_of_token, ancestry, chunk=256)
    assert rel_err(out, ref) <= tol


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 2e-2), (torch.float32, 1e-5)])
def test_gather_logprobs_qwen_vocab(dtype, tol):
    m, v, d = 300, 151_936, 896
    gen = torch.Generator(device="cuda").manual_seed(0)
    hidden = torch.randn(m, d, device="cuda", generator=gen).to(dtype).requires_grad_()
    weight = (torch.randn(v, d, device="cuda", generator=gen) * 0.05).to(dtype).requires_grad_()
    targets = torch.randint(0, v, (m,), device="cuda", generator=gen)
    logp, ent = gather_logprobs(hidden, weight, targets, return_entropy=True)
    (logp.sum() + 0.1 * ent.sum()).backward()
    hd, wd = hidden.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
    ref_logp, ref_ent = gather_logprobs_reference(hd, wd, targets, return_entropy=True)
    (ref_logp.sum() + 0.1 * ref_ent.sum()).backward()
    assert rel_err(logp, ref_logp) <= tol
    assert rel_err(ent, ref_ent) <= tol
    assert rel_err(hidden.grad, hd.grad) <= tol
    assert rel_err(weight.grad, wd.grad) <= tol


def test_gather_logprobs_peak_memory_below_materialised():
    m, v, d = 4096, 151_936, 896
    hidden = torch.randn(m, d, device="cuda", dtype=torch.bfloat16)
    weight = torch.randn(v, d, device="cuda", dtype=torch.bfloat16) * 0.05
    targets = torch.randint(0, v, (m,), device="cuda")
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    gather_logprobs(hidden, weight, targets)
    fused = torch.cuda.max_memory_allocated() - base
    torch.cuda.reset_peak_memory_stats()
    torch.log_softmax((hidden @ weight.t()).float(), -1).gather(1, targets[:, None])
    eager = torch.cuda.max_memory_allocated() - base
    assert fused * 10 <= eager


def test_span_loss_real_shape():
    b, t = 64, 4096
    gen = torch.Generator(device="cuda").manual_seed(0)
    logp = (torch.randn(b, t, device="cuda", generator=gen) * 0.5 - 2).requires_grad_()
    old = logp.detach() + 0.3 * torch.randn(b, t, device="cuda", generator=gen)
    ref = logp.detach() + 0.2 * torch.randn(b, t, device="cuda", generator=gen)
    mask = torch.rand(b, t, device="cuda", generator=gen) > 0.2
    seq_adv = torch.randn(b, device="cuda", generator=gen)
    starts = torch.arange(4, device="cuda") * 900 + 100
    spans = torch.stack([torch.arange(b, device="cuda").repeat_interleave(4), starts.repeat(b), starts.repeat(b) + 50], 1)
    values = torch.randn(spans.shape[0], device="cuda", generator=gen)
    for agg in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"):
        logp.grad = None
        loss = span_advantage_loss(logp, old, mask, seq_adv, spans, values, ref_logp=ref, kl_coef=0.01, agg=agg)
        loss.backward()
        xd = logp.detach().double().requires_grad_()
        want = span_advantage_loss_reference(xd, old.double(), mask, seq_adv.double(), spans, values.double(),
                                             ref_logp=ref.double(), kl_coef=0.01, agg=agg)
        want.backward()
        assert abs(loss.item() - want.item()) <= 1e-5 * abs(want.item())
        assert rel_err(logp.grad, xd.grad) <= 1e-5
