"""Run logs: metrics as JSONL (one flushed line per step) and TensorBoard, plus a live progress bar.

``RunLogger(run_dir).log(step, metrics)`` appends ``{"step": ..., "time": ..., **metrics}`` to
``run_dir/metrics.jsonl`` and writes every numeric metric as a TensorBoard scalar under
``run_dir/tensorboard/``. ``TrainProgress`` is a rich progress bar whose text shows the headline
numbers of the last step: reward, EM, share of all-fail groups, IG statistics and the step time
split into phases (metrics named ``time/<phase>``).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"

#: (metric name, label in the progress line, format)
HEADLINE = (
    ("reward/mean", "R", "{:.3f}"),
    ("em/mean", "EM", "{:.3f}"),
    ("groups/all_fail_frac", "all-fail", "{:.0%}"),
    ("ig/mean", "IG", "{:+.3f}"),
    ("ig/std", "IG-sd", "{:.3f}"),
    ("loss", "loss", "{:.4f}"),
)
#: the phases of a step, in order; metric ``time/<phase>`` in seconds
PHASES = ("generation", "retrieval", "scoring", "logprobs", "update")


def _scalar(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:
        return float(value.item())
    return None


def _jsonable(value: Any) -> Any:
    s = _scalar(value)
    if s is not None and not isinstance(value, (int, bool)):
        return s if math.isfinite(s) else str(s)  # NaN / inf as strings keep the line valid JSON
    if isinstance(value, Path):
        return str(value)
    return value


class RunLogger:
    """Metrics sink of one run. Use as a context manager or call ``close()``.

    Resuming appends to the existing ``metrics.jsonl``; lines of steps after ``resume_step`` (written
    after the checkpoint the run resumes from) can be dropped with ``truncate_after(step)``.
    """

    def __init__(self, run_dir: str | os.PathLike, *, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / METRICS_FILE
        self._file = open(self.path, "a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.run_dir / TENSORBOARD_DIR))

    def log(self, step: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """Append one JSON line (flushed) and the numeric metrics to TensorBoard; returns the record."""
        record = {"step": int(step), "time": time.time()}
        record.update({k: _jsonable(v) for k, v in metrics.items()})
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in metrics.items():
                s = _scalar(value)
                if s is not None:
                    self._tb.add_scalar(key, s, global_step=int(step))
            self._tb.flush()
        return record

    def truncate_after(self, step: int) -> None:
        """Drop JSONL lines whose step is > ``step`` (used when resuming from an older checkpoint)."""
        self._file.close()
        kept = []
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("step", -1) <= step:
                        kept.append(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a crash
        from igsearch.io import atomic_write_text

        atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        self._file = open(self.path, "a", encoding="utf-8")

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl`` (a torn last line is skipped)."""
    path = Path(run_dir) / METRICS_FILE
    records = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def format_step_summary(metrics: Mapping[str, Any]) -> str:
    """The progress-bar text: headline metrics present in ``metrics`` and the phase-time split."""
    parts = []
    for key, label, fmt in HEADLINE:
        s = _scalar(metrics.get(key)) if key in metrics else None
        if s is not None:
            parts.append(f"{label} {fmt.format(s)}")
    times = {p: _scalar(metrics.get(f"time/{p}")) for p in PHASES}
    times = {p: t for p, t in times.items() if t is not None}
    if times:
        total = _scalar(metrics.get("time/step")) or sum(times.values())
        split = " ".join(f"{p[:3]} {t:.1f}" for p, t in times.items())
        parts.append(f"{total:.1f}s [{split}]")
    return " | ".join(parts)


class TrainProgress:
    """A rich progress bar over training steps whose text is ``format_step_summary`` of the last step."""

    def __init__(self, total_steps: int, *, initial: int = 0, description: str = "train", disable: bool = False):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[summary]}"),
            disable=disable,
            transient=False,
        )
        self._task = self._progress.add_task(description, total=total_steps, completed=initial, summary="")
        # Not a terminal (a log file, CI): the bar cannot redraw, so print a plain line every ~5%.
        self._lines_every = 0 if disable or self._progress.console.is_terminal else max(1, total_steps // 20)
        self._description, self._total, self._t0 = description, total_steps, time.perf_counter()

    def update(self, step: int, metrics: Mapping[str, Any] | None = None) -> None:
        """Mark ``step`` steps as done and show the metrics of the last one."""
        summary = format_step_summary(metrics or {})
        self._progress.update(self._task, completed=step, summary=summary)
        if self._lines_every and (step % self._lines_every == 0 or step == self._total):
            print(f"{self._description} {step}/{self._total} ({time.perf_counter() - self._t0:.0f}s) {summary}",
                  flush=True)

    def print(self, *args: Any) -> None:
        """Print a line above the bar, as written (no rich markup: "[threads] ..." stays)."""
        self._progress.console.print(*args, markup=False, highlight=False)

    def __enter__(self) -> "TrainProgress":
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()
