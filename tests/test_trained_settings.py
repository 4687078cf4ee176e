"""A model folder evaluates, by default, at the rollout settings it was trained under, and an explicit
value that differs is announced (a policy trained with 2 passages per search collapses at 3)."""

from __future__ import annotations

import json

import pytest

from igsearch.cli import main
from igsearch.rollout.trained import TrainedSettingsError, read_rollout_settings, resolve_settings
from test_trainer import make_config, setup  # noqa: F401  (module fixture: world + scripted policy)

NON_DEFAULT = {"topk": 2, "max_turns": 2, "max_new_tokens_per_turn": 24, "max_response_tokens": 400,
               "max_doc_tokens": 90}


@pytest.fixture(scope="module")
def trained(setup):  # noqa: F811
    from igsearch.train.trainer import Trainer

    cfg = make_config(setup, method="grpo", engine="hf", steps=2, checkpoint_every=2, **NON_DEFAULT)
    trainer = Trainer(cfg, setup / "run-settings", overwrite=True)
    try:
        trainer.run()
    finally:
        trainer.close()
    return setup / "run-settings" / "checkpoints" / "step_000002" / "model"


def test_checkpoint_model_carries_its_settings(trained):
    settings = read_rollout_settings(trained)
    assert settings == {**NON_DEFAULT, "template": "refine"}
    assert json.loads((trained / "rollout_settings.json").read_text())["source"] == "rl step 2"


def test_eval_uses_the_trained_settings_and_announces_an_override(trained, setup, tmp_path, capsys):  # noqa: F811
    data = str(setup / "world" / "dev.jsonl")
    assert main(["eval", "--model", str(trained), "--data", data, "--engine", "hf", "--limit", "2",
                 "--out", str(tmp_path / "a")]) == 0
    used = json.loads((tmp_path / "a" / "eval.json").read_text())["rollout"]
    assert used == {**NON_DEFAULT, "template": "refine"}
    assert "overrides" not in capsys.readouterr().out
    assert main(["eval", "--model", str(trained), "--data", data, "--engine", "hf", "--limit", "2", "--topk", "3",
                 "--out", str(tmp_path / "b")]) == 0
    assert "topk=3 overrides the value the model was trained with (2)" in capsys.readouterr().out
    assert json.loads((tmp_path / "b" / "eval.json").read_text())["rollout"]["topk"] == 3


def test_train_from_the_model_takes_its_settings_over_the_preset(trained, setup, tmp_path, capsys):  # noqa: F811
    import argparse

    from igsearch.train.cli import parse_train_args

    preset = tmp_path / "preset.yaml"
    preset.write_text("topk: 3\nmax_turns: 4\n")
    args = argparse.Namespace(config=str(preset), method=None, steps=None, out=str(tmp_path / "r"), resume=None,
                              plugin=[], overrides=[f"model_path={trained}", f"world_dir={setup / 'world'}", "rollout.max_turns=3"])
    cfg, _, _ = parse_train_args(args)
    assert cfg.rollout.topk == 2 and cfg.rollout.max_doc_tokens == 90  # from the model, not the preset
    assert cfg.rollout.max_turns == 3  # an explicit override wins, announced
    out = capsys.readouterr().out
    assert "topk=2, as" in out and "max_turns=3 overrides the value" in out


def test_bad_settings_file_is_one_clear_line(tmp_path):
    (tmp_path / "rollout_settings.json").write_text('{"topk": "two"}')
    with pytest.raises(TrainedSettingsError, match=r"rollout_settings.json: field 'topk'"):
        read_rollout_settings(tmp_path)
    assert read_rollout_settings(tmp_path / "nowhere") == {}
    said = []
    assert resolve_settings({"topk": 2}, {"topk": None}, {"topk": 3}, said.append) == {"topk": 2}
    assert said == []
