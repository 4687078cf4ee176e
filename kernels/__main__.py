"""``python -m igsearch_kernels``: which backend each public function runs on, and why.

Prints one line per function and device (CPU always; CUDA when visible) under the current
``IGSEARCH_KERNEL_BACKEND``, plus the native library's state. Exit status 0 either way: a missing
native build is a slower path, not an error.
"""

from __future__ import annotations

import torch

from ._backend import NATIVE_OPS, native_reason, requested_backend, resolve_backend
from ._native import LIBRARY, load

FUNCTIONS = ("tree_attention", "gather_logprobs", "span_advantage_loss")


def report() -> list[str]:
    """The report's lines (see module docstring)."""
    loaded, reason = load()
    lines = [f"igsearch_kernels: IGSEARCH_KERNEL_BACKEND={requested_backend()}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} CPU threads",
             f"native library: {'loaded ' + reason if loaded else 'not loaded: ' + reason} [{LIBRARY}]"]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for name in FUNCTIONS:
        for device in devices:
            probe = torch.empty(0, device=device)
            try:
                path = resolve_backend(probe, op=name)
            except (RuntimeError, ValueError) as exc:
                lines.append(f"  {name:<20} {device:<4} -> refused: {exc}")
                continue
            if path == "native":
                why = "native op loaded"
            elif path == "triton":
                why = "CUDA tensors" if device == "cuda" else "requested (Triton interpreter)"
            elif name not in NATIVE_OPS:
                why = "no native op for this function" if device == "cpu" else "requested"
            else:
                why = "requested" if requested_backend() == "torch" else native_reason(name)
            lines.append(f"  {name:<20} {device:<4} -> {path:<6} ({why})")
    return lines


if __name__ == "__main__":
    print("\n".join(report()))
