"""The precision policy (igsearch.precision): what auto picks and why, the bf16 paths it switches on, and
how far bf16 moves what the trainer computes (gradients, step IG, advantages) from fp32."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

import igsearch.precision as P
from igsearch.config_fields import ConfigError

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_bench(name):
    import sys

    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def cpu_with(monkeypatch):
    """Pretend the CPU has the given bf16 flags (and oneDNN support for them)."""
    def set_flags(flags, onednn=True):
        monkeypatch.setattr(P, "cpu_bf16_flags", lambda: list(flags))
        monkeypatch.setattr(P, "_onednn_bf16", lambda: onednn)
        P._warned.clear()
    return set_flags


@pytest.mark.parametrize("flags", [["amx_bf16", "avx512_bf16"], ["avx512_bf16"]])
def test_auto_picks_bf16_where_the_cpu_multiplies_it_natively(cpu_with, flags):
    cpu_with(flags)
    p = P.resolve_precision("auto", "cpu")
    assert p.name == "bf16" and p.native and p.dtype == torch.bfloat16 and p.engine_dtype == "bfloat16"
    assert all(f in p.reason for f in flags) and "auto" in p.describe()


@pytest.mark.parametrize("flags,onednn,why", [([], True, "no AMX or AVX-512-BF16"),
                                              (["avx512_bf16"], False, "oneDNN does not use it")])
def test_auto_stays_fp32_where_bf16_is_emulated(cpu_with, flags, onednn, why):
    cpu_with(flags, onednn)
    p = P.resolve_precision("auto", "cpu")
    assert p.name == "fp32" and not p.native and why in p.reason and p.engine_dtype == "float32"
    with p.autocast():  # fp32: no autocast at all
        assert not torch.is_autocast_enabled("cpu")


def test_forced_bf16_without_native_support_runs_and_warns_once(cpu_with, capsys):
    cpu_with([])
    for _ in range(3):
        p = P.resolve_precision("bf16", "cpu")
    assert p.name == "bf16" and not p.native
    err = capsys.readouterr().err
    assert err.count("slower than fp32") == 1
    cpu_with(["avx512_bf16"])
    assert P.resolve_precision("fp32", "cpu").name == "fp32"
    assert "slower" not in capsys.readouterr().err


def test_a_bad_precision_is_one_clear_error():
    with pytest.raises(ValueError, match="precision: expected one of auto, fp32, bf16, got 'fp16'"):
        P.resolve_precision("fp16")
    from igsearch.train.config import load_config

    with pytest.raises(ConfigError, match=r"field 'precision': expected one of \['auto', 'fp32', 'bf16'\]"):
        load_config(None, ["model_path=x", "precision=half"])
    assert load_config(None, ["model_path=x"]).precision == "auto"


def test_compute_dtype_follows_autocast_and_the_cached_weight_its_version():
    w = torch.nn.Parameter(torch.randn(5, 3))
    assert P.compute_dtype(w) == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert P.compute_dtype(w) == torch.bfloat16
    with torch.inference_mode():
        a, b = P.weight_as(w, torch.bfloat16), P.weight_as(w, torch.bfloat16)
    assert a is b and a.dtype == torch.bfloat16
    with torch.no_grad():
        w.mul_(2)  # an optimizer step: the cached copy is stale
    with torch.inference_mode():
        c = P.weight_as(w, torch.bfloat16)
    assert c is not a and torch.equal(c, w.detach().bfloat16())
    g = P.weight_as(w, torch.bfloat16)  # with grad: part of the graph, never cached
    assert g.requires_grad and g is not c


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_token_weights_enter_every_aggregation_exactly(agg):
    """policy_loss(token_weight=w) is the aggregation of w * l with the mask's own denominators (float64
    reference on fresh random inputs, odd shapes, a sequence without tokens)."""
    from igsearch.algo.advantages import AdvantageOutput
    from igsearch.algo.loss import LossConfig, policy_loss

    g = torch.Generator().manual_seed(7)
    B, T = 5, 13
    logp = (-torch.rand(B, T, generator=g, dtype=torch.float64) * 3).requires_grad_()
    old = logp.detach() + 0.1 * torch.randn(B, T, generator=g, dtype=torch.float64)
    mask = (torch.rand(B, T, generator=g) > 0.3).double()
    mask[2] = 0
    w = torch.rand(B, T, generator=g, dtype=torch.float64) * 2
    adv = AdvantageOutput(seq_adv=torch.randn(B, generator=g), spans=torch.zeros(0, 3, dtype=torch.long),
                          span_values=torch.zeros(0), span_scale=0.0)
    cfg = LossConfig(loss_agg=agg)
    loss, stats = policy_loss(logp, old, mask, adv, cfg, token_weight=w)
    ratio = torch.exp(logp - old)
    a = adv.seq_adv.double()[:, None]
    tok = -torch.minimum(ratio * a, ratio.clamp(0.8, 1.2) * a) * w * mask
    if agg == "token-mean":
        want = tok.sum() / mask.sum()
    elif agg == "seq-mean-token-sum":
        want = tok.sum(-1).mean()
    else:
        counts = mask.sum(-1)
        want = (tok.sum(-1)[counts > 0] / counts[counts > 0]).mean()
    assert float(loss.detach()) == pytest.approx(float(want), rel=1e-9, abs=1e-12)
    assert stats["loss/tis_weight_mean"] == pytest.approx(float((w * mask).sum() / mask.sum()))


@pytest.fixture(scope="module")
def demo_cfg(tmp_path_factory):
    """The demo's run config on its world and shipped warm start (a second to build)."""
    return load_bench("precision_exactness").demo_setup(tmp_path_factory.mktemp("precision"))


