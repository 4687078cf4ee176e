"""The GRPO policy loss with span-weighted advantages (docs/DESIGN.md section 4), on top of the kernel.

Per token k of sequence i, with ratio r = exp(logp - old_logp) and the per-token advantage
A[i, k] = seq_adv[i] + beta * (span values covering k):

    pg[i, k] = -min(r * A, clip(r, 1 - clip_low, 1 + clip_high) * A)
    kl[i, k] = exp(ref - logp) - (ref - logp) - 1          (k3, only with a reference)
    l[i, k]  = pg[i, k] + kl_coef * kl[i, k]

aggregated over tokens with mask 1 by ``token-mean`` (sum / number of tokens),
``seq-mean-token-mean`` (mean over sequences of each sequence's token mean) or
``seq-mean-token-sum`` (mean over sequences of each sequence's token sum). The loss itself is
computed by ``igsearch_kernels.span_advantage_loss`` in one pass without materialising A; the
statistics are computed separately, without gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

from igsearch.config_fields import check_choice, check_range, config_field

import torch

from igsearch.algo.advantages import AdvantageOutput, per_token_advantages

LOSS_AGGS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


@dataclass
class LossConfig:
    """The ``loss`` section of the run config: PPO clip range, KL coefficient and aggregation."""

    clip_low: float = config_field(0.2, "PPO ratio clip below: ratio >= 1 - clip_low.")
    clip_high: float = config_field(0.2, "PPO ratio clip above: ratio <= 1 + clip_high.")
    kl_coef: float = config_field(0.0, "Coefficient of the k3 KL penalty to a frozen reference policy (0 = no "
                                       "reference).")
    loss_agg: str = config_field("token-mean", "Loss aggregation: token-mean | seq-mean-token-mean | "
                                               "seq-mean-token-sum.")
    tis_cap: float = config_field(
        2.0, "Truncated importance sampling (as verl and TRL): where the engine's sampling log-probs stand for "
             "pi_old, every token's loss is weighted by min(pi_old / pi_engine, tis_cap), pi_old the trainer's own "
             "log-prob of it under the rollout weights, so that the engine's numerics (bf16 weights, other kernels) "
             "do not bias the gradient; 0 = off (the engine's log-probs are pi_old as they are).")

    def validate(self, where: str = "loss") -> "LossConfig":
        for name in ("clip_low", "clip_high", "kl_coef"):
            check_range(where, name, getattr(self, name), low=0)
        if self.tis_cap != 0:
            check_range(where, "tis_cap", self.tis_cap, low=1)
        check_choice(where, "loss_agg", self.loss_agg, LOSS_AGGS)
        return self


def _as_loss_config(cfg) -> LossConfig:
    if isinstance(cfg, LossConfig):
        return cfg
    if isinstance(getattr(cfg, "loss", None), LossConfig):  # TrainConfig
        return cfg.loss
    raise TypeError(f"expected a LossConfig or TrainConfig, got {type(cfg).__name__}")


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    mask: torch.Tensor,
    adv: AdvantageOutput,
    cfg,
    ref_logp: torch.Tensor | None = None,
    token_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Scalar loss (differentiable w.r.t. ``logp``) and logging statistics.

    ``logp``, ``old_logp``, ``ref_logp``: float [B, T] log-probs of the response tokens under the
    current, rollout (pi_old) and reference policies; ``mask``: [B, T], 1 on tokens the policy wrote
    and 0 on injected / padding tokens; ``adv``: the estimator's output (span coordinates index T);
    ``cfg``: a LossConfig (a run config's ``loss`` section). ``ref_logp`` is needed when ``cfg.kl_coef > 0``.
    ``token_weight``: [B, T] detached per-token factors of the loss (truncated importance sampling), or None:
    ``l[i, k]`` becomes ``w[i, k] * l[i, k]`` and the aggregation's denominators stay those of ``mask`` (see
    :func:`weighted_mask`).
    """
    import igsearch_kernels

    cfg = _as_loss_config(cfg)
    if cfg.loss_agg not in LOSS_AGGS:
        raise ValueError(f"unknown loss aggregation {cfg.loss_agg!r}; expected one of {list(LOSS_AGGS)}")
    if logp.dim() != 2 or logp.shape != old_logp.shape or logp.shape != mask.shape:
        raise ValueError(
            f"logp, old_logp and mask must share a [B, T] shape, got {tuple(logp.shape)}, "
            f"{tuple(old_logp.shape)}, {tuple(mask.shape)}"
        )
    if logp.shape[0] != adv.batch_size:
        raise ValueError(f"logp has {logp.shape[0]} sequences but the advantages {adv.batch_size}")
    if cfg.kl_coef > 0 and ref_logp is None:
        raise ValueError("kl_coef > 0 needs ref_logp (log-probs under the reference policy)")
    use_ref = ref_logp if cfg.kl_coef > 0 else None
    device = logp.device
    mask_f = mask.to(device=device, dtype=logp.dtype)
    old_logp = old_logp.to(device=device, dtype=logp.dtype)
    agg, kernel_mask, scale = cfg.loss_agg, mask_f, 1.0
    if token_weight is not None:
        kernel_mask, scale = weighted_mask(mask_f, token_weight.to(device=device, dtype=logp.dtype), cfg.loss_agg)
        agg = "seq-mean-token-sum"
    loss = scale * igsearch_kernels.span_advantage_loss(
        logp,
        old_logp,
        kernel_mask,
        adv.seq_adv.to(device=device, dtype=torch.float32),
        adv.spans.to(device=device, dtype=torch.long),
        adv.span_values.to(device=device, dtype=torch.float32),
        ref_logp=None if use_ref is None else use_ref.to(device=device, dtype=logp.dtype),
        beta=float(adv.span_scale),
        clip_low=float(cfg.clip_low),
        clip_high=float(cfg.clip_high),
        kl_coef=float(cfg.kl_coef),
        agg=agg,
    )
    stats = loss_statistics(logp, old_logp, mask_f, adv, cfg, ref_logp=use_ref)
    if token_weight is not None:
        w, n = token_weight.to(device=device, dtype=torch.float32), mask_f.sum().clamp_min(1.0)
        stats["loss/tis_weight_mean"] = float((w * mask_f).sum() / n)
        stats["loss/tis_capped_frac"] = float(((w >= cfg.tis_cap) * mask_f).sum() / n) if cfg.tis_cap > 0 else 0.0
    stats["loss"] = float(loss.detach())
    return loss, stats


