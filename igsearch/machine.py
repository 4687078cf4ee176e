"""What CPU a figure was measured on: its model name and AVX-512 / AMX flags (``/proc/cpuinfo``).

Timings differ by about 1.6-2.5x between the CPU kinds this project runs on (AMD EPYC Zen 3 without
AVX-512, Zen 4 and Intel Xeon with it), and float rounding differs too, so every timing names both.
"""

from __future__ import annotations

import platform
from pathlib import Path


CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo_field(name: str) -> str | None:
    """The first value of the field called exactly ``name`` in :data:`CPUINFO` (``model``, not ``model name``)."""
    try:
        for line in CPUINFO.read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == name:
                return value.strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_kind() -> str:
    """The CPU's model name with its family and model numbers where ``/proc/cpuinfo`` gives them, e.g.
    ``AMD EPYC (family 25, model 1)``: cloud CPUs often share one bare name across generations (AMD's family 25
    is Zen 3 and Zen 4, model 1 Milan, model 17 Genoa; family 26 Zen 5), and timings differ between them."""
    family, model = _cpuinfo_field("cpu family"), _cpuinfo_field("model")
    return f"{cpu_model()} (family {family}, model {model})" if family and model else cpu_model()


def cpu_flags() -> list[str]:
    """Every flag of the CPU (``/proc/cpuinfo``), sorted; empty where that file is not readable."""
    return sorted(set((_cpuinfo_field("flags") or "").split()))


def cpu_avx512_flags() -> list[str]:
    """The CPU's ``avx512*`` flags, sorted (empty on a CPU without AVX-512, e.g. AMD Zen 3)."""
    return [f for f in cpu_flags() if f.startswith("avx512")]


def cpu_amx_flags() -> list[str]:
    """The CPU's ``amx*`` flags (Intel Sapphire Rapids on), sorted; empty elsewhere."""
    return [f for f in cpu_flags() if f.startswith("amx")]


def describe_cpu() -> str:
    """One line naming the CPU (:func:`cpu_kind`), its AVX-512 and AMX support and its core count, e.g.
    ``Intel(R) Xeon(R) Processor (family 6, model 143), AVX-512 (avx512f, avx512bw, ...), AMX (...), 2 cores``."""
    from igsearch.threads import usable_cores

    flags = cpu_avx512_flags()
    avx = f"AVX-512 ({', '.join(flags)})" if flags else "no AVX-512"
    amx = cpu_amx_flags()
    return f"{cpu_kind()}, {avx}, {'AMX (' + ', '.join(amx) + ')' if amx else 'no AMX'}, {usable_cores()} cores"
