"""Checkpoints: full round trip (weights, optimizer, RNG), atomic writes, crash safety."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from igsearch.train import checkpoint as ck
from igsearch.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from igsearch.io import atomic_write_json, atomic_write_text


def _model(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.Qwen2Config(
        vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, intermediate_size=48, tie_word_embeddings=False,
    )
    return transformers.Qwen2ForCausalLM(cfg)


def _train_step(model, opt):
    ids = torch.randint(0, 64, (2, 8))
    loss = model(ids, labels=ids).loss
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def test_round_trip_restores_weights_optimizer_rng_and_next_loss(tmp_path):
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    _train_step(model, opt)
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    path = save_checkpoint(tmp_path, 1, model, opt, config={"lr": 1e-3}, extra={"cursor": 17})
    assert path.name == "step_000001" and latest_checkpoint(tmp_path) == path
    expect = (random.random(), float(np.random.rand()), torch.rand(1).item())
    next_loss = _train_step(model, opt)

    model2 = _model(seed=99)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-3)
    info = load_checkpoint(tmp_path, model2, opt2)
    assert info["step"] == 1 and info["extra"] == {"cursor": 17} and info["config"] == {"lr": 1e-3}
    assert (random.random(), float(np.random.rand()), torch.rand(1).item()) == expect
    assert _train_step(model2, opt2) == pytest.approx(next_loss, abs=1e-6)


def test_keeps_last_k_and_ignores_temp_dirs(tmp_path):
    model = _model()
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, model, None, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000003", "step_000004"]
    # a half-written folder and a stale pointer are ignored
    (tmp_path / "checkpoints" / ".tmp-step_000005-1").mkdir()
    (tmp_path / "checkpoints" / "step_000009").mkdir()  # incomplete: no state, no model
    assert latest_checkpoint(tmp_path).name == "step_000004"
    atomic_write_text(tmp_path / "checkpoints" / "latest", "step_000009\n")
    assert latest_checkpoint(tmp_path).name == "step_000004"
    assert latest_checkpoint(tmp_path / "nothing") is None
    with pytest.raises(ck.CheckpointError, match="no complete checkpoint"):
        load_checkpoint(tmp_path / "nothing", model)


def test_exception_mid_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    save_checkpoint(tmp_path, 1, model, opt)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _train_step(model, opt)

    real_save = torch.save

    def failing_save(obj, f, *a, **kw):
        if str(f).endswith(ck.STATE_FILE):
            raise OSError("disk full")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(ck.torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, 2, model, opt)
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path).name == "step_000001"
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    fresh = _model(seed=3)
    assert load_checkpoint(tmp_path, fresh, torch.optim.AdamW(fresh.parameters()))["step"] == 1
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_sigkill_while_saving_leaves_loadable_checkpoint(tmp_path):
    """A process killed (SIGKILL) in the middle of writing step 2 leaves step 1 valid."""
    marker = tmp_path / "writing"
    script = textwrap.dedent(f"""
        import time, torch, transformers
        from pathlib import Path
        from igsearch.train import checkpoint as ck
        torch.manual_seed(0)
        cfg = transformers.Qwen2Config(vocab_size=64, hidden_size=32, num_hidden_layers=1,
            num_attention_heads=2, num_key_value_heads=1, intermediate_size=48)
        model = transformers.Qwen2ForCausalLM(cfg)
        opt = torch.optim.AdamW(model.parameters())
        ck.save_checkpoint({str(tmp_path)!r}, 1, model, opt)
        real = ck.fsync_tree
        def stall(root):
            real(root)
            Path({str(marker)!r}).write_text("x")
            time.sleep(60)
        ck.fsync_tree = stall
        ck.save_checkpoint({str(tmp_path)!r}, 2, model, opt)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 90
        while not marker.exists():
            assert proc.poll() is None, "the child exited before reaching the stall"
            assert time.time() < deadline, "the child never reached the stall"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt is not None and ckpt.name == "step_000001"
    assert any(p.name.startswith(".tmp-step_000002") for p in (tmp_path / "checkpoints").iterdir())
    model = _model(seed=1)
    assert load_checkpoint(tmp_path, model, torch.optim.AdamW(model.parameters()))["step"] == 1
    # the next save clears the debris
    save_checkpoint(tmp_path, 2, model, None)
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".tmp")]


def test_tied_embeddings_restored_through_the_tie(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   num_key_value_heads=1, intermediate_size=48, tie_word_embeddings=True)
    model = transformers.Qwen2ForCausalLM(cfg)
    save_checkpoint(tmp_path, 3, model, None)
    torch.manual_seed(1)
    other = transformers.Qwen2ForCausalLM(cfg)
    load_checkpoint(tmp_path / "checkpoints" / "step_000003", other)
    assert torch.equal(other.lm_head.weight, model.lm_head.weight)
    assert other.lm_head.weight.data_ptr() == other.model.embed_tokens.weight.data_ptr()


def test_atomic_write_helpers(tmp_path):
    p = atomic_write_json(tmp_path / "a" / "r.json", {"x": 1, "p": Path("q"), "t": torch.tensor(2.5)})
    assert p.read_text() == '{\n  "x": 1,\n  "p": "q",\n  "t": 2.5\n}\n'
    atomic_write_text(p, "new")
    assert p.read_text() == "new" and len(list(p.parent.iterdir())) == 1


