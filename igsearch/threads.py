"""Torch's CPU thread count, chosen from how busy the cores are: at the start of a job and again
between its phases (the SFT loop every ``SFT_RECHECK_STEPS`` steps; every RL step before generation
and before the update).

Why: torch runs one OpenMP thread per core by default. On a 2-core laptop beside one busy process,
two threads wait on each other's descheduled partner at every parallel region, and a step takes
1.9-4x as long as alone (``bench/thread_contention.py``); one thread beside the same neighbour is
as fast as one thread alone. So: as many threads as there are cores that nothing else is using.

How busy the others are: the cores' busy time (``psutil.cpu_times``) minus this process tree's own
CPU time (the trainer and its vLLM engine, ``psutil.Process.cpu_times`` of it and its children),
over the wall time since the last choice: the average number of cores other processes kept busy
during the phase that just ended. The first choice samples a short window (``START_WINDOW_S``)
instead. Nothing is measured while a phase runs, so the policy costs no time inside phases.

``threads`` setting (``TrainConfig.threads``, ``igsearch demo/sft --threads``): ``auto`` (this policy)
or a fixed count; a count in the environment variable ``IGSEARCH_THREADS`` turns every ``auto`` of the
process into that count. A fixed count is the way to
reproduce a run's numbers bit for bit: a different thread count sums in a different order, so the
same seed can give slightly different floats under a different load.

What is chosen is logged once per change (``ThreadPolicy.log``), with the load it was chosen from.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

#: seconds of load sampling before the first choice, when no phase has run yet
START_WINDOW_S = 0.25
#: SFT steps between two choices
SFT_RECHECK_STEPS = 25
#: environment variable whose count pins every ``auto`` setting of the process
ENV = "IGSEARCH_THREADS"


def parse_threads(value: str | int | None, where: str = "threads") -> int | None:
    """The fixed count of a setting, or None for ``auto`` (also for None / empty). A count in the
    environment's ``IGSEARCH_THREADS`` pins every ``auto`` of the process (benchmarks pin threads this
    way: ``igsearch.measure.apply_threads``); an explicit count wins over it. ValueError naming ``where``
    (or the variable) for anything else."""
    text = "auto" if value is None or value == "" else str(value).strip().lower()
    if text == "auto":
        pinned = os.environ.get(ENV, "").strip().lower()
        return None if pinned in ("", "auto") else parse_threads(pinned, ENV)
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"{where}: expected 'auto' or a thread count >= 1, got {value!r}") from None
    if n < 1:
        raise ValueError(f"{where}: expected 'auto' or a thread count >= 1, got {value!r}")
    return n


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class _LoadMeter:
    """Average number of cores kept busy by other processes since the previous reading."""

    def __init__(self):
        import psutil

        self.psutil = psutil
        self.me = psutil.Process()
        self.last = self._read()

    def _own_cpu_s(self) -> float:
        total = 0.0
        for proc in [self.me, *self._children()]:
            try:
                t = proc.cpu_times()
            except (self.psutil.NoSuchProcess, self.psutil.AccessDenied):
                continue
            total += t.user + t.system
        return total

    def _children(self):
        try:
            return self.me.children(recursive=True)
        except (self.psutil.NoSuchProcess, self.psutil.AccessDenied):
            return []

    def _read(self) -> tuple[float, float, float]:
        t = self.psutil.cpu_times()
        # guest time is counted in user time already (Linux), iowait is idle
        busy = (sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0)
                - getattr(t, "guest_nice", 0.0))
        return time.perf_counter(), busy, self._own_cpu_s()

    def others_busy(self) -> float:
        """Cores busy with other processes since the last call (>= 0)."""
        now = self._read()
        wall = now[0] - self.last[0]
        others = (now[1] - self.last[1]) - (now[2] - self.last[2])
        self.last = now
        return max(0.0, others / wall) if wall > 0 else 0.0


@dataclass
class ThreadChoice:
    threads: int
    others_busy: float | None  # None for a fixed setting
    phase: str


class ThreadPolicy:
    """Sets ``torch.set_num_threads`` at phase boundaries (``choose(phase)``).

    ``setting``: ``"auto"``, a count, or None (``IGSEARCH_THREADS``, else auto). ``log``: called with
    one line when the count changes (and at the first choice). ``history`` keeps every choice.
    """

    def __init__(self, setting: str | int | None = None, log: Callable[[str], None] | None = print,
                 cores: int | None = None):
        self.fixed = parse_threads(setting)
        self.cores = cores or usable_cores()
        self.log = log
        self.meter = None
        self.current: int | None = None
        self.history: list[ThreadChoice] = []

    def choose(self, phase: str) -> int:
        """Choose and set the thread count for the phase about to start; returns it."""
        import torch

        if self.fixed is not None:
            n, others = self.fixed, None
        else:
            if self.meter is None:  # first choice: sample the load for a moment
                self.meter = _LoadMeter()
                time.sleep(START_WINDOW_S)
            others = self.meter.others_busy()
            n = max(1, min(self.cores, round(self.cores - others)))
        if n != torch.get_num_threads():
            torch.set_num_threads(n)
        if n != self.current and self.log is not None:
            why = "fixed" if others is None else f"auto: other processes kept {others:.1f} of {self.cores} cores busy"
            self.log(f"[threads] {phase}: {n} torch thread{'s' if n > 1 else ''} ({why})")
        self.current = n
        self.history.append(ThreadChoice(n, others, phase))
        return n

    def summary(self) -> dict:
        """Counts of each thread number chosen, for a run's report."""
        out: dict[str, int] = {}
        for c in self.history:
            out[str(c.threads)] = out.get(str(c.threads), 0) + 1
        return {"setting": "auto" if self.fixed is None else self.fixed, "chosen": out}
