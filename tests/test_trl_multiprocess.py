"""IG-Search on TRL's ``GRPOTrainer`` across two processes (``torchrun``, gloo on the CPU): a question's
rollouts straddle the processes (3 questions x 2 rollouts = 6 rows, 3 per process), every process gathers
the whole batch, the step IG is scored split over the processes, the estimator runs on whole groups,
and each keeps its own rows. One step on 2 processes must give the gradient of 1 process on the same
global batch (DDP averages the processes' gradients).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from policy_fixtures import scripted_search_setup

SCRIPT = Path(__file__).resolve().parent / "trl_multiprocess_step.py"


def torchrun(nproc: int, root: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRL_EXPERIMENTAL_SILENCE": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(SCRIPT.parent), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           str(SCRIPT), str(root), str(out)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    child = res.stderr.split("failed (exitcode")[0]  # the processes' own traceback, before torchrun's
    assert res.returncode == 0, res.stdout[-2000:] + child[-6000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("trl-mp")
    scripted_search_setup(root)
    out = {n: root / f"out-{n}" for n in (1, 2)}
    for n, path in out.items():
        torchrun(n, root, path)
    return out


def test_two_processes_train_on_the_gradient_of_one(runs):
    one, two = (json.loads((runs[n] / "batch.json").read_text()) for n in (1, 2))
    assert (one["processes"], two["processes"]) == (1, 2)
    # the same global batch: every rollout sampled from its own seed, groups by the whole batch's rows
    assert two["responses"] == one["responses"] and two["groups"] == one["groups"] == [0, 0, 1, 1, 2, 2]
    assert two["rewards"] == one["rewards"]
    flat = lambda rows: [v for row in rows for v in row if v is not None]  # noqa: E731
    assert len(flat(one["step_ig"])) > 0
    assert flat(two["step_ig"]) == pytest.approx(flat(one["step_ig"]), abs=1e-5)  # scored split over processes
    rows = [json.loads((runs[2] / f"rows-{r}.json").read_text())["rows"] for r in (0, 1)]
    assert rows == [[0, 3], [3, 6]]  # each process kept its own rows; group 1 straddles them
    g1, g2 = (torch.load(runs[n] / "grad.pt") for n in (1, 2))
    assert g1.keys() == g2.keys() and g1
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in g1.values()))
    assert norm > 0  # all groups fail on exact match: the gradient is the step IG's
    worst = max(float((g1[k].double() - g2[k].double()).abs().max()) for k in g1)
    assert worst <= 1e-5, f"max |grad(1 process) - grad(2 processes)| = {worst:.2e} (gradient norm {float(norm):.3e})"
