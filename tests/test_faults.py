"""A run survives its dependencies (issue 35; docs/DESIGN.md §9 "Faults").

Each test interrupts a short run of the scripted policy (tests/policy_fixtures.py) and checks that it
ends as the uninterrupted run does, at one torch thread: the same steps in metrics.jsonl (none
duplicated or missing), the same per-step rewards, losses and gradient norms, the same final weights.
Retrieval is served over HTTP on 127.0.0.1 by a server in a thread of the test, which the tests stop
and start again. The engine is transformers' except in the vLLM test, where the real engine process
is SIGKILLed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from igsearch.train.checkpoint import latest_checkpoint, list_checkpoints
from igsearch.train.config import load_config
from igsearch.train.logging import read_metrics
from config_helpers import config_overrides
from policy_fixtures import scripted_search_setup

#: per-step metrics that are functions of (weights, seed, step): equal in an interrupted run
SAME = ("reward/mean", "em/mean", "loss", "grad_norm", "rollout/response_tokens", "rollout/searches")
STEPS = 3


class RestartableServer:
    """The world's BM25 retrieval served on one 127.0.0.1 port, which ``stop`` and ``start`` take down and
    bring back (as a redeployed server would)."""

    def __init__(self, corpus):
        from igsearch.retrieval.bm25 import BM25Retriever

        self.retriever = BM25Retriever.from_corpus(corpus)
        self.port = 0
        self.server = None
        self.start()

    def start(self):
        from igsearch.retrieval.server import make_server

        self.server = make_server(self.retriever, host="127.0.0.1", port=self.port)
        self.port = int(self.server.url.rsplit(":", 1)[1])
        self.thread = self.server.start_in_thread()

    def stop(self):
        self.server.shutdown()
        self.thread.join(timeout=10)
        self.server.server_close()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/retrieve"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    scripted_search_setup(root)
    server = RestartableServer(root / "world" / "corpus.jsonl")
    yield root, server
    server.stop()


def make_config(setup, **overrides):
    root, server = setup
    base = {
        "model_path": str(root / "policy"), "world_dir": str(root / "world"), "steps": STEPS,
        "questions_per_step": 2, "rollouts_per_question": 3, "max_turns": 2, "max_new_tokens_per_turn": 16,
        "max_response_tokens": 600, "max_doc_tokens": 150, "max_prompt_tokens": 1024, "eval_questions": 0,
        "checkpoint_every": 1, "keep_checkpoints": 10, "lr": 1e-2, "tensorboard": False, "seed": 5, "threads": 1,
        "method": "ig", "engine": "hf", "retriever": "http", "retriever_url": server.url,
    }
    base.update(overrides)
    return load_config(None, config_overrides(**base))


def final_weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    ckpt = latest_checkpoint(run_dir)
    assert ckpt is not None and ckpt.name == f"step_{STEPS:06d}", ckpt
    return load_file(str(ckpt / "model" / "model.safetensors"))


def run_to_end(trainer):
    try:
        return trainer.run()
    finally:
        trainer.close()


@pytest.fixture(scope="module")
def reference(setup):
    """The uninterrupted run: its metrics and final weights."""
    from igsearch.train.trainer import Trainer

    out = setup[0] / "reference"
    run_to_end(Trainer(make_config(setup), out))
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert any(r["grad_norm"] > 0 for r in rows)
    return {"out": out, "rows": rows, "weights": final_weights(out)}


def assert_same_run(out: Path, reference) -> list[dict]:
    """``out`` holds every step once, with the reference's per-step results and final weights."""
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1)), "a step is duplicated or missing"
    for got, ref in zip(rows, reference["rows"]):
        assert {k: got[k] for k in SAME} == {k: ref[k] for k in SAME}, got["step"]
    weights = final_weights(out)
    assert weights.keys() == reference["weights"].keys()
    for k, v in weights.items():
        assert torch.equal(v, reference["weights"][k]), k
    return rows


