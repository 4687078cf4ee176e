"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import platform
from pathlib import Path

import torch


def device_name(device: str) -> str:
    """The device a figure was measured on: ``GPU <card>`` or ``CPU <model> (<n> threads)``."""
    if device.startswith("cuda"):
        return "GPU " + torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {cpu} ({torch.get_num_threads()} threads)"
