"""The run's compute precision: the one place that decides fp32 or bf16, and says why.

A run's ``precision`` field is ``auto`` (the default), ``fp32`` or ``bf16``. ``auto`` picks bf16 where the
hardware multiplies it natively and fp32 elsewhere:

- a CUDA GPU that computes bf16 (``torch.cuda.is_bf16_supported(including_emulation=False)``: Ampere on);
- a CPU with AMX (``amx_bf16``) or AVX-512-BF16 (``avx512_bf16``) in ``/proc/cpuinfo`` *and* a oneDNN in this
  torch that uses it (``torch.ops.mkldnn._is_mkldnn_bf16_supported()``, oneDNN's own check of the ISA).

Without them (AMD Zen 3, older Intel) bf16 is emulated through fp32 and is slower than fp32 itself, so
``auto`` stays in fp32 there; a forced ``bf16`` still runs and says once that it will be slower.

What follows the choice (docs/DESIGN.md, "Precision"):

- the rollout engine's weights (vLLM ``dtype``): :attr:`Precision.engine_dtype`;
- every policy forward of the trainer and the SFT, and the IG scorers: under :meth:`Precision.autocast`, i.e.
  ``torch.autocast(dtype=bfloat16)``. Parameters, their gradients and the optimizer state stay in the
  parameter dtype (fp32 master weights); matrix products run in bf16 with fp32 accumulation; the LM head's
  log-softmax, the loss and the advantages stay in fp32. Code that calls a kernel itself (the scorers' fast
  path, the fused LM head) asks :func:`compute_dtype` which dtype the products run in.

Measured on the CPUs this project runs on (``bench/results/precision.md``): an AMD EPYC Zen 4 with
AVX-512-BF16 multiplies bf16 2.3-2.8x faster than fp32 at one thread; a Sapphire Rapids Xeon with AMX 6.5-9.5x.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import asdict, dataclass

import torch
from torch.utils.weak import WeakTensorKeyDictionary

PRECISIONS = ("auto", "fp32", "bf16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
#: CPU flags (``/proc/cpuinfo``) of instructions that multiply bf16 natively
NATIVE_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")

_warned: set[str] = set()


def cpu_bf16_flags() -> list[str]:
    """The CPU's flags among :data:`NATIVE_BF16_CPU_FLAGS` (empty where bf16 is emulated)."""
    from igsearch.machine import cpu_flags

    flags = set(cpu_flags())
    return [f for f in NATIVE_BF16_CPU_FLAGS if f in flags]


def _onednn_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return False


def bf16_support(device_type: str) -> tuple[bool, str]:
    """(whether ``device_type`` ("cpu" | "cuda") multiplies bf16 natively, one line saying why)."""
    if device_type == "cuda":
        name = torch.cuda.get_device_name(0)
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return True, f"GPU {name} computes bf16 natively"
        return False, f"GPU {name} has no native bf16"
    flags = cpu_bf16_flags()
    if not flags:
        return False, "the CPU has no AMX or AVX-512-BF16 (bf16 would be emulated through fp32)"
    isa = ", ".join(flags)
    if not _onednn_bf16():
        return False, f"the CPU has {isa} but this torch's oneDNN does not use it"
    return True, f"the CPU has {isa}: oneDNN multiplies bf16 natively"


@dataclass(frozen=True)
class Precision:
    """A resolved precision. ``name``: "fp32" | "bf16" (what runs); ``requested``: the field's value;
    ``native``: whether the device multiplies bf16 natively; ``reason``: why ``name`` was chosen;
    ``device_type``: "cpu" | "cuda"."""

    name: str
    requested: str
    native: bool
    reason: str
    device_type: str = "cpu"

    @property
    def dtype(self) -> torch.dtype:
        """The dtype matrix products run in."""
        return _DTYPES[self.name]

    @property
    def engine_dtype(self) -> str:
        """The rollout engine's weight dtype (vLLM's ``dtype``)."""
        return "bfloat16" if self.name == "bf16" else "float32"

    def autocast(self):
        """A context under which the policy's products run in this precision (``torch.autocast`` for bf16,
        nothing for fp32). Enter it around every forward; the loss and the optimizer step need not be in it."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def describe(self) -> str:
        """One line: what runs, what was asked for, and why."""
        return f"precision {self.name} ({'auto' if self.requested == 'auto' else 'forced'}): {self.reason}"

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_precision(requested: str = "auto", device: str | torch.device = "cpu") -> Precision:
    """The precision a run uses on ``device`` when it asks for ``requested`` (:data:`PRECISIONS`).

    ``auto``: bf16 where :func:`bf16_support` says the device multiplies it natively, else fp32. A forced
    ``bf16`` without native support runs, and warns once per process that it will be slower there."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {requested!r}")
    device_type = torch.device(device).type
    if device_type not in ("cpu", "cuda"):
        raise ValueError(f"precision: no policy for device {device_type!r} (cpu or cuda)")
    native, why = bf16_support(device_type)
    if requested == "fp32":
        return Precision("fp32", requested, native, "asked for fp32", device_type)
    if requested == "bf16":
        if not native and why not in _warned:
            _warned.add(why)
            print(f"precision bf16 was asked for, but {why}: it will run slower than fp32 here", file=sys.stderr)
        return Precision("bf16", requested, native, "asked for bf16" + ("" if native else f" ({why})"), device_type)
    return Precision("bf16" if native else "fp32", requested, native, why, device_type)


def compute_dtype(reference: torch.Tensor) -> torch.dtype:
    """The dtype matrix products on ``reference`` (a parameter or activation) run in here: the autocast
    dtype when autocast is on for its device, else its own dtype."""
    kind = reference.device.type
    if reference.is_floating_point() and torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return reference.dtype


#: weight -> (its _version when converted, dtype, the converted copy); keyed by identity (torch's weak tensor dict)
_converted = WeakTensorKeyDictionary()


def weight_as(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``weight.to(dtype)``, kept between calls while the weight is unchanged (its ``_version``): a no-grad
    caller (a scorer) then converts a large LM head once per optimizer step, not once per call (Qwen2.5's
    [151936, 896] head takes about 0.1 s to convert on one CPU core). With grad through ``weight`` this is
    a plain ``.to`` (the conversion is part of the graph)."""
    if weight.dtype == dtype:
        return weight
    if torch.is_grad_enabled() and weight.requires_grad:
        return weight.to(dtype)
    version = weight._version
    hit = _converted.get(weight)
    if hit is not None and hit[0] == version and hit[1] == dtype:
        return hit[2]
    with torch.inference_mode(False), torch.no_grad():
        out = weight.detach().to(dtype)
    _converted[weight] = (version, dtype, out)
    return out


#: bf16 GEMMs on a CPU go to oneDNN, which compiles a kernel for every new shape (measured: a [617 x 192] x
#: [192 x 512] product took 1.12 ms with a new row count against 0.70 ms once compiled, fp32 1.42 ms). Training
#: and IG scoring meet new row counts at every step (other rollouts, other tries), so the forwards round their
#: row counts up to a multiple of this: a few shapes, compiled once.
CPU_BF16_ROW_MULTIPLE = 64


def padded_rows(n: int, dtype: torch.dtype, device: torch.device | str, multiple: int = CPU_BF16_ROW_MULTIPLE) -> int:
    """``n`` rounded up to ``multiple`` where products in ``dtype`` on ``device`` compile a kernel per shape
    (bf16 or fp16 on a CPU), else ``n``."""
    if torch.device(device).type != "cpu" or dtype not in (torch.bfloat16, torch.float16):
        return n
    return -(-n // multiple) * multiple