def test_bf16_gradient_matches_fp32_on_the_tiny_policy(demo_cfg):
    """The update's forward under bf16 autocast over fp32 master weights: gradients stay fp32 and point
    where fp32's do (cosine >= 0.99 over all parameters) on the warm start's own demonstrations."""
    from igsearch.data.loaders import load_qa
    from igsearch.policy.load import load_policy
    from igsearch.retrieval.bm25 import BM25Retriever
    from igsearch.train.sft import build_sft_examples, sft_loss

    world = Path(demo_cfg.world_dir)
    model, tok = load_policy(demo_cfg.model_path)
    examples = build_sft_examples(load_qa(world / "warmup.jsonl", limit=12), tok,
                                  BM25Retriever.from_corpus(world / "corpus.jsonl"), topk=2, seed=3)
    grads = {}
    for name in ("fp32", "bf16"):
        model.zero_grad(set_to_none=True)
        with P.resolve_precision(name).autocast():
            loss = sft_loss(model, examples)
        assert loss.dtype == torch.float32 and math.isfinite(float(loss))
        loss.backward()
        assert all(p.grad.dtype == torch.float32 for p in model.parameters())
        grads[name] = torch.cat([p.grad.flatten() for p in model.parameters()])
    cos = torch.nn.functional.cosine_similarity(grads["fp32"].double(), grads["bf16"].double(), dim=0)
    assert cos >= 0.99, f"bf16 gradient cosine {float(cos):.4f} to fp32"
    assert not torch.equal(grads["fp32"], grads["bf16"])  # bf16 really ran


def test_bf16_step_ig_and_advantages_agree_with_fp32_on_agent_rollouts(demo_cfg):
    """The issue's bar on rollouts of the demo's warm start (8 questions x G, transformers engine): Spearman
    of step IG >= 0.99, the sign of IG kept on >= 99% of steps, the advantages' correlation >= 0.99."""
    mod = load_bench("precision_exactness")
    model, tok, trajs, rewards = mod.agent_rollouts(demo_cfg, 8, "hf")
    res = mod.compare(demo_cfg, model, tok, trajs, rewards)
    ig, adv = res["step_ig"], res["advantages"]
    assert ig["n"] >= 20, "too few scored steps to say anything"
    assert 0 < ig["max_abs_diff"] < 0.25  # bf16 moved IG, a little
    assert ig["spearman"] >= 0.99 and ig["sign_agreement"] >= 0.99
    assert adv["pearson"] >= 0.99
