"""`igsearch demo` end to end at toy size: world, policy, SFT, eval, GRPO+IG, eval, report."""

from __future__ import annotations

import json

import pytest

from igsearch.cli import main

pytestmark = pytest.mark.vllm


def test_demo_writes_report_table_and_plots(tmp_path):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--steps", "2", "--sft-steps", "5", "--eval-questions", "6",
               "questions_per_step=2", "rollouts_per_question=2"])
    assert rc == 0
    report = (out / "report.md").read_text()
    assert "| world_1hop |" in report and "| overall |" in report and "EM before" in report
    assert (out / "reward_em.png").stat().st_size > 1000
    summary = json.loads((out / "demo.json").read_text())
    assert summary["before"]["overall"]["n"] == 6 and summary["after"]["overall"]["n"] == 6
    assert set(summary["timings_s"]) >= {"sft", "rl", "total"}
    metrics = [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    assert (out / "train" / "checkpoints" / "step_000002").is_dir()