def test_a_retrieval_outage_is_ridden_out_and_a_longer_one_stops_after_a_checkpoint(setup, reference, tmp_path,
                                                                                     capfd):
    from igsearch.train.trainer import Trainer, TrainingError

    _, server = setup

    def outage(back_after: float | None):
        def hook(phase, batch, trainer):
            if phase == "rollout" and batch.step == 1:  # step 2's searches find no server
                server.stop()
                if back_after is not None:
                    threading.Timer(back_after, server.start).start()
        return hook

    # down for 1.5 s: the run waits (backoff 0.05 s doubling to 0.2 s: ~10 attempts) and goes on unchanged
    out = tmp_path / "survived"
    trainer = Trainer(make_config(setup), out)
    trainer.retriever.backoff, trainer.retriever.max_backoff = 0.05, 0.2
    trainer.add_hook(outage(1.5))
    run_to_end(trainer)
    rows = assert_same_run(out, reference)
    assert rows[1]["retrieval/outage_s"] > 1.0 and rows[0]["retrieval/outage_s"] == rows[2]["retrieval/outage_s"] == 0
    err = capfd.readouterr().err
    assert err.count("unavailable") == 1 and err.count("is back after") == 1, err[-2000:]

    # down for longer than the patience: step 1 (not due for a checkpoint) is saved, one line says how to resume
    out = tmp_path / "stopped"
    trainer = Trainer(make_config(setup, checkpoint_every=10, retriever_patience_s=0.5), out)
    trainer.retriever.backoff, trainer.retriever.max_backoff = 0.05, 0.2
    trainer.add_hook(outage(None))
    with pytest.raises(TrainingError) as stopped:
        run_to_end(trainer)
    message = str(stopped.value)
    assert "\n" not in message and message.startswith("step 2: retrieval server") and "over 0." in message
    assert f"checkpoint step_000001 saved" in message and message.endswith(f"--resume {out}")
    assert [p.name for p in list_checkpoints(out)] == ["step_000001"]
    server.start()
    run_to_end(Trainer(make_config(setup, checkpoint_every=10), out, resume=out))
    assert_same_run(out, reference)


class FolderReadingEngine:
    """The transformers engine, reading the folder it was started from at every weight sync, as the vLLM
    engine did (issue 35: the resumed run died when pruning deleted that folder)."""

    def __init__(self, folder, model, tokenizer):
        from igsearch.rollout.engine import HFEngine

        self.folder, self.inner = Path(folder), HFEngine(model, tokenizer)

    def generate(self, requests, sampling):
        return self.inner.generate(requests, sampling)

    def sync_weights(self, model):
        os.listdir(self.folder)
        self.inner.sync_weights(model)


def test_a_resumed_run_outlives_the_pruning_of_its_start_checkpoint(setup, reference, tmp_path, monkeypatch):
    """Killed right after step 1's checkpoint and resumed with keep_checkpoints=1: step 2's checkpoint prunes
    step 1, whose model the vLLM engine was started from."""
    import igsearch.train.trainer as tr

    out = tmp_path / "run"
    shutil.copytree(reference["out"], out)
    for later in list_checkpoints(out)[1:]:
        shutil.rmtree(later)
    (out / "checkpoints" / "latest").write_text("step_000001\n")
    started = []
    monkeypatch.setattr(tr, "engine_from_config", lambda cfg, folder, model, tok, precision=None:
                        started.append(Path(folder)) or FolderReadingEngine(folder, model, tok))
    trainer = tr.Trainer(make_config(setup, engine="vllm", keep_checkpoints=1), out, resume=out)
    assert trainer.start_step == 1
    run_to_end(trainer)
    assert not (out / "checkpoints" / "step_000001").exists()  # pruned while the run went on
    assert [p.name for p in list_checkpoints(out)] == [f"step_{STEPS:06d}"]
    assert started == [out / ".engine" / "model"]  # the run's own copy, not the checkpoint
    assert_same_run(out, reference)


STALL_IN_CHECKPOINT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from igsearch.train import checkpoint as ck
    marker, stall_step = Path(sys.argv[1]), int(sys.argv[2])
    real = ck.fsync_tree
    def stall(root):  # inside the write of step stall_step's checkpoint: files written, not yet renamed
        real(root)
        if Path(root).name.startswith(f".tmp-step_{stall_step:06d}"):
            marker.write_text("x")
            time.sleep(300)
    ck.fsync_tree = stall
    from igsearch.cli import main
    sys.exit(main(sys.argv[3:]))
