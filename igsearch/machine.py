"""What CPU a figure was measured on: its model name and AVX-512 / AMX flags (``/proc/cpuinfo``).

Timings differ by about 1.6-2.5x between the CPU kinds this project runs on (AMD EPYC Zen 3 without
AVX-512, Zen 4 and Intel Xeon with it), and float rounding differs too, so every timing names both.
"""

from __future__ import annotations

import platform
from pathlib import Path


def _cpuinfo_field(name: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


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
    """One line naming the CPU, its AVX-512 support and its core count, e.g.
    ``Intel(R) Xeon(R) Processor, AVX-512 (avx512f, avx512bw, ...), 2 cores``."""
    from igsearch.threads import usable_cores

    flags = cpu_avx512_flags()
    avx = f"AVX-512 ({', '.join(flags)})" if flags else "no AVX-512"
    amx = cpu_amx_flags()
    return f"{cpu_model()}, {avx}, {'AMX (' + ', '.join(amx) + ')' if amx else 'no AMX'}, {usable_cores()} cores"
