"""pytest-benchmark timings of the kernels' CPU (torch) paths against the eager materialised baselines.

A pytest-benchmark file, so pytest runs it when named (it is no test: testpaths = tests). Run with

    python -m pytest bench/kernels_cpu_benchmark.py --benchmark-enable -q

The Triton kernels are not timed here: on the CPU they only run through Triton's interpreter.
"""

import pytest
import torch

from igsearch_kernels import (
    build_tree_ancestry,
    gather_logprobs,
    gather_logprobs_reference,
    span_advantage_loss,
    tree_attention,
    tree_token_mask,
)


@pytest.fixture(scope="module")
def lm_head():
    gen = torch.Generator().manual_seed(0)
    m, v, d = 128, 32_000, 256
    return (torch.randn(m, d, generator=gen), torch.randn(v, d, generator=gen) * d**-0.5,
            torch.randint(0, v, (m,), generator=gen))


@pytest.mark.benchmark(group="gather_logprobs fwd+bwd M=128 V=32000 d=256")
@pytest.mark.parametrize("impl", ["chunked torch path", "eager materialised"])
def test_gather_logprobs(benchmark, lm_head, impl):
    hidden, weight, targets = lm_head
    h = hidden.clone().requires_grad_()
    fn = gather_logprobs if impl.startswith("chunked") else gather_logprobs_reference

    def step():
        h.grad = None
        fn(h, weight, targets).sum().backward()

    benchmark(step)


@pytest.fixture(scope="module")
def grpo_batch():
    gen = torch.Generator().manual_seed(0)
    b, t = 16, 1024
    logp = torch.randn(b, t, generator=gen) - 2
    starts = torch.arange(4) * 256 + 7
    spans = torch.stack([torch.arange(b).repeat_interleave(4), starts.repeat(b), starts.repeat(b) + 64], 1)
    return (logp, logp + 0.3 * torch.randn(b, t, generator=gen), torch.rand(b, t, generator=gen) > 0.2,
            torch.randn(b, generator=gen), spans, torch.randn(spans.shape[0], generator=gen))


@pytest.mark.benchmark(group="span_advantage_loss fwd+bwd B=16 T=1024")
def test_span_advantage_loss(benchmark, grpo_batch):
    logp, old, mask, adv, spans, values = grpo_batch
    x = logp.clone().requires_grad_()

    def step():
        x.grad = None
        span_advantage_loss(x, old, mask, adv, spans, values, clip_high=0.28).backward()

    benchmark(step)


@pytest.fixture(scope="module")
def tree_qkv():
    gen = torch.Generator().manual_seed(0)
    parent = torch.tensor([-1] + [0] * 8 + list(range(1, 9)))
    lengths = torch.tensor([512] + [56] * 8 + [8] * 8)
    node_of_token = torch.repeat_interleave(torch.arange(parent.numel()), lengths)
    t = node_of_token.numel()
    q, k, v = (torch.randn(t, h, 64, generator=gen) for h in (8, 2, 2))
    return q, k, v, node_of_token, build_tree_ancestry(parent)


@pytest.mark.benchmark(group="tree_attention T=1024 Hq=8 Hkv=2 D=64")
@pytest.mark.parametrize("impl", ["torch path", "SDPA dense mask (mask built per call)"])
def test_tree_attention(benchmark, tree_qkv, impl):
    q, k, v, node_of_token, ancestry = tree_qkv
    if impl == "torch path":
        benchmark(tree_attention, q, k, v, node_of_token, ancestry)
        return

    def dense():
        mask = tree_token_mask(node_of_token, ancestry)
        return torch.nn.functional.scaled_dot_product_attention(
            q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=mask, enable_gqa=True)

    benchmark(dense)