""")


def kill_inside_checkpoint(tmp_path, step: int, args: list[str]) -> None:
    """Run ``igsearch <args>`` and SIGKILL it while it writes the checkpoint of ``step``."""
    marker = tmp_path / f"writing-{step}"
    proc = subprocess.Popen([sys.executable, "-c", STALL_IN_CHECKPOINT, str(marker), str(step), *args],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 300
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.time() < deadline, "the run never reached the checkpoint write"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()


def test_sigkill_inside_a_checkpoint_write_resumes_to_the_same_run(setup, reference, tmp_path):
    """Killed inside the first checkpoint's write (step 1's metrics line is written, no checkpoint is
    complete), resumed and killed inside step 2's, resumed again: the run is the uninterrupted one."""
    from igsearch.train.trainer import train

    cfg = make_config(setup)
    cfg_path = tmp_path / "cfg.yaml"
    cfg.save(cfg_path)
    out = tmp_path / "run"
    kill_inside_checkpoint(tmp_path, 1, ["train", "--config", str(cfg_path), "--out", str(out)])
    assert [r["step"] for r in read_metrics(out)] == [1] and not list_checkpoints(out)
    kill_inside_checkpoint(tmp_path, 2, ["train", "--resume", str(out)])
    assert [r["step"] for r in read_metrics(out)] == [1, 2] and [p.name for p in list_checkpoints(out)] == ["step_000001"]
    train(cfg, out, resume=out)
    assert_same_run(out, reference)


def test_a_dead_engine_that_cannot_be_restarted_stops_the_run_after_a_checkpoint(setup, reference, tmp_path,
                                                                                  monkeypatch):
    """The engine dies at step 2 and both starts of a new one fail: step 1 is saved, one line; resumed, the
    run is the uninterrupted one."""
    from vllm.v1.engine.exceptions import EngineDeadError

    import igsearch.train.trainer as tr

    out = tmp_path / "run"
    trainer = tr.Trainer(make_config(setup, checkpoint_every=10), out)
    real_generate = trainer.engine.generate

    def dies_at_step_2(requests, sampling):
        if trainer.faults.step == 2:
            raise EngineDeadError()
        return real_generate(requests, sampling)

    trainer.engine.generate = dies_at_step_2
    starts = []
    monkeypatch.setattr(tr, "engine_from_config", lambda *a: starts.append(a) or (_ for _ in ()).throw(
        RuntimeError("no memory for the KV cache")))
    with pytest.raises(tr.TrainingError) as stopped:
        run_to_end(trainer)
    message = str(stopped.value)
    assert len(starts) == 2 and "\n" not in message
    assert message.startswith("step 2: the rollout engine died and 2 starts of a new one failed (last: RuntimeError")
    assert "checkpoint step_000001 saved" in message and message.endswith(f"--resume {out}")
    monkeypatch.undo()
    run_to_end(tr.Trainer(make_config(setup, checkpoint_every=10), out, resume=out))
    assert_same_run(out, reference)


@pytest.mark.vllm
def test_a_vllm_engine_killed_during_generation_is_restarted_and_redoes_it(setup, tmp_path):
    """After step 1 the vLLM engine process is stopped, so that step 2's first generation waits on it, and
    SIGKILLed a second later, during that call: a new engine starts from the current weights, and its
    step-2 rollouts are those the live engine gave for step 2 (same seeds)."""
    import psutil

    from igsearch.train.trainer import Trainer

    out = tmp_path / "run"
    trainer = Trainer(make_config(setup, engine="vllm", steps=2), out)
    seen = {}

    def kill_during_step_2(phase, batch, tr):
        if phase == "sync" and batch.step == 1:
            seen["live"] = tr.rollout(2)  # what the uninterrupted run generates at step 2
            cores = [p for p in psutil.Process().children(recursive=True) if "EngineCore" in p.name()]
            assert cores, "no vLLM engine process"
            for p in cores:
                p.suspend()
            threading.Timer(1.0, lambda: [p.kill() for p in cores]).start()
        if phase == "rollout" and batch.step == 2:
            seen["redone"] = batch

    trainer.add_hook(kill_during_step_2)
    runner = threading.Thread(target=lambda: seen.update(summary=run_to_end(trainer)), daemon=True)
    runner.start()
    runner.join(timeout=600)
    assert not runner.is_alive(), "the trainer still waits on the dead engine"
    assert "summary" in seen, "the run did not finish"
    live, redone = seen["live"].trajectories, seen["redone"].trajectories
    assert [t.token_ids for t in redone] == [t.token_ids for t in live]
    assert [t.rollout_logprobs for t in redone] == [t.rollout_logprobs for t in live]
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert [r["engine/restarts"] for r in rows] == [0, 1] and rows[1]["time/engine_restart"] > 0
