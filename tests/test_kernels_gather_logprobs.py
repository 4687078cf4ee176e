"""gather_logprobs: Triton (interpreter on CPU) and torch paths against a float64 reference."""

import pytest
import torch

from igsearch_kernels import gather_logprobs, gather_logprobs_reference

TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 5e-3}


def rel_err(actual, expected):
    return ((actual.double() - expected.double()).abs().max() / expected.double().abs().max().clamp(min=1e-30)).item()


def make_inputs(m, v, d, dtype, seed, with_bias):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(m, d, generator=gen).to(dtype)
    weight = (torch.randn(v, d, generator=gen) * d**-0.5 * 2).to(dtype)
    bias = torch.randn(v, generator=gen).to(dtype) if with_bias else None
    targets = torch.randint(0, v, (m,), generator=gen)
    if m > 4:
        targets[torch.randperm(m, generator=gen)[: m // 5]] = -100  # ignored rows (prompt tokens)
    return hidden, weight, bias, targets


CASES = [
    # M, V, d, bias, temperature, seed
    (37, 301, 64, True, 0.7, 0),
    (3, 1000, 128, False, 1.0, 1),  # few rows: the vocabulary is split over many programs
    (1, 257, 64, True, 1.3, 2),
    (23, 511, 96, False, 1.0, 3),
]


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("case", CASES, ids=[f"M{c[0]}-V{c[1]}-d{c[2]}" for c in CASES])
def test_fp32_forward_backward(case, backend):
    m, v, d, with_bias, tau, seed = case
    hidden, weight, bias, targets = make_inputs(m, v, d, torch.float32, seed, with_bias)
    leaves = [x.clone().requires_grad_() for x in (hidden, weight) + ((bias,) if with_bias else ())]
    logp, ent = gather_logprobs(leaves[0], leaves[1], targets, leaves[2] if with_bias else None,
                                temperature=tau, return_entropy=True, backend=backend)
    ref_leaves = [x.detach().double().requires_grad_() for x in leaves]
    ref_logp, ref_ent = gather_logprobs_reference(ref_leaves[0], ref_leaves[1], targets,
                                                  ref_leaves[2] if with_bias else None, tau, True)
    assert logp.dtype == torch.float32 and logp.shape == (m,)
    assert rel_err(logp, ref_logp) <= 1e-5
    assert rel_err(ent, ref_ent) <= 1e-5
    assert bool((logp[targets == -100] == 0).all())

    gen = torch.Generator().manual_seed(seed + 100)
    g_logp, g_ent = torch.randn(m, generator=gen), torch.randn(m, generator=gen)
    (logp * g_logp + ent * g_ent).sum().backward()
    (ref_logp * g_logp.double() + ref_ent * g_ent.double()).sum().backward()
    for got, want in zip(leaves, ref_leaves):
        assert rel_err(got.grad, want.grad) <= 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_half_precision(dtype, backend):
    hidden, weight, bias, targets = make_inputs(29, 333, 64, dtype, 5, True)
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    logp = gather_logprobs(h, w, targets, bias, backend=backend)
    hd, wd = hidden.double().requires_grad_(), weight.double().requires_grad_()
    ref = gather_logprobs_reference(hd, wd, targets, bias.double())
    assert logp.dtype == torch.float32
    assert rel_err(logp, ref) <= TOL[dtype]
    logp.sum().backward()
    ref.sum().backward()
    assert h.grad.dtype == dtype and w.grad.dtype == dtype
    assert rel_err(h.grad, hd.grad) <= TOL[dtype]
    assert rel_err(w.grad, wd.grad) <= TOL[dtype]


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_frozen_weight_logp_only(backend):
    """The trainer's case: grad w.r.t. hidden only, no entropy requested."""
    hidden, weight, _, targets = make_inputs(17, 300, 64, torch.float32, 9, False)
    h = hidden.clone().requires_grad_()
    logp = gather_logprobs(h, weight, targets, backend=backend)
    hd = hidden.double().requires_grad_()
    ref = gather_logprobs_reference(hd, weight.double(), targets)
    (logp.square()).sum().backward()
    (ref.square()).sum().backward()
    assert rel_err(h.grad, hd.grad) <= 1e-5


def test_empty_rows_and_bad_shapes():
    hidden, weight, _, _ = make_inputs(2, 100, 64, torch.float32, 4, False)
    for backend in ("triton", "torch"):
        out = gather_logprobs(hidden[:0], weight, torch.zeros(0, dtype=torch.long), backend=backend)
        assert out.shape == (0,)
    with pytest.raises(ValueError):
        gather_logprobs(hidden, weight[:, :10], torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError):
        gather_logprobs(hidden, weight, torch.zeros(3, dtype=torch.long))