def weighted_mask(mask: torch.Tensor, weight: torch.Tensor, agg: str) -> tuple[torch.Tensor, float]:
    """(mask', scale) such that ``scale * L(mask', "seq-mean-token-sum")`` is the ``agg`` aggregation of the
    weighted per-token losses ``weight * l`` over ``mask`` ([B, T] each): the weights enter the numerators
    only, so every loss kernel that takes a float mask can apply them exactly.

    seq-mean-token-sum: ``mask * weight``; token-mean: ``mask * weight * B / sum(mask)``; seq-mean-token-mean:
    ``mask * weight / count_i`` per sequence, times ``B / (sequences with tokens)``."""
    B = mask.shape[0]
    m = mask * weight
    if agg == "seq-mean-token-sum":
        return m, 1.0
    if agg == "token-mean":
        total = float(mask.sum())
        return m * (B / total if total > 0 else 0.0), 1.0
    counts = mask.sum(-1, keepdim=True)
    has = int((counts > 0).sum())
    return torch.where(counts > 0, m / counts.clamp_min(1e-30), torch.zeros_like(m)), B / max(1, has)


@torch.no_grad()
def loss_statistics(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    mask: torch.Tensor,
    adv: AdvantageOutput,
    cfg: LossConfig,
    ref_logp: torch.Tensor | None = None,
) -> dict[str, float]:
    """Token-level diagnostics over mask-1 tokens: clip fraction, ratio, approximate KL to pi_old,
    KL to the reference, per-token advantage magnitude."""
    m = mask.to(torch.float32)
    n = m.sum().clamp_min(1.0)
    logp = logp.detach().to(torch.float32)
    log_ratio = logp - old_logp.to(torch.float32)
    ratio = torch.exp(log_ratio)
    a = per_token_advantages(adv, None, logp.shape[1]).to(logp.device)
    clipped_low = (ratio < 1 - cfg.clip_low) & (a < 0)
    clipped_high = (ratio > 1 + cfg.clip_high) & (a > 0)
    stats = {
        "loss/tokens": float(m.sum()),
        "loss/clip_frac": float(((clipped_low | clipped_high).float() * m).sum() / n),
        "loss/ratio_mean": float((ratio * m).sum() / n),
        "loss/ratio_max": float(torch.where(m > 0, ratio, torch.zeros_like(ratio)).max()) if m.any() else 1.0,
        # k3 estimator of KL(pi_old || pi) on the sampled tokens
        "loss/approx_kl_old": float(((torch.exp(-log_ratio) + log_ratio - 1) * m).sum() / n),
        "adv/token_mean": float((a * m).sum() / n),
        "adv/token_abs_mean": float((a.abs() * m).sum() / n),
    }
    if ref_logp is not None:
        d = ref_logp.detach().to(torch.float32) - logp
        stats["loss/kl_ref"] = float(((torch.exp(d) - d - 1) * m).sum() / n)
    return stats
