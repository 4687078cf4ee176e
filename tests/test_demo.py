"""`igsearch demo` end to end at toy size: world, policy, SFT on the warm-up split, evals, GRPO+IG, report."""

from __future__ import annotations

import json

import pytest
import yaml

from igsearch.cli import main

pytestmark = pytest.mark.vllm


def test_demo_writes_report_with_paired_intervals_and_plots(tmp_path):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--steps", "2", "--sft-steps", "5", "--eval-questions", "6",
               "--probe-questions", "2", "--eval-every", "1", "--entities", "150", "--policy-size", "small",
               "questions_per_step=2", "rollout.rollouts_per_question=2"])
    assert rc == 0
    report = (out / "report.md").read_text()
    assert "| world_1hop |" in report and "| overall |" in report and "95% interval" in report
    assert (out / "em_over_steps.png").stat().st_size > 1000
    summary = json.loads((out / "demo.json").read_text())
    assert summary["before"]["overall"]["n"] == 6 and summary["after"]["overall"]["n"] == 6
    assert summary["paired_greedy"]["overall"]["n"] == 6 and summary["paired_probe"]["overall"]["n"] == 2
    assert set(summary["timings_s"]) >= {"warm_start", "rl_with_evals", "total"}
    # where the time went: the phases add up to the total, SFT and the RL steps are counted once each
    phases = {row["phase"]: row["seconds"] for row in summary["time_breakdown"]}
    assert sum(v for k, v in phases.items() if k != "total") == pytest.approx(phases["total"])
    assert 0 < phases["SFT"] < summary["timings_s"]["warm_start"]
    assert 0 < phases["RL steps"] + phases["RL evaluations"] < summary["timings_s"]["rl_with_evals"]
    assert "## Where the time went" in report and "| SFT |" in report and "5 steps x 16 demonstrations" in report
    metrics = [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 1, 2]
    assert sorted(p.name for p in (out / "train" / "evals").iterdir()) == [
        "step_000000.json", "step_000001.json", "step_000002.json"]
    assert (out / "train" / "checkpoints" / "step_000002").is_dir()
    # SFT saw only the warm-up split: no train, dev or test question is among its questions
    questions = lambda split: {json.loads(line)["question"] for line in (out / "world" / f"{split}.jsonl").open()}  # noqa: E731
    assert questions("warmup") and not questions("warmup") & (questions("train") | questions("dev") | questions("test"))
    assert json.loads((out / "sft" / "sft_summary.json").read_text())["examples"] == len(questions("warmup"))
    # the policy is built at the size asked for, and the summary says which
    assert json.loads((out / "sft" / "config.json").read_text())["hidden_size"] == 128
    assert summary["warm_start"]["policy_size"] == "small" and "the `small` policy, 5 SFT steps" in report
    # the default demonstrator is the look-alike one, trained with its preset (configs/demo.yaml: no replay)
    assert summary["warm_start"]["distractor"] == 0.6 and "imitating the `lookalike` demonstrator" in report
    assert yaml.safe_load((out / "train" / "config.yaml").read_text())["sft_replay_coef"] == 0.0
