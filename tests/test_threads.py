"""The thread policy (igsearch.threads): settings, the choice from the load, and the load meter."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from igsearch import threads as th


@pytest.fixture(autouse=True)
def keep_torch_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv(th.ENV, raising=False)  # a benchmark run in this process may have pinned it
    yield
    torch.set_num_threads(before)


def test_settings_parse_or_say_what_is_wrong(monkeypatch):
    monkeypatch.delenv(th.ENV, raising=False)
    assert th.parse_threads("auto") is None and th.parse_threads(None) is None and th.parse_threads(" 3 ") == 3
    monkeypatch.setenv(th.ENV, "1")  # pins every auto of the process; an explicit count wins
    assert th.parse_threads(None) == 1 and th.parse_threads("auto") == 1 and th.parse_threads("2") == 2
    monkeypatch.setenv(th.ENV, "lots")
    with pytest.raises(ValueError, match="IGSEARCH_THREADS: expected 'auto' or a thread count"):
        th.parse_threads("auto")
    for bad in ("0", "-2", "two"):
        with pytest.raises(ValueError, match=f"threads: expected 'auto' or a thread count >= 1, got '{bad}'"):
            th.parse_threads(bad)


def test_a_fixed_count_is_set_and_said_once():
    lines = []
    policy = th.ThreadPolicy(1, log=lines.append, cores=2)
    assert policy.choose("sft") == 1 and policy.choose("sft") == 1
    assert torch.get_num_threads() == 1
    assert lines == ["[threads] sft: 1 torch thread (fixed)"]
    assert policy.summary() == {"setting": 1, "chosen": {"1": 2}}


def test_auto_uses_the_cores_other_processes_leave_free(monkeypatch):
    monkeypatch.setattr(th, "START_WINDOW_S", 0.0)
    loads = iter([0.1, 1.2, 0.9, 0.3, 3.5])
    monkeypatch.setattr(th._LoadMeter, "others_busy", lambda self: next(loads))
    lines = []
    policy = th.ThreadPolicy("auto", log=lines.append, cores=2)
    chosen = [policy.choose(phase) for phase in ("generation", "update", "generation", "update", "generation")]
    assert chosen == [2, 1, 1, 2, 1]  # never fewer than one
    assert lines[1] == "[threads] update: 1 torch thread (auto: other processes kept 1.2 of 2 cores busy)"
    assert len(lines) == 4  # said when the count changes, not at every phase
    assert torch.get_num_threads() == 1


def test_the_meter_sees_a_busy_neighbour_and_not_this_process_tree():
    import os
    import signal

    meter = th._LoadMeter()
    # the neighbour is started by a shell that exits at once, so it is no descendant of this process
    pid = int(subprocess.run(["sh", "-c", f"'{sys.executable}' -c 'while True: pass' >/dev/null 2>&1 & echo $!"],
                             capture_output=True, text=True, check=True).stdout)
    try:
        time.sleep(0.2)
        meter.others_busy()
        time.sleep(1.0)
        assert meter.others_busy() >= 0.5  # one busy-looping process keeps about one core busy
    finally:
        os.kill(pid, signal.SIGKILL)
    child = subprocess.Popen([sys.executable, "-c", "import time; t = time.time()\nwhile time.time() - t < 1.5: pass"])
    try:  # a busy child of this process is this run's own work (e.g. its vLLM engine), not a neighbour's
        time.sleep(0.2)
        before = meter._own_cpu_s()
        time.sleep(1.0)
        own = meter._own_cpu_s() - before
    finally:
        child.kill()
        child.wait()
    assert own >= 0.4  # counted as this process tree's time, so not as another process's
