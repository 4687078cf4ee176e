"""What the benchmarks (bench/) and studies (studies/) share about a measurement: the device it ran on,
its CPU thread count (``--threads``), and the folder its work goes to.

The CPU's model and flags come from :mod:`igsearch.machine`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from igsearch.machine import cpu_model
from igsearch.threads import ENV as THREADS_ENV


def device_name(device: str) -> str:
    """The device a figure was measured on: ``GPU <card>`` or ``CPU <model> (<n> threads)``."""
    if device.startswith("cuda"):
        return "GPU " + torch.cuda.get_device_name(0)
    n = torch.get_num_threads()
    return f"CPU {cpu_model()} ({n} thread{'' if n == 1 else 's'})"


def measurement_header(name: str) -> dict:
    """The fields every result file of a benchmark or study starts with: its name, the UTC time, the device
    (:func:`device_name`: the GPU, else the CPU and torch's threads), the CPU with its vector and matrix flags
    (``igsearch.machine.describe_cpu``) and torch's version."""
    from datetime import datetime, timezone

    from igsearch.machine import describe_cpu

    return {"benchmark": name, "time": datetime.now(timezone.utc).isoformat(),
            "device": device_name("cuda" if torch.cuda.is_available() else "cpu"), "cpu": describe_cpu(),
            "torch": torch.__version__}


THREADS_HELP = ("torch CPU threads of the policy (default 1: on a shared CPU, oversubscribed OpenMP threads make "
                "timings meaningless; 0 = torch's choice)")


def add_threads_argument(ap) -> None:
    """The ``--threads`` option shared by the training benchmarks (default 1)."""
    ap.add_argument("--threads", type=int, default=1, help=THREADS_HELP)


def apply_threads(threads: int | None) -> None:
    """Set torch's CPU threads unless ``threads`` is 0/None or the run is on a GPU, and pin the trainer's
    thread policy (``threads=auto``, igsearch.threads) to the same count through ``IGSEARCH_THREADS``."""
    if threads and not torch.cuda.is_available():
        torch.set_num_threads(threads)
        os.environ[THREADS_ENV] = str(threads)


def work_root(path, prefix: str):
    """(root, tmp): ``path`` created when given, else a fresh temporary directory that the caller
    removes with ``tmp.cleanup()`` (``tmp`` is None for a given path)."""
    import tempfile

    if path:
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        return root, None
    tmp = tempfile.TemporaryDirectory(prefix=prefix)
    return Path(tmp.name), tmp
