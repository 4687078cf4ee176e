"""`igsearch train` argument handling: config files, overrides, resuming without --config."""

from __future__ import annotations

import argparse

import pytest

from igsearch.train.cli import parse_train_args
from igsearch.train.config import ConfigError, load_config


def args(**kw):
    base = dict(config=None, method=None, steps=None, out=None, resume=None, overrides=[])
    base.update(kw)
    return argparse.Namespace(**base)


def test_resume_without_config_uses_the_runs_saved_config(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    load_config(None, ["model_path=/models/x", "lr=0.0025", "advantage.method=grpo"]).save(run / "config.yaml")
    cfg, out, resume = parse_train_args(args(resume=str(run / "checkpoints" / "step_000004"), steps=9))
    assert cfg.lr == 0.0025 and cfg.advantage.method == "grpo" and cfg.steps == 9
    assert out == run and resume.name == "step_000004"


def test_resume_of_a_folder_without_config_says_so(tmp_path):
    with pytest.raises(ConfigError, match="no config.yaml"):
        parse_train_args(args(resume=str(tmp_path)))


def test_method_and_steps_flags_override_the_preset(tmp_path):
    cfg, out, _ = parse_train_args(args(config="configs/tiny-cpu.yaml", method="grpo", steps=3))
    assert cfg.advantage.method == "grpo" and cfg.steps == 3 and out.name == "tiny-cpu-grpo"


def test_plugin_module_registers_its_method_before_the_config_is_read(tmp_path, monkeypatch, capsys):
    from igsearch.algo.advantages import estimator_needs

    pkg = tmp_path / "my_plugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "halved.py").write_text(
        "from igsearch.algo.advantages import register_advantage_estimator\n"
        "from igsearch.methods.grpo import grpo_advantages\n"
        "@register_advantage_estimator('test_halved_grpo')\n"
        "def halved(inp, cfg):\n"
        "    out = grpo_advantages(inp, cfg)\n"
        "    out.seq_adv = out.seq_adv / 2\n"
        "    return out\n")
    monkeypatch.chdir(tmp_path)
    cfg, _, _ = parse_train_args(args(plugin=["my_plugins.halved"], overrides=["model_path=/m", "advantage.method=test_halved_grpo"]))
    assert cfg.advantage.method == "test_halved_grpo" and estimator_needs("test_halved_grpo") == frozenset()
    with pytest.raises(ConfigError, match="--plugin my_plugins.nope: cannot import it"):
        parse_train_args(args(plugin=["my_plugins.nope"], overrides=["model_path=/m"]))
    # a run's config.yaml from an older version, with a field that is gone, still loads
    (tmp_path / "old.yaml").write_text("model_path: /m\ntokenizer_path: null\n")
    assert load_config(tmp_path / "old.yaml").model_path == "/m"
    assert "tokenizer_path (no longer used, ignored)" in capsys.readouterr().err


def test_the_cli_sets_a_short_openmp_spin_unless_the_user_chose_one():
    """GOMP_SPINCOUNT (bench/thread_contention.py) is set in a fresh `igsearch` process before torch
    loads, and a user's own wait policy is left alone."""
    import os
    import subprocess
    import sys

    probe = ("import os, sys; from igsearch.cli import set_openmp_wait_policy; "
             "print(set_openmp_wait_policy(), os.environ.get('GOMP_SPINCOUNT'))")
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "1000"]
    out = subprocess.run([sys.executable, "-c", probe], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "None"]
    late = "import torch; " + probe  # too late once OpenMP is loaded: not pretended
    out = subprocess.run([sys.executable, "-c", late], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "None"]