class _RunsCode:
    """A pickle payload: unpickling it calls os.system (what a crafted checkpoint would do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_pickle_in_a_checkpoint_runs_nothing_and_is_refused(tmp_path):
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    path = save_checkpoint(tmp_path, 1, model, opt)
    marker = tmp_path / "pwned"
    for name in (ck.STATE_FILE, ck.OPTIMIZER_FILE):
        original = (path / name).read_bytes()
        torch.save({"step": 1, "rng": _RunsCode(marker)}, path / name)
        with pytest.raises(ck.CheckpointError, match="refused: the file needs pickle"):
            load_checkpoint(path, _model(), torch.optim.AdamW(_model().parameters(), lr=1e-3))
        assert not marker.exists(), "loading the checkpoint ran the payload"
        (path / name).write_bytes(original)
    load_checkpoint(path, _model(), torch.optim.AdamW(_model().parameters(), lr=1e-3))  # restored: loads


def _corrupt(kind, f: Path):
    data = bytearray(f.read_bytes())
    if kind == "truncate":
        f.write_bytes(bytes(data[: len(data) // 2]))
    else:  # flip one byte in the middle: same size, different content
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))


@pytest.mark.parametrize("kind,name", [("truncate", ck.STATE_FILE), ("truncate", ck.OPTIMIZER_FILE),
                                       ("truncate", "model/model.safetensors"), ("flip", "model/model.safetensors")])
def test_resume_falls_back_past_a_corrupt_checkpoint_and_says_why(tmp_path, kind, name):
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in (1, 2):
        _train_step(model, opt)
        save_checkpoint(tmp_path, step, model, opt)
    _corrupt(kind, tmp_path / "checkpoints" / "step_000002" / name)
    said = []
    found = ck.resolve_checkpoint(tmp_path, verify=True, log=said.append)
    assert found.name == "step_000001"
    assert len(said) == 1 and "step_000002" in said[0] and name.split("/")[-1] in said[0]
    assert ("truncated" in said[0]) == (kind == "truncate") and ("corrupted" in said[0]) == (kind == "flip")
    with pytest.raises(ck.CheckpointError, match="does not verify"):
        ck.resolve_checkpoint(tmp_path / "checkpoints" / "step_000002", verify=True)
    _corrupt(kind, tmp_path / "checkpoints" / "step_000001" / name)
    with pytest.raises(ck.CheckpointError, match="no checkpoint that verifies"):
        ck.resolve_checkpoint(tmp_path, verify=True, log=said.append)


def test_training_into_a_folder_that_holds_a_run_is_refused(tmp_path):
    from igsearch.train.config import load_config
    from igsearch.train.assembly import clear_run, run_progress
    from igsearch.train.trainer import Trainer, TrainingError

    out = tmp_path / "run"
    save_checkpoint(out, 2, _model(), None)
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    assert "step_000002" in run_progress(out) and "metrics" in run_progress(out)
    cfg = load_config(None, ["model_path=/nonexistent/model"], validate=False)
    with pytest.raises(TrainingError, match="already holds a run .*--resume .*--overwrite"):
        Trainer(cfg, out)
    (out / "evals").mkdir()
    clear_run(out)
    assert run_progress(out) == "" and not (out / "evals").exists()
    # a failed start writes nothing: the missing model is reported before any folder is created
    fresh = tmp_path / "fresh"
    with pytest.raises(Exception, match="nonexistent"):
        Trainer(cfg, fresh)
    assert not fresh.exists()


def test_atomic_write_dir_swaps_in_a_complete_folder_or_keeps_the_old_one(tmp_path):
    from igsearch.io import atomic_write_dir

    dest = tmp_path / "folder"
    atomic_write_dir(dest, lambda tmp: (tmp / "a.txt").write_text("one"))
    assert (dest / "a.txt").read_text() == "one"

    def fails(tmp):
        (tmp / "b.txt").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write_dir(dest, fails)
    assert sorted(p.name for p in dest.iterdir()) == ["a.txt"]  # the old folder, untouched
    atomic_write_dir(dest, lambda tmp: (tmp / "c.txt").write_text("two"))
    assert sorted(p.name for p in dest.iterdir()) == ["c.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["folder"]  # no temporary or old folder left behind


def test_atomic_write_dir_survives_a_folder_made_meanwhile_by_another_process(tmp_path, monkeypatch):
    """Two processes building the same cache (a world's BM25 index, studies/replicate.py's two methods at
    once): the other one's folder appears just before this one's swap; this one swaps its own in."""
    from igsearch.io import atomic_write_dir

    dest = tmp_path / "index"
    real_replace = os.replace
    raced = []

    def replace(src, dst):
        if Path(dst) == dest and not raced:  # the other process gets there first
            raced.append(True)
            dest.mkdir()
            (dest / "theirs.txt").write_text("theirs")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    atomic_write_dir(dest, lambda tmp: (tmp / "mine.txt").write_text("mine"))
    assert raced and sorted(p.name for p in dest.iterdir()) == ["mine.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["index"]
