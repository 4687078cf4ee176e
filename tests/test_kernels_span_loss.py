"""span_advantage_loss: Triton (interpreter on CPU) and torch paths against a float64 reference."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from igsearch_kernels import AGGREGATIONS, span_advantage_loss, span_advantage_loss_reference, token_advantages


def rel_err(actual, expected):
    return ((actual.double() - expected.double()).abs().max() / expected.double().abs().max().clamp(min=1e-30)).item()


def random_spans(batch, length, gen, max_per_seq=3):
    """Disjoint spans per sequence (some empty, some touching), shuffled across sequences."""
    rows = []
    for b in range(batch):
        cuts = sorted(torch.randint(0, length + 1, (2 * int(torch.randint(0, max_per_seq + 1, (1,), generator=gen)),), generator=gen).tolist())
        rows += [[b, cuts[i], cuts[i + 1]] for i in range(0, len(cuts), 2)]
    spans = torch.tensor(rows, dtype=torch.long).reshape(-1, 3)
    return spans[torch.randperm(spans.shape[0], generator=gen)]


def make_inputs(batch, length, seed, empty_spans=False):
    gen = torch.Generator().manual_seed(seed)
    logp = torch.randn(batch, length, generator=gen) * 0.5 - 2.0
    old = logp + torch.randn(batch, length, generator=gen) * 0.3  # ratios both inside and outside the clip range
    ref = logp + torch.randn(batch, length, generator=gen) * 0.2
    mask = torch.rand(batch, length, generator=gen) > 0.3  # holes
    mask[0] = False  # a sequence with no trained token
    seq_adv = torch.randn(batch, generator=gen)
    spans = torch.zeros(0, 3, dtype=torch.long) if empty_spans else random_spans(batch, length, gen)
    return logp, old, ref, mask, seq_adv, spans, torch.randn(spans.shape[0], generator=gen)


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("agg", AGGREGATIONS)
@pytest.mark.parametrize("shape,empty,with_ref", [((5, 37), False, True), ((3, 70), True, False), ((1, 1), False, True)])
def test_matches_float64_reference(shape, empty, with_ref, agg, backend):
    logp, old, ref, mask, seq_adv, spans, values = make_inputs(*shape, seed=sum(shape), empty_spans=empty)
    mask = mask.float() if backend == "torch" else mask  # both mask dtypes
    kw = dict(ref_logp=ref if with_ref else None, beta=0.7, clip_low=0.2, clip_high=0.28, kl_coef=0.05, agg=agg)
    x = logp.clone().requires_grad_()
    loss, stats = span_advantage_loss(x, old, mask, seq_adv, spans, values, return_stats=True, backend=backend, **kw)
    loss.backward()
    xd = logp.double().requires_grad_()
    kw["ref_logp"] = kw["ref_logp"].double() if with_ref else None
    ref_loss, ref_stats = span_advantage_loss_reference(xd, old.double(), mask, seq_adv.double(), spans, values.double(),
                                                        return_stats=True, **kw)
    ref_loss.backward()
    assert loss.dim() == 0 and loss.dtype == torch.float32
    assert abs(loss.item() - ref_loss.item()) <= 1e-5 * max(abs(ref_loss.item()), 1e-6)
    assert rel_err(x.grad, xd.grad) <= 1e-5 or xd.grad.abs().max() == 0
    torch.testing.assert_close(stats["token_adv"].double(), ref_stats["token_adv"].double(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(stats["clip_frac"].double(), ref_stats["clip_frac"].double(), rtol=1e-6, atol=1e-7)
    assert ("kl" in stats) == with_ref


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_bf16_logp_and_empty_mask(backend):
    logp, old, ref, mask, seq_adv, spans, values = make_inputs(4, 33, 3)
    x = logp.bfloat16().requires_grad_()
    loss = span_advantage_loss(x, old.bfloat16(), mask, seq_adv, spans, values, backend=backend)
    loss.backward()
    xd = x.detach().double().requires_grad_()
    ref = span_advantage_loss_reference(xd, old.bfloat16().double(), mask, seq_adv.double(), spans, values.double())
    ref.backward()
    assert abs(loss.item() - ref.item()) <= 1e-2 * abs(ref.item())
    assert x.grad.dtype == torch.bfloat16 and rel_err(x.grad, xd.grad) <= 2e-2

    z = logp.clone().requires_grad_()
    loss = span_advantage_loss(z, old, torch.zeros_like(mask), seq_adv, spans, values, backend=backend)
    loss.backward()
    assert loss.item() == 0.0 and bool((z.grad == 0).all())


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_bad_span_tables(backend):
    logp, old, _, mask, seq_adv, _, _ = make_inputs(3, 20, 4)
    with pytest.raises(ValueError, match="overlap"):
        span_advantage_loss(logp, old, mask, seq_adv, torch.tensor([[1, 8, 12], [1, 2, 9]]), torch.ones(2), backend=backend)
    with pytest.raises(ValueError, match="out of range"):
        span_advantage_loss(logp, old, mask, seq_adv, torch.tensor([[3, 0, 2]]), torch.ones(1), backend=backend)
    with pytest.raises(ValueError, match="out of range"):
        span_advantage_loss(logp, old, mask, seq_adv, torch.tensor([[0, 5, 21]]), torch.ones(1), backend=backend)
    # touching spans and spans of different sequences on the same positions are fine
    span_advantage_loss(logp, old, mask, seq_adv, torch.tensor([[1, 2, 9], [1, 9, 12], [0, 2, 9]]), torch.ones(3), backend=backend)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 40), st.integers(0, 10_000), st.floats(-2.0, 2.0))
def test_token_advantages_match_a_python_loop(batch, length, seed, beta):
    gen = torch.Generator().manual_seed(seed)
    spans = random_spans(batch, length, gen)
    values = torch.randn(spans.shape[0], generator=gen, dtype=torch.float64)
    seq_adv = torch.randn(batch, generator=gen, dtype=torch.float64)
    want = seq_adv[:, None].repeat(1, length)
    for (b, s, e), val in zip(spans.tolist(), values.tolist()):
        want[b, s:e] += beta * val
    torch.testing.assert_close(token_advantages(seq_adv, spans, values, length, beta), want)
