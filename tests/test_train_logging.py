"""RunLogger (JSONL + TensorBoard) and the progress-bar summary line."""

import json
import math
import re

import torch

from igsearch.train.logging import RunLogger, TrainProgress, format_step_summary, read_metrics


def test_jsonl_lines_flushed_and_tensorboard_written(tmp_path):
    logger = RunLogger(tmp_path)
    logger.log(1, {"reward/mean": 0.25, "loss": torch.tensor(0.5), "note": "x", "bad": float("nan")})
    # flushed before close: another reader sees the line
    line = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert line["step"] == 1 and line["reward/mean"] == 0.25 and line["loss"] == 0.5
    assert line["note"] == "x" and line["bad"] == "nan"
    logger.log(2, {"reward/mean": 0.5})
    logger.log(3, {"reward/mean": 0.75})
    logger.truncate_after(2)  # resuming from the step-2 checkpoint
    logger.log(3, {"reward/mean": 0.7})
    logger.close()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    assert read_metrics(tmp_path)[-1]["reward/mean"] == 0.7
    assert any((tmp_path / "tensorboard").iterdir())


def test_summary_line_and_progress(tmp_path):
    metrics = {"reward/mean": 0.5, "em/mean": 0.5, "groups/all_fail_frac": 0.25, "ig/mean": 0.12,
               "time/generation": 2.0, "time/retrieval": 0.5, "time/scoring": 0.3, "time/logprobs": 0.2,
               "time/update": 1.0}
    line = format_step_summary(metrics)
    assert "R 0.500" in line and "all-fail 25%" in line and "IG +0.120" in line
    assert "4.0s [gen 2.0 ret 0.5 sco 0.3 log 0.2 upd 1.0]" in line
    assert format_step_summary({}) == ""
    with TrainProgress(3, disable=True) as bar:
        bar.update(1, metrics)
        bar.update(2, {"loss": math.pi})


def test_progress_prints_plain_lines_when_not_a_terminal(capsys):
    with TrainProgress(40, description="sft") as bar:  # pytest captures stdout: not a terminal
        for step in range(1, 41):
            bar.update(step, {"loss": 1.0 / step})
    lines = [ln for ln in capsys.readouterr().out.splitlines() if re.match(r"sft \d+/40 ", ln)]
    assert len(lines) == 20 and lines[0].startswith("sft 2/40") and lines[-1].startswith("sft 40/40")
    assert "loss 0.0250" in lines[-1]


def test_lines_above_the_bar_are_printed_as_written(capsys):
    with TrainProgress(2, description="sft") as bar:
        bar.print("[threads] sft: 1 torch thread (fixed)")  # rich would read "[threads]" as markup
    assert "[threads] sft: 1 torch thread (fixed)" in capsys.readouterr().out
