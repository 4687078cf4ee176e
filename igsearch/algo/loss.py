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

    def validate(self, where: str = "loss") -> "LossConfig":
        for name in ("clip_low", "clip_high", "kl_coef"):
            check_range(where, name, getattr(self, name), low=0)
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
) -> tuple[torch.Tensor, dict[str, float]]:
    """Scalar loss (differentiable w.r.t. ``logp``) and logging statistics.

    ``logp``, ``old_logp``, ``ref_logp``: float [B, T] log-probs of the response tokens under the
    current, rollout (pi_old) and reference policies; ``mask``: [B, T], 1 on tokens the policy wrote
    and 0 on injected / padding tokens; ``adv``: the estimator's output (span coordinates index T);
    ``cfg``: a LossConfig (a run config's ``loss`` section). ``ref_logp`` is needed when ``cfg.kl_coef > 0``.
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
    loss = igsearch_kernels.span_advantage_loss(
        logp,
        old_logp,
        mask_f,
        adv.seq_adv.to(device=device, dtype=torch.float32),
        adv.spans.to(device=device, dtype=torch.long),
        adv.span_values.to(device=device, dtype=torch.float32),
        ref_logp=None if use_ref is None else use_ref.to(device=device, dtype=logp.dtype),
        beta=float(adv.beta),
        clip_low=float(cfg.clip_low),
        clip_high=float(cfg.clip_high),
        kl_coef=float(cfg.kl_coef),
        agg=cfg.loss_agg,
    )
    stats = loss_statistics(logp, old_logp, mask_f, adv, cfg, ref_logp=use_ref)
    stats["loss"] = float(loss.detach())
    return loss, stats


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
