"""Loading the native CPU ops (``kernels/csrc``, built by the top-level CMakeLists.txt).

The library ``libigsearch_native.so`` sits beside this package with ``native_build.json``, which
names the torch version it was compiled against. It is loaded once, on first use, and only when that
version is the running torch's (a library built for another torch can crash on load instead of
raising). Whatever stops it (not built, other torch, load error) is kept as a one-line reason that
``python -m igsearch_kernels`` prints; callers then use the torch paths.

Loading registers ``torch.ops.igsearch.*`` (schemas in ``csrc/ops.cpp``) and, here, their fake
implementations (shapes only, for ``torch.compile``) and the autograd formula of ``gather_logprobs``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
LIBRARY = HERE / "libigsearch_native.so"
BUILD_INFO = HERE / "native_build.json"
BUILD_HINT = "build it with `make native` (cmake + a C++17 compiler)"


@lru_cache(maxsize=1)
def load() -> tuple[bool, str]:
    """(loaded, reason): load the native library once; the reason says why not, or what was loaded."""
    if not LIBRARY.is_file():
        return False, f"not built ({LIBRARY.name} missing): {BUILD_HINT}"
    try:
        info = json.loads(BUILD_INFO.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return False, f"{BUILD_INFO.name} unreadable ({exc}): {BUILD_HINT}"
    built_for = str(info.get("torch", ""))
    running = torch.__version__.split("+")[0]
    if built_for.split("+")[0] != running:
        return False, f"built for torch {built_for or '?'}, running {torch.__version__}: {BUILD_HINT}"
    try:
        torch.ops.load_library(str(LIBRARY))
    except (OSError, RuntimeError) as exc:
        return False, f"{LIBRARY.name} failed to load: {str(exc).splitlines()[0]}"
    _register_python_side()
    return True, f"{LIBRARY.name} (torch {built_for}, {info.get('compiler', '?')})"


def available() -> bool:
    return load()[0]


def has_cpu_kernel(op: str) -> bool:
    """True when the loaded library registered a CPU implementation of ``igsearch::<op>``."""
    return load()[0] and torch._C._dispatch_has_kernel_for_dispatch_key(f"igsearch::{op}", "CPU")


def _register_python_side() -> None:
    """Fake (meta) implementations and autograd, registered once after the library is loaded."""

    @torch.library.register_fake("igsearch::tree_attention")
    def _(q, k, v, node, ancestry, past_k, past_v, past_node, scale, block_m):
        return torch.empty_like(q)

    @torch.library.register_fake("igsearch::gather_logprobs")
    def _(hidden, weight, bias, targets, temperature, ignore_index, tile):
        m = hidden.shape[0]
        return hidden.new_empty(m, dtype=torch.float32), hidden.new_empty(m, dtype=torch.float32)

    @torch.library.register_fake("igsearch::gather_logprobs_backward")
    def _(grad, hidden, weight, bias, targets, lse, temperature, ignore_index, tile, output_mask):
        gh = torch.empty_like(hidden, memory_format=torch.contiguous_format) if output_mask[0] else None
        gw = torch.empty_like(weight, memory_format=torch.contiguous_format) if output_mask[1] else None
        gb = torch.empty_like(bias) if (bias is not None and output_mask[2]) else None
        return gh, gw, gb

    def setup_context(ctx, inputs, output):
        hidden, weight, bias, targets, temperature, ignore_index, tile = inputs
        ctx.save_for_backward(hidden, weight, bias, targets, output[1])
        ctx.args = (temperature, ignore_index, tile)
        ctx.has_bias = bias is not None
        ctx.mark_non_differentiable(output[1])

    def backward(ctx, grad_logp, grad_lse):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        # Only the gradients autograd asks for: a frozen LM head skips grad_weight (2MVd flops, [V, d]).
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
        gh, gw, gb = torch.ops.igsearch.gather_logprobs_backward(
            grad_logp.contiguous(), hidden, weight, bias if ctx.has_bias else None, targets, lse, *ctx.args, mask)
        return gh, gw, gb, None, None, None, None

    torch.library.register_autograd("igsearch::gather_logprobs", backward, setup_context=setup_context)
