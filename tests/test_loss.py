"""policy_loss against a plain eager formula (values and gradients), all aggregations, with KL."""

import pytest
import torch

from igsearch.algo.advantages import AdvantageConfig, AdvantageInput, AdvantageOutput, compute_advantages
from igsearch.algo.loss import LossConfig, policy_loss
from igsearch.train.config import load_config


def eager_loss(logp, old, mask, adv_tok, clip_low, clip_high, kl_coef=0.0, ref=None, agg="token-mean"):
    """The reference: PPO clipped surrogate + k3 KL, aggregated over mask-1 tokens."""
    ratio = torch.exp(logp - old)
    surr = -torch.minimum(ratio * adv_tok, torch.clamp(ratio, 1 - clip_low, 1 + clip_high) * adv_tok)
    if ref is not None:
        d = ref - logp
        surr = surr + kl_coef * (torch.exp(d) - d - 1)
    m = mask.to(logp.dtype)
    if agg == "token-mean":
        return (surr * m).sum() / m.sum()
    per_seq_sum = (surr * m).sum(1)
    if agg == "seq-mean-token-sum":
        return per_seq_sum.mean()
    n = m.sum(1)
    keep = n > 0
    return (per_seq_sum[keep] / n[keep]).mean()


def _materialise(seq_adv, spans, values, beta, T):
    a = seq_adv[:, None].expand(-1, T).clone()
    for (i, s, e), v in zip(spans.tolist(), values.tolist()):
        a[i, s:e] += beta * v
    return a


def _problem(seed=0, B=5, T=13):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    logp = (old + 0.4 * torch.randn(B, T, generator=g, dtype=torch.float64)).clamp(max=0)
    ref = old + 0.2 * torch.randn(B, T, generator=g, dtype=torch.float64)
    mask = torch.rand(B, T, generator=g) > 0.25
    mask[:, 4:7] = False  # injected documents
    mask[3] = False  # a sequence with no trained tokens
    adv = AdvantageOutput(
        seq_adv=torch.randn(B, generator=g),
        spans=torch.tensor([[0, 1, 4], [0, 8, 12], [2, 0, 3], [4, 9, 13]]),
        span_values=torch.tensor([0.7, -1.2, 1.5, 0.3]),
        span_scale=0.6,
    )
    return logp, old, ref, mask, adv


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
@pytest.mark.parametrize("with_kl", [False, True])
def test_policy_loss_matches_eager_formula(agg, with_kl):
    logp, old, ref, mask, adv = _problem()
    cfg = LossConfig(clip_low=0.2, clip_high=0.28, kl_coef=0.05 if with_kl else 0.0, loss_agg=agg)
    x = logp.clone().requires_grad_(True)
    loss, stats = policy_loss(x, old, mask, adv, cfg, ref_logp=ref if with_kl else None)
    loss.backward()
    y = logp.clone().requires_grad_(True)
    a = _materialise(adv.seq_adv.double(), adv.spans, adv.span_values.double(), adv.span_scale, logp.shape[1])
    expected = eager_loss(y, old, mask, a, 0.2, 0.28, cfg.kl_coef, ref if with_kl else None, agg)
    expected.backward()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-5, atol=1e-6)
    assert x.grad[~mask].abs().max() == 0  # masked tokens get no gradient
    assert stats["loss"] == pytest.approx(float(expected.detach()), rel=1e-5, abs=1e-6)
    assert stats["loss/tokens"] == float(mask.sum())
    assert ("loss/kl_ref" in stats) == with_kl


def test_triton_kernel_path_agrees(monkeypatch):
    """The Triton kernel (through the interpreter on CPU) gives the same loss and gradient."""
    pytest.importorskip("triton")
    import os

    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("needs TRITON_INTERPRET=1 before triton is imported")
    logp, old, ref, mask, adv = _problem(seed=1)
    logp, old, ref = logp.float(), old.float(), ref.float()
    cfg = LossConfig(kl_coef=0.01)
    out = []
    for backend in ("torch", "triton"):
        monkeypatch.setenv("IGSEARCH_KERNEL_BACKEND", backend)
        x = logp.clone().requires_grad_(True)
        loss, _ = policy_loss(x, old, mask, adv, cfg, ref_logp=ref)
        loss.backward()
        out.append((loss.detach(), x.grad))
    torch.testing.assert_close(out[0][0], out[1][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[0][1], out[1][1], rtol=1e-5, atol=1e-6)


def test_all_fail_group_gradient_only_from_ig():
    """All rollouts fail: grpo gives exactly zero gradient, ig moves only the query tokens."""
    B, T = 4, 10
    inp = AdvantageInput(rewards=[0.0] * B, group_ids=[0] * B,
                         scores={"step_ig": [[0.5], [-0.2], [0.1], [None]]},
                         query_spans=[[(1, 4)], [(2, 5)], [(0, 3)], [(1, 2)]], response_lengths=[T] * B)
    logp = -torch.rand(B, T, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(B, T, dtype=torch.bool)
    grads = {}
    for method in ("grpo", "ig"):
        adv = compute_advantages(inp, AdvantageConfig(method=method))
        x = logp.clone().requires_grad_(True)
        loss, _ = policy_loss(x, logp, mask, adv, LossConfig())
        loss.backward()
        grads[method] = x.grad
    assert torch.count_nonzero(grads["grpo"]) == 0
    on_query = torch.zeros(B, T, dtype=torch.bool)
    for i, (s, e) in enumerate([(1, 4), (2, 5), (0, 3)]):
        on_query[i, s:e] = True
    assert torch.all(grads["ig"][on_query] != 0)
    assert torch.count_nonzero(grads["ig"][~on_query]) == 0


def test_errors_and_train_config():
    logp, old, ref, mask, adv = _problem()
    with pytest.raises(ValueError, match="needs ref_logp"):
        policy_loss(logp, old, mask, adv, LossConfig(kl_coef=0.1))
    with pytest.raises(ValueError, match="aggregation"):
        policy_loss(logp, old, mask, adv, LossConfig(loss_agg="mean"))
    with pytest.raises(ValueError, match="sequences"):
        policy_loss(logp[:2], old[:2], mask[:2], adv, LossConfig())
    cfg = load_config(None, ["model_path=m", "loss.loss_agg=seq-mean-token-sum"])
    loss, _ = policy_loss(logp, old, mask, adv, cfg)
    a = _materialise(adv.seq_adv.double(), adv.spans, adv.span_values.double(), adv.span_scale, logp.shape[1])
    torch.testing.assert_close(loss.double(), eager_loss(logp, old, mask, a, 0.2, 0.2, agg="seq-mean-token-sum"))
