"""Native CPU gather_logprobs (kernels/csrc/gather_logprobs.cpp) against a float64 reference.

Skipped, with the loader's reason, when the library is not built (`make native`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from igsearch_kernels import _native, gather_logprobs, gather_logprobs_reference
from igsearch_kernels._backend import resolve_backend

LOADED, REASON = _native.load()
if not LOADED:
    pytest.skip(f"native library not loaded: {REASON}", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 5e-3}
op = torch.ops.igsearch.gather_logprobs


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected|."""
    expected = expected.detach().double()
    return ((actual.detach().double() - expected).abs().max() / expected.abs().max().clamp(min=1e-30)).item()


def make_inputs(m, v, d, dtype, seed, with_bias, ignore_index=-100):
    """hidden [m, d], weight [v, d], bias [v] or None, targets [m] with ~1/5 of the rows ignored."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(m, d, generator=gen).to(dtype)
    weight = (torch.randn(v, d, generator=gen) * 2 * d**-0.5).to(dtype)
    bias = torch.randn(v, generator=gen).to(dtype) if with_bias else None
    targets = torch.randint(0, v, (m,), generator=gen)
    if m > 4:
        targets[torch.randperm(m, generator=gen)[: m // 5]] = ignore_index
    return hidden, weight, bias, targets


def native_and_reference(hidden, weight, bias, targets, tau, tile, ignore_index=-100, seed=0):
    """(logp, grads, ref_logp, ref_grads): grads of (logp * g).sum() for a random upstream g."""
    leaves = [x.clone().requires_grad_() for x in (hidden, weight) + ((bias,) if bias is not None else ())]
    logp, lse = op(leaves[0], leaves[1], leaves[2] if bias is not None else None, targets, tau, ignore_index, tile)
    ref_leaves = [x.detach().double().requires_grad_() for x in leaves]
    ref = gather_logprobs_reference(ref_leaves[0], ref_leaves[1], targets, ref_leaves[2] if bias is not None else None,
                                    tau, ignore_index=ignore_index)
    g = torch.randn(hidden.shape[0], generator=torch.Generator().manual_seed(seed + 1000))
    grads = torch.autograd.grad((logp * g).sum(), leaves)
    ref_grads = torch.autograd.grad((ref * g.double()).sum(), ref_leaves)
    return logp, lse, grads, ref, ref_grads


CASES = [
    # M, V, d, bias, temperature, tile, seed
    (37, 1003, 29, True, 0.7, 300, 0),   # tile < V, not dividing it
    (37, 1003, 29, False, 1.0, 0, 1),    # default tile (> V: one tile)
    (1, 1003, 29, True, 1.3, 128, 2),    # one row
    (64, 517, 40, False, 2.0, 1, 3),     # one vocab row per tile
    (1100, 301, 16, True, 0.9, 100, 4),  # more rows than one row block (1024)
]


@pytest.mark.parametrize("case", CASES, ids=[f"M{c[0]}-V{c[1]}-d{c[2]}-tile{c[5]}" for c in CASES])
def test_fp32_forward_backward(case):
    m, v, d, with_bias, tau, tile, seed = case
    hidden, weight, bias, targets = make_inputs(m, v, d, torch.float32, seed, with_bias)
    logp, lse, grads, ref, ref_grads = native_and_reference(hidden, weight, bias, targets, tau, tile, seed=seed)
    assert logp.dtype == torch.float32 and logp.shape == (m,) and lse.shape == (m,)
    assert rel_err(logp, ref) <= TOL[torch.float32]
    assert bool((logp[targets == -100] == 0).all())
    for name, got, want in zip(("hidden", "weight", "bias"), grads, ref_grads):
        assert got.dtype == torch.float32, name
        assert rel_err(got, want) <= TOL[torch.float32], name
    assert bool((grads[0][targets == -100] == 0).all())  # ignored rows: no gradient


@pytest.mark.parametrize("dtype,m,tile", [(torch.bfloat16, 37, 300), (torch.float16, 37, 300),
                                           (torch.bfloat16, 1100, 100)])  # bf16 GEMMs over two row blocks
def test_half_precision_inputs(dtype, m, tile):
    hidden, weight, bias, targets = make_inputs(m, 1003, 29, dtype, 5, True)
    logp, _, grads, ref, ref_grads = native_and_reference(hidden, weight, bias, targets, 0.8, tile, seed=5)
    assert logp.dtype == torch.float32
    assert rel_err(logp, ref) <= TOL[dtype]
    assert bool((logp <= 0).all())  # the target's logit comes from the same (rounded) tile as the lse
    for got, want in zip(grads, ref_grads):
        assert got.dtype == dtype
        assert rel_err(got, want) <= TOL[dtype]


def test_custom_ignore_index_and_all_ignored():
    hidden, weight, bias, targets = make_inputs(20, 257, 32, torch.float32, 6, True, ignore_index=-1)
    logp, _, grads, ref, ref_grads = native_and_reference(hidden, weight, bias, targets, 1.0, 64, ignore_index=-1)
    assert rel_err(logp, ref) <= TOL[torch.float32]
    for got, want in zip(grads, ref_grads):
        assert rel_err(got, want) <= TOL[torch.float32]

    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    logp, _ = op(h, w, None, torch.full((20,), 7), 1.0, 7, 0)
    logp.sum().backward()
    assert bool((logp == 0).all()) and bool((h.grad == 0).all()) and bool((w.grad == 0).all())


def test_only_requested_gradients_are_computed():
    """A frozen LM head: output_mask skips grad_weight; grad_hidden unchanged."""
    hidden, weight, bias, targets = make_inputs(17, 300, 24, torch.float32, 7, True)
    h = hidden.clone().requires_grad_()
    logp, lse = op(h, weight, bias, targets, 1.0, -100, 64)
    (gh,) = torch.autograd.grad(logp.square().sum(), [h])
    hd = hidden.double().requires_grad_()
    ref = gather_logprobs_reference(hd, weight.double(), targets, bias.double())
    (ref_gh,) = torch.autograd.grad(ref.square().sum(), [hd])
    assert rel_err(gh, ref_gh) <= TOL[torch.float32]

    g = torch.randn(17)
    out = torch.ops.igsearch.gather_logprobs_backward(g, hidden, weight, bias, targets, lse.detach(), 1.0, -100, 64,
                                                      [True, False, False])
    assert out[0] is not None and out[0].shape == hidden.shape and out[1] is None and out[2] is None
    out = torch.ops.igsearch.gather_logprobs_backward(g, hidden, weight, None, targets, lse.detach(), 1.0, -100, 64,
                                                      [False, True, True])
    assert out[0] is None and out[1].shape == weight.shape and out[2] is None  # no bias: no grad_bias


def test_empty_rows():
    hidden, weight, _, _ = make_inputs(3, 100, 16, torch.float32, 8, False)
    h = hidden[:0].clone().requires_grad_()
    w = weight.clone().requires_grad_()
    logp, lse = op(h, w, None, torch.zeros(0, dtype=torch.long), 1.0, -100, 0)
    assert logp.shape == (0,) and lse.shape == (0,)
    logp.sum().backward()
    assert h.grad.shape == (0, 16) and bool((w.grad == 0).all())


def test_argument_checks_name_the_argument():
    hidden, weight, bias, targets = make_inputs(5, 50, 8, torch.float32, 9, True)
    bad = [
        ((hidden.double(), weight.double(), None, targets), "hidden must be float32"),
        ((hidden, weight[:, :4], None, targets), "weight [V, d] must have d = 8"),
        ((hidden, weight.bfloat16(), None, targets), "weight dtype"),
        ((hidden, weight, bias[:10], targets), "bias must be [V = 50]"),
        ((hidden, weight, None, targets[:3]), "targets must be [M = 5]"),
        ((hidden, weight, None, targets.float()), "targets must be an integer tensor"),
        ((hidden, weight, None, torch.full((5,), 50)), "targets[0] = 50 is outside [0, V = 50)"),
    ]
    for args, message in bad:
        with pytest.raises(RuntimeError, match=re.escape(message)):
            op(*args, 1.0, -100, 0)
    with pytest.raises(RuntimeError, match="temperature must be > 0"):
        op(hidden, weight, None, targets, 0.0, -100, 0)


def test_opcheck():
    hidden, weight, bias, targets = make_inputs(37, 1003, 29, torch.float32, 10, True)
    h, w, b = (x.clone().requires_grad_() for x in (hidden, weight, bias))
    torch.library.opcheck(op.default, (h, w, b, targets, 0.7, -100, 300))
    torch.library.opcheck(op.default, (h, weight, None, targets, 1.0, -100, 0))
    _, lse = op(hidden, weight, bias, targets, 0.7, -100, 300)
    g = torch.randn(37)
    torch.library.opcheck(torch.ops.igsearch.gather_logprobs_backward.default,
                          (g, hidden, weight, bias, targets, lse, 0.7, -100, 300, [True, False, True]))


def test_torch_compile_smoke():
    hidden, weight, bias, targets = make_inputs(37, 1003, 29, torch.float32, 11, True)

    def loss(h, w, b):
        return (gather_logprobs(h, w, targets, b, temperature=0.7) * 2).sum()

    eager_leaves = [x.clone().requires_grad_() for x in (hidden, weight, bias)]
    loss(*eager_leaves).backward()
    leaves = [x.clone().requires_grad_() for x in (hidden, weight, bias)]
    torch.compile(loss, fullgraph=True)(*leaves).backward()  # ~6 s on one CPU core
    for got, want in zip(leaves, eager_leaves):
        assert torch.allclose(got.grad, want.grad, rtol=1e-6, atol=1e-7)


def test_public_function_dispatches_to_native(monkeypatch):
    monkeypatch.delenv("IGSEARCH_KERNEL_BACKEND", raising=False)
    hidden, weight, bias, targets = make_inputs(37, 1003, 29, torch.float32, 12, True)
    assert resolve_backend(hidden, weight, op="gather_logprobs") == "native"
    via_op, _ = op(hidden, weight, bias, targets, 0.7, -100, 0)
    auto = gather_logprobs(hidden, weight, targets, bias, temperature=0.7)
    native = gather_logprobs(hidden, weight, targets, bias, temperature=0.7, backend="native")
    torch_path = gather_logprobs(hidden, weight, targets, bias, temperature=0.7, backend="torch")
    assert torch.equal(auto, via_op) and torch.equal(native, via_op)
    assert rel_err(native, torch_path) <= TOL[torch.float32]


def test_public_function_falls_back_or_refuses(monkeypatch):
    monkeypatch.delenv("IGSEARCH_KERNEL_BACKEND", raising=False)
    hidden, weight, _, targets = make_inputs(9, 100, 16, torch.float32, 13, False)
    logp, ent = gather_logprobs(hidden, weight, targets, return_entropy=True)  # auto: torch path
    ref, ref_ent = gather_logprobs_reference(hidden.double(), weight.double(), targets, return_entropy=True)
    assert rel_err(logp, ref) <= 1e-5 and rel_err(ent, ref_ent) <= 1e-5
    assert gather_logprobs(hidden.double(), weight.double(), targets).dtype == torch.float64  # auto: torch path
    with pytest.raises(ValueError, match="entropy"):
        gather_logprobs(hidden, weight, targets, return_entropy=True, backend="native")
    with pytest.raises(TypeError, match="fp32/bf16/fp16"):
        gather_logprobs(hidden.double(), weight.double(), targets, backend="native")


def test_env_native_in_fresh_process():
    script = textwrap.dedent("""
        import torch
        from igsearch_kernels import gather_logprobs, gather_logprobs_reference
        from igsearch_kernels._backend import resolve_backend
        torch.manual_seed(0)
        h = torch.randn(37, 29, requires_grad=True)
        w = torch.randn(1003, 29, requires_grad=True)
        t = torch.randint(0, 1003, (37,))
        assert resolve_backend(h, w, op="gather_logprobs") == "native"
        logp = gather_logprobs(h, w, t, temperature=0.7)
        logp.sum().backward()
        hd, wd = h.detach().double().requires_grad_(), w.detach().double().requires_grad_()
        ref = gather_logprobs_reference(hd, wd, t, temperature=0.7)
        ref.sum().backward()
        for a, b in ((logp, ref), (h.grad, hd.grad), (w.grad, wd.grad)):
            err = ((a.double() - b.detach()).abs().max() / b.detach().abs().max()).item()
            assert err < 1e-5, err
        print("native ok")
    """)
    env = dict(os.environ, IGSEARCH_KERNEL_BACKEND="native", OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "native ok" in res.stdout
