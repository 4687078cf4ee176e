"""Step-reward methods as plug-ins, end to end through the trainer (HF engine, scripted policy).

- A method written in this file (a step scorer, an estimator that needs it and a config section
  of its own knob) trains one step: the trainer runs exactly the scorers the estimator declared,
  and the knob set in a YAML preset reaches the estimator.
- Every registered method trains one step on the same setup.
- IGPO's turn gains from one tree-scorer call equal scoring each turn prefix on its own.
- IG's steps built from the rollout's token-span record agree with the text parser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from igsearch.algo.advantages import (
    AdvantageOutput,
    empty_spans,
    list_advantage_estimators,
    register_advantage_estimator,
)
from igsearch.algo.step_scores import StepScores, register_step_scorer
from igsearch.config_fields import config_field
from igsearch.train.logging import read_metrics
from test_trainer import make_config, setup  # noqa: F401  (module fixture: world + scripted policy)

CALLS: list[str] = []


@register_step_scorer("test_query_length", per="step")
def query_length(batch) -> StepScores:
    """Length of every query in tokens (no forward pass)."""
    CALLS.append("test_query_length")
    return StepScores([[float(s.query[1] - s.query[0]) for s in t.steps] for t in batch.trajectories],
                      {"mean": 1.0})


@dataclass
class ShortQueriesConfig:
    """The method's own knob: the run config's ``test_short_queries`` section."""

    per_token: float = config_field(0.1, "Step reward per query token (negative: short queries are better).")


@register_advantage_estimator("test_short_queries", needs={"test_query_length"}, config=ShortQueriesConfig)
def short_queries(inp, cfg) -> AdvantageOutput:
    """A toy step reward: every query span gets -length * per_token, nothing at trajectory level."""
    lengths = inp.per_step("test_query_length", "test_short_queries")
    rows, values = [], []
    for i, (row, spans) in enumerate(zip(lengths, inp.query_spans)):
        for v, (s, e) in zip(row, spans):
            rows.append((i, s, e))
            values.append(-v * cfg.options.per_token)
    spans_t, values_t = (torch.tensor(rows), torch.tensor(values)) if rows else empty_spans()
    CALLS.append(f"per_token={cfg.options.per_token}")
    return AdvantageOutput(torch.zeros(len(inp.rewards)), spans_t, values_t, span_scale=1.0, stats={"test/n": len(rows)})


def _train_one_step(setup, method, name, cfg=None):  # noqa: F811
    from igsearch.train.trainer import Trainer

    trainer = Trainer(cfg or make_config(setup, method=method, engine="hf", steps=1, checkpoint_every=10), setup / name)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    phases = []
    trainer.add_hook(lambda phase, batch, tr: phases.append(phase))
    try:
        trainer.run()
    finally:
        trainer.close()
    changed = any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    (row,) = read_metrics(setup / name)
    return row, changed, phases


def test_a_method_written_outside_the_trainer_trains(setup, tmp_path):  # noqa: F811
    import yaml

    from igsearch.train.config import load_config

    CALLS.clear()
    # a preset that names the method and sets its knob in the method's own section
    base = make_config(setup, method="test_short_queries", engine="hf", steps=1, checkpoint_every=10).to_dict()
    base.pop("test_short_queries")  # the run's method's section, written here by hand
    preset = tmp_path / "plugin.yaml"
    preset.write_text(yaml.safe_dump(base) + "test_short_queries:\n  per_token: 0.25\n")
    cfg = load_config(preset)
    row, changed, phases = _train_one_step(setup, "test_short_queries", "run-plugin", cfg)
    assert CALLS == ["test_query_length", "per_token=0.25"]
    assert phases == ["rollout", "reward", "score_steps", "advantages", "update", "sync"]
    assert row["test_query_length/mean"] == 1.0 and row["test/n"] > 0 and "time/score/test_query_length" in row
    assert changed and row["grad_norm"] > 0  # all groups fail, yet the step reward moves the policy


@pytest.mark.parametrize("method", ["grpo", "rloo", "gigpo", "igpo", "ig"])
def test_every_registered_method_trains_one_step(setup, method):  # noqa: F811
    assert method in list_advantage_estimators()
    row, changed, _ = _train_one_step(setup, method, f"run-{method}")
    assert math.isfinite(row["loss"]) and row["groups/all_fail_frac"] == 1.0
    # every rollout fails: only methods with a step signal of their own (IG, IGPO's turn gain) move the weights
    assert changed == (method in ("ig", "igpo")), (method, row["grad_norm"])
    if method == "igpo":
        assert 0 < row["turn_gain/tokens_forwarded"] < row["turn_gain/tokens_each_context_alone"]


def _rollouts(setup, n=4):  # noqa: F811
    from igsearch.train.trainer import Trainer

    trainer = Trainer(make_config(setup, method="grpo", engine="hf"), setup / "run-rollouts")
    try:
        batch = trainer.rollout(1)
    finally:
        trainer.close()
    return trainer, batch.trajectories[:n]


def test_igpo_turn_gains_equal_scoring_each_prefix_alone(setup):  # noqa: F811
    from igsearch.algo.step_scores import ScoringBatch, run_step_scorer
    trainer, trajs = _rollouts(setup)
    trajs[0].golds = ["Dulmar Oskaria"]
    out = run_step_scorer("turn_gain", ScoringBatch(trajs, trainer.model, trainer.tokenizer, trainer.cfg, 1))
    tok = trainer.tokenizer
    assert trainer.cfg.scoring.answer_tokens == "as_written"
    cue = tok("<answer>", add_special_tokens=False)["input_ids"]
    for t, gains in zip(trajs, out.values):
        # the answer as the policy writes it: "<answer> gold" tokenized as one text, after the tag
        written = tok(f"<answer> {t.golds[0]}", add_special_tokens=False)["input_ids"]
        assert written[:len(cue)] == cue
        gold = written[len(cue):]
        probs = []
        for end in [0] + [s.documents[1] for s in t.steps]:
            seq = list(t.prompt_ids) + list(t.response_ids[:end]) + cue + gold
            with torch.no_grad():
                logits = trainer.model(torch.tensor([seq])).logits[0].double()
            lp = torch.log_softmax(logits, -1)[len(seq) - len(gold) - 1:-1].gather(1, torch.tensor(gold)[:, None])
            probs.append(math.exp(float(lp.mean())))
        assert len(gains) == len(t.steps) > 0
        assert gains == pytest.approx([b - a for a, b in zip(probs, probs[1:])], abs=1e-5)
    trajs[0].golds = [" "]
    with pytest.raises(ValueError, match="rollout 0: gold ' ' tokenizes to no tokens"):
        run_step_scorer("turn_gain", ScoringBatch(trajs, trainer.model, trainer.tokenizer, trainer.cfg, 1))


def test_ig_steps_from_the_record_agree_with_the_text_parser(setup):  # noqa: F811
    from igsearch.ig import parse_rollout, rollout_from_trajectory

    trainer, trajs = _rollouts(setup, n=6)
    for t in trajs:
        from_record = rollout_from_trajectory(t, trainer.tokenizer)
        from_text = parse_rollout(t.text, t.prompt_text)
        assert from_record.prefix == from_text.prefix
        assert len(from_record.steps) == len(from_text.steps) == len(t.steps) > 0
        for a, b in zip(from_record.steps, from_text.steps):
            assert (a.search, a.documents, a.refine, a.refine_was_closed) == \
                   (b.search, b.documents, b.refine, b.refine_was_closed)
