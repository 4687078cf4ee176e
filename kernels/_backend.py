"""Choosing between the Triton kernels, the native CPU ops and the torch paths.

`IGSEARCH_KERNEL_BACKEND` selects the implementation for every public kernel function:

- ``auto`` (default): Triton for CUDA tensors; on the CPU the native op (``kernels/csrc``, built by
  the top-level CMakeLists.txt) when the function has one and the library is loaded, else the torch path.
- ``triton``: always Triton. CPU tensors then need Triton's interpreter, i.e. ``TRITON_INTERPRET=1``
  set *before* triton (and so this package) is first imported.
- ``native``: the native CPU op; refused (with the reason) for CUDA tensors, for functions without
  one, or when the library is not loaded.
- ``torch``: always the torch path.

`IGSEARCH_FP32_DOT` sets how fp32 tiles are multiplied on the GPU: ``ieee`` (default; exact fp32,
what the 1e-5 tolerances assume), ``tf32x3`` (near-fp32, faster) or ``tf32`` (fastest, ~1e-3).
"""

from __future__ import annotations

import os

import torch

_ENV = "IGSEARCH_KERNEL_BACKEND"
_CHOICES = ("auto", "triton", "native", "torch")
#: Public functions that have a native CPU op.
NATIVE_OPS = ("tree_attention", "gather_logprobs")


def interpreter_on() -> bool:
    """True when Triton runs kernels through its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")


def requested_backend() -> str:
    """The backend asked for in `IGSEARCH_KERNEL_BACKEND` (``auto`` when unset)."""
    value = os.environ.get(_ENV, "auto").strip().lower() or "auto"
    if value not in _CHOICES:
        raise ValueError(f"{_ENV}={value!r}: expected one of {', '.join(_CHOICES)}")
    return value


def resolve_backend(*tensors: torch.Tensor, backend: str | None = None, op: str | None = None) -> str:
    """Return ``"triton"``, ``"native"`` or ``"torch"`` for a call of function `op` on `tensors`.

    `backend` overrides the environment variable (same values). The Triton path on CPU tensors is
    refused unless the interpreter is on, and the native path unless `op` has a loaded native op, each
    with an error that says what to do.
    """
    choice = (backend or requested_backend()).lower()
    if choice not in _CHOICES:
        raise ValueError(f"backend={choice!r}: expected one of {', '.join(_CHOICES)}")
    on_cuda = all(t.is_cuda for t in tensors if t is not None)
    if choice == "torch":
        return "torch"
    if choice == "auto":
        if on_cuda:
            return "triton"
        return "native" if native_reason(op) is None else "torch"
    if choice == "native":
        why = "native ops run on CPU tensors" if on_cuda else native_reason(op)
        if why is not None:
            raise RuntimeError(f"the native backend was requested for {op}: {why}")
        return "native"
    if not on_cuda and not interpreter_on():
        raise RuntimeError(
            "the Triton backend was requested for CPU tensors: set TRITON_INTERPRET=1 before "
            "importing triton / igsearch_kernels, or use IGSEARCH_KERNEL_BACKEND=torch"
        )
    return "triton"


@torch.compiler.assume_constant_result  # torch.compile: evaluated once while tracing, not traced into
def native_reason(op: str | None) -> str | None:
    """None when `op` can run natively on the CPU, else why not (one line)."""
    if op not in NATIVE_OPS:
        return f"{op} has no native CPU op"
    from ._native import has_cpu_kernel, load

    loaded, reason = load()
    if not loaded:
        return reason
    return None if has_cpu_kernel(op) else f"the native library has no CPU kernel for {op}: rebuild it with `make native`"


def fp32_dot_precision() -> str:
    """The `input_precision` for fp32 `tl.dot` (see module docstring)."""
    value = os.environ.get("IGSEARCH_FP32_DOT", "ieee").strip().lower()
    if value not in ("ieee", "tf32", "tf32x3"):
        raise ValueError(f"IGSEARCH_FP32_DOT={value!r}: expected ieee, tf32 or tf32x3")
    return value


def triton_dtype_ok(t: torch.Tensor) -> bool:
    return t.dtype in (torch.float32, torch.float16, torch.bfloat16)


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (a fixed guess off the GPU, for grid sizing)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4
