"""Packed policy forward equals one forward per sequence (values and gradients)."""

import pytest
import torch
import transformers

import igsearch_kernels
from igsearch.policy import packing
from igsearch.policy.packing import bucket_batches, pack_rows, packed_forward, packed_token_logprobs, pad_to_batch

HAS_KERNEL = callable(getattr(igsearch_kernels, "gather_logprobs", None))


@pytest.fixture(autouse=True)
def _gather_fallback(monkeypatch):
    """Until igsearch_kernels.gather_logprobs lands, use the eager formula so packing is still tested."""
    if not HAS_KERNEL:
        def eager(h, w, t, temperature):
            return torch.log_softmax((h @ w.t()) / temperature, -1).gather(1, t[:, None])[:, 0]

        monkeypatch.setattr(packing, "_gather_logprobs", eager)


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.Qwen2Config(
        vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=128, attn_implementation="sdpa",
    )
    return transformers.Qwen2ForCausalLM(cfg).float().eval()


def _reference(model, seqs, starts, temperature):
    out = []
    for s, c in zip(seqs, starts):
        logits = model(torch.tensor([s])).logits[0].float() / temperature
        lp = torch.log_softmax(logits, -1)[c - 1:-1]
        out.append(lp.gather(1, torch.tensor(s[c:])[:, None])[:, 0])
    return out


@pytest.mark.parametrize("budget", [None, 24, 60])
def test_packed_equals_unpacked_values_and_grads(budget):
    model = _tiny_model()
    g = torch.Generator().manual_seed(1)
    lengths = [9, 17, 4, 23, 2]
    seqs = [torch.randint(0, 300, (n,), generator=g).tolist() for n in lengths]
    starts = [3, 10, 1, 15, 2]  # the last one scores nothing
    packed = packed_token_logprobs(model, seqs, compute_from=starts, temperature=0.8, max_tokens_per_row=budget)
    assert [p.numel() for p in packed] == [n - c for n, c in zip(lengths, starts)]
    ref = _reference(model, seqs, starts, 0.8)
    for p, r in zip(packed, ref):
        assert p.dtype == torch.float32
        torch.testing.assert_close(p, r, rtol=0, atol=1e-5)

    weights = [torch.randn(p.numel(), generator=g) for p in packed]
    model.zero_grad()
    sum((p * w).sum() for p, w in zip(packed, weights)).backward()
    grads = {n: q.grad.clone() for n, q in model.named_parameters()}
    model.zero_grad()
    sum((r * w).sum() for r, w in zip(ref, weights)).backward()
    for n, q in model.named_parameters():
        torch.testing.assert_close(grads[n], q.grad, rtol=1e-4, atol=1e-5, msg=n)


def test_default_compute_from_scores_all_but_first():
    model = _tiny_model(2)
    seqs = [[5, 6, 7, 8], [9, 10]]
    out = packed_token_logprobs(model, seqs)
    ref = _reference(model, seqs, [1, 1], 1.0)
    for p, r in zip(out, ref):
        torch.testing.assert_close(p, r, rtol=0, atol=1e-5)


def test_pack_rows_and_rows_of_the_sdpa_path_and_errors():
    assert pack_rows([5, 5, 5, 12, 1], 10) == [[0, 1], [2], [3], [4]]
    assert pack_rows([5, 5, 5], None) == [[0, 1, 2]]
    model = _tiny_model()
    # SDPA (no flash-attn): one sequence per row, from length-sorted right-padded micro-batches, so no
    # block-diagonal mask is needed; each row's hidden states are those of the sequence alone
    seqs = [[1, 2], [3, 4, 5], [6], [7, 8, 9, 10, 11]]
    out = list(packed_forward(model, seqs, max_tokens_per_row=6))
    assert [row for row, _, _ in out] == [[2], [0], [1], [3]]
    with torch.no_grad():
        for row, ids, hidden in out:
            assert ids.tolist() == seqs[row[0]]
            alone = model.model(input_ids=torch.tensor([seqs[row[0]]])).last_hidden_state[0]
            torch.testing.assert_close(hidden, alone, rtol=0, atol=1e-5)
    assert bucket_batches([2, 3, 1, 5], 6) == [[2, 0], [1], [3]]
    assert bucket_batches([2, 3, 1, 5], None) == [[2, 0, 1, 3]]
    with pytest.raises(ValueError, match="compute_from"):
        packed_token_logprobs(model, [[1, 2, 3]], compute_from=[0])
    padded = pad_to_batch([torch.ones(2), torch.ones(4)], value=0.0)
    assert padded.shape == (2, 4) and padded[0, 2:].eq(0).all()


@pytest.mark.gpu
def test_flash_attention_varlen_packing_on_gpu():
    """With flash-attn on a GPU the packed forward (varlen, no mask) matches per-sequence forwards."""
    pytest.importorskip("flash_attn")
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(
        vocab_size=300, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=256, attn_implementation="flash_attention_2",
    )
    model = transformers.Qwen2ForCausalLM(cfg).to("cuda", torch.bfloat16).eval()
    g = torch.Generator().manual_seed(3)
    seqs = [torch.randint(0, 300, (n,), generator=g).tolist() for n in (31, 7, 64, 2)]
    starts = [5, 1, 40, 1]
    packed = packed_token_logprobs(model, seqs, compute_from=starts)
    for s, c, p in zip(seqs, starts, packed):
        logits = model(torch.tensor([s], device="cuda")).logits[0].float()
        ref = torch.log_softmax(logits, -1)[c - 1:-1].gather(1, torch.tensor(s[c:], device="cuda")[:, None])[:, 0]
        torch.testing.assert_close(p, ref, rtol=0, atol=3e-2)
