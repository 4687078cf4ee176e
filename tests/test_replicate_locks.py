"""studies/replicate.py's run locks: two processes on one study never train the same run; a run another live
process holds is left for later and its record reused once written; a dead process's lock is taken over."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

from igsearch.io import atomic_write_text
from test_bench_scripts import load
from test_worlds_study import fake_run


def _record(replicate, args, root, method, seed, right):
    overrides = replicate.run_overrides(args, root / "world", root / "sft", method, seed)
    rec = fake_run({"world_1hop": right, "world_2hop": 10})
    rec["overrides"] = overrides
    rec["config"] = replicate.run_identity(replicate.run_config(args, overrides), method)
    return rec


def test_a_run_held_by_another_process_is_waited_for_and_reused(tmp_path):
    replicate = load("replicate")
    root = tmp_path / "world0"
    args = replicate.parse_args(["--methods", "grpo", "--seeds", "0,1", "--steps", "20", "--work-dir", str(root)])
    for seed, right in ((0, 30), (1, 40)):
        (root / f"grpo-seed{seed}").mkdir(parents=True)
    (root / "grpo-seed0" / "replicate_record.json").write_text(json.dumps(_record(replicate, args, root, "grpo", 0, 30)))
    (root / "grpo-seed1.lock").write_text(str(os.getppid()))  # a live process that is not this one

    def other_process_finishes():
        time.sleep(0.3)
        atomic_write_text(root / "grpo-seed1" / "replicate_record.json",  # as record_runs writes it
                          json.dumps(_record(replicate, args, root, "grpo", 1, 40)))
        (root / "grpo-seed1.lock").unlink()

    seen = []
    threading.Thread(target=other_process_finishes).start()
    runs, _, _ = replicate.record_runs(args, root, root / "world", root / "sft", wait_s=0.05,
                                       on_record=lambda m, s, r: seen.append((m, s)))
    assert seen == [("grpo", 0), ("grpo", 1)] and list(runs["grpo"]) == [0, 1]
    assert runs["grpo"][1]["evals"][20]["metrics"]["world_1hop"]["em"] == 0.4  # the other process's record


def test_a_dead_process_lock_is_taken_over_and_a_live_one_is_not(tmp_path):
    replicate = load("replicate")
    run_dir = tmp_path / "ig-seed2"
    gone = subprocess.Popen(["true"])
    gone.wait()
    (tmp_path / "ig-seed2.lock").write_text(str(gone.pid))
    assert replicate.claim_run(run_dir) is None
    assert (tmp_path / "ig-seed2.lock").read_text() == str(os.getpid())
    replicate.release_run(run_dir)
    assert not (tmp_path / "ig-seed2.lock").exists()
    (tmp_path / "ig-seed2.lock").write_text(str(os.getppid()))
    assert replicate.claim_run(run_dir) == os.getppid()
